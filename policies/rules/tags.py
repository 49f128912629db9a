"""Cost-allocation tags: every taggable AWS resource carries the required tags, counting the
AWS provider's default tags (which the provider merges into every resource it creates, and
which the resources' own `tags` do not repeat).

Which types are taggable comes from pulumi-aws's own declarations (`tags` among a resource's
inputs), generated into `data/aws_taggable_types.json`:

    python -m policies.rules.tags --write
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from pulumi_policy import PolicyConfigSchema

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    is_unknown,
)

TAGGABLE_PATH = Path(__file__).resolve().parent / "data" / "aws_taggable_types.json"

TAGS_REQUIRED = RuleInfo(
    id="tags-required",
    title="Resources carry the cost-allocation tags",
    description="Every taggable AWS resource carries the required cost-allocation tags "
    "(policies.required_tags), from its own tags or the provider's default tags.",
    severity="low",
    remediation="Set the tags once as the AWS provider's default_tags (llmcloud:tags in the "
    "stack config feeds them), or on the resource's tags.",
)


@cache
def taggable_types() -> frozenset[str]:
    data = json.loads(TAGGABLE_PATH.read_text())
    return frozenset(data["types"])


def provider_default_tags(provider: Any) -> dict[str, Any] | None:
    """The default tags of an AWS provider resource; None if they cannot be known yet.

    The provider's `defaultTags` input reaches the engine as a JSON string
    (`{"tags": {...}}`); an object is accepted too."""
    if provider is None:
        return {}
    props = provider.props
    value = props.get("defaultTags") if hasattr(props, "get") else None
    if value is None:
        return {}
    if is_unknown(value):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if hasattr(value, "get"):
        tags = value.get("tags")
        if is_unknown(tags):
            return None
        if hasattr(tags, "items"):
            return {k: tags[k] for k in tags}
    return {}


def check_tags(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    required = list(args.get_config().get("requiredTags") or settings.required_tags)
    if not required:
        return
    own = props.get("tags")
    if is_unknown(own):
        return
    defaults = provider_default_tags(args.provider)
    if defaults is None:
        return
    tags = {**defaults, **(own if isinstance(own, dict) else {})}
    missing = [t for t in required if t not in tags or tags[t] in (None, "")]
    if missing:
        report(
            f"{args.name!r} lacks the cost-allocation tag(s) {', '.join(missing)} (neither on the "
            "resource nor in its provider's default tags)"
        )


TAGS_SCHEMA = PolicyConfigSchema(
    properties={
        "requiredTags": {
            "type": "array",
            "items": {"type": "string"},
            "description": "tag keys every taggable AWS resource must carry",
        }
    }
)


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(
            TAGS_REQUIRED, settings, check_tags, taggable_types(), config_schema=TAGS_SCHEMA
        )
    ]


def generate() -> dict[str, Any]:
    """The taggable types of the installed pulumi-aws (imports every module: ~30 s)."""
    from importlib.metadata import version

    from infra.plan.schema import _input_fields, _token_index, args_class

    types = []
    for token in sorted(_token_index("aws")):
        cls = args_class(token)
        if cls is not None and "tags" in _input_fields(cls)[0]:
            types.append(token)
    return {
        "source": "pulumi-aws resource input declarations (`tags` among the inputs)",
        "pulumi_aws": version("pulumi_aws"),
        "types": types,
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        print("usage: python -m policies.rules.tags --write", file=sys.stderr)
        sys.exit(2)
    TAGGABLE_PATH.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {TAGGABLE_PATH}")
