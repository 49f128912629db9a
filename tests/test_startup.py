"""What each `llmcloud` command imports: only what it needs (start-up is most of a short command).

Each case runs in a fresh interpreter: import the CLI, invoke the command as a user would (with
input that stops it right after its own imports, before any network or planning), and list
the heavy packages then in `sys.modules`. A test of import structure, not of time: the
timings are in benchmarks/startup.py. pydantic is not on the lists: typer (0.29) itself
converts every parameter through pydantic TypeAdapters, whatever the command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HEAVY = (
    "pulumi",
    "pulumi_aws",
    "pulumi_kubernetes",
    "pulumi_policy",
    "boto3",
    "botocore",
    "s3transfer",
    "httpx",
    "torch",
    "rich",
    "markdown_it",
)
PULUMI = {"pulumi", "pulumi_aws", "pulumi_kubernetes", "pulumi_policy"}

_PROBE = """
import json, sys
from infra.cli import app
try:
    app(sys.argv[1:], prog_name="llmcloud")
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = json.loads({heavy!r})
loaded = sorted(h for h in heavy if h in sys.modules)
print("\\n" + json.dumps({{"code": code, "loaded": loaded}}))
"""


def imported_by(*argv: str) -> tuple[int, set[str]]:
    """(exit code, heavy packages imported) of `llmcloud ARGV` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=json.dumps(HEAVY)), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    return int(result["code"] or 0), set(result["loaded"])


def test_importing_the_cli_loads_no_sdk_and_no_rich():
    code, loaded = imported_by()  # no command: usage on stderr, exit 2
    assert code == 2
    assert loaded <= {"rich", "markdown_it"}, loaded  # typer prints its usage with rich


@pytest.mark.parametrize("command", ["plan", "diff", "stage", "audit", "preflight", "smoke"])
def test_command_help_loads_no_sdk(command):
    code, loaded = imported_by(command, "--help")
    assert code == 0
    assert not loaded & (PULUMI | {"boto3", "botocore", "s3transfer", "httpx", "torch"}), loaded


def test_diff_loads_neither_pulumi_nor_boto3(tmp_path):
    code, loaded = imported_by("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert code == 2  # no such file, after the command's own imports
    assert not loaded & (PULUMI | {"boto3", "botocore", "s3transfer", "httpx", "torch"}), loaded


def test_stage_loads_botocore_but_not_boto3_pulumi_or_torch(tmp_path):
    code, loaded = imported_by("stage", str(tmp_path), "s3://Not_A_Bucket/x")
    assert code == 2  # the bucket name is refused after the command's imports
    assert "botocore" in loaded  # the probe reached the command's body
    assert not loaded & (PULUMI | {"boto3", "s3transfer", "httpx", "torch"}), loaded


@pytest.mark.parametrize("command", ["audit", "preflight"])
def test_account_checks_load_no_pulumi_sdk_before_their_run(command):
    code, loaded = imported_by(command, "--format", "no-such-format")
    assert code == 2
    assert "botocore" in loaded  # the probe reached the command's body
    assert not loaded & (PULUMI | {"boto3", "s3transfer", "httpx", "torch"}), loaded


def test_smoke_loads_httpx_but_no_aws_or_pulumi_sdk():
    code, loaded = imported_by("smoke", "--url", "ftp://example.com")
    assert code == 2  # the scheme is refused after the command's imports
    assert "httpx" in loaded
    assert not loaded & (PULUMI | {"boto3", "botocore", "s3transfer", "torch"}), loaded


def test_plan_path_loads_no_aws_client_and_no_torch():
    """The modules `llmcloud plan` imports, llmcloud's program included: no boto3, no torch."""
    probe = (
        "import sys, json; import infra.cli, infra.plan.run, infra.plan.report, "
        "infra.plan.diff, infra.plan.policy_runner, infra.platform; "
        f"print(json.dumps(sorted(h for h in {list(HEAVY)!r} if h in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "pulumi_aws" in loaded  # the probe reached the program's imports
    assert not loaded & {"boto3", "botocore", "s3transfer", "torch", "httpx"}, loaded


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_loading_a_stack_config_imports_no_pulumi_sdk(stack):
    """Config validation sizes every workload's pods for admission (`infra.config.capacity`)
    from the workloads' own sizing modules, which import no Pulumi: audit, preflight and the
    plan's config step load a stack without paying for the SDK."""
    probe = (
        "import sys, json; from pathlib import Path; "
        "from infra.config import load_stack_config; "
        f"config = load_stack_config(Path('.'), {stack!r}); "
        "assert config.serving or config.training, 'no workload was sized'; "
        f"print(json.dumps(sorted(h for h in {list(HEAVY)!r} if h in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert not loaded & (PULUMI | {"boto3", "botocore", "torch", "httpx"}), loaded
