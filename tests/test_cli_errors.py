"""The newcomer's first errors: each is one line on stderr that keeps its text (brackets are
not rich markup), names the file, line or key, says what is allowed, and exits 2 before any
work is done; `make plan FORMAT=json` prints nothing but the tool's output."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config.schema import _DNS_LABEL

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project whose stack files a test may break."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", root)
    shutil.copy(ROOT / "__main__.py", root)
    shutil.copytree(ROOT / "stacks", root / "stacks")
    return root


def dev_file(project: Path) -> Path:
    return project / "stacks" / "Pulumi.dev.yaml"


def edit_dev(project: Path, edit) -> None:
    path = dev_file(project)
    data = yaml.safe_load(path.read_text())
    edit(data["config"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def plan(project: Path, *args: str, stack: str = "dev"):
    return CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", stack, *args])


def one_error_line(result) -> str:
    """The single `error: ...` line of a usage failure (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# ----------------------------------------------------------------------------- markup


def test_pattern_errors_keep_the_real_pattern_and_say_what_it_means(project):
    edit_dev(project, lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(name="H100"))
    line = one_error_line(plan(project))
    assert "llmcloud:cluster.gpu_node_groups[0].name = 'H100'" in line
    assert "a lowercase DNS label (a-z, 0-9, '-'" in line
    assert f"(pattern {_DNS_LABEL.pattern})" in line
    assert "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" in line


def test_values_in_brackets_are_shown_as_written(project):
    edit_dev(
        project, lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(gpu="[bold]h200")
    )
    line = one_error_line(plan(project))
    assert "gpu = '[bold]h200': must be one of" in line


# ----------------------------------------------------------------------------- YAML


def test_yaml_errors_name_the_stack_file_line_and_problem(project, monkeypatch):
    monkeypatch.chdir(project)
    path = dev_file(project)
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "availability_zones: [" in line)
    lines[at] = lines[at].replace("]", "")  # an unclosed flow list
    path.write_text("\n".join(lines) + "\n")
    line = one_error_line(plan(Path(".")))
    assert line.startswith("error: stacks/Pulumi.dev.yaml: not valid YAML: line ")
    assert "expected ',' or ']'" in line
    assert f"(while parsing a flow sequence that starts at line {at + 1}, column" in line
    assert "<unicode string>" not in line


def test_duplicate_keys_exit_2_naming_both_lines(project):
    path = dev_file(project)
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("nat_gateways:"))
    lines.insert(first + 1, "    nat_gateways: per_az")
    path.write_text("\n".join(lines) + "\n")
    line = one_error_line(plan(project))
    assert (
        f"Pulumi.dev.yaml:{first + 2}: duplicate key 'nat_gateways' (first at line {first + 1})"
        in line
    )


def test_duplicate_top_level_config_keys_are_refused_too(project):
    path = dev_file(project)
    path.write_text(path.read_text() + "  llmcloud:environment: prod\n")
    assert "duplicate key 'llmcloud:environment'" in one_error_line(plan(project))


def test_yaml_merge_keys_may_be_overridden_without_a_duplicate_error(tmp_path):
    from infra.config.loading import load_yaml

    path = tmp_path / "x.yaml"
    path.write_text("base: &b {a: 1, b: 2}\nmerged:\n  <<: *b\n  b: 3\n")
    assert load_yaml(path)["merged"] == {"a": 1, "b": 3}


# ----------------------------------------------------------------------------- keys


def test_a_misspelled_top_level_key_suggests_the_real_one_without_dumping_its_value(project):
    def rename(config):
        config["llmcloud:servng"] = config.pop("llmcloud:serving")

    edit_dev(project, rename)
    line = one_error_line(plan(project))
    assert "llmcloud:servng: unknown key (did you mean llmcloud:serving?); " in line
    assert "the keys of the llmcloud namespace are: environment, name_prefix, tags, network" in line
    for pulumi_set in ("project", "stack", "region,"):
        assert f" {pulumi_set}" not in line.split("are: ", 1)[1]
    assert "model_prefix" not in line  # the serving entries are not echoed


def test_a_misspelled_nested_key_and_choice_get_a_suggestion(project):
    edit_dev(project, lambda c: c["llmcloud:network"].update(nat_gateway="single"))
    line = one_error_line(plan(project))
    assert "llmcloud:network.nat_gateway: unknown key (did you mean nat_gateways?); allowed" in line
    edit_dev(
        project,
        lambda c: (
            c["llmcloud:network"].pop("nat_gateway"),
            c["llmcloud:network"].update(nat_gateways="per-az"),
        ),
    )
    line = one_error_line(plan(project))
    assert "llmcloud:network.nat_gateways = 'per-az'" in line
    assert "(did you mean per_az?)" in line


def test_a_stack_not_named_after_an_environment_is_told_why_it_needs_one(project):
    shutil.copy(dev_file(project), project / "stacks" / "Pulumi.sandbox.yaml")
    path = project / "stacks" / "Pulumi.sandbox.yaml"
    path.write_text(path.read_text().replace("  llmcloud:environment: dev\n", ""))
    line = one_error_line(plan(project, stack="sandbox"))
    assert "llmcloud:environment is required for stack 'sandbox'" in line
    assert "only stacks named dev, staging, prod take it from their name" in line
    assert "set llmcloud:environment to one of: dev, staging, prod" in line


# ----------------------------------------------------------------------------- --out


@pytest.fixture
def no_plan(monkeypatch):
    """Fail the test if a plan starts: --out problems must stop the command before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the plan ran before --out was checked")

    monkeypatch.setattr("infra.plan.run.run_plan", refuse)


def test_plan_out_into_a_missing_folder_exits_2_before_planning(tmp_path, no_plan):
    target = tmp_path / "missing" / "plan.json"
    line = one_error_line(plan(ROOT, "--format", "json", "--out", str(target)))
    assert f"the folder {str(target.parent)!r} does not exist" in line
    assert not target.parent.exists()


def test_plan_out_onto_a_directory_exits_2_before_planning(tmp_path, no_plan):
    line = one_error_line(plan(ROOT, "--out", str(tmp_path)))
    assert "is a directory; give a file path" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_plan_out_into_a_read_only_folder_exits_2(tmp_path, no_plan):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    assert "not writable" in one_error_line(plan(ROOT, "--out", str(folder / "p.json")))


def test_audit_out_problems_exit_2_before_reading_the_stack_or_aws(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("audit started before --out was checked")

    monkeypatch.setattr("infra.cli._stack_region", refuse)
    for out in (tmp_path / "missing" / "a.sarif", tmp_path):
        result = CliRunner().invoke(
            app, ["audit", "--project", str(ROOT), "--stack", "dev", "--out", str(out)]
        )
        assert "--out" in one_error_line(result)


def test_preflight_aws_errors_exit_2_as_a_check_that_could_not_be_made(monkeypatch):
    import botocore.exceptions as bce

    def denied(*args, **kwargs):
        raise bce.ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "not allowed [ec2:Describe*]"}},
            "DescribeInstanceTypeOfferings",
        )

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setattr("infra.ops.preflight.run_preflight", denied)
    result = CliRunner().invoke(app, ["preflight", "--project", str(ROOT), "--stack", "dev"])
    line = one_error_line(result)
    assert "AWS error, preflight incomplete" in line and "[ec2:Describe*]" in line


# ----------------------------------------------------------------------------- make


def test_make_plan_prints_only_the_tool_output(tmp_path):
    """`make plan FORMAT=json > plan.json` must be JSON: make echoes no recipe line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "llmcloud"
    tool.write_text('#!/bin/sh\nprintf \'{"argv": "%s"}\\n\' "$*"\n')
    tool.chmod(0o755)
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml: no setup runs
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    result = subprocess.run(
        ["make", "plan", "FORMAT=json", "STACK=prod", f"BIN={bin_dir}", f"STAMP={stamp}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == '{"argv": "plan --stack prod --format json"}\n'


# ----------------------------------------------------------------------------- reports


def test_plan_table_shows_names_and_values_in_brackets_as_written(tmp_path):
    from tests.conftest import write_project

    program = """
import pulumi
import pulumi_aws as aws
aws.eks.Cluster("[bold]c", version="1.35", role_arn="arn:aws:iam::123456789012:role/c",
    vpc_config={"subnet_ids": ["subnet-1", "subnet-2"]})
pulumi.export("endpoint", "[red]http://x")
"""
    project = write_project(tmp_path / "p", program)
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "dev"])
    assert "[red]http://x" in result.stdout
    assert "[bold]c" in result.stdout  # the cost table's resource name


def test_preflight_and_smoke_tables_show_details_in_brackets_as_written():
    from io import StringIO

    from rich.console import Console

    from infra.ops import preflight, smoke

    buffer = StringIO()
    finding = preflight.Finding(
        check="quota",
        groups=("h100",),
        status="blocked",
        detail="L-417A185B [bold]0 vCPU",
        fix="ask [i]support",
    )
    preflight.render_table(
        preflight.PreflightReport(stack="dev", region="us-east-1", findings=[finding]),
        Console(file=buffer, width=200),
    )
    assert "[bold]0 vCPU" in buffer.getvalue() and "ask [i]support" in buffer.getvalue()
    buffer = StringIO()
    result = smoke.SmokeResult(url="http://x")
    result.checks.append(smoke.Check(name="models", ok=False, detail="got [bold]nothing"))
    smoke.render(result, Console(file=buffer, width=200))
    assert "got [bold]nothing" in buffer.getvalue()


def test_checked_values_get_the_closest_listed_choice(project):
    edit_dev(project, lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(gpu="h100"))
    line = one_error_line(plan(project))
    assert "gpu = 'h100': must be one of" in line and "(did you mean H100?)" in line
    edit_dev(project, lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(gpu="H100"))
    edit_dev(project, lambda c: c.update({"aws:region": "us-east1"}))
    assert "(did you mean us-east-1?)" in one_error_line(plan(project))


def test_stage_without_credentials_exits_2_as_aws_setup(tmp_path, monkeypatch):
    import botocore.exceptions as bce

    def no_credentials(*args, **kwargs):
        raise bce.NoCredentialsError()

    monkeypatch.setattr("infra.ops.stage.stage", no_credentials)
    (tmp_path / "shard-0.bin").write_bytes(b"x")
    result = CliRunner().invoke(app, ["stage", str(tmp_path), "s3://bucket/prefix/"])
    assert "credentials" in one_error_line(result).lower()
