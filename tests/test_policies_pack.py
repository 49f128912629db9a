"""The pack as the Pulumi CLI runs it: its layout, the rules importable without starting the
server, the per-environment policy config files, and the real analyzer server (started the
way the CLI starts a Python policy pack) answering the engine's gRPC calls."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from infra.config import load_stack_config, read_stack_file
from infra.plan.engine import engine_config
from policies.rules import build_policies
from policies.rules.ids import RULE_IDS
from tests.conftest import ROOT, STACKS

PACK = ROOT / "policies"


def test_pack_layout_is_what_the_pulumi_cli_expects():
    manifest = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    assert manifest["runtime"]["options"]["virtualenv"] == "venv"
    assert manifest["version"] and manifest["description"]
    assert (PACK / "__main__.py").is_file()
    requirements = (PACK / "requirements.txt").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pin in ("pulumi-policy==", "pulumi==", "pydantic==", "pyyaml=="):
        line = next(r for r in requirements.splitlines() if r.startswith(pin))
        assert f'"{line}"' in pyproject, f"{line} differs from pyproject.toml"


def test_only_the_entry_point_builds_the_policy_pack():
    """PolicyPack's constructor starts a server and blocks: no importable module may call it."""
    builders = [
        p.relative_to(PACK).as_posix()
        for p in PACK.rglob("*.py")
        if "PolicyPack(" in p.read_text() and "venv" not in p.parts
    ]
    assert builders == ["__main__.py"]


def test_rules_import_and_build_without_starting_a_server():
    policies = build_policies()
    names = [p.name for p in policies]
    assert sorted(names) == sorted(RULE_IDS) and len(names) == len(set(names))
    for policy in policies:
        assert isinstance(policy, ResourceValidationPolicy | StackValidationPolicy)
        assert policy.description and policy.remediation_steps and policy.severity
        kind = "stack" if isinstance(policy, StackValidationPolicy) else "resource"
        assert policy.info.kind == kind, policy.name
    by_name = {p.name: p for p in policies}
    assert by_name["eks-secrets-encryption"].framework.name == "CIS Amazon EKS Benchmark"
    assert by_name["eks-secrets-encryption"].framework.reference == "5.3.1"


@pytest.mark.parametrize("stack", STACKS)
def test_policy_config_file_matches_the_stack_enforcement(stack):
    """`--policy-pack-config policies/config/<env>.json` states what `llmcloud plan` applies."""
    config = json.loads((PACK / "config" / f"{stack}.json").read_text())
    assert config["all"] == load_stack_config(ROOT, stack).policy_enforcement
    schemas = {p.name: p.config_schema for p in build_policies()}
    for key, value in config.items():
        if key == "all":
            continue
        assert key in RULE_IDS, f"{stack}.json names unknown rule {key}"
        if isinstance(value, dict):
            allowed = set(schemas[key].properties) if schemas[key] else set()
            assert set(value) - {"enforcementLevel"} <= allowed


# ----------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack's analyzer server, started as the CLI starts it (`python -m pulumi.policy
    <engine> <pack dir>`, the stack's config in PULUMI_CONFIG), for prod plus two waivers."""
    raw = read_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml")
    raw["llmcloud:policies"] = {
        "waivers": [
            {
                "rule": "ec2-imdsv2-required",
                "resource": "lt-waived",
                "reason": "vendor AMI reads IMDSv1 until its next release",
                "expires": "2099-01-01",
            },
            {
                "rule": "s3-versioning",
                "resource": "*",
                "reason": "scratch buckets during the migration",
                "expires": "2020-01-01",
            },
        ]
    }
    config, _ = engine_config(raw, "llmcloud")
    env = {
        **os.environ,
        "PULUMI_CONFIG": json.dumps(config),
        "PULUMI_PROJECT": "llmcloud",
        "PULUMI_STACK": "prod",
        "PULUMI_DRY_RUN": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(PACK)],
        env=env,
        cwd=str(Path("/")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        if not ready:
            pytest.fail("the policy pack did not start within 120 s")
        port = process.stdout.readline().decode().strip()
        if not port.isdigit():
            process.kill()
            pytest.fail(f"the policy pack failed to start: {process.stderr.read().decode()}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _struct(values: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


TAGGED_PROVIDER = analyzer_pb2.AnalyzerProviderResource(
    type="pulumi:providers:aws",
    properties=_struct({"defaultTags": json.dumps({"tags": {"team": "a", "cost-center": "b"}})}),
    urn="urn:pulumi:prod::llmcloud::pulumi:providers:aws::aws",
    name="aws",
)


def _analyze(stub, token: str, name: str, props: dict) -> dict[str, analyzer_pb2.AnalyzeDiagnostic]:
    response = stub.Analyze(
        analyzer_pb2.AnalyzeRequest(
            type=token,
            properties=_struct(props),
            urn=f"urn:pulumi:prod::llmcloud::{token}::{name}",
            name=name,
            provider=TAGGED_PROVIDER,
        )
    )
    return {d.policyName: d for d in response.diagnostics}


@pytest.mark.slow
def test_analyzer_describes_every_rule_mandatory_in_prod(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "llmcloud"
    assert {p.name for p in info.policies} == set(RULE_IDS)
    levels = {p.name: p.enforcementLevel for p in info.policies}
    # serving-cidrs-routed is advisory by design (the route may live outside the stack)
    assert levels.pop("serving-cidrs-routed") == analyzer_pb2.ADVISORY
    assert set(levels.values()) == {analyzer_pb2.MANDATORY}
    stack_rules = {p.name for p in info.policies if p.policy_type == 2}
    assert {"s3-tls-only", "gpu-budget", "waiver-expired"} <= stack_rules
    tls = next(p for p in info.policies if p.name == "s3-tls-only")
    assert tls.remediation_steps and tls.framework.name == "CIS AWS Foundations Benchmark"


@pytest.mark.slow
def test_analyzer_reports_a_violation_and_honours_the_stack_waiver(analyzer):
    bad = {"metadataOptions": {"httpTokens": "optional"}, "blockDeviceMappings": []}
    found = _analyze(analyzer, "aws:ec2/launchTemplate:LaunchTemplate", "lt", bad)
    assert found["ec2-imdsv2-required"].enforcementLevel == analyzer_pb2.MANDATORY
    assert "'lt' allows IMDSv1" in found["ec2-imdsv2-required"].message
    assert "tags-required" not in found  # the provider's default tags count
    waived = _analyze(analyzer, "aws:ec2/launchTemplate:LaunchTemplate", "lt-waived", bad)
    assert "ec2-imdsv2-required" not in waived  # CrossGuard has no waived state: dropped
    assert "ebs-encrypted" in waived  # the waiver covers its rule only


@pytest.mark.slow
def test_analyzer_stack_rules_see_companion_resources_and_expired_waivers(analyzer):
    bucket_urn = "urn:pulumi:prod::llmcloud::aws:s3/bucket:Bucket::data"
    resources = [
        analyzer_pb2.AnalyzerResource(
            type="aws:s3/bucket:Bucket",
            properties=_struct({"bucket": "data"}),
            urn=bucket_urn,
            name="data",
            provider=TAGGED_PROVIDER,
        ),
        analyzer_pb2.AnalyzerResource(
            type="aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            properties=_struct(
                {
                    "bucket": "data",
                    "blockPublicAcls": True,
                    "blockPublicPolicy": True,
                    "ignorePublicAcls": True,
                    "restrictPublicBuckets": True,
                }
            ),
            urn="urn:pulumi:prod::llmcloud::aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock::pab",
            name="pab",
            dependencies=[bucket_urn],
            propertyDependencies={
                "bucket": analyzer_pb2.AnalyzerPropertyDependencies(urns=[bucket_urn])
            },
        ),
    ]
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources))
    found = {(d.policyName, d.urn) for d in response.diagnostics}
    assert ("s3-tls-only", bucket_urn) in found
    assert ("s3-bucket-kms-encryption", bucket_urn) in found
    assert ("s3-public-access-block", bucket_urn) not in found  # linked through the dependency
    assert ("s3-versioning", bucket_urn) in found  # its waiver expired
    expired = [d for d in response.diagnostics if d.policyName == "waiver-expired"]
    assert expired and expired[0].enforcementLevel == analyzer_pb2.MANDATORY
    assert "expired on 2020-01-01" in expired[0].message
