"""The trainer image: its ECR repository per stack, the Dockerfile's pins, the workflow that
builds, scans and pushes it, and the script that points a stack at a pushed digest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.config import load_stack_config
from infra.registry.trainer_image import repository_name

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "workloads" / "training" / "Dockerfile").read_text()
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "trainer-image.yml").read_text())
STACKS = ("dev", "staging", "prod")


def arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    return value


def test_prod_repository_is_kms_encrypted_with_the_data_key_scanned_and_immutable(prod_plan):
    (repo,) = prod_plan.by_type("aws:ecr/repository:Repository")
    assert repo.inputs["name"] == "llm-prod-trainer"
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    (encryption,) = repo.inputs["encryptionConfigurations"]
    assert encryption == {
        "encryptionType": "KMS",
        "kmsKey": prod_plan.outputs["kms_key_arns"]["data"],
    }
    assert prod_plan.outputs["trainer_repository_url"] == repo.outputs["repositoryUrl"]


def test_the_lifecycle_policy_expires_untagged_images_and_keeps_recent_ones(prod_plan):
    (policy,) = prod_plan.by_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    rules = {r["selection"]["tagStatus"]: r for r in json.loads(policy.inputs["policy"])["rules"]}
    assert rules["untagged"]["selection"]["countType"] == "sinceImagePushed"
    assert rules["tagged"]["selection"]["tagPrefixList"] == ["sha-"]
    assert rules["tagged"]["selection"]["countType"] == "imageCountMoreThan"
    assert all(r["action"] == {"type": "expire"} for r in rules.values())
    assert len({r["rulePriority"] for r in rules.values()}) == 2


@pytest.mark.parametrize("stack", STACKS)
def test_training_jobs_run_the_image_from_the_stacks_own_repository(stack):
    config = load_stack_config(ROOT, stack)
    account = {"prod": "444455556666"}.get(stack, "111122223333")
    repo = f"{account}.dkr.ecr.{config.region}.amazonaws.com/{repository_name(config.prefix)}"
    assert config.training
    for job in config.training:
        assert re.fullmatch(rf"{re.escape(repo)}(:[\w.-]+|@sha256:[0-9a-f]{{64}})", job.image)


def test_dockerfile_base_is_torch_2_13_pinned_by_digest():
    base = next(line.split()[1] for line in DOCKERFILE.splitlines() if line.startswith("FROM "))
    assert re.fullmatch(
        r"pytorch/pytorch:2\.13\.0-cuda[\d.]+-cudnn9-runtime@sha256:[0-9a-f]{64}", base
    )
    makefile = (ROOT / "Makefile").read_text()
    assert '"torch==2.13.0"' in makefile  # the torch the trainer's tests run


def test_efa_installer_is_the_pinned_version_and_checksum_verified():
    pins = json.loads((ROOT / "infra" / "data" / "pins.json").read_text())
    assert arg("EFA_INSTALLER_VERSION") == pins["installers"]["efa_installer"]["value"]
    assert re.fullmatch(r"[0-9a-f]{64}", arg("EFA_INSTALLER_SHA256"))
    run = DOCKERFILE[DOCKERFILE.index("curl -fsSL") :]
    assert run.index("sha256sum -c") < run.index("tar -xzf")  # verified before it is unpacked


def test_boto3_is_installed_at_the_projects_pin():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"boto3=={arg("BOTO3_VERSION")}"' in pyproject
    assert 'pip install --no-cache-dir "boto3==${BOTO3_VERSION}"' in DOCKERFILE


def test_workflow_builds_on_trainer_changes_scans_and_records_the_digest():
    on = WORKFLOW.get("on", WORKFLOW.get(True))
    assert "workloads/training/**" in on["push"]["paths"]
    job = WORKFLOW["jobs"]["image"]
    assert sorted(job["strategy"]["matrix"]["stack"]) == sorted(STACKS)
    assert job["env"]["REPOSITORY"] == "llm-${{ matrix.stack }}-trainer"
    for stack in STACKS:
        assert job["env"]["REPOSITORY"].replace("${{ matrix.stack }}", stack) == repository_name(
            f"llm-{stack}"
        )
    steps = {s.get("name", s.get("uses", "")): s for s in job["steps"]}
    build = next(
        s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action@")
    )
    assert (
        build["with"]["push"] is True and build["with"]["file"] == "workloads/training/Dockerfile"
    )
    scan = steps["Wait for ECR's scan; refuse CRITICAL findings"]["run"]
    assert "image-scan-complete" in scan and "CRITICAL" in scan
    assert (
        "scripts/set_trainer_image.py"
        in steps["Pull request pointing the stack at the image"]["run"]
    )


def test_set_trainer_image_rewrites_only_the_training_images(tmp_path):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    source = (ROOT / "stacks" / "Pulumi.prod.yaml").read_text()
    (stacks / "Pulumi.prod.yaml").write_text(source)
    image = "444455556666.dkr.ecr.us-east-2.amazonaws.com/llm-prod-trainer@sha256:" + "ab" * 32
    script = ROOT / "scripts" / "set_trainer_image.py"
    run = [sys.executable, str(script), "--project", str(tmp_path), "--stack", "prod"]
    done = subprocess.run([*run, "--image", image], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = (stacks / "Pulumi.prod.yaml").read_text()
    changed = [
        (a, b) for a, b in zip(source.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1 and image in changed[0][1]
    assert "yamllint disable-line" in changed[0][1]  # trailing comment kept
    serving_image = yaml.safe_load(after)["config"]["llmcloud:serving"][0].get("image")
    assert serving_image == yaml.safe_load(source)["config"]["llmcloud:serving"][0].get("image")
    bad = subprocess.run([*run, "--image", "repo:latest"], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected <repository>@sha256:" in bad.stderr
