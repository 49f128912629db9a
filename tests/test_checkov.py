"""A second opinion on our Kubernetes objects: the plan's manifests of every stack, rendered to
YAML, scanned by checkov. Every failed check must be triaged here (and in the README): fixed
in the component, or waived with the reason it does not apply.

checkov's pins conflict with ours, so it lives in its own virtualenv:

    python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30

(or name the binary in LLMCLOUD_CHECKOV). Without it the test is skipped, saying so.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra.plan.k8s import manifests
from tests.conftest import ROOT, STACKS


@dataclass(frozen=True)
class Triage:
    decision: str  # "waived" | "fix reported"
    reason: str


# (checkov check id, resource glob "Kind.namespace.name") -> decision and reason.
TRIAGE: dict[tuple[str, str], Triage] = {
    ("CKV_K8S_43", "*"): Triage(
        "waived",
        "Images are pinned by version tag or digest (k8s-image-pinned); a stack pins a digest "
        "where it wants one (prod's trainer does, serving[].image accepts repo@sha256:...).",
    ),
    ("CKV_K8S_15", "*"): Triage(
        "waived",
        "imagePullPolicy IfNotPresent is right for pinned images: Always adds a registry round "
        "trip to every start of a 10+ GB vLLM/trainer image and nothing else.",
    ),
    ("CKV_K8S_35", "Deployment.*"): Triage(
        "waived",
        "vLLM reads its API key only from VLLM_API_KEY or --api-key; the env var comes from a "
        "Secret (k8s-serving-api-key), which is the safer of the two.",
    ),
    ("CKV_K8S_11", "Job.*"): Triage(
        "waived",
        "Training pods set CPU requests and a memory limit (k8s-resources-set) but no CPU limit "
        "on purpose: CFS throttling stalls data loaders and NCCL proxy threads on a node the "
        "job owns whole.",
    ),
    ("CKV_K8S_25", "Job.*"): Triage(
        "waived",
        "EFA training pods add IPC_LOCK only: libfabric pins (registers) memory for RDMA. "
        "Escalating capabilities (SYS_ADMIN, NET_ADMIN, ALL, ...) fail k8s-no-privileged.",
    ),
}


def checkov_binary() -> str | None:
    configured = os.environ.get("LLMCLOUD_CHECKOV")
    if configured:
        return configured if Path(configured).is_file() else None
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    if local.is_file():
        return str(local)
    return shutil.which("checkov")


def _triage(check_id: str, resource: str) -> Triage | None:
    for (triaged_id, pattern), triage in TRIAGE.items():
        if triaged_id == check_id and fnmatch.fnmatchcase(resource, pattern):
            return triage
    return None


@pytest.mark.slow
def test_checkov_findings_on_our_kubernetes_objects_are_all_triaged(stack_report, tmp_path):
    binary = checkov_binary()
    if binary is None:
        pytest.skip(
            "checkov is not installed: python3 -m venv .venv-checkov && "
            ".venv-checkov/bin/pip install checkov==3.3.30 (or set LLMCLOUD_CHECKOV)"
        )
    count = 0
    for stack in STACKS:
        directory = tmp_path / stack
        directory.mkdir()
        for i, item in enumerate(manifests(stack_report(stack).plan)):
            name = f"{i:03d}-{item.kind.lower()}-{item.name}.yaml"
            (directory / name).write_text(yaml.safe_dump(item.object, sort_keys=False))
            count += 1
    assert count, "the stacks declare no Kubernetes objects"
    result = subprocess.run(
        [
            binary,
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--compact",
            "--quiet",
            "--skip-download",  # offline: no Prisma Cloud guidelines or custom policies
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout) if result.stdout.strip() else []
    reports = reports if isinstance(reports, list) else [reports]
    assert reports and reports[0]["summary"]["parsing_errors"] == 0
    assert reports[0]["summary"]["resource_count"] > 0
    untriaged = []
    used: set[tuple[str, str]] = set()
    for report in reports:
        for failed in report["results"]["failed_checks"]:
            for key in TRIAGE:
                if key[0] == failed["check_id"] and fnmatch.fnmatchcase(failed["resource"], key[1]):
                    used.add(key)
            if _triage(failed["check_id"], failed["resource"]) is None:
                untriaged.append(
                    f"{failed['check_id']} {failed['resource']} ({failed['file_path']}): "
                    f"{failed['check_name']}"
                )
    assert untriaged == [], "triage these checkov findings (fix or waive):\n" + "\n".join(untriaged)
    stale = sorted(set(TRIAGE) - used)
    assert stale == [], f"triage entries no finding needs any more (remove them): {stale}"


def test_every_triage_entry_has_a_decision_and_a_reason():
    for (check_id, pattern), triage in TRIAGE.items():
        assert check_id.startswith("CKV_K8S_") and pattern
        assert triage.decision in ("waived", "fix reported")
        assert len(triage.reason) > 40
