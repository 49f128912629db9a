"""The deploy path: where each stack's Kubernetes layer is deployed from (an in-VPC CodeBuild
runner), who deploys it (an access entry), and the rule that a private cluster declares both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from infra.plan.engine import PlanError, evaluate
from infra.plan.policy_runner import run_policies
from infra.security import deploy_runner
from policies.rules import deploy_path

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "staging", "prod")
RULE = "eks-private-deploy-path"


def by_name(plan, type_, name):
    return next(r for r in plan.by_type(type_) if r.name == name)


@pytest.mark.parametrize("stack", STACKS)
def test_the_plan_shows_where_the_kubernetes_layer_is_deployed_from(stack, stack_report):
    layer = stack_report(stack).plan.outputs["kubernetes_layer"]
    assert layer["deployed_from"] == "codebuild_runner"
    assert layer["runner_project"] == f"llm-{stack}-deploy"
    assert layer["runs_on"] == (
        f"codebuild-llm-{stack}-deploy-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}"
    )
    # staging and dev: the stack's own CI deploy role; prod: the account baseline's
    deployer = "role/llmcloud-github-deploy" if stack == "prod" else ":role/deploy-role"
    assert any(deployer in a for a in layer["deployers"])


def test_prod_runner_sits_in_the_private_subnets_and_only_it_reaches_the_api(prod_plan):
    project = by_name(prod_plan, "aws:codebuild/project:Project", "deploy-runner-project")
    subnets = {
        r.outputs["id"] for r in prod_plan.by_type("aws:ec2/subnet:Subnet") if "private" in r.name
    }
    assert set(project.inputs["vpcConfig"]["subnets"]) <= subnets
    assert project.inputs["vpcConfig"]["subnets"]
    assert project.inputs["source"]["auth"]["type"] == "CODECONNECTIONS"
    webhook = by_name(prod_plan, "aws:codebuild/webhook:Webhook", "deploy-runner-webhook")
    assert webhook.inputs["filterGroups"] == [
        {"filters": [{"type": "EVENT", "pattern": "WORKFLOW_JOB_QUEUED"}]}
    ]
    runner_sg = by_name(prod_plan, "aws:ec2/securityGroup:SecurityGroup", "deploy-runner-sg")
    cluster = prod_plan.by_type("aws:eks/cluster:Cluster")[0]
    cluster_sg = cluster.outputs["vpcConfig"]["clusterSecurityGroupId"]
    api_rules = [
        r
        for r in prod_plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("securityGroupId") == cluster_sg
        and r.inputs.get("fromPort", 0) <= 443 <= r.inputs.get("toPort", 65535)
    ]
    assert [
        (
            r.inputs["fromPort"],
            r.inputs["toPort"],
            r.inputs.get("referencedSecurityGroupId"),
            r.inputs.get("cidrIpv4"),
        )
        for r in api_rules
    ] == [(443, 443, runner_sg.outputs["id"], None)]


def test_the_runner_role_cannot_deploy_and_only_codebuild_of_this_project_assumes_it(prod_plan):
    role = by_name(prod_plan, "aws:iam/role:Role", "deploy-runner-role")
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "codebuild.amazonaws.com"}
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"].endswith(":project/llm-prod-deploy")
    policy = json.loads(
        by_name(prod_plan, "aws:iam/rolePolicy:RolePolicy", "deploy-runner-policy").inputs["policy"]
    )
    actions = {
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert not any(a.startswith(("iam:", "eks:", "sts:")) for a in actions)
    attachments = [
        r
        for r in prod_plan.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.inputs["role"] == role.outputs["name"]
    ]
    assert attachments == []


def access_policies(plan) -> dict[str, str]:
    return {
        r.inputs["principalArn"]: r.inputs["policyArn"].rsplit("/", 1)[1]
        for r in plan.by_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }


def test_the_stacks_ci_deploy_role_is_a_cluster_admin_and_its_preview_role_reads_secrets_too(
    staging_plan,
):
    deploy = by_name(staging_plan, "aws:iam/role:Role", "deploy-role").outputs["arn"]
    preview = by_name(staging_plan, "aws:iam/role:Role", "preview-role").outputs["arn"]
    policies = access_policies(staging_plan)
    assert policies[deploy] == "AmazonEKSClusterAdminPolicy"
    # a refreshing preview reads the stack's Secrets too (the serving API key)
    assert policies[preview] == "AmazonEKSAdminViewPolicy"


def test_prods_baseline_deploy_role_gets_a_cluster_admin_entry(prod_plan):
    policies = access_policies(prod_plan)
    assert policies["arn:aws:iam::444455556666:role/llmcloud-github-deploy"] == (
        "AmazonEKSClusterAdminPolicy"
    )
    assert policies["arn:aws:iam::444455556666:role/llmcloud-github-preview"] == (
        "AmazonEKSAdminViewPolicy"
    )
    assert "arn:aws:iam::444455556666:role/ml-engineers" in policies  # people: plain view
    assert policies["arn:aws:iam::444455556666:role/ml-engineers"] == "AmazonEKSViewPolicy"


def test_workflow_jobs_that_reach_kubernetes_run_on_the_stacks_runner():
    wanted = {
        "deploy-stack.yml": ("up", "inputs"),
        "drift.yml": ("drift", "matrix"),
        "pull-request.yml": ("preview", "matrix"),
    }
    for workflow, (job_id, context) in wanted.items():
        job = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())["jobs"][
            job_id
        ]
        for stack in STACKS:
            label = job["runs-on"].replace(f"${{{{ {context}.stack }}}}", stack)
            assert label == deploy_runner.runs_on(f"llm-{stack}"), f"{workflow}:{job_id}"


def test_rule_and_component_use_the_same_tags():
    assert deploy_path.DEPLOYS_TAG == deploy_runner.DEPLOYS_TAG
    assert deploy_path.DEPLOYERS_TAG == deploy_runner.DEPLOYERS_TAG


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_pass_the_deploy_path_rule(stack, stack_report):
    assert [v for v in stack_report(stack).violations if v.policy == RULE] == []


def test_a_private_cluster_without_a_deploy_path_fails_the_rule_mandatory_in_prod():
    plan = evaluate(ROOT, "prod", config_overrides={"llmcloud:deploy": {}})
    config = stack_config(plan)
    violations = [v for v in run_policies(plan, config) if v.policy == RULE]
    assert [v.enforcement for v in violations] == ["mandatory"]
    assert "declares no place" in violations[0].message
    assert plan.outputs["kubernetes_layer"]["deployed_from"] == "undeclared"


def test_a_deployer_without_an_access_entry_fails_the_rule(prod_plan):
    project = by_name(prod_plan, "aws:codebuild/project:Project", "deploy-runner-project")
    tags = dict(project.inputs["tags"])
    tags["llmcloud:deployers"] += " arn:aws:iam::444455556666:role/nobody"
    violations = deploy_path_violations(prod_plan, {project.urn: {"tags": tags}})
    assert [m for m in violations if "role/nobody has no cluster-admin access entry" in m]
    assert deploy_path_violations(prod_plan, {}) == []


def test_a_public_endpoint_deploy_path_needs_a_public_endpoint():
    with pytest.raises(PlanError, match=r"llmcloud:deploy.kubernetes_from = 'public_endpoint'"):
        evaluate(
            ROOT,
            "staging",
            config_overrides={"llmcloud:deploy": {"kubernetes_from": "public_endpoint"}},
        )


def test_runner_config_names_a_codeconnections_arn():
    with pytest.raises(PlanError, match=r"llmcloud:deploy.runner.connection_arn"):
        evaluate(
            ROOT,
            "staging",
            config_overrides={
                "llmcloud:deploy": {
                    "kubernetes_from": "codebuild_runner",
                    "runner": {
                        "github_repository": "acme/llmcloud",
                        "connection_arn": "github-token",
                    },
                }
            },
        )
    assert re.fullmatch(
        r"codebuild-[a-z0-9-]+-\$\{\{ github.run_id \}\}-\$\{\{ github.run_attempt \}\}",
        deploy_runner.runs_on("llm-x"),
    )


def stack_config(plan):
    """prod's config with an empty llmcloud:deploy (what the plan above ran)."""
    from infra.config import load_stack_config
    from infra.config.schema import DeployConfig

    return load_stack_config(ROOT, "prod").model_copy(update={"deploy": DeployConfig()})


class _Args:
    """A stack's resources as CrossGuard hands them to a stack rule, some inputs overridden."""

    def __init__(self, plan, overrides):
        self.resources = [
            type(
                "R",
                (),
                {
                    "urn": r.urn,
                    "name": r.name,
                    "resource_type": r.type,
                    "props": {**r.inputs, **overrides.get(r.urn, {})},
                    "dependencies": [],
                    "property_dependencies": {},
                },
            )()
            for r in plan.resources
        ]


def deploy_path_violations(plan, overrides) -> list[str]:
    messages: list[str] = []
    deploy_path.check_deploy_path(
        _Args(plan, overrides), lambda m, urn=None: messages.append(m), None
    )
    return messages


def test_a_connected_network_declares_443_from_its_ranges_and_passes_the_rule():
    deploy = {"kubernetes_from": "connected_network", "connected_cidrs": ["10.99.0.0/16"]}
    plan = evaluate(ROOT, "staging", config_overrides={"llmcloud:deploy": deploy})
    cluster_sg = plan.by_type("aws:eks/cluster:Cluster")[0].outputs["vpcConfig"][
        "clusterSecurityGroupId"
    ]
    rules = [
        r
        for r in plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("cidrIpv4") == "10.99.0.0/16"
    ]
    assert [(r.inputs["securityGroupId"], r.inputs["fromPort"]) for r in rules] == [
        (cluster_sg, 443)
    ]
    assert not plan.by_type("aws:codebuild/project:Project")
    assert [v for v in run_policies(plan, None) if v.policy == RULE] == []
    assert plan.outputs["kubernetes_layer"]["connected_cidrs"] == ["10.99.0.0/16"]


def test_the_bootstrap_exclude_is_the_kubernetes_provider_every_kubernetes_resource_uses(
    prod_plan,
):
    urn = prod_plan.outputs["kubernetes_layer"]["bootstrap_exclude"]
    (provider,) = prod_plan.by_type("pulumi:providers:kubernetes")
    assert urn == provider.urn


def test_a_reader_may_not_also_be_a_person_with_an_entry():
    reader = {
        "llmcloud:deploy": {
            "kubernetes_from": "codebuild_runner",
            "runner": {
                "github_repository": "acme/llmcloud",
                "connection_arn": "arn:aws:codeconnections:us-east-1:111122223333:connection/"
                "0b7e6a52-6f1c-4a3e-9d2b-1c8e5f4a7d10",
            },
            "reader_arns": ["arn:aws:iam::111122223333:role/ml-engineers"],
        }
    }
    with pytest.raises(PlanError, match=r"llmcloud:deploy.reader_arns\[0\]"):
        evaluate(ROOT, "staging", config_overrides=reader)
