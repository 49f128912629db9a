"""IAM across the whole plan: who each role trusts, what every policy allows, pod roles as
the only way workloads get AWS permissions, the data stager, the permission builders."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.config import load_stack_config
from infra.plan.engine import Plan, ProgramError, Resource, evaluate
from infra.security.roles import NODE_MANAGED_POLICIES, POD_IDENTITY_SERVICE
from infra.security.statements import (
    is_read_only,
    serving_statements,
    staging_statements,
    statement_problems,
    training_statements,
)
from tests.conftest import ROOT, write_project

# Service principals the platform's roles may trust, and the components whose roles may
# trust them. A new kind of role adds its service here, on purpose.
SERVICE_OWNERS = {
    "eks.amazonaws.com": ("llmcloud:security:ClusterRoles",),
    "ec2.amazonaws.com": ("llmcloud:security:ClusterRoles",),
    "vpc-flow-logs.amazonaws.com": ("llmcloud:network:Network",),
    "cloudtrail.amazonaws.com": ("llmcloud:security:AuditTrail",),
    POD_IDENTITY_SERVICE: ("llmcloud:security:PodRole",),
    "codebuild.amazonaws.com": ("llmcloud:cicd:DeployRunner",),
}
KEY_POLICY_TYPES = ("aws:kms/key:Key", "aws:kms/keyPolicy:KeyPolicy")
BROAD_MANAGED_POLICIES = ("AdministratorAccess", "PowerUserAccess", "FullAccess")

CLUSTER = "llm-dev-eks"
BUCKET = "arn:aws:s3:::llm-dev-datasets-123456789012"
CKPT = "arn:aws:s3:::llm-dev-checkpoints-123456789012"
MODELS = "arn:aws:s3:::llm-dev-models-123456789012"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BASE_CONFIG = {
    "llmcloud:environment": "dev",
    "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
}
PROGRAM_HEAD = """
import pulumi
from infra.config import config_from_pulumi
from infra.context import make_context
from infra.security.roles import DataStagerRole, DataStagerRoleArgs, PodRole, PodRoleArgs
from infra.security.statements import serving_statements, staging_statements, training_statements
config = config_from_pulumi()
ctx = make_context(config)
"""


# ----------------------------------------------------------------------------- helpers


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def policy_documents(plan: Plan) -> list[tuple[Resource, str, dict]]:
    """Every IAM policy document in the plan's inputs (any property, any depth), with the
    resource and the property path it sits in."""
    found: list[tuple[Resource, str, dict]] = []

    def walk(resource: Resource, path: str, value: Any) -> None:
        if isinstance(value, str) and value.startswith("{") and '"Statement"' in value:
            try:
                doc = json.loads(value)
            except json.JSONDecodeError:
                return
            if isinstance(doc, dict) and "Statement" in doc:
                found.append((resource, path, doc))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(resource, f"{path}.{k}" if path else k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(resource, f"{path}[{i}]", v)

    for r in plan.resources:
        if r.custom:
            walk(r, "", r.inputs)
    return found


def trust_statements(role: Resource) -> list[dict]:
    return as_list(json.loads(role.inputs["assumeRolePolicy"])["Statement"])


def component_type(plan: Plan, resource: Resource) -> str | None:
    component = plan.component_of(resource)
    return component.type if component else None


def pod_identity_bindings(plan: Plan) -> dict[str, list[dict[str, str]]]:
    """role ARN -> the (cluster, namespace, service account) bindings EKS makes for it:
    PodIdentityAssociation resources, and add-ons' own podIdentityAssociations."""
    bindings: dict[str, list[dict[str, str]]] = {}
    for a in plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation"):
        bindings.setdefault(a.inputs["roleArn"], []).append(
            {
                "cluster": a.inputs["clusterName"],
                "namespace": a.inputs["namespace"],
                "service_account": a.inputs["serviceAccount"],
            }
        )
    for addon in plan.by_type("aws:eks/addon:Addon"):
        for assoc in addon.inputs.get("podIdentityAssociations") or []:
            bindings.setdefault(assoc["roleArn"], []).append(
                {
                    "cluster": addon.inputs["clusterName"],
                    "namespace": "kube-system",
                    "service_account": assoc["serviceAccount"],
                    "addon": addon.inputs["addonName"],
                }
            )
    return bindings


def trust_problems(plan: Plan, role: Resource, allowed_aws_principals: set[str]) -> list[str]:
    """Why a role's trust policy does not name exactly its intended principal."""
    problems: list[str] = []
    statements = trust_statements(role)
    if len(statements) != 1:
        return [f"{len(statements)} trust statements; one principal per role"]
    s = statements[0]
    principal = s.get("Principal")
    if s.get("Effect") != "Allow" or not isinstance(principal, dict) or len(principal) != 1:
        return [f"trust must allow exactly one kind of principal, got {principal!r}"]
    ((kind, value),) = principal.items()
    condition = s.get("Condition") or {}
    equals = condition.get("StringEquals") or {}
    if kind == "Service":
        if not isinstance(value, str):
            return [f"trusts several services: {value}"]
        owners = SERVICE_OWNERS.get(value)
        owner = component_type(plan, role)
        if owners is None:
            return [f"trusts {value}, which no platform role is meant to (SERVICE_OWNERS)"]
        if owner not in owners:
            problems.append(f"trusts {value} but belongs to {owner}, not {owners}")
        if value == POD_IDENTITY_SERVICE:
            if sorted(as_list(s["Action"])) != ["sts:AssumeRole", "sts:TagSession"]:
                problems.append(f"pod identity trust actions {s['Action']}")
            pinned = {
                "cluster": equals.get("aws:RequestTag/eks-cluster-name"),
                "namespace": equals.get("aws:RequestTag/kubernetes-namespace"),
                "service_account": equals.get("aws:RequestTag/kubernetes-service-account"),
            }
            if not all(isinstance(v, str) and v and "*" not in v for v in pinned.values()):
                problems.append(f"pod identity trust does not pin one service account: {pinned}")
            bindings = pod_identity_bindings(plan).get(role.outputs["arn"], [])
            if len(bindings) != 1:
                problems.append(f"{len(bindings)} pod identity associations use this role")
            elif {k: bindings[0][k] for k in pinned} != pinned:
                problems.append(f"associated with {bindings[0]} but trusts {pinned}")
        elif s.get("Action") != "sts:AssumeRole" and sorted(as_list(s.get("Action"))) != [
            "sts:AssumeRole",
            "sts:TagSession",
        ]:
            problems.append(f"service trust actions {s.get('Action')}")
    elif kind == "Federated":
        if s.get("Action") != "sts:AssumeRoleWithWebIdentity":
            problems.append(f"federated trust action {s.get('Action')}")
        subs = {k: v for k, v in equals.items() if k.endswith(":sub")}
        auds = {k: v for k, v in equals.items() if k.endswith(":aud")}
        if len(subs) != 1 or any("*" in str(v) or "?" in str(v) for v in subs.values()):
            problems.append(f"web identity trust must pin the exact subject: {subs}")
        if list(auds.values()) != ["sts.amazonaws.com"]:
            problems.append(f"web identity audience {auds}")
        if "StringLike" in condition:
            problems.append("web identity trust uses StringLike (wildcard subjects)")
    elif kind == "AWS":
        arns = set(as_list(value))
        if "*" in arns or not arns <= allowed_aws_principals:
            problems.append(f"trusts {sorted(arns - allowed_aws_principals)}: not in config")
    else:
        problems.append(f"unknown principal kind {kind}")
    return problems


# ----------------------------------------------------------------------------- the prod plan


def test_every_role_in_prod_trusts_exactly_its_intended_principal(prod_plan, stack_report):
    config = stack_report("prod").config
    allowed = set(config.security.data_stager_arns)
    roles = prod_plan.by_type("aws:iam/role:Role")
    assert roles
    failures = {
        r.urn: problems for r in roles if (problems := trust_problems(prod_plan, r, allowed))
    }
    assert not failures, json.dumps(failures, indent=2)


def test_no_policy_statement_in_prod_allows_wildcard_actions_or_writes_on_everything(prod_plan):
    documents = policy_documents(prod_plan)
    kinds = Counter(r.type for r, _, _ in documents)
    assert kinds["aws:kms/key:Key"] == 4 and kinds["aws:iam/role:Role"] >= 3, kinds
    failures = []
    for resource, path, doc in documents:
        key_policy = resource.type in KEY_POLICY_TYPES
        for statement in as_list(doc["Statement"]):
            for problem in statement_problems(statement, key_policy=key_policy):
                failures.append(f"{resource.urn} {path} {statement.get('Sid', '')}: {problem}")
    assert not failures, "\n".join(failures)


def test_no_broad_managed_policy_is_attached_in_prod(prod_plan):
    attached = [
        r.inputs["policyArn"]
        for r in prod_plan.resources
        if r.type
        in (
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
            "aws:iam/policyAttachment:PolicyAttachment",
        )
    ]
    assert attached
    assert not [arn for arn in attached if arn.endswith(BROAD_MANAGED_POLICIES)], attached


def test_no_two_resources_in_prod_share_a_urn(prod_plan):
    """The real engine refuses duplicate URNs; the mocks do not, so check here."""
    duplicates = [u for u, n in Counter(r.urn for r in prod_plan.resources).items() if n > 1]
    assert not duplicates


def test_every_pod_role_in_prod_shows_role_policy_and_association(prod_plan, stack_report):
    config = stack_report("prod").config
    for component in prod_plan.by_type("llmcloud:security:PodRole"):
        children = Counter(c.type for c in prod_plan.children(component.urn))
        assert children["aws:iam/role:Role"] == 1, component.urn
        assert (
            children["aws:iam/rolePolicy:RolePolicy"]
            + children["aws:iam/rolePolicyAttachment:RolePolicyAttachment"]
        ) >= 1, component.urn
        expected = 1 if config.security.pod_identity == "pod_identity" else 0
        assert children["aws:eks/podIdentityAssociation:PodIdentityAssociation"] == expected, (
            component.urn
        )


def test_pod_identity_associations_in_prod_all_come_from_pod_roles(prod_plan):
    for association in prod_plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation"):
        assert component_type(prod_plan, association) == "llmcloud:security:PodRole"


def test_node_role_has_only_the_node_managed_policies(prod_plan):
    node_role = next(r for r in prod_plan.by_type("aws:iam/role:Role") if r.name == "node-role")
    arns = sorted(
        r.inputs["policyArn"]
        for r in prod_plan.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.inputs["role"] == node_role.outputs["name"]
    )
    assert arns == sorted(f"arn:aws:iam::aws:policy/{p}" for p in NODE_MANAGED_POLICIES)
    assert not prod_plan.by_type("aws:iam/rolePolicy:RolePolicy") or all(
        r.inputs["role"] != node_role.outputs["name"]
        for r in prod_plan.by_type("aws:iam/rolePolicy:RolePolicy")
    )


def test_cluster_role_uses_only_the_cluster_key(prod_plan):
    policy = next(
        r
        for r in prod_plan.by_type("aws:iam/rolePolicy:RolePolicy")
        if r.name == "cluster-secrets-key"
    )
    cluster_key = next(k for k in prod_plan.by_type("aws:kms/key:Key") if k.name == "cluster-key")
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    assert statement["Resource"] == cluster_key.outputs["arn"]
    assert "kms:CreateGrant" not in statement["Action"]


# ----------------------------------------------------------------------------- pod roles


def _two_pod_roles(mode: str = "pod_identity") -> str:
    extra = (
        ', mode="irsa", oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/'
        'oidc.eks.us-east-1.amazonaws.com/id/ABC", oidc_issuer="https://oidc.eks.us-east-1.'
        'amazonaws.com/id/ABC"'
        if mode == "irsa"
        else ""
    )
    return (
        PROGRAM_HEAD
        + f"""
trainer = PodRole("trainer-gpt", PodRoleArgs(cluster_name="{CLUSTER}", namespace="training",
    service_account="gpt", statements=training_statements("{BUCKET}", "datasets/", "{CKPT}",
    "checkpoints/gpt/", "{KEY}"){extra}), ctx, ctx.opts())
server = PodRole("server-llama", PodRoleArgs(cluster_name="{CLUSTER}", namespace="serving",
    service_account="llama", statements=serving_statements("{MODELS}", "llama/", "{KEY}"){extra}),
    ctx, ctx.opts())
pulumi.export("annotations", server.service_account_annotations)
"""
    )


def test_pod_roles_trust_their_service_account_and_are_associated(plan_program):
    plan = plan_program(_two_pod_roles(), BASE_CONFIG)
    roles = plan.by_type("aws:iam/role:Role")
    assert len(roles) == 2
    for role in roles:
        assert trust_problems(plan, role, set()) == []
    trainer = next(r for r in roles if r.name == "trainer-gpt-role")
    condition = trust_statements(trainer)[0]["Condition"]["StringEquals"]
    assert condition["aws:RequestTag/kubernetes-namespace"] == "training"
    assert condition["aws:RequestTag/kubernetes-service-account"] == "gpt"
    assert condition["aws:RequestTag/eks-cluster-name"] == CLUSTER
    assert condition["aws:SourceAccount"] == "123456789012"


def test_a_pod_role_trusting_another_service_account_is_caught(plan_program):
    plan = plan_program(_two_pod_roles(), BASE_CONFIG)
    trainer = next(r for r in plan.by_type("aws:iam/role:Role") if r.name == "trainer-gpt-role")
    association = next(
        a
        for a in plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if a.inputs["roleArn"] == trainer.outputs["arn"]
    )
    association.inputs["serviceAccount"] = "someone-else"
    assert any("associated with" in p for p in trust_problems(plan, trainer, set()))


def test_irsa_pod_role_trusts_the_oidc_provider_for_one_subject(plan_program):
    plan = plan_program(_two_pod_roles("irsa"), BASE_CONFIG)
    assert not plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    for role in plan.by_type("aws:iam/role:Role"):
        assert trust_problems(plan, role, set()) == []
    server = next(r for r in plan.by_type("aws:iam/role:Role") if r.name == "server-llama-role")
    (statement,) = trust_statements(server)
    host = "oidc.eks.us-east-1.amazonaws.com/id/ABC"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::123456789012:oidc-provider/{host}"
    }
    assert statement["Condition"]["StringEquals"] == {
        f"{host}:sub": "system:serviceaccount:serving:llama",
        f"{host}:aud": "sts.amazonaws.com",
    }
    assert plan.outputs["annotations"] == {"eks.amazonaws.com/role-arn": server.outputs["arn"]}


def test_pod_role_refuses_a_statement_that_writes_everywhere(plan_program):
    program = (
        PROGRAM_HEAD
        + f"""
PodRole("greedy", PodRoleArgs(cluster_name="{CLUSTER}", namespace="training",
    service_account="x", statements=[{{"Effect": "Allow", "Action": "s3:PutObject",
    "Resource": "*"}}]), ctx, ctx.opts())
"""
    )
    # the program's ValueError reaches the user as a program error naming the PodRole line
    with pytest.raises(ProgramError, match="write actions on every resource: s3:PutObject"):
        plan_program(program, BASE_CONFIG)


def test_llmcloud_plan_shows_role_policy_and_association_per_service_account(tmp_path):
    project = write_project(tmp_path / "project", _two_pod_roles(), BASE_CONFIG)
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--project", str(project), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_parent: dict[str, Counter] = {}
    components = {
        r["urn"]: r["name"] for r in report["resources"] if r["type"] == "llmcloud:security:PodRole"
    }
    for r in report["resources"]:
        if r["parent"] in components:
            by_parent.setdefault(components[r["parent"]], Counter())[r["type"]] += 1
    expected = Counter(
        {
            "aws:iam/role:Role": 1,
            "aws:iam/rolePolicy:RolePolicy": 1,
            "aws:eks/podIdentityAssociation:PodIdentityAssociation": 1,
        }
    )
    assert by_parent == {"trainer-gpt": expected, "server-llama": expected}
    associations = sorted(
        (r["inputs"]["namespace"], r["inputs"]["serviceAccount"])
        for r in report["resources"]
        if r["type"] == "aws:eks/podIdentityAssociation:PodIdentityAssociation"
    )
    assert associations == [("serving", "llama"), ("training", "gpt")]

    table = runner.invoke(app, ["plan", "--project", str(project)])
    assert table.exit_code == 0, table.output
    for text in ("llmcloud:security:PodRole trainer-gpt", "llmcloud:security:PodRole server-llama"):
        assert text in table.stdout
    assert "PodIdentityAssociation" in table.stdout


# ----------------------------------------------------------------------------- data stager


def test_data_stager_role_exists_only_when_stagers_are_configured(dev_plan):
    assert not dev_plan.by_type("llmcloud:security:DataStagerRole")
    stagers = ["arn:aws:iam::111122223333:role/ci-stager", "arn:aws:iam::111122223333:root"]
    raw_security = load_stack_config(ROOT, "dev").security.model_dump(
        mode="json", exclude_unset=True
    )
    plan = evaluate(
        ROOT,
        "dev",
        config_overrides={"llmcloud:security": {**raw_security, "data_stager_arns": stagers}},
    )
    (role,) = [
        r
        for r in plan.by_type("aws:iam/role:Role")
        if component_type(plan, r) == "llmcloud:security:DataStagerRole"
    ]
    assert trust_problems(plan, role, set(stagers)) == []
    assert trust_problems(plan, role, {stagers[0]}) != []  # a principal not in config
    (statement,) = trust_statements(role)
    assert statement["Principal"] == {"AWS": sorted(stagers)}
    policy = next(
        r
        for r in plan.children(plan.component_of(role).urn)
        if r.type == "aws:iam/rolePolicy:RolePolicy"
    )
    datasets = next(
        b for b in plan.by_type("aws:s3/bucket:Bucket") if "datasets" in b.outputs["bucket"]
    )
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    assert statements["WriteAndVerifyDatasets"]["Resource"] == (
        f"{datasets.outputs['arn']}/datasets/*"
    )
    assert plan.outputs["datasets_stage_uri"] == f"s3://{datasets.outputs['bucket']}/datasets/"
    assert plan.outputs["data_stager_role_arn"] == role.outputs["arn"]


# ----------------------------------------------------------------------------- builders


def _actions(statements: list[dict], sid: str) -> set[str]:
    return set(as_list(next(s for s in statements if s["Sid"] == sid)["Action"]))


def test_training_reads_datasets_and_rotates_its_own_checkpoints_only():
    s = training_statements(BUCKET, "datasets/", CKPT, "checkpoints/gpt/", KEY)
    assert not any(a.startswith(("s3:Put", "s3:Delete")) for a in _actions(s, "ReadDatasets"))
    assert {"s3:PutObject", "s3:DeleteObject", "s3:GetObject"} <= _actions(
        s, "ReadWriteCheckpoints"
    )
    listing = next(x for x in s if x["Sid"] == "ListCheckpoints")
    assert listing["Resource"] == CKPT
    assert listing["Condition"] == {
        "StringLike": {"s3:prefix": ["checkpoints/gpt/", "checkpoints/gpt/*"]}
    }
    kms = next(x for x in s if x["Sid"] == "UseDataKey")
    assert kms["Resource"] == KEY and "Condition" not in kms


def test_serving_can_only_read_its_model_prefix():
    s = serving_statements(MODELS, "llama/", KEY, region="us-east-2")
    actions = set().union(*(set(as_list(x["Action"])) for x in s))
    assert all(is_read_only(a) or a == "kms:Decrypt" for a in actions), actions
    kms = next(x for x in s if x["Sid"] == "DecryptWithDataKey")
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-2.amazonaws.com"}}


def test_staging_writes_with_multipart_but_never_deletes():
    s = staging_statements(BUCKET, "datasets/", KEY)
    write = _actions(s, "WriteAndVerifyDatasets")
    assert {"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"} <= write
    assert {"s3:GetObject"} <= write
    assert not any("Delete" in a for x in s for a in as_list(x["Action"]))
    assert _actions(s, "UseDataKey") == {"kms:Decrypt", "kms:GenerateDataKey"}


def test_the_whole_bucket_needs_no_prefix_condition():
    s = serving_statements(MODELS, "", KEY)
    listing = next(x for x in s if x["Sid"] == "ListModel")
    assert "Condition" not in listing


@pytest.mark.parametrize("prefix", ["/datasets/", "datasets", "data/*/", "../x/", "s3://b/x/"])
def test_builders_refuse_prefixes_they_cannot_scope_to(prefix):
    with pytest.raises(ValueError, match="prefix"):
        training_statements(BUCKET, prefix, CKPT, "checkpoints/", KEY)


@pytest.mark.parametrize(
    ("statement", "key_policy", "expected"),
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b"}, False, "every action"),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b"}, False, "s3:*"),
        ({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}, False, "write"),
        ({"Effect": "Allow", "Action": "iam:PassRole", "Resource": ["*"]}, False, "write"),
        ({"Effect": "Allow", "NotAction": "s3:GetObject", "Resource": "x"}, False, "NotAction"),
        (
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:role/x"}, "Action": "kms:*"},
            True,
            "every action",
        ),
    ],
)
def test_statement_problems_flags_wildcards(statement, key_policy, expected):
    problems = statement_problems(statement, key_policy=key_policy)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("statement", "key_policy"),
    [
        ({"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}, False),
        ({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}, False),
        (
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            True,
        ),
        ({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}, True),
    ],
)
def test_statement_problems_accepts_reads_denies_and_key_policies(statement, key_policy):
    assert statement_problems(statement, key_policy=key_policy) == []


def test_policy_documents_finds_documents_at_any_depth(tmp_path):
    doc = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]})
    r = Resource(
        urn="u",
        type="aws:iam/role:Role",
        name="r",
        parent=None,
        custom=True,
        inputs={"assumeRolePolicy": doc, "inlinePolicies": [{"name": "p", "policy": doc}]},
    )
    plan = Plan("p", "s", Path(tmp_path), Path(tmp_path), [r], {}, set(), [], 0.0)
    assert [path for _, path, _ in policy_documents(plan)] == [
        "assumeRolePolicy",
        "inlinePolicies[0].policy",
    ]
