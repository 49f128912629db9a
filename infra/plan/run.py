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
from infra.plan.cost import estimate_cost
from infra.plan.engine import Plan, PlanError, evaluate
from infra.plan.policy_runner import run_policies
from infra.plan.results import CostReport, Violation


@dataclass
class PlanReport:
    plan: Plan
    config: StackConfig | None
    violations: list[Violation]
    cost: CostReport

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
        }


def uses_llmcloud_config(path: Path) -> bool:
    """Whether a stack file configures llmcloud (any other project plans with defaults)."""
    return any(k.startswith(f"{NAMESPACE}:") for k in read_stack_file(path))


def run_plan(project_dir: Path | str, stack: str) -> PlanReport:
    """Plan one stack of a project. Raises PlanError for anything the user must fix."""
    project_dir = Path(project_dir)
    config: StackConfig | None = None
    try:
        if uses_llmcloud_config(stack_file(project_dir, stack)):
            # Validate first, so errors name the stack file (the program would say "stack X").
            config = load_stack_config(project_dir, stack)
    except ConfigError as e:
        raise PlanError(str(e)) from None
    plan = evaluate(project_dir, stack)
    violations = run_policies(plan, config)
    cost = estimate_cost(plan, config)
    return PlanReport(plan=plan, config=config, violations=violations, cost=cost)
