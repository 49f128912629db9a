"""The pack's rules, one module per service. `build_policies(settings)` returns the policy
objects that both `policies/__main__.py` (CrossGuard) and `llmcloud plan` run.

Imports stay inside the functions: the stack config imports `policies.rules.ids` to check
waiver rule ids, and must not pull in the policy SDK (or itself, circularly) to do so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.rules.base import PolicySettings, RuleInfo

RULE_MODULES = (
    "s3",
    "kms",
    "eks",
    "ec2",
    "network",
    "iam",
    "fsx",
    "kubernetes",
    "tags",
    "budget",
    "waivers",
)


def build_policies(settings: PolicySettings | None = None) -> list[Any]:
    """Every rule of the pack as a pulumi-policy Policy, configured for one stack."""
    import importlib

    from policies.rules.base import PolicySettings

    settings = settings or PolicySettings()
    out: list[Any] = []
    for name in RULE_MODULES:
        out.extend(importlib.import_module(f"policies.rules.{name}").policies(settings))
    return out


def rule_infos() -> list[RuleInfo]:
    """Metadata of every rule, in pack order."""
    return [p.info for p in build_policies()]
