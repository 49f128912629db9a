"""`llmcloud plan`: the real program evaluated offline, the JSON contract, exit codes, and the
fidelity checks that catch what a real preview would reject."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.plan.engine import PlanError, evaluate
from infra.plan.report import render_json, render_markdown
from tests.conftest import write_project

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_plan_json_matches_the_contract(stack_report):
    doc = json.loads(render_json(stack_report("dev")))
    assert doc["project"] == "llmcloud"
    assert doc["stack"] == "dev"
    assert set(doc) >= {"project", "stack", "resources", "violations", "cost", "outputs", "notices"}
    for resource in doc["resources"]:
        assert set(resource) == {"urn", "type", "name", "parent", "inputs", "aliases"}
        assert resource["urn"].startswith("urn:pulumi:dev::llmcloud::")
    parents = {r["parent"] for r in doc["resources"]} - {None}
    assert parents <= {r["urn"] for r in doc["resources"]}
    for violation in doc["violations"]:
        assert {"policy", "enforcement", "urn", "message"} <= set(violation)
    cost = doc["cost"]
    assert cost["currency"] == "USD"
    assert set(cost["hourly"]) == {"idle", "max"} and set(cost["monthly"]) == {"idle", "max"}
    for item in cost["items"]:
        assert {"urn", "hourly_idle", "hourly_max"} <= set(item)
    assert doc["outputs"]["region"] == "us-east-1"


def test_inputs_are_camel_case_as_crossguard_sees_them(dev_plan):
    vpc = dev_plan.by_type("aws:ec2/vpc:Vpc")[0]
    assert vpc.inputs["cidrBlock"] == "10.10.0.0/16"
    assert vpc.inputs["enableDnsHostnames"] is True


def test_every_resource_but_the_stack_has_a_parent_and_aws_ones_our_provider(prod_plan):
    provider = next(r for r in prod_plan.resources if r.type == "pulumi:providers:aws")
    assert json.loads(provider.inputs["defaultTags"])["tags"]["llmcloud:stack"] == "prod"
    for r in prod_plan.resources:
        if r.type == "pulumi:pulumi:Stack":
            continue
        assert r.parent, r.urn
        if r.custom and r.type.startswith("aws:"):
            assert r.provider == provider.urn, r.urn


def test_components_register_children_under_themselves(prod_plan):
    network = next(r for r in prod_plan.resources if r.type == "llmcloud:network:Network")
    children = {r.type for r in prod_plan.children(network.urn)}
    assert "aws:ec2/vpc:Vpc" in children and "aws:ec2/subnet:Subnet" in children


def test_planning_is_deterministic():
    first = evaluate(ROOT, "staging")
    second = evaluate(ROOT, "staging")
    assert [r.to_json() for r in first.resources] == [r.to_json() for r in second.resources]
    assert first.outputs == second.outputs


def test_markdown_report_has_a_mermaid_graph_of_components(stack_report):
    text = render_markdown(stack_report("dev"))
    assert "```mermaid" in text and "graph TD" in text
    assert "Network<br/>network" in text


@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "sarif"])
def test_cli_plan_dev_exits_0_in_every_format(fmt, tmp_path):
    out = tmp_path / f"plan.{fmt}"
    result = runner.invoke(
        app, ["plan", "--project", str(ROOT), "--stack", "dev", "--format", fmt, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    if fmt in ("json", "sarif"):
        json.loads(text)
    assert text


def test_cli_rejects_an_unknown_format():
    result = runner.invoke(app, ["plan", "--project", str(ROOT), "--format", "yaml"])
    assert result.exit_code == 2
    assert (
        "--format 'yaml' is not a format; use one of: table, json, markdown, sarif" in result.output
    )


MISSPELLED = """
import pulumi, pulumi_aws as aws
aws.eks.Cluster(
    "cluster",
    role_arn="arn:aws:iam::123456789012:role/eks",
    vpc_config={"subnet_ids": ["subnet-1"], "endpoint_public_acess": False},
)
"""


def test_a_misspelled_nested_input_is_an_error_naming_resource_and_key(plan_program):
    with pytest.raises(PlanError) as info:
        plan_program(MISSPELLED)
    message = str(info.value)
    assert "aws:eks/cluster:Cluster::cluster" in message
    assert "'vpcConfig.endpoint_public_acess'" in message
    assert "did you mean 'endpointPublicAccess'" in message


def test_cli_exits_2_on_an_input_the_provider_would_reject(tmp_path):
    project = write_project(tmp_path / "p", MISSPELLED)
    result = runner.invoke(app, ["plan", "--project", str(project)])
    assert result.exit_code == 2
    assert "endpoint_public_acess" in result.output


def test_kubernetes_inputs_are_checked_too(plan_program):
    program = """
import pulumi_kubernetes as k8s
p = k8s.Provider("k8s", kubeconfig="{}")
k8s.core.v1.Service("svc", spec={"ports": [{"port": 80, "target_portt": 8080}]},
    opts=__import__("pulumi").ResourceOptions(provider=p))
"""
    with pytest.raises(PlanError, match=r"spec\.ports\[0\]\.target_portt.*targetPort"):
        plan_program(program)


def test_invokes_get_realistic_answers_for_the_region(plan_program):
    program = """
import pulumi, pulumi_aws as aws
p = aws.Provider("aws", region="us-west-2")
o = pulumi.InvokeOptions(provider=p)
pulumi.export("zones", aws.get_availability_zones_output(opts=o).names)
pulumi.export("account", aws.get_caller_identity_output(opts=o).account_id)
pulumi.export("partition", aws.get_partition_output(opts=o).partition)
pulumi.export("ami", aws.ssm.get_parameter_output(name="/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/nvidia/recommended/image_id", opts=o).value)
"""
    plan = plan_program(program, {"aws:region": "us-west-2"})
    assert plan.outputs["zones"] == ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]
    assert plan.outputs["account"] == "123456789012"
    assert plan.outputs["partition"] == "aws"
    assert plan.outputs["ami"].startswith("ami-")


def test_config_reaches_the_program_as_the_engine_hands_it(plan_program):
    program = """
import pulumi
c = pulumi.Config()
pulumi.export("size", c.require_int("size"))
pulumi.export("obj", c.require_object("obj"))
pulumi.export("flag", c.require_bool("flag"))
pulumi.export("token", c.require_secret("token"))
pulumi.export("waiver", c.require_object("waiver"))
"""
    plan = plan_program(
        program,
        {
            "demo:size": 3,
            "demo:obj": {"a": [1, 2]},
            "demo:waiver": {"expires": datetime.date(2027, 6, 30)},  # YAML reads a date
            "demo:flag": True,
            "demo:token": {"secure": "v1:abc"},
        },
    )
    assert plan.outputs["size"] == 3
    assert plan.outputs["obj"] == {"a": [1, 2]}
    assert plan.outputs["flag"] is True
    assert plan.outputs["token"] == "[secret]"
    assert plan.outputs["waiver"] == {"expires": "2027-06-30"}


def test_a_program_run_error_exits_2_without_a_traceback(tmp_path):
    project = write_project(
        tmp_path / "p", "import pulumi\nraise pulumi.RunError('bucket name is required')\n"
    )
    result = runner.invoke(app, ["plan", "--project", str(project)])
    assert result.exit_code == 2
    assert "bucket name is required" in result.output
    assert "Traceback" not in result.output


def test_a_program_bug_names_the_exception_and_line(tmp_path):
    project = write_project(tmp_path / "p", "import pulumi\n\nx = {}['missing']\n")
    result = runner.invoke(app, ["plan", "--project", str(project)])
    assert result.exit_code == 2
    assert "the program raised KeyError: 'missing'" in result.output
    assert "at __main__.py:3: x = {}['missing']" in result.output


def test_plan_of_a_directory_without_pulumi_yaml_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["plan", "--project", str(tmp_path)])
    assert result.exit_code == 2
    assert "no Pulumi.yaml here" in result.output


def test_two_resources_with_the_same_urn_are_refused_as_the_engine_would(plan_program):
    program = """
import pulumi, pulumi_aws as aws
class Part(pulumi.ComponentResource):
    def __init__(self, name):
        super().__init__("demo:index:Part", name, None, None)
        aws.s3.Bucket("bucket", opts=pulumi.ResourceOptions(parent=self))
Part("a")
Part("b")
"""
    with pytest.raises(
        PlanError,
        match=r"two resources share a URN(.|\n)*demo:index:Part\$aws:s3/bucket:Bucket::bucket",
    ):
        plan_program(program)


def test_a_plan_parses_the_project_and_stack_files_once(tmp_path, monkeypatch):
    """The config step, the evaluation and the policies read the same two files; each is
    parsed once per plan, and each reader gets its own copy of what was parsed."""
    from infra.config import loading
    from infra.plan.run import run_plan

    parsed: list[str] = []
    parse = loading._parse_yaml
    monkeypatch.setattr(loading, "_parse_yaml", lambda p: parsed.append(p.name) or parse(p))
    program = "import pulumi_random as random\nrandom.RandomId('id', byte_length=4)\n"
    project = write_project(tmp_path / "p", program)
    report = run_plan(project, "dev")
    assert [r.type for r in report.plan.resources if r.custom] == ["random:index/randomId:RandomId"]
    assert sorted(parsed) == ["Pulumi.dev.yaml", "Pulumi.yaml"]
    with loading.yaml_read_once():
        first = loading.read_stack_file(project / "stacks" / "Pulumi.dev.yaml")
        first["aws:region"] = "changed by a caller"
        again = loading.read_stack_file(project / "stacks" / "Pulumi.dev.yaml")
    assert again["aws:region"] == "us-east-1"


def test_a_mock_answer_serializes_as_the_sdk_monitor_serializes_it():
    """The recording monitor serializes a mock's plain answer without an event-loop run;
    an answer holding something to wait for still gets the SDK's own awaited result."""
    import asyncio

    from pulumi.runtime import rpc
    from pulumi.runtime.sync_await import _sync_await

    from infra.plan.engine import _serialized

    async def later() -> str:
        await asyncio.sleep(0)  # suspends: the first step cannot finish it
        return "resolved"

    plain = {"id": "vpc-1", "cidr": "10.0.0.0/16", "tags": {"a": "b"}, "n": 3, "none": None}
    assert _serialized(plain) == _sync_await(rpc.serialize_properties(plain, {}))
    assert dict(_serialized({"later": later(), "x": 1})) == {"later": "resolved", "x": 1.0}


def test_a_mock_answer_that_fails_while_serializing_fails_as_in_the_sdk():
    import asyncio

    from infra.plan.engine import _serialized

    async def failing() -> str:
        await asyncio.sleep(0)
        raise ValueError("no such value")

    with pytest.raises(ValueError, match=r"While processing input: 'later'(.|\n)*no such value"):
        _serialized({"later": failing()})
