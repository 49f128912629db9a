"""The optional CI/CD bootstrap: GitHub OIDC roles with exact trust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.config import ConfigError, load_stack_config, parse_stack_config
from infra.plan.engine import evaluate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ci_plan():
    return evaluate(
        ROOT, "staging", config_overrides={"llmcloud:ci": {"github_repository": "acme/llmcloud"}}
    )


def trust(plan, name):
    role = next(r for r in plan.by_type("aws:iam/role:Role") if r.name == name)
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    return statement


def test_preview_role_trusts_only_pull_requests_of_the_repository(ci_plan):
    provider = ci_plan.by_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")[0]
    statement = trust(ci_plan, "preview-role")
    assert statement["Principal"] == {"Federated": provider.outputs["arn"]}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"]["StringEquals"] == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": "repo:acme/llmcloud:pull_request",
    }


def test_deploy_role_trusts_only_the_stacks_github_environment(ci_plan):
    statement = trust(ci_plan, "deploy-role")
    sub = statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
    assert sub == "repo:acme/llmcloud:environment:staging"
    assert "StringLike" not in statement["Condition"]


def test_roles_are_exported_for_the_workflow_variables(ci_plan):
    assert ci_plan.outputs["ci_preview_role_arn"].startswith("arn:aws:iam::")
    assert ci_plan.outputs["ci_deploy_role_arn"].startswith("arn:aws:iam::")


def test_no_ci_roles_unless_configured():
    assert load_stack_config(ROOT, "prod").ci is None


def test_an_existing_provider_must_be_named_when_not_created():
    with pytest.raises(
        ConfigError, match=r"llmcloud:ci.existing_oidc_provider_arn = null: required"
    ):
        parse_stack_config(
            {
                "aws:region": "us-east-1",
                "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
                "llmcloud:ci": {"github_repository": "acme/x", "create_oidc_provider": False},
            },
            project="llmcloud",
            stack="dev",
        )
