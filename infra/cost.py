"""Cost estimate of a plan (filled in by the cost issue)."""

from __future__ import annotations

from infra.config import StackConfig
from infra.plan.engine import Plan
from infra.plan.results import CostReport


def estimate_cost(plan: Plan, config: StackConfig | None) -> CostReport:
    return CostReport()
