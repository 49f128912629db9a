"""Optional CI/CD bootstrap: GitHub Actions reaches AWS through OIDC, never with stored keys.

Two roles per stack: a read-only *preview* role that only the stack's read-only GitHub
environment (`<stack>-preview`: pull-request previews, the nightly drift check) may assume,
and a *deploy* role that only the stack's deploy environment (`<stack>`, protected: branch
`main`, reviewers in prod) may assume (`pulumi up`). The trust policies pin the audience
(sts.amazonaws.com) and the `sub` claim exactly, as GitHub sends it (`subject_claim`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import CiConfig
from infra.context import Context, policy_document
from infra.contracts import STS_AUDIENCE
from infra.security.roles import attach_managed_policies, managed_policy_arn

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
# The thumbprint list is optional for GitHub's issuer since 2023 (IAM trusts its CA
# library); the provider still accepts it, and older accounts expect one.
GITHUB_THUMBPRINTS = [
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
]

# Deploying creates IAM roles, KMS keys, clusters and buckets: PowerUserAccess covers all but
# IAM; IAM is granted on its own so it can be narrowed with a permissions boundary.
DEPLOY_MANAGED_POLICIES = ("PowerUserAccess", "IAMFullAccess")


def subject_claim(
    repository: str, *, event: str, environment: str | None = None, ref: str | None = None
) -> str:
    """The `sub` claim GitHub puts in a job's OIDC token (default subject template).

    GitHub's OIDC reference, "Example subject claims"
    (https://docs.github.com/en/actions/reference/security/oidc#example-subject-claims):
    a job that references an environment gets `repo:ORG/REPO:environment:NAME`, whatever its
    event; otherwise a `pull_request` job gets `repo:ORG/REPO:pull_request`, and a job of any
    other event `repo:ORG/REPO:ref:<the git ref>` (`refs/heads/main`, `refs/tags/v1`)."""
    if environment:
        return f"repo:{repository}:environment:{environment}"
    if event == "pull_request":
        return f"repo:{repository}:pull_request"
    if not ref:
        raise ValueError(f"a {event} job without an environment is identified by its ref")
    return f"repo:{repository}:ref:{ref}"


def preview_environments(cfg: CiConfig, stack: str) -> list[str]:
    """The GitHub environments whose jobs may assume the stack's read-only role."""
    return list(cfg.preview_environments) or [f"{stack}-preview"]


def deploy_environments(cfg: CiConfig, stack: str) -> list[str]:
    """The GitHub environments whose jobs may assume the stack's deploy role."""
    return list(cfg.deploy_environments) or [stack]


@dataclass(frozen=True)
class GithubOidcArgs:
    config: CiConfig
    stack: str


class GithubOidc(pulumi.ComponentResource):
    """The GitHub OIDC provider (or an existing one) and the preview and deploy roles."""

    preview_role: aws.iam.Role
    deploy_role: aws.iam.Role

    def __init__(
        self,
        name: str,
        args: GithubOidcArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cicd:GithubOidc", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.config
        if cfg.create_oidc_provider:
            provider_arn = aws.iam.OpenIdConnectProvider(
                "github",
                url=f"https://{GITHUB_OIDC_HOST}",
                client_id_lists=[STS_AUDIENCE],
                thumbprint_lists=GITHUB_THUMBPRINTS,
                opts=child,
            ).arn
        else:
            provider_arn = pulumi.Output.from_input(cfg.existing_oidc_provider_arn or "")

        repo = cfg.github_repository
        environments = deploy_environments(cfg, args.stack)
        readers = preview_environments(cfg, args.stack)
        self.preview_role = aws.iam.Role(
            "preview-role",
            description=f"pulumi preview and drift of {repo} from {', '.join(readers)} (read-only)",
            assume_role_policy=_github_trust(
                provider_arn,
                [subject_claim(repo, event="pull_request", environment=e) for e in readers],
            ),
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            "preview-readonly",
            role=self.preview_role.name,
            policy_arn=managed_policy_arn(ctx, "ReadOnlyAccess"),
            opts=child,
        )
        self.deploy_role = aws.iam.Role(
            "deploy-role",
            description=f"pulumi up of {repo} from its GitHub environments {', '.join(environments)}",
            assume_role_policy=_github_trust(
                provider_arn,
                [subject_claim(repo, event="push", environment=e) for e in environments],
            ),
            max_session_duration=3600,
            opts=child,
        )
        attach_managed_policies(self.deploy_role, "deploy", DEPLOY_MANAGED_POLICIES, ctx, child)
        self.register_outputs(
            {"preview_role_arn": self.preview_role.arn, "deploy_role_arn": self.deploy_role.arn}
        )


def _github_trust(provider_arn: pulumi.Input[str], subjects: list[str]) -> pulumi.Output[str]:
    return policy_document(
        [
            {
                "Sid": "GithubActionsOidc",
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": subjects if len(subjects) > 1 else subjects[0],
                    }
                },
            }
        ]
    )
