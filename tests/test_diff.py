"""`llmcloud diff` and `llmcloud plan --compare`: what a change does to a stack, from two plan
JSONs: updates with property paths, replacements from the replace-on-change metadata, renames
through aliases, masked secrets, new and resolved findings, the cost delta."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.plan.diff import diff_plans, replace_paths
from infra.plan.run import run_plan
from tests.conftest import ROOT, write_project

BUCKET_PROGRAM = """
import pulumi
import pulumi_aws as aws

provider = aws.Provider("aws", region="us-east-1", default_tags={{"tags": {{
    "team": "ml", "cost-center": "research"}}}})
aws.s3.Bucket({name!r}, bucket={bucket!r}, opts=pulumi.ResourceOptions(provider=provider{alias}))
aws.ec2.SecurityGroup("web", ingress=[{{"protocol": "tcp", "from_port": 22, "to_port": 22,
    "cidr_blocks": [{cidr!r}]}}], opts=pulumi.ResourceOptions(provider=provider))
"""


def _program_plan(tmp_path: Path, tag: str, **values: str) -> dict:
    values = {"name": "data", "bucket": "llm-data-a", "alias": "", "cidr": "10.0.0.0/8", **values}
    project = write_project(tmp_path / tag, BUCKET_PROGRAM.format(**values))
    return run_plan(project, "dev").to_json()


def _by_name(diff) -> dict[str, object]:
    return {r.name: r for r in diff.resources}


# ----------------------------------------------------------------------------- the dev stack


@pytest.fixture(scope="module")
def dev_max_size_diff(stack_report, tmp_path_factory):
    """Our dev stack, and the same stack with the H100 group's max_size 2 -> 4."""
    base = stack_report("dev").to_json()
    project = tmp_path_factory.mktemp("dev-max4")
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, project / name)
    raw = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    groups = raw["config"]["llmcloud:cluster"]["gpu_node_groups"]
    (h100,) = [g for g in groups if g["name"] == "h100"]
    assert h100["max_size"] == 2
    h100["max_size"] = 4
    (project / "stacks").mkdir()
    (project / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    head = run_plan(project, "dev").to_json()
    return base, head, diff_plans(base, head)


def test_dev_max_size_change_is_one_node_group_update_and_its_cost(dev_max_size_diff):
    base, head, diff = dev_max_size_diff
    assert diff.summary()["add"] == diff.summary()["remove"] == diff.summary()["replace"] == 0
    groups = [r for r in diff.resources if r.type == "aws:eks/nodeGroup:NodeGroup"]
    assert [(g.name, g.action) for g in groups] == [("gpu-h100-node-group", "update")]
    (change,) = groups[0].changes
    assert (change.path, change.old, change.new, change.replaces) == (
        "scalingConfig.maxSize",
        2,
        4,
        False,
    )
    # Nothing else changes but what is sized from the node groups at max scale.
    others = {r.type for r in diff.resources} - {"aws:eks/nodeGroup:NodeGroup"}
    assert others <= {"kubernetes:core/v1:ResourceQuota"}
    hourly = diff.cost["hourly"]
    assert hourly["idle"]["delta"] == 0  # the group scales from zero
    expected = head["cost"]["hourly"]["max"] - base["cost"]["hourly"]["max"]
    assert hourly["max"]["delta"] == pytest.approx(expected, abs=0.01) and expected > 0
    assert {v["policy"] for v in diff.new_findings} <= {"gpu-budget"}
    assert diff.resolved_findings == []


def test_diff_of_a_plan_with_itself_is_empty(stack_report):
    plan = stack_report("dev").to_json()
    diff = diff_plans(plan, plan)
    assert diff.empty and diff.resources == [] and diff.new_findings == []


# ----------------------------------------------------------------------------- programs


def test_a_renamed_bucket_is_a_replacement(tmp_path):
    diff = diff_plans(
        _program_plan(tmp_path, "a"), _program_plan(tmp_path, "b", bucket="llm-data-b")
    )
    (bucket,) = [r for r in diff.resources if r.type == "aws:s3/bucket:Bucket"]
    assert bucket.action == "replace"
    assert [(c.path, c.old, c.new, c.replaces) for c in bucket.changes] == [
        ("bucket", "llm-data-a", "llm-data-b", True)
    ]
    assert diff.summary() == {"replace": 1, "remove": 0, "add": 0, "update": 0}


def test_an_aliased_logical_rename_is_the_same_resource(tmp_path):
    alias = ", aliases=[pulumi.Alias(name='data')]"
    diff = diff_plans(
        _program_plan(tmp_path, "a"), _program_plan(tmp_path, "b", name="datasets", alias=alias)
    )
    assert diff.summary() == {"replace": 0, "remove": 0, "add": 0, "update": 1}
    (moved,) = diff.resources
    assert moved.name == "datasets" and moved.old_urn.endswith("::data")
    assert moved.changes == ()


def test_a_rename_without_an_alias_is_a_delete_and_a_create(tmp_path):
    diff = diff_plans(_program_plan(tmp_path, "a"), _program_plan(tmp_path, "b", name="datasets"))
    assert [(r.action, r.name) for r in diff.resources] == [
        ("remove", "data"),
        ("add", "datasets"),
    ]


def test_fixing_a_finding_resolves_it(tmp_path):
    base = _program_plan(tmp_path, "a", cidr="0.0.0.0/0")
    diff = diff_plans(base, _program_plan(tmp_path, "b"))
    assert {v["policy"] for v in diff.resolved_findings} == {"sg-no-open-ingress"}
    assert diff.new_findings == []
    (group,) = [r for r in diff.resources if r.name == "web"]
    assert group.action == "update" and not group.replacement_known
    assert [c.path for c in group.changes] == ["ingress[0].cidrBlocks[0]"]


def test_policy_documents_are_compared_as_documents():
    def plan(action: str) -> dict:
        document = {"Statement": [{"Effect": "Allow", "Action": action, "Resource": "arn:x"}]}
        return {
            "resources": [
                {
                    "urn": "urn:pulumi:dev::p::aws:iam/policy:Policy::p",
                    "type": "aws:iam/policy:Policy",
                    "name": "p",
                    "inputs": {"policy": json.dumps(document)},
                }
            ]
        }

    (change,) = diff_plans(plan("s3:GetObject"), plan("s3:PutObject")).resources[0].changes
    assert (change.path, change.old, change.new) == (
        "policy.Statement[0].Action",
        "s3:GetObject",
        "s3:PutObject",
    )


def test_secret_values_are_masked_and_their_paths_shown():
    def plan(value: str) -> dict:
        return {
            "resources": [
                {
                    "urn": "urn:pulumi:dev::p::kubernetes:core/v1:Secret::key",
                    "type": "kubernetes:core/v1:Secret",
                    "name": "key",
                    "inputs": {"stringData": {"api-key": value}, "metadata": {"name": "k"}},
                },
                {
                    "urn": "urn:pulumi:dev::p::aws:rds/instance:Instance::db",
                    "type": "aws:rds/instance:Instance",
                    "name": "db",
                    "inputs": {"password": value, "instanceClass": "db.t4g.micro"},
                },
            ]
        }

    diff = diff_plans(plan("hunter2"), plan("correct-horse"))
    changes = {c.path: c for r in diff.resources for c in r.changes}
    assert set(changes) == {'stringData["api-key"]', "password"}
    assert all(c.old == c.new == "[secret]" for c in changes.values())
    assert "hunter2" not in json.dumps(diff.to_json())


def test_replacement_metadata_covers_the_types_a_reviewer_must_not_miss():
    assert "scalingConfig.maxSize" not in replace_paths("aws:eks/nodeGroup:NodeGroup")
    assert "instanceTypes" in replace_paths("aws:eks/nodeGroup:NodeGroup")
    assert "bucket" in replace_paths("aws:s3/bucket:Bucket")
    assert "metadata.name" in replace_paths("kubernetes:core/v1:Namespace")
    assert replace_paths("aws:ec2/securityGroup:SecurityGroup") is None


# ----------------------------------------------------------------------------- the CLI


def test_cli_diff_renders_every_format_and_exits_0(tmp_path):
    base, head = tmp_path / "base.json", tmp_path / "head.json"
    base.write_text(json.dumps(_program_plan(tmp_path, "a")))
    head.write_text(json.dumps(_program_plan(tmp_path, "b", bucket="llm-data-b")))
    runner = CliRunner()
    table = runner.invoke(app, ["diff", str(base), str(head)])
    assert table.exit_code == 0, table.output
    assert "replace" in table.stdout and "bucket: llm-data-a → llm-data-b" in table.stdout
    markdown = runner.invoke(app, ["diff", str(base), str(head), "--format", "markdown"])
    assert "♻️ replace" in markdown.stdout and "(forces replacement)" in markdown.stdout
    data = json.loads(runner.invoke(app, ["diff", str(base), str(head), "-f", "json"]).stdout)
    assert data["summary"]["replace"] == 1 and "hourly" in data["cost"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("{not json", "not JSON"), ('{"a": 1}', "not an llmcloud plan")],
)
def test_cli_diff_of_an_unreadable_plan_exits_2_with_one_line(tmp_path, content, message):
    base = tmp_path / "base.json"
    if content is not None:
        base.write_text(content)
    result = CliRunner().invoke(app, ["diff", str(base), str(base)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_plan_compare_puts_the_diff_first_and_the_full_plan_collapsed(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_program_plan(tmp_path, "a")))
    project = write_project(
        tmp_path / "head",
        BUCKET_PROGRAM.format(name="data", bucket="llm-data-b", alias="", cidr="10.0.0.0/8"),
    )
    runner = CliRunner()
    args = ["plan", "--project", str(project), "--compare", str(base)]
    result = runner.invoke(app, [*args, "--format", "markdown"])
    assert result.exit_code == 1, result.output  # the plan's own verdict: mandatory findings
    text = result.stdout
    assert text.index("## llmcloud diff") < text.index("<details><summary>Full plan</summary>")
    assert text.index("<details><summary>Full plan</summary>") < text.index("## llmcloud plan")
    data = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)
    assert data["diff"]["summary"]["replace"] == 1 and data["resources"]
    assert runner.invoke(app, [*args, "--format", "sarif"]).exit_code == 2
    missing = runner.invoke(app, ["plan", "--project", str(project), "--compare", "nope.json"])
    assert missing.exit_code == 2 and "nope.json: no such file" in missing.stderr


def test_the_pull_request_comment_is_the_diff_against_the_base_branch():
    """The offline PR job plans the PR's base with its own code and comments the head's plan
    --compare'd against it (the diff first, the full plan collapsed)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pull-request.yml").read_text())
    steps = {s.get("name"): s for s in workflow["jobs"]["offline-plan"]["steps"]}
    base = steps["Plan the base offline"]
    assert "github.event.pull_request.base.sha" in base["env"]["BASE_SHA"]
    assert "git worktree add --detach ../base" in base["run"]
    assert "--format json" in base["run"]
    head = steps["Plan offline"]
    assert "steps.base.outputs.compare" in head["env"]["BASE_PLAN"]
    assert '--compare "$BASE_PLAN"' in head["run"] and "--format markdown" in head["run"]
    assert "out/plan-${stack}.md" in steps["Sticky PR comment"]["with"]["script"]
