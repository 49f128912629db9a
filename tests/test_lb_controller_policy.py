"""The AWS Load Balancer Controller's IAM policy against the upstream reference policy of the
controller version the chart pin deploys (infra/data/lb_controller_iam_policy.json)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = json.loads((ROOT / "infra" / "data" / "lb_controller_iam_policy.json").read_text())
# Reference actions we do not grant, and why (internal NLBs with instance targets only).
LEFT_OUT = {
    "acm:DescribeCertificate": "ALB/TLS listeners with ACM certificates",
    "acm:ListCertificates": "ALB/TLS listeners with ACM certificates",
    "cognito-idp:DescribeUserPoolClient": "ALB authentication",
    "ec2:GetCoipPoolUsage": "Outposts customer-owned IP pools (ALB annotation)",
    "ec2:DescribeCoipPools": "Outposts customer-owned IP pools (ALB annotation)",
    "elasticloadbalancing:AddListenerCertificates": "ALB/TLS certificates",
    "elasticloadbalancing:RemoveListenerCertificates": "ALB/TLS certificates",
    "elasticloadbalancing:CreateRule": "ALB listener rules",
    "elasticloadbalancing:DeleteRule": "ALB listener rules",
    "elasticloadbalancing:ModifyRule": "ALB listener rules",
    "elasticloadbalancing:SetRulePriorities": "ALB listener rules",
    "elasticloadbalancing:SetWebAcl": "WAF on ALBs",
    "elasticloadbalancing:ModifyCapacityReservation": "LB capacity reservations",
    "elasticloadbalancing:ModifyIpPools": "IPAM pools on load balancers",
    "iam:GetServerCertificate": "IAM server certificates",
    "iam:ListServerCertificates": "IAM server certificates",
    "shield:CreateProtection": "Shield Advanced",
    "shield:DeleteProtection": "Shield Advanced",
    "shield:DescribeProtection": "Shield Advanced",
    "shield:GetSubscriptionState": "Shield Advanced",
    "waf-regional:AssociateWebACL": "WAF classic",
    "waf-regional:DisassociateWebACL": "WAF classic",
    "waf-regional:GetWebACL": "WAF classic",
    "waf-regional:GetWebACLForResource": "WAF classic",
    "wafv2:AssociateWebACL": "WAFv2",
    "wafv2:DisassociateWebACL": "WAFv2",
    "wafv2:GetWebACL": "WAFv2",
    "wafv2:GetWebACLForResource": "WAFv2",
}


@pytest.fixture(scope="module")
def statements():
    """The builder on plain values (no stack needs an NLB for the rule to be checked)."""
    from infra.cluster.addons import load_balancer_controller_statements
    from infra.context import Context

    ctx = SimpleNamespace(region="us-east-2", partition="aws", account_id="444455556666")
    ctx.arn = lambda service, resource, region=True: Context.arn(
        ctx, service, resource, region=region
    )
    return load_balancer_controller_statements(
        ctx, cluster_name="llm-prod-eks", vpc_id="vpc-0123456789abcdef0"
    )


def actions_of(statement) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def test_the_reference_is_the_chart_pins_controller_version():
    from infra.cluster.addons import CHARTS

    assert CHARTS["aws-load-balancer-controller"].version == REFERENCE["chart_version"]
    assert REFERENCE["source"].endswith(
        f"/{REFERENCE['controller_version']}/docs/install/iam_policy.json"
    )


def test_every_reference_action_is_granted_or_left_out_on_purpose(statements):
    granted = {a for s in statements for a in actions_of(s)}
    missing = [a for a in REFERENCE["actions"] if a not in granted and a not in LEFT_OUT]
    assert missing == [], "the controller needs these (upstream iam_policy.json)"
    assert not granted & set(LEFT_OUT)
    assert not granted - set(REFERENCE["actions"]), "an action upstream does not list"


def test_v2_13_subnet_resolver_reads_are_granted(statements):
    granted = {a for s in statements for a in actions_of(s)}
    assert {"ec2:DescribeRouteTables", "ec2:DescribeIpamPools"} <= granted


def test_no_outposts_reads_and_security_groups_for_vpc_scoped_to_the_vpc(statements):
    (sg_for_vpc,) = [s for s in statements if "ec2:GetSecurityGroupsForVpc" in actions_of(s)]
    assert actions_of(sg_for_vpc) == ["ec2:GetSecurityGroupsForVpc"]
    assert sg_for_vpc["Resource"] == "arn:aws:ec2:us-east-2:444455556666:vpc/vpc-0123456789abcdef0"
    wildcard = {a for s in statements if s["Resource"] == "*" for a in actions_of(s)}
    assert "ec2:GetCoipPoolUsage" not in wildcard and "ec2:GetSecurityGroupsForVpc" not in wildcard
