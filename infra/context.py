"""What every component is handed besides its args: the providers and the account facts.

No globals: the platform builds one `Context` and passes it down, so a component is as
testable as a function of its arguments. The stack config is not in it: what a component
needs of the config comes through its own typed `Args`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig


@dataclass(frozen=True)
class Context:
    aws_provider: aws.Provider
    account_id: str
    partition: str
    region: str
    prefix: str  # of physical names (cluster, buckets): `name_prefix` or `llm-<stack>`
    # more providers by package name ("kubernetes" once the cluster exists)
    providers: dict[str, pulumi.ProviderResource] = field(default_factory=dict)

    def with_provider(self, package: str, provider: pulumi.ProviderResource) -> Context:
        """This context with one more provider (the cluster's Kubernetes provider)."""
        return dataclasses.replace(self, providers={**self.providers, package: provider})

    def opts(self, parent: pulumi.Resource | None = None, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a component: our providers, and the parent if given."""
        return pulumi.ResourceOptions(
            parent=parent,
            providers={"aws": self.aws_provider, **self.providers},
            **kwargs,
        )

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        """An ARN in this account: `arn(iam, "role/x", region=False)`."""
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.account_id}:{resource}"


def make_context(config: StackConfig) -> Context:
    provider = aws.Provider(
        "aws",
        region=config.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=config.default_tags),
    )
    # Plain (blocking) invokes: the account and partition are facts every ARN needs, and as
    # strings they cost nothing where an Output would cost an apply per ARN.
    invoke = pulumi.InvokeOptions(provider=provider)
    identity = aws.get_caller_identity(opts=invoke)
    partition = aws.get_partition(opts=invoke)
    return Context(
        aws_provider=provider,
        account_id=identity.account_id,
        partition=partition.partition,
        region=config.region,
        prefix=config.prefix,
    )


def policy_document(statements: list[dict[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy document as JSON, resolving any Outputs inside the statements.

    Built in Python rather than with `aws.iam.get_policy_document`: no provider call, and
    the plan shows exactly the JSON that IAM receives. Only the Outputs inside are awaited
    (one `Output.all`), not every nested dict and list, which keeps large programs fast."""
    document = {"Version": "2012-10-17", "Statement": statements}
    outputs: list[Any] = []
    template = _hole_out(document, outputs)
    if not outputs:
        return pulumi.Output.from_input(json.dumps(document, sort_keys=True))
    return pulumi.Output.all(*outputs).apply(
        lambda values: json.dumps(_fill(template, values), sort_keys=True)
    )


class _Hole:
    """Where the n-th Output of a document goes once resolved."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _hole_out(value: Any, outputs: list[Any]) -> Any:
    if isinstance(value, pulumi.Output) or inspect.isawaitable(value):
        outputs.append(value)
        return _Hole(len(outputs) - 1)
    if isinstance(value, dict):
        return {k: _hole_out(v, outputs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hole_out(v, outputs) for v in value]
    return value


def _fill(template: Any, values: list[Any]) -> Any:
    if isinstance(template, _Hole):
        return values[template.index]
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template
