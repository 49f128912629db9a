"""What every component is handed: the stack config, the providers and the account facts.

No globals: the platform builds one `Context` and passes it down, so a component is as
testable as a function of its arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig


@dataclass(frozen=True)
class Context:
    config: StackConfig
    aws_provider: aws.Provider
    account_id: pulumi.Output[str]
    partition: pulumi.Output[str]
    providers: dict[str, pulumi.ProviderResource] = field(default_factory=dict)

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def prefix(self) -> str:
        return self.config.prefix

    def opts(self, parent: pulumi.Resource | None = None, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a component: our providers, and the parent if given."""
        return pulumi.ResourceOptions(
            parent=parent,
            providers={"aws": self.aws_provider, **self.providers},
            **kwargs,
        )

    def arn(self, service: str, resource: str, *, region: bool = True) -> pulumi.Output[str]:
        """An ARN in this account: `arn(iam, "role/x", region=False)`."""
        return pulumi.Output.all(self.partition, self.account_id).apply(
            lambda pa: f"arn:{pa[0]}:{service}:{self.region if region else ''}:{pa[1]}:{resource}"
        )


def make_context(config: StackConfig) -> Context:
    provider = aws.Provider(
        "aws",
        region=config.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=config.default_tags),
    )
    invoke = pulumi.InvokeOptions(provider=provider)
    identity = aws.get_caller_identity_output(opts=invoke)
    partition = aws.get_partition_output(opts=invoke)
    return Context(
        config=config,
        aws_provider=provider,
        account_id=identity.account_id,
        partition=partition.partition,
    )


def policy_document(statements: list[dict[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy document as JSON, resolving any Outputs inside the statements.

    Built in Python rather than with `aws.iam.get_policy_document`: no provider call, and
    the plan shows exactly the JSON that IAM receives."""
    return pulumi.Output.from_input({"Version": "2012-10-17", "Statement": statements}).apply(
        lambda doc: json.dumps(doc, sort_keys=True)
    )


def name_tag(name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Name": name, **(extra or {})}
