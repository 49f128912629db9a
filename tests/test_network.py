"""The VPC each environment gets."""

from __future__ import annotations

import ipaddress
import json


def subnets(plan, tier: str):
    return [
        s
        for s in plan.by_type("aws:ec2/subnet:Subnet")
        if s.inputs["tags"]["llmcloud:tier"] == tier
    ]


def test_prod_vpc_spans_three_zones_with_private_subnets_in_each(prod_plan):
    private = subnets(prod_plan, "private")
    assert sorted(s.inputs["availabilityZone"] for s in private) == [
        "us-east-2a",
        "us-east-2b",
        "us-east-2c",
    ]
    assert len(prod_plan.by_type("aws:ec2/natGateway:NatGateway")) == 3


def test_dev_spans_at_least_two_zones_with_one_nat(dev_plan):
    assert len({s.inputs["availabilityZone"] for s in subnets(dev_plan, "private")}) >= 2
    assert len(dev_plan.by_type("aws:ec2/natGateway:NatGateway")) == 1
    routes = [r for r in dev_plan.by_type("aws:ec2/route:Route") if "natGatewayId" in r.inputs]
    assert len(routes) == 2 and len({r.inputs["natGatewayId"] for r in routes}) == 1


def test_private_subnets_are_sized_for_pod_ips_and_tagged_for_internal_load_balancers(prod_plan):
    for s in subnets(prod_plan, "private"):
        assert ipaddress.IPv4Network(s.inputs["cidrBlock"]).num_addresses >= 4096
        assert s.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert s.inputs["tags"]["kubernetes.io/cluster/llm-prod-eks"] == "shared"
        assert s.inputs["mapPublicIpOnLaunch"] is False
    for s in subnets(prod_plan, "public"):
        assert s.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert s.inputs["mapPublicIpOnLaunch"] is False


def test_s3_gateway_endpoint_serves_every_private_route_table(prod_plan):
    gateway = [
        e
        for e in prod_plan.by_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if e.inputs["vpcEndpointType"] == "Gateway"
    ]
    assert len(gateway) == 1
    assert gateway[0].inputs["serviceName"] == "com.amazonaws.us-east-2.s3"
    assert len(gateway[0].inputs["routeTableIds"]) == 3


def test_interface_endpoints_in_prod_not_in_dev(prod_plan, dev_plan):
    def interface_services(plan):
        return sorted(
            e.inputs["serviceName"].rsplit(".", 1)[-1]
            if "ecr" not in e.inputs["serviceName"]
            else e.inputs["serviceName"].split("us-east-2.")[-1]
            for e in plan.by_type("aws:ec2/vpcEndpoint:VpcEndpoint")
            if e.inputs["vpcEndpointType"] == "Interface"
        )

    assert interface_services(prod_plan) == ["ec2", "ecr.api", "ecr.dkr", "eks-auth", "logs", "sts"]
    assert interface_services(dev_plan) == []


def test_flow_logs_go_to_a_kms_encrypted_log_group(prod_plan):
    (flow_log,) = prod_plan.by_type("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL"
    group = next(
        g for g in prod_plan.by_type("aws:cloudwatch/logGroup:LogGroup") if g.name == "flow-logs"
    )
    logs_key = next(k for k in prod_plan.by_type("aws:kms/key:Key") if k.name == "logs-key")
    assert group.inputs["kmsKeyId"] == logs_key.outputs["arn"]
    assert flow_log.inputs["logDestination"] == group.outputs["arn"]
    role = next(r for r in prod_plan.by_type("aws:iam/role:Role") if r.name == "flow-logs-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}


def test_default_security_group_is_locked_down(prod_plan):
    (sg,) = prod_plan.by_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not sg.inputs.get("ingress") and not sg.inputs.get("egress")
