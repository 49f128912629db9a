"""FSx rules: file systems encrypted with a customer managed key, and a Lustre file system's
security groups opening nothing beyond Lustre's own ports (TCP 988 for LNet, 1018-1023 for
the Lustre clients), which is all FSx for Lustre needs from its clients.
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    RuleStackPolicy,
    StackView,
    as_list,
)
from policies.rules.network import (
    DEFAULT_SECURITY_GROUP,
    INGRESS_RULE,
    SECURITY_GROUP,
    SG_RULE,
    ingress_of,
)

LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
FILE_SYSTEMS = (
    LUSTRE,
    "aws:fsx/openZfsFileSystem:OpenZfsFileSystem",
    "aws:fsx/ontapFileSystem:OntapFileSystem",
    "aws:fsx/windowsFileSystem:WindowsFileSystem",
)
LUSTRE_PORTS = frozenset({988, *range(1018, 1024)})

FSX_KMS = RuleInfo(
    id="fsx-kms-encryption",
    title="FSx file systems use a customer managed KMS key",
    description="Every FSx file system is encrypted at rest under a customer managed KMS key "
    "(SCRATCH Lustre deployments cannot be, and are flagged).",
    severity="high",
    remediation="Set kms_key_id=<the data key ARN> on the file system and use a PERSISTENT_2 "
    "deployment type for Lustre.",
)
LUSTRE_PORTS_ONLY = RuleInfo(
    id="fsx-lustre-ports-only",
    title="FSx for Lustre security groups open only Lustre ports",
    description="The security groups of an FSx for Lustre file system admit TCP 988 and "
    "1018-1023 only.",
    severity="medium",
    remediation="Give the file system its own security group with ingress on TCP 988 and "
    "1018-1023 from the node security group (and from itself), and nothing else.",
    kind="stack",
)


def check_kms(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    deployment = str(props.get("deploymentType") or "")
    if args.resource_type == LUSTRE and deployment.startswith("SCRATCH"):
        report(
            f"file system {args.name!r} is {deployment}: scratch file systems use an AWS owned "
            "key only; use PERSISTENT_2 with kms_key_id"
        )
        return
    key = props.get("kmsKeyId")
    if not key:
        report(f"file system {args.name!r} has no kms_key_id: it uses the AWS managed aws/fsx key")
    elif isinstance(key, str) and "alias/aws/" in key:
        report(f"file system {args.name!r} uses the AWS managed key {key}")


def check_lustre_ports(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    groups = list(view.of_type(SECURITY_GROUP, DEFAULT_SECURITY_GROUP))
    rules = list(view.of_type(INGRESS_RULE, SG_RULE))
    for fs in view.of_type(LUSTRE):
        if not as_list(view.props[fs.urn].get("securityGroupIds")):
            report(
                f"file system {fs.name!r} names no security group: it gets the VPC's default group",
                fs.urn,
            )
            continue
        for group in view.linked(fs, "securityGroupIds", groups):
            found = list(ingress_of(group.resource_type, group.name, view.props[group.urn]))
            for rule in rules:
                if group in view.linked(rule, "securityGroupId", groups):
                    found.extend(ingress_of(rule.resource_type, rule.name, view.props[rule.urn]))
            for ingress in found:
                if not ingress.within(set(LUSTRE_PORTS)) or str(ingress.protocol).lower() not in (
                    "tcp",
                    "6",
                ):
                    where = "" if ingress.where == group.name else f" ({ingress.where})"
                    report(
                        f"security group {group.name!r}{where} of file system {fs.name!r} admits "
                        f"{ingress.ports_text()}; Lustre needs TCP 988 and 1018-1023 only",
                        group.urn,
                    )


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(FSX_KMS, settings, check_kms, FILE_SYSTEMS),
        RuleStackPolicy(LUSTRE_PORTS_ONLY, settings, check_lustre_ports),
    ]
