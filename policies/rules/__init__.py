"""The pack's rule registry: `RULE_MODULES` is the one place a rule module is registered.

Adding a rule = one new module here plus one line in `RULE_MODULES` (see the README,
"Adding a policy rule"). A rule module declares each rule's metadata as a module-level
`RuleInfo(id="...", ...)` and has `policies(settings) -> list[Policy]` returning the pulumi-policy
objects built from them (`RuleResourcePolicy`, `RuleStackPolicy` of `policies.rules.base`).
Everything else is derived from the registry:

- `build_policies(settings)`: the objects `policies/__main__.py` (CrossGuard), `llmcloud plan`
  and `llmcloud audit` run;
- `rule_ids()` / `waivable_rule_ids()`: the ids waivers, reports and the stack config name,
  read from the modules' `RuleInfo(id=...)` declarations *without importing them* (the stack
  config validates waiver rule ids and must not load the policy SDK, nor this package's rules,
  which import the config, to do so); a test checks they equal the built policies' names.

Imports of the rule modules stay inside the functions for the same reason.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.rules.base import PolicySettings, RuleInfo

# Register a rule module here (its file is policies/rules/<name>.py); pack order.
RULE_MODULES: tuple[str, ...] = (
    "s3",
    "kms",
    "eks",
    "deploy_path",
    "serving_reach",
    "gateway",
    "ec2",
    "rds",
    "load_balancers",
    "lambda_urls",
    "ecs",
    "network",
    "iam",
    "fsx",
    "kubernetes",
    "tags",
    "budget",
    "scheduling",
    "waivers",
)

RULES_DIR = Path(__file__).resolve().parent


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


@cache
def declared_rules() -> tuple[tuple[str, bool], ...]:
    """(id, waivable) of every `RuleInfo(...)` declared in the registered modules, in module
    and source order, read from their source text (no import)."""
    out: list[tuple[str, bool]] = []
    for name in RULE_MODULES:
        tree = ast.parse((RULES_DIR / f"{name}.py").read_text(), filename=f"{name}.py")
        calls = sorted(
            (n for n in ast.walk(tree) if isinstance(n, ast.Call)), key=lambda n: n.lineno
        )
        for node in calls:
            if not (isinstance(node.func, ast.Name) and node.func.id == "RuleInfo"):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            rule_id = keywords.get("id")
            if not (isinstance(rule_id, ast.Constant) and isinstance(rule_id.value, str)):
                raise ValueError(f"policies/rules/{name}.py: RuleInfo(id=...) must be a literal")
            waivable = keywords.get("waivable")
            if waivable is not None and not isinstance(waivable, ast.Constant):
                raise ValueError(
                    f"policies/rules/{name}.py: RuleInfo(waivable=...) must be a literal"
                )
            out.append((rule_id.value, waivable is None or bool(waivable.value)))
    return tuple(out)


def rule_ids() -> tuple[str, ...]:
    """The stable ids of every registered rule."""
    return tuple(rule_id for rule_id, _ in declared_rules())


def waivable_rule_ids() -> tuple[str, ...]:
    """The ids a waiver may name (all but `RuleInfo(..., waivable=False)` rules)."""
    return tuple(rule_id for rule_id, waivable in declared_rules() if waivable)
