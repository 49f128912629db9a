"""Serving endpoints that admit clients outside the VPC which the stack gives no route to.

An internal NLB (and the pods' NetworkPolicy) admitting `allowed_cidrs` outside the VPC's CIDR
is only reachable from there over a route: VPC peering, a transit gateway, a VPN or Direct
Connect. When the stack declares none of these for a range, the allowlist admits traffic that
cannot arrive. Advisory (the route may be managed outside this stack, e.g. a shared transit
gateway): the plan says so; a waiver records where the route lives.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleStackPolicy,
    StackView,
    as_list,
    get,
    is_unknown,
)

VPC = "aws:ec2/vpc:Vpc"
SERVICE = "kubernetes:core/v1:Service"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
# Resources that connect the VPC to other networks; a route through one of them to a range
# counts as declared.
ROUTE_TARGETS = ("vpcPeeringConnectionId", "transitGatewayId", "gatewayId", "coreNetworkArn")

SERVING_ROUTE = RuleInfo(
    id="serving-cidrs-routed",
    title="Serving allowlists outside the VPC have a declared route",
    description="Every client range a serving endpoint admits (allowed_cidrs) lies in the VPC or "
    "has a route in the stack (peering, transit gateway, VPN); otherwise no client there can "
    "reach it. Advisory by default.",
    severity="low",
    remediation="Declare the peering/transit gateway route in the stack, or waive the finding "
    "naming where the route is managed; or narrow serving[].allowed_cidrs to the VPC.",
    kind="stack",
)


def _networks(values: Any) -> list[ipaddress.IPv4Network]:
    out = []
    for v in as_list(values):
        if isinstance(v, str) and not is_unknown(v):
            try:
                out.append(ipaddress.ip_network(v, strict=False))
            except ValueError:
                continue
    return out


def _routed(view: StackView) -> list[ipaddress.IPv4Network]:
    """Destination ranges the stack routes through a peering, transit gateway or VPN."""
    routes: list[dict[str, Any]] = [view.props[r.urn] for r in view.of_type(ROUTE)]
    for table in view.of_type(ROUTE_TABLE):
        routes.extend(
            r for r in as_list(view.props[table.urn].get("routes")) if isinstance(r, dict)
        )
    out = []
    for route in routes:
        gateway = route.get("gatewayId")
        external = any(route.get(k) for k in ROUTE_TARGETS if k != "gatewayId") or (
            isinstance(gateway, str) and gateway.startswith("vgw-")  # a VPN gateway, not IGW
        )
        if external:
            out.extend(_networks(route.get("destinationCidrBlock") or route.get("cidrBlock")))
    return out


def check_serving_routes(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    vpcs = [n for r in view.of_type(VPC) for n in _networks(view.props[r.urn].get("cidrBlock"))]
    if not vpcs:
        return
    routed = _routed(view)
    for service in view.of_type(SERVICE):
        spec = view.props[service.urn].get("spec") or {}
        if get(spec, "type") != "LoadBalancer":
            continue
        for cidr in _networks(spec.get("loadBalancerSourceRanges")):
            inside = any(cidr.subnet_of(v) for v in vpcs if v.version == cidr.version)
            covered = any(cidr.subnet_of(r) for r in routed if r.version == cidr.version)
            if not inside and not covered:
                report(
                    f"serving endpoint {service.name!r} admits {cidr}, outside the VPC "
                    f"({', '.join(map(str, vpcs))}), and the stack declares no route to it "
                    "(peering, transit gateway, VPN): clients there cannot reach it",
                    service.urn,
                )


def policies(settings: PolicySettings) -> list[Any]:
    # advisory unless a policy-pack config sets this rule's level
    if SERVING_ROUTE.id not in settings.rule_levels:
        settings = settings.with_(
            rule_levels={**settings.rule_levels, SERVING_ROUTE.id: "advisory"}
        )
    return [RuleStackPolicy(SERVING_ROUTE, settings, check_serving_routes)]
