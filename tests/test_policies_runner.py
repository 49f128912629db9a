"""The policy pack inside `llmcloud plan`: our stacks, enforcement per environment, waivers
from the stack config, and misconfigured programs caught through the CLI."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.config import ConfigError, PoliciesConfig, WaiverConfig, parse_stack_config
from infra.plan.policy_runner import rule_metadata, run_policies
from policies.rules.base import PolicySettings
from policies.rules.ids import RULE_IDS
from tests.conftest import STACKS, write_project


@pytest.mark.parametrize("stack", STACKS)
def test_our_stacks_plan_with_no_mandatory_violations(stack_report, stack):
    report = stack_report(stack)
    blocking = [f"{v.policy} {v.urn}: {v.message}" for v in report.violations if v.blocking]
    assert blocking == []
    assert report.exit_code == 0


def test_dev_findings_are_advisory_and_show_the_public_endpoint(stack_report):
    report = stack_report("dev")
    assert report.config.policy_enforcement == "advisory"
    assert {v.enforcement for v in report.violations} <= {"advisory"}
    endpoint = [v for v in report.violations if v.policy == "eks-private-endpoint"]
    assert endpoint and "restricted to 203.0.113.0/24" in endpoint[0].message


def test_staging_and_prod_are_mandatory(stack_report):
    for stack in ("staging", "prod"):
        settings = PolicySettings.for_stack(stack_report(stack).config)
        assert settings.enforcement == "mandatory"
        assert settings.level("waiver-expired") == "mandatory"


def _with_policies(config, **policies):
    return config.model_copy(update={"policies": PoliciesConfig(**policies)})


def test_stack_waiver_marks_the_finding_waived_and_keeps_it(stack_report):
    report = stack_report("dev")
    config = _with_policies(
        report.config,
        enforcement="mandatory",
        waivers=[
            WaiverConfig(
                rule="eks-private-endpoint",
                resource="cluster-*",
                reason="dev API reachable from the office range only",
                expires=date.today() + timedelta(days=30),
            )
        ],
    )
    findings = run_policies(report.plan, config)
    endpoint = [v for v in findings if v.policy == "eks-private-endpoint"]
    assert endpoint and all(v.waived and not v.blocking for v in endpoint)
    assert endpoint[0].waiver_reason == "dev API reachable from the office range only"
    assert not any(v.blocking for v in findings)


def test_expired_stack_waiver_blocks_and_no_longer_waives(stack_report):
    report = stack_report("dev")
    config = _with_policies(
        report.config,
        enforcement="mandatory",
        waivers=[
            WaiverConfig(
                rule="eks-private-endpoint",
                resource="*",
                reason="dev API reachable from the office range only",
                expires=date.today() - timedelta(days=1),
            )
        ],
    )
    findings = run_policies(report.plan, config)
    by_rule = {v.policy: v for v in findings}
    assert by_rule["eks-private-endpoint"].blocking
    # in dev an expired waiver is advisory; the mandatory endpoint finding is what blocks
    assert by_rule["waiver-expired"].enforcement == "advisory"


def test_enforcement_override_makes_dev_mandatory(stack_report):
    report = stack_report("dev")
    findings = run_policies(report.plan, _with_policies(report.config, enforcement="mandatory"))
    assert any(v.blocking and v.policy == "eks-private-endpoint" for v in findings)


def test_gpu_budget_from_stack_config(stack_report):
    report = stack_report("prod")
    findings = run_policies(report.plan, _with_policies(report.config, gpu_budget=8))
    budget = [v for v in findings if v.policy == "gpu-budget"]
    assert budget and budget[0].blocking and "over its budget of 8" in budget[0].message


def test_waiver_with_unknown_rule_is_a_config_error():
    raw = {
        "aws:region": "us-east-1",
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
        "llmcloud:policies": {
            "waivers": [
                {
                    "rule": "s3-encryption",
                    "resource": "datasets-bucket",
                    "reason": "legacy bucket",
                    "expires": "2030-01-01",
                }
            ]
        },
    }
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, project="p", stack="dev")
    message = str(error.value)
    assert "llmcloud:policies.waivers[0].rule = 's3-encryption'" in message
    assert "s3-bucket-kms-encryption" in message


def test_rule_metadata_covers_every_rule_with_its_facts():
    metadata = rule_metadata()
    ids = [m["id"] for m in metadata]
    assert len(ids) == len(set(ids)) and set(ids) == set(RULE_IDS)
    for m in metadata:
        assert m["description"] and m["remediation"] and m["name"]
        assert m["severity"] in ("low", "medium", "high", "critical")
        assert float(m["security_severity"]) > 0
    frameworks = {m["id"]: m["frameworks"] for m in metadata}
    assert "CIS AWS Foundations Benchmark v3.0.0 2.1.1" in frameworks["s3-tls-only"]
    assert "CIS Amazon EKS Benchmark v1.7.0 5.3.1" in frameworks["eks-secrets-encryption"]


MISCONFIGURED = """
import pulumi_aws as aws

provider = aws.Provider("aws", region="us-east-1", default_tags={"tags": {
    "team": "ml", "cost-center": "research"}})
opts = __import__("pulumi").ResourceOptions(provider=provider)
aws.ec2.SecurityGroup("wide-open", ingress=[{"protocol": "tcp", "from_port": 22, "to_port": 22,
    "cidr_blocks": ["0.0.0.0/0"]}], opts=opts)
aws.ec2.LaunchTemplate("imds-v1", metadata_options={"http_tokens": "optional"}, opts=opts)
"""


def test_cli_plan_exits_1_naming_the_misconfigured_resources(tmp_path):
    project = write_project(tmp_path / "bad", MISCONFIGURED)
    result = CliRunner().invoke(
        app, ["plan", "--project", str(project), "--stack", "dev", "--format", "json"]
    )
    assert result.exit_code == 1, result.output
    violations = json.loads(result.stdout)["violations"]
    named = {(v["policy"], v["urn"].rsplit("::", 1)[-1]) for v in violations}
    assert ("sg-no-open-ingress", "wide-open") in named
    assert ("ec2-imdsv2-required", "imds-v1") in named
    assert all(v["enforcement"] == "mandatory" for v in violations)

    table = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "dev"])
    assert table.exit_code == 1
    assert "wide-open" in table.stdout and "sg-no-open-ingress" in table.stdout
    assert "FAILED" in table.stdout


def test_cli_plan_of_a_clean_program_exits_0(tmp_path):
    project = write_project(
        tmp_path / "clean",
        """
import pulumi_aws as aws
aws.ec2.SecurityGroup("private", ingress=[{"protocol": "tcp", "from_port": 443, "to_port": 443,
    "cidr_blocks": ["10.0.0.0/8"]}], tags={"team": "ml", "cost-center": "research"})
""",
    )
    result = CliRunner().invoke(
        app, ["plan", "--project", str(project), "--stack", "dev", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["violations"] == []
