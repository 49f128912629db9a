"""serving-cidrs-routed: an internal endpoint admitting ranges outside the VPC with no route."""

from __future__ import annotations

import pytest

from policies.rules import serving_reach
from policies.rules.base import PolicySettings


class R:
    def __init__(self, urn_name: str, type_: str, props: dict):
        self.urn = f"urn:pulumi:prod::llmcloud::{type_}::{urn_name}"
        self.name = urn_name
        self.resource_type = type_
        self.props = props
        self.dependencies = []
        self.property_dependencies = {}


class Args:
    def __init__(self, *resources):
        self.resources = list(resources)


VPC = R("vpc", serving_reach.VPC, {"cidrBlock": "10.30.0.0/16"})


def service(*ranges, type_="LoadBalancer"):
    return R(
        "serving-llama-service",
        serving_reach.SERVICE,
        {"spec": {"type": type_, "loadBalancerSourceRanges": list(ranges)}},
    )


def findings(*resources) -> list[str]:
    out: list[str] = []
    serving_reach.check_serving_routes(
        Args(*resources), lambda m, urn=None: out.append(m), PolicySettings()
    )
    return out


def test_a_range_outside_the_vpc_without_a_route_is_reported():
    (message,) = findings(VPC, service("10.40.0.0/16", "10.30.5.0/24"))
    assert "10.40.0.0/16" in message and "no route" in message
    assert "10.30.5.0/24" not in message


@pytest.mark.parametrize(
    "route",
    [
        {"destinationCidrBlock": "10.40.0.0/16", "transitGatewayId": "tgw-0123"},
        {"destinationCidrBlock": "10.0.0.0/8", "vpcPeeringConnectionId": "pcx-0123"},
        {"destinationCidrBlock": "10.40.0.0/16", "gatewayId": "vgw-0123"},
    ],
)
def test_a_declared_peering_tgw_or_vpn_route_covers_the_range(route):
    assert findings(VPC, service("10.40.0.0/16"), R("tgw-route", serving_reach.ROUTE, route)) == []


def test_an_internet_gateway_route_is_not_a_route_to_a_private_range():
    igw = R("igw", serving_reach.ROUTE, {"destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"})
    assert findings(VPC, service("10.40.0.0/16"), igw)


def test_cluster_ip_services_and_ranges_inside_the_vpc_are_fine():
    assert findings(VPC, service("10.40.0.0/16", type_="ClusterIP")) == []
    assert findings(VPC, service("10.30.0.0/16")) == []


def test_the_rule_is_advisory_even_where_the_stack_is_mandatory():
    (policy,) = serving_reach.policies(PolicySettings(environment="prod", enforcement="mandatory"))
    assert policy.enforcement_level.value == "advisory"
