"""Network rules: no ingress from the whole internet (except load balancer ports a stack
names on purpose), and flow logs on every VPC.

Ingress is read from all three ways pulumi-aws declares it: inline `ingress` blocks of a
security group, `aws.vpc.SecurityGroupIngressRule` and `aws.ec2.SecurityGroupRule`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyConfigSchema

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    RuleStackPolicy,
    StackView,
    as_list,
    cis_aws,
    fsbp,
    is_unknown,
)

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
VPC = "aws:ec2/vpc:Vpc"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
OPEN_CIDRS = ("0.0.0.0/0", "::/0")
ALL_PROTOCOLS = ("-1", "all")

NO_OPEN_INGRESS = RuleInfo(
    id="sg-no-open-ingress",
    title="No security group ingress from 0.0.0.0/0",
    description="No security group admits traffic from 0.0.0.0/0 or ::/0, except on the load "
    "balancer ports a stack allows (policies.public_ingress_ports).",
    severity="critical",
    remediation="Restrict the source to the VPC CIDR, a security group or a prefix list; for a "
    "public load balancer list its ports in policies.public_ingress_ports.",
    controls=(cis_aws("5.2"), cis_aws("5.3"), fsbp("EC2.19")),
)
FLOW_LOGS = RuleInfo(
    id="vpc-flow-logs",
    title="VPCs have flow logs",
    description="Every VPC has a flow log capturing ALL (or at least REJECT) traffic.",
    severity="medium",
    remediation="Add an aws.ec2.FlowLog with vpc_id=<the VPC> and traffic_type='ALL' to an "
    "encrypted CloudWatch log group or S3 bucket.",
    controls=(cis_aws("3.7"), fsbp("EC2.6")),
    kind="stack",
)


@dataclass(frozen=True)
class Ingress:
    """One ingress permission, however it was declared."""

    protocol: str
    from_port: int | None
    to_port: int | None
    sources: tuple[str, ...]  # CIDRs; security groups, prefix lists and self are not listed
    where: str  # for messages: "ingress[0]" or the rule resource's name

    @property
    def all_ports(self) -> bool:
        return str(self.protocol).lower() in ALL_PROTOCOLS

    def ports_text(self) -> str:
        if self.all_ports:
            return "all protocols and ports"
        if self.from_port == self.to_port:
            return f"{self.protocol} {self.from_port}"
        return f"{self.protocol} {self.from_port}-{self.to_port}"

    def within(self, allowed: set[int]) -> bool:
        """Every port of this permission is in `allowed` (TCP/UDP only)."""
        if self.all_ports or self.from_port is None or self.to_port is None:
            return False
        if str(self.protocol).lower() not in ("tcp", "6", "udp", "17"):
            return False
        return all(p in allowed for p in range(self.from_port, self.to_port + 1))


def _int(value: Any) -> int | None:
    if value is None or is_unknown(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def ingress_of(resource_type: str, name: str, props: dict[str, Any]) -> Iterator[Ingress]:
    """The ingress permissions a security group or rule resource declares."""
    if resource_type in (SECURITY_GROUP, DEFAULT_SECURITY_GROUP):
        for i, block in enumerate(as_list(props.get("ingress"))):
            if not isinstance(block, dict):
                continue
            cidrs = [*as_list(block.get("cidrBlocks")), *as_list(block.get("ipv6CidrBlocks"))]
            yield Ingress(
                str(block.get("protocol", "-1")),
                _int(block.get("fromPort")),
                _int(block.get("toPort")),
                tuple(c for c in cidrs if isinstance(c, str)),
                f"ingress[{i}]",
            )
    elif resource_type == INGRESS_RULE:
        cidrs = [props.get("cidrIpv4"), props.get("cidrIpv6")]
        yield Ingress(
            str(props.get("ipProtocol", "-1")),
            _int(props.get("fromPort")),
            _int(props.get("toPort")),
            tuple(c for c in cidrs if isinstance(c, str)),
            name,
        )
    elif resource_type == SG_RULE and props.get("type") == "ingress":
        cidrs = [*as_list(props.get("cidrBlocks")), *as_list(props.get("ipv6CidrBlocks"))]
        yield Ingress(
            str(props.get("protocol", "-1")),
            _int(props.get("fromPort")),
            _int(props.get("toPort")),
            tuple(c for c in cidrs if isinstance(c, str)),
            name,
        )


def check_open_ingress(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    allowed = set(settings.public_ingress_ports) | {
        int(p) for p in args.get_config().get("allowedPorts", []) or []
    }
    for ingress in ingress_of(args.resource_type, args.name, props):
        open_sources = [c for c in ingress.sources if c in OPEN_CIDRS]
        if open_sources and not ingress.within(allowed):
            where = "" if ingress.where == args.name else f" ({ingress.where})"
            report(
                f"{args.name!r}{where} admits {' and '.join(open_sources)} on "
                f"{ingress.ports_text()}"
            )


def check_flow_logs(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    vpcs = list(view.of_type(VPC))
    covered: set[str] = set()
    for flow_log in view.of_type(FLOW_LOG):
        traffic = view.props[flow_log.urn].get("trafficType")
        if not (is_unknown(traffic) or traffic in ("ALL", "REJECT")):
            continue
        for vpc in view.linked(flow_log, "vpcId", vpcs):
            covered.add(vpc.urn)
    for vpc in vpcs:
        if vpc.urn not in covered:
            report(f"VPC {vpc.name!r} has no flow log (traffic_type ALL or REJECT)", vpc.urn)


PORTS_SCHEMA = PolicyConfigSchema(
    properties={
        "allowedPorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 65535},
            "description": "ports a public load balancer may open to 0.0.0.0/0",
        }
    }
)


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(
            NO_OPEN_INGRESS,
            settings,
            check_open_ingress,
            [SECURITY_GROUP, DEFAULT_SECURITY_GROUP, INGRESS_RULE, SG_RULE],
            config_schema=PORTS_SCHEMA,
        ),
        RuleStackPolicy(FLOW_LOGS, settings, check_flow_logs),
    ]
