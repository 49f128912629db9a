"""`llmcloud plan` end to end: evaluate the program, run the policy pack, price it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import (
    NAMESPACE,
    ConfigError,
    StackConfig,
    load_stack_config,
    read_stack_file,
    stack_file,
)
from infra.config.loading import yaml_read_once
from infra.plan.cost import estimate_cost
from infra.plan.engine import Plan, PlanError, evaluate
from infra.plan.policy_runner import run_policies
from infra.plan.results import CostReport, Violation
from infra.plan.scheduling import SchedulingReport, simulate_plan
from infra.plan.sdk_runtime import no_cyclic_gc


@dataclass
class PlanReport:
    plan: Plan
    config: StackConfig | None
    violations: list[Violation]
    cost: CostReport
    # every pod template at max scale against its node groups (plan JSON `scheduling`)
    scheduling: SchedulingReport | None = None

    @property
    def exit_code(self) -> int:
        """0 clean (advisory findings allowed), 1 when a mandatory policy is violated."""
        return 1 if any(v.blocking for v in self.violations) else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.plan.project,
            "stack": self.plan.stack,
            "resources": [r.to_json() for r in self.plan.resources],
            "violations": [v.to_json() for v in self.violations],
            "cost": self.cost.to_json(),
            "outputs": self.plan.outputs,
            "notices": self.plan.notices,
            "scheduling": self.scheduling.to_json() if self.scheduling is not None else None,
        }


def uses_llmcloud_config(raw: dict[str, Any]) -> bool:
    """Whether a stack file's config map configures llmcloud (any other project plans with
    defaults)."""
    return any(k.startswith(f"{NAMESPACE}:") for k in raw)


def run_plan(project_dir: Path | str, stack: str, policy_config: Path | None = None) -> PlanReport:
    """Plan one stack of a project. Raises PlanError for anything the user must fix.

    Policy settings: an llmcloud stack's `llmcloud:policies`; a project that sets only
    `llmcloud:policies` gets those (nothing else of llmcloud's config is required); any other
    project each rule's default. `policy_config` (a CrossGuard policy-pack config file, as
    `pulumi preview --policy-pack-config` takes) applies over them."""
    with yaml_read_once():  # the config, the evaluation and the policies read the same files
        return _run_plan(Path(project_dir), stack, policy_config)


def _run_plan(project_dir: Path, stack: str, policy_config: Path | None) -> PlanReport:
    from infra.plan.policy_config import (
        PolicyConfigError,
        apply_policy_pack_config,
        foreign_policies_section,
        settings_of_policies,
    )
    from infra.plan.policy_runner import evaluate_policies
    from policies.rules.base import PolicySettings

    config: StackConfig | None = None
    try:
        path = stack_file(project_dir, stack)
        raw = read_stack_file(path)
        section = foreign_policies_section(raw)
        if section is not None:
            settings = settings_of_policies(
                section, source=f"{path.name}: {NAMESPACE}:policies", drop_waived=False
            )
        elif uses_llmcloud_config(raw):
            # Validate first, so errors name the stack file (the program would say "stack X").
            config = load_stack_config(project_dir, stack)
            settings = PolicySettings.for_stack(config, drop_waived=False)
        else:
            settings = PolicySettings.for_stack(None, drop_waived=False)
        if policy_config is not None:
            settings = apply_policy_pack_config(settings, Path(policy_config))
    except (ConfigError, PolicyConfigError) as e:
        raise PlanError(str(e)) from None
    plan = evaluate(project_dir, stack)
    with no_cyclic_gc():  # as the evaluation: the checks allocate much and free by refcount
        violations = (
            run_policies(plan, config)
            if policy_config is None and section is None
            else evaluate_policies(plan, settings)
        )
        _note_rules_blind_to_remote_children(plan)
        cost = estimate_cost(plan, config)
        scheduling = simulate_plan(plan)
    return PlanReport(
        plan=plan,
        config=config,
        violations=violations,
        cost=cost,
        scheduling=scheduling,
    )


def _note_rules_blind_to_remote_children(plan: Plan) -> None:
    """A remote component's children are created by its provider plugin, so no rule saw
    them: name, in the component's notice, the rules that check the resource types its SDK
    says it creates (the resources its outputs reference), so no finding-free report reads
    as clean for them."""
    notices = [n for n in plan.notices if n.get("kind") == "remote-component"]
    if not notices:
        return
    from infra.plan.schema import package_tokens
    from policies.rules import build_policies

    policies = build_policies()
    for notice in notices:
        types = sorted(component_child_types(notice["token"]))
        # A component whose SDK does not say what it creates (a Helm chart's `resources` are
        # untyped) may create any resource of its package: every rule on those could miss.
        candidates = types or sorted(package_tokens(notice["token"].split(":", 1)[0]))
        rules = sorted({p.name for p in policies if any(p.applies_to(t) for t in candidates)})
        notice["child_types"] = types
        notice["rules_not_checked"] = rules
        if rules:
            children = ", ".join(types) if types else "any resource of its package"
            notice["message"] += f"; rules not checked on its children ({children}): " + ", ".join(
                rules
            )


def component_child_types(token: str) -> set[str]:
    """The resource types a component's SDK declares it creates: the types of the resources
    its outputs reference, nested objects included (pulumi-eks's `core.cluster`)."""
    from infra.plan.schema import object_fields, resource_output_shapes, resource_token

    found: set[str] = set()
    seen: set[type] = set()

    def walk(shape: tuple) -> None:
        kind = shape[0]
        if kind in ("list", "map"):
            walk(shape[1])
        elif kind == "res":
            child = resource_token(shape[1])
            if child and not child.startswith("pulumi:providers:"):
                found.add(child)
        elif kind == "obj" and shape[1] not in seen:
            seen.add(shape[1])
            for sub in object_fields(shape[1]).values():
                walk(sub)

    for shape in resource_output_shapes(token).values():
        walk(shape)
    return found
