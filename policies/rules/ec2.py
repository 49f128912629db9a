"""EC2 rules for what launches nodes (launch templates, instances) and their volumes: IMDSv2,
EBS encrypted under a customer managed key, no public IP addresses.

Launch template fields are strings in the EC2 API (`encrypted = "true"`,
`associatePublicIpAddress = "true"`); booleans and strings are both accepted.
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    as_list,
    cis_aws,
    fsbp,
    get,
    is_unknown,
    truthy,
)

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"

IMDSV2 = RuleInfo(
    id="ec2-imdsv2-required",
    title="Instances require IMDSv2",
    description="Every launch template and instance requires session tokens for the instance "
    "metadata service (IMDSv2), or turns the metadata endpoint off.",
    severity="high",
    remediation="Set metadata_options.http_tokens='required' (and http_put_response_hop_limit=1 "
    "unless pods need the node's metadata).",
    controls=(cis_aws("5.6"), fsbp("EC2.8")),
)
EBS_ENCRYPTED = RuleInfo(
    id="ebs-encrypted",
    title="EBS volumes are encrypted with a customer managed key",
    description="Every EBS volume a launch template, instance or node group creates, and every "
    "standalone volume, is encrypted under a customer managed KMS key.",
    severity="high",
    remediation="Give the launch template a block device mapping for the root volume with "
    "ebs.encrypted='true' and ebs.kms_key_id=<the EBS key ARN>; node groups use such a launch "
    "template rather than disk_size.",
    controls=(cis_aws("2.2.1"), fsbp("EC2.3")),
)
NO_PUBLIC_IP = RuleInfo(
    id="ec2-no-public-ip",
    title="Nodes get no public IP address",
    description="No launch template network interface and no instance asks for a public IPv4 "
    "address: nodes live in private subnets behind NAT.",
    severity="high",
    remediation="Remove associate_public_ip_address (or set it to false) and launch into the "
    "private subnets.",
    controls=(fsbp("EC2.9"),),
)


def check_imdsv2(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    options = props.get("metadataOptions") or {}
    tokens = options.get("httpTokens")
    endpoint = options.get("httpEndpoint")
    if is_unknown(tokens) or tokens == "required" or endpoint == "disabled":
        return
    report(
        f"{args.name!r} allows IMDSv1 (metadata_options.http_tokens is "
        f"{tokens!r}, not 'required'): any process or SSRF can read the node's credentials"
    )


def _volume_problem(ebs: dict[str, Any]) -> str | None:
    if not truthy(ebs.get("encrypted", False)):
        return "is not encrypted"
    key = ebs.get("kmsKeyId")
    if not key:
        return "is encrypted with the AWS managed aws/ebs key, not a customer managed key"
    if not is_unknown(key) and "alias/aws/" in str(key):
        return "is encrypted with the AWS managed aws/ebs key, not a customer managed key"
    return None


def check_ebs(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    kind = args.resource_type
    if kind == LAUNCH_TEMPLATE:
        mappings = [m for m in as_list(props.get("blockDeviceMappings")) if isinstance(m, dict)]
        volumes = [m for m in mappings if isinstance(m.get("ebs"), dict)]
        if not volumes:
            report(
                f"launch template {args.name!r} maps no EBS volume: the root volume takes the "
                "AMI's default, unencrypted unless the account encrypts by default"
            )
        for mapping in volumes:
            problem = _volume_problem(mapping["ebs"])
            if problem:
                device = mapping.get("deviceName") or "a volume"
                report(f"launch template {args.name!r}: {device} {problem}")
    elif kind == INSTANCE:
        root = props.get("rootBlockDevice")
        devices = [("root volume", root if isinstance(root, dict) else {})]
        devices += [
            (d.get("deviceName") or "a volume", d)
            for d in as_list(props.get("ebsBlockDevices"))
            if isinstance(d, dict)
        ]
        for device, ebs in devices:
            problem = _volume_problem(ebs)
            if problem:
                report(f"instance {args.name!r}: {device} {problem}")
    elif kind == VOLUME:
        problem = _volume_problem(props)
        if problem:
            report(f"volume {args.name!r} {problem}")
    elif kind == NODE_GROUP and not props.get("launchTemplate"):
        report(
            f"node group {args.name!r} has no launch template: EKS creates its root volumes "
            f"({get(props, 'diskSize', default=20)} GiB) without our EBS key"
        )


def check_public_ip(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    if args.resource_type == LAUNCH_TEMPLATE:
        for i, interface in enumerate(as_list(props.get("networkInterfaces"))):
            if not isinstance(interface, dict):
                continue
            value = interface.get("associatePublicIpAddress")
            if value is not None and not is_unknown(value) and truthy(value):
                report(
                    f"launch template {args.name!r}: network interface {i} asks for a public "
                    "IP address"
                )
    elif truthy(props.get("associatePublicIpAddress", False)) and not is_unknown(
        props.get("associatePublicIpAddress")
    ):
        report(f"instance {args.name!r} asks for a public IP address")


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(IMDSV2, settings, check_imdsv2, [LAUNCH_TEMPLATE, INSTANCE]),
        RuleResourcePolicy(
            EBS_ENCRYPTED, settings, check_ebs, [LAUNCH_TEMPLATE, INSTANCE, VOLUME, NODE_GROUP]
        ),
        RuleResourcePolicy(NO_PUBLIC_IP, settings, check_public_ip, [LAUNCH_TEMPLATE, INSTANCE]),
    ]
