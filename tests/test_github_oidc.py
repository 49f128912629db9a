"""The optional CI/CD bootstrap: GitHub OIDC roles with exact trust."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_stack_config, parse_stack_config
from infra.plan.engine import evaluate
from infra.security.github_oidc import subject_claim

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


def test_preview_role_trusts_only_the_stacks_read_only_environment(ci_plan):
    provider = ci_plan.by_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")[0]
    statement = trust(ci_plan, "preview-role")
    assert statement["Principal"] == {"Federated": provider.outputs["arn"]}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"]["StringEquals"] == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": "repo:acme/llmcloud:environment:staging-preview",
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
    config = parse_stack_config(
        {
            "aws:region": "us-east-1",
            "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
        },
        project="llmcloud",
        stack="dev",
    )
    assert config.ci is None


def test_dev_and_staging_bootstrap_their_ci_roles_prod_names_its_baseline_role():
    for stack in ("dev", "staging"):
        assert load_stack_config(ROOT, stack).ci.github_repository == "acme/llmcloud"
    prod = load_stack_config(ROOT, "prod")
    assert prod.ci is None  # no PowerUserAccess/IAMFullAccess role in prod's own stack
    assert prod.deploy.deployer_arns == ["arn:aws:iam::444455556666:role/llmcloud-github-deploy"]


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


# --------------------------------------------------------------------------- trust vs. GitHub


def admits(statement: dict, claims: dict[str, str]) -> bool:
    """IAM's evaluation of the trust statement's conditions for a web-identity token: every
    operator block must hold, every key in it, a list meaning any of its values."""
    for operator, block in statement["Condition"].items():
        for key, wanted in block.items():
            value = claims.get(key)
            options = wanted if isinstance(wanted, list) else [wanted]
            if operator == "StringEquals":
                ok = value in options
            elif operator == "StringLike":
                ok = value is not None and any(fnmatch.fnmatchcase(value, o) for o in options)
            else:
                raise AssertionError(f"operator {operator} not modelled")
            if not ok:
                return False
    return True


def token(sub: str) -> dict[str, str]:
    return {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": sub,
    }


ROLE_OF_VARIABLE = {"AWS_PREVIEW_ROLE_ARN": "preview-role", "AWS_DEPLOY_ROLE_ARN": "deploy-role"}


def aws_jobs(stack: str):
    """(workflow, job id, the event that runs it, its environment, the role it assumes) of every
    workflow job that assumes an AWS role, with the stack substituted."""
    callers = {"deploy-stack.yml": "push"}  # called by deploy.yml, on push to main
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        on = doc.get("on", doc.get(True))
        events = [
            e for e in (on if isinstance(on, dict) else {on: None}) if e != "workflow_dispatch"
        ]
        event = callers.get(path.name) or (
            "pull_request" if "pull_request" in events else events[0]
        )
        for job_id, job in doc["jobs"].items():
            for step in job.get("steps", []):
                if not step.get("uses", "").startswith("aws-actions/configure-aws-credentials@"):
                    continue
                variable = re.fullmatch(r"\$\{\{ vars\.(\w+) \}\}", step["with"]["role-to-assume"])
                environment = job.get("environment")
                if environment is not None:
                    environment = re.sub(r"\$\{\{ (matrix|inputs)\.stack \}\}", stack, environment)
                yield path.name, job_id, event, environment, ROLE_OF_VARIABLE[variable[1]]


def test_every_aws_job_is_admitted_by_the_role_it_assumes_and_by_no_other(ci_plan):
    jobs = list(aws_jobs("staging"))
    assert {(w, j) for w, j, *_ in jobs} >= {
        ("deploy-stack.yml", "up"),
        ("drift.yml", "drift"),
        ("pull-request.yml", "preview"),
    }
    roles = {name: trust(ci_plan, name) for name in ROLE_OF_VARIABLE.values()}
    for workflow, job_id, event, environment, role in jobs:
        sub = subject_claim(
            "acme/llmcloud", event=event, environment=environment, ref="refs/heads/main"
        )
        assert admits(roles[role], token(sub)), f"{workflow}:{job_id} sends {sub}; {role} refuses"
        for other, statement in roles.items():
            if other != role:
                assert not admits(statement, token(sub)), f"{other} admits {workflow}:{job_id}"


@pytest.mark.parametrize(
    "sub",
    [
        "repo:acme/llmcloud:pull_request",  # a PR job without an environment
        "repo:acme/llmcloud:ref:refs/heads/main",  # a push job without an environment
        "repo:acme/llmcloud:environment:prod",  # another stack's environment
        "repo:acme/llmcloud:environment:prod-preview",
        "repo:evil/llmcloud:environment:staging",  # another repository
        "repo:acme/llmcloud:environment:staging-preview-x",
    ],
)
def test_no_role_admits_subjects_outside_its_environments(ci_plan, sub):
    for name in ROLE_OF_VARIABLE.values():
        assert not admits(trust(ci_plan, name), token(sub)), f"{name} admits {sub}"


def test_a_token_for_another_audience_is_refused(ci_plan):
    claims = token("repo:acme/llmcloud:environment:staging")
    claims["token.actions.githubusercontent.com:aud"] = "https://github.com/acme"
    assert not admits(trust(ci_plan, "deploy-role"), claims)


def test_subject_claims_follow_githubs_examples():
    # docs.github.com/en/actions/reference/security/oidc#example-subject-claims
    assert (
        subject_claim("octo-org/octo-repo", event="push", environment="Production")
        == "repo:octo-org/octo-repo:environment:Production"
    )
    assert (
        subject_claim("octo-org/octo-repo", event="pull_request")
        == "repo:octo-org/octo-repo:pull_request"
    )
    assert (
        subject_claim("octo-org/octo-repo", event="push", ref="refs/heads/demo-branch")
        == "repo:octo-org/octo-repo:ref:refs/heads/demo-branch"
    )
    # an environment wins over the event: a PR job in an environment is not `pull_request`
    assert subject_claim("o/r", event="pull_request", environment="dev-preview").endswith(
        ":environment:dev-preview"
    )
