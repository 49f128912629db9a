"""Policy settings of a project that is not an llmcloud stack: a CrossGuard policy-pack config
(the JSON `pulumi preview --policy-pack-config FILE` takes) and a bare `llmcloud:policies`
section, both reconciled into the pack's `PolicySettings`.

The config format and its reconciliation follow the Pulumi CLI (pulumi/pulumi
pkg/resource/analyzer/config.go, `ParsePolicyPackConfigFromFile`, `ReconcilePolicyPackConfig`):
a JSON object whose keys are policy names or `all`; a value is an enforcement level
(`advisory`, `mandatory`, `remediate`, `disabled`) or an object with an optional
`enforcementLevel` and the policy's config properties (`{"tags-required": {"requiredTags":
["owner"]}}`); `all` sets every policy's level first, then each policy's own entry applies;
an ESC `environments` list is not policy config (and cannot be resolved offline).
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ENFORCEMENT_LEVELS = ("advisory", "mandatory", "remediate", "disabled")
ALL = "all"


class PolicyConfigError(ValueError):
    """A policy config that cannot be used; the message names the key and the value."""


def read_policy_pack_config(path: Path) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """policy name (or `all`) -> (enforcement level or None, config properties)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise PolicyConfigError(
            f"--policy-config {str(path)!r}: cannot read it ({e.strerror})"
        ) from None
    except json.JSONDecodeError as e:
        raise PolicyConfigError(
            f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    if not isinstance(raw, dict):
        raise PolicyConfigError(f"{path}: must be a JSON object of policy names to settings")
    return parse_policy_pack_config(raw, str(path))


def parse_policy_pack_config(
    raw: Mapping[str, Any], source: str
) -> dict[str, tuple[str | None, dict[str, Any]]]:
    out: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for name, value in raw.items():
        if name == "environments":
            continue
        if isinstance(value, str):
            out[name] = (_level(value, source, name), {})
        elif isinstance(value, dict):
            props = dict(value)
            level = props.pop("enforcementLevel", None)
            if level is not None and not isinstance(level, str):
                raise PolicyConfigError(
                    f"{source}: {name}.enforcementLevel = {level!r}: must be a string, one of "
                    + ", ".join(ENFORCEMENT_LEVELS)
                )
            out[name] = (
                _level(level, source, f"{name}.enforcementLevel") if level else None,
                props,
            )
        else:
            raise PolicyConfigError(
                f"{source}: {name} = {value!r}: must be an enforcement level ("
                + ", ".join(ENFORCEMENT_LEVELS)
                + ") or an object of enforcementLevel and the policy's properties"
            )
    return out


def _level(value: str, source: str, key: str) -> str:
    if value not in ENFORCEMENT_LEVELS:
        raise PolicyConfigError(
            f"{source}: {key} = {value!r} is not an enforcement level; use one of "
            + ", ".join(ENFORCEMENT_LEVELS)
        )
    return value


def reconcile(
    entries: Mapping[str, tuple[str | None, dict[str, Any]]],
    rule_ids: Iterable[str],
    source: str,
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(rule id -> level, rule id -> properties) as the CLI reconciles a pack config: `all`
    first, then each rule's own entry. A name that is no rule of the pack is an error (a
    misspelled rule would otherwise silently keep its default)."""
    ids = list(rule_ids)
    unknown = [n for n in entries if n != ALL and n not in ids]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, ids, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PolicyConfigError(
            f"{source}: {name!r} is not a rule of the llmcloud pack{hint} (rules: "
            + ", ".join(ids)
            + ", or all)"
        )
    levels: dict[str, str] = {}
    properties: dict[str, dict[str, Any]] = {}
    all_level = entries.get(ALL, (None, {}))[0]
    if all_level:
        levels = dict.fromkeys(ids, all_level)
    for name, (level, props) in entries.items():
        if name == ALL:
            continue
        if level:
            levels[name] = level
        if props:
            properties.setdefault(name, {}).update(props)
    return levels, properties


def foreign_policies_section(raw: Mapping[str, Any]) -> Any | None:
    """The `llmcloud:policies` value of a stack that sets no other `llmcloud:` key (a project
    that only borrows the pack's settings), else None."""
    from infra.config import NAMESPACE

    keys = [str(k) for k in raw if str(k).startswith(f"{NAMESPACE}:")]
    if keys != [f"{NAMESPACE}:policies"]:
        return None
    return raw[f"{NAMESPACE}:policies"]


def settings_of_policies(section: Any, *, source: str, **overrides: Any) -> Any:
    """PolicySettings of a foreign project's `llmcloud:policies` section: validated by the
    same model as an llmcloud stack's, mapped to the same settings a pack config gives
    (`enforcement` is the `all` level, `required_tags` the `tags-required` requirement);
    what it leaves unset keeps each rule's default (no required tags unless listed)."""
    from pydantic import ValidationError

    from infra.config import ConfigError
    from infra.config.loading import format_validation_error
    from infra.config.schema import PoliciesConfig
    from policies.rules.base import PolicySettings, Waiver

    if isinstance(section, str):
        with contextlib.suppress(json.JSONDecodeError):
            section = json.loads(section)  # as the engine hands objects to a program
    try:
        policies = PoliciesConfig.model_validate(section or {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
    given = policies.model_fields_set
    values: dict[str, Any] = {
        "required_tags": tuple(policies.required_tags) if "required_tags" in given else (),
        "gpu_budget": policies.gpu_budget,
        "public_ingress_ports": tuple(policies.public_ingress_ports),
        "waivers": tuple(Waiver(w.rule, w.resource, w.reason, w.expires) for w in policies.waivers),
    }
    settings = PolicySettings.for_stack(None, **values)
    if policies.enforcement:
        settings = settings.with_(enforcement=policies.enforcement, rule_defaults=False)
    return settings.with_(**overrides) if overrides else settings


def apply_policy_pack_config(settings: Any, path: Path) -> Any:
    """`settings` with a policy-pack config file applied over them (it wins, as the CLI's
    `--policy-pack-config` does)."""
    from policies.rules import rule_ids

    entries = read_policy_pack_config(path)
    levels, properties = reconcile(entries, rule_ids(), str(path))
    return settings.with_(
        rule_levels={**settings.rule_levels, **levels},
        rule_properties={**settings.rule_properties, **properties},
    )
