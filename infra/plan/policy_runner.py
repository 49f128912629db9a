"""Runs the policy pack on a recorded plan, the way CrossGuard runs it on a preview.

The policies are the pack's own objects (`policies.rules.build_policies`). Each resource rule
gets the `ResourceValidationArgs` CrossGuard builds (type, props behind pulumi-policy's
unknown-checking proxy, URN, name, options with the parent, the provider resource); each stack
rule gets `StackValidationArgs` over `PolicyResource`s linked to their parents and
dependencies. Findings come back through `report_violation` as `Violation`s; waivers of the
stack config mark them waived rather than dropping them.

Offline, the resource props are the recorded inputs; the stack rules see the recorded inputs
over the mocks' outputs (ids, ARNs, physical names), as stack policies see outputs on
`pulumi up`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from infra.config import StackConfig, read_stack_file
from infra.plan.engine import Plan, Resource
from infra.plan.results import Violation
from infra.plan.sdk_runtime import no_cyclic_gc
from policies.rules import build_policies
from policies.rules.base import PolicySettings, StackView

_PROVIDER_PACKAGES = {
    "aws": "pulumi_aws",
    "kubernetes": "pulumi_kubernetes",
    "random": "pulumi_random",
}


def run_policies(plan: Plan, config: StackConfig | None) -> list[Violation]:
    """Every finding of the pack on this plan, with the stack's enforcement and waivers."""
    settings = PolicySettings.for_stack(config, drop_waived=False)
    return evaluate_policies(plan, settings)


def rule_metadata() -> list[dict]:
    """id, name, description, remediation, frameworks and severity of every rule."""
    return [p.info.to_json() for p in build_policies()]


def evaluate_policies(
    plan: Plan,
    settings: PolicySettings,
    only: Iterable[str] | None = None,
    names: Mapping[str, Sequence[str]] | None = None,
) -> list[Violation]:
    """Run the pack (or the rules named in `only`) with explicit settings. `names` gives a
    resource's other names (URN -> live ARN, physical name) that waivers may match."""
    with no_cyclic_gc():  # as the engine: the rules allocate much, free by refcount
        return _evaluate_policies(plan, settings, only, names)


def _evaluate_policies(
    plan: Plan,
    settings: PolicySettings,
    only: Iterable[str] | None,
    names: Mapping[str, Sequence[str]] | None,
) -> list[Violation]:
    settings = settings.with_(drop_waived=False)
    wanted = set(only) if only is not None else None
    policies = [p for p in build_policies(settings) if wanted is None or p.name in wanted]
    if wanted is not None and len(policies) != len(wanted):
        unknown = wanted - {p.name for p in policies}
        raise ValueError(f"no such rule(s): {', '.join(sorted(unknown))}")
    providers = _providers(plan)
    findings: list[Violation] = []
    resource_policies = [p for p in policies if isinstance(p, ResourceValidationPolicy)]
    for resource in plan.resources:
        if resource.type == "pulumi:pulumi:Stack":
            continue
        applicable = [p for p in resource_policies if p.applies_to(resource.type)]
        if not applicable:
            continue
        args = ResourceValidationArgs(
            resource.type,
            unknown_checking_proxy(resource.inputs),
            resource.urn,
            resource.name,
            _options(resource),
            providers.get(_provider_urn(plan, resource)),
        )
        for policy in applicable:
            config = settings.rule_properties.get(policy.name)
            policy_args = args
            if config:  # the rule's policy-pack config properties, as `args.get_config()`
                policy_args = ResourceValidationArgs(
                    args.resource_type, args.props, args.urn, args.name, args.opts,
                    args.provider, config,
                )  # fmt: skip
            _run(policy, policy_args, resource.urn, settings, findings, names or {})
    stack_resources = _policy_resources(plan, providers)
    view: StackView | None = None  # props made plain and indexed once for every stack rule
    for policy in policies:
        if isinstance(policy, StackValidationPolicy):
            stack_args = StackValidationArgs(
                stack_resources, settings.rule_properties.get(policy.name)
            )
            view = view or StackView.build(stack_resources)
            stack_args._llmcloud_view = view  # type: ignore[attr-defined]
            _run(policy, stack_args, None, settings, findings, names or {})
    return sorted(findings, key=lambda v: (v.policy, v.urn or "", v.message))


def _run(
    policy: Any,
    args: Any,
    resource_urn: str | None,
    settings: PolicySettings,
    out: list[Violation],
    names: Mapping[str, Sequence[str]],
) -> None:
    level = policy.enforcement_level.value
    if level == "disabled":
        return
    enforcement = "advisory" if level == "advisory" else "mandatory"
    severity = policy.severity.value if policy.severity else "medium"

    def report_violation(message: str, urn: str | None = None) -> None:
        target = resource_urn if resource_urn is not None else urn
        waiver = settings.waiver_for(policy.name, target, *names.get(target or "", ()))
        out.append(
            Violation(
                policy=policy.name,
                enforcement=enforcement,
                urn=target,
                message=message,
                severity=severity,
                waived=waiver is not None,
                waiver_reason=waiver.reason if waiver else None,
                waiver_expires=waiver.expires.isoformat() if waiver else None,
            )
        )

    try:
        result = policy.validate(args, report_violation)
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))
    except UnknownValueError as e:  # cannot happen offline (all values known), kept for parity
        out.append(
            Violation(policy.name, "advisory", resource_urn, f"can't run: {e.message}", severity)
        )
    except _NotApplicableError:
        return


async def _awaited(result: Any) -> None:
    await result


def _options(resource: Resource) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=resource.protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=resource.parent,
    )


def _provider_urn(plan: Plan, resource: Resource) -> str | None:
    """The provider a resource uses: its explicit one, else the package's default provider
    (which the engine creates from the stack's `<package>:*` config)."""
    if resource.provider:
        return resource.provider
    if not resource.custom or resource.type.startswith("pulumi:providers:"):
        return None
    package = resource.type.split(":", 1)[0]
    return _default_provider_urn(plan, package)


def _default_provider_urn(plan: Plan, package: str) -> str | None:
    pkg_version = _package_version(package)
    if pkg_version is None:
        return None
    return f"urn:pulumi:{plan.stack}::{plan.project}::pulumi:providers:{package}::default_{pkg_version}"


@cache
def _package_version(package: str) -> str | None:
    """`7_51_1` for pulumi-aws 7.51.1 (read once: `importlib.metadata.version` parses the
    package's METADATA file on every call, and this runs per resource)."""
    module = _PROVIDER_PACKAGES.get(package)
    if module is None:
        return None
    try:
        return version(module).replace(".", "_")
    except PackageNotFoundError:
        return None


def _providers(plan: Plan) -> dict[str, PolicyProviderResource]:
    """Provider resources as CrossGuard hands them to rules: the explicit ones the plan
    recorded, and a default provider per package configured from the stack file."""
    out = {
        r.urn: PolicyProviderResource(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name)
        for r in plan.resources
        if r.type.startswith("pulumi:providers:")
    }
    try:
        raw = read_stack_file(plan.stack_file)
    except Exception:
        raw = {}
    for package in _PROVIDER_PACKAGES:
        urn = _default_provider_urn(plan, package)
        if urn is None or urn in out:
            continue
        props: dict[str, Any] = {}
        for key, value in raw.items():
            namespace, _, name = str(key).partition(":")
            if namespace == package and name:
                props[name] = json.dumps(value) if isinstance(value, dict | list) else value
        out[urn] = PolicyProviderResource(
            f"pulumi:providers:{package}",
            unknown_checking_proxy(props),
            urn,
            urn.rsplit("::", 1)[-1],
        )
    return out


def _policy_resources(
    plan: Plan, providers: dict[str, PolicyProviderResource]
) -> list[PolicyResource]:
    """Every resource as a `PolicyResource`, with parent and dependency links resolved."""
    by_urn: dict[str, PolicyResource] = {}
    for r in plan.resources:
        props = {**r.outputs, **r.inputs}
        by_urn[r.urn] = PolicyResource(
            r.type,
            unknown_checking_proxy(props),
            r.urn,
            r.name,
            _options(r),
            providers.get(_provider_urn(plan, r)),
            None,
            [],
            {},
        )
    for r in plan.resources:
        resource = by_urn[r.urn]
        if r.parent in by_urn:
            resource.parent = by_urn[r.parent]
        resource.dependencies = [by_urn[d] for d in r.dependencies if d in by_urn]
        recorded = getattr(r, "property_dependencies", None) or {}
        resource.property_dependencies = {
            key: [by_urn[d] for d in urns if d in by_urn] for key, urns in recorded.items()
        }
    return list(by_urn.values())
