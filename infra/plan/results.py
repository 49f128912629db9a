"""What a plan reports besides resources: policy violations and the cost estimate.

Shapes follow the `llmcloud plan --format json` contract of ARCHITECTURE.md; extra keys
(severity, waivers, per-item descriptions) are additive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.reporting.findings import Finding

HOURS_PER_MONTH = 730.0


# A policy finding: the one finding type of plan and audit (`infra.reporting.findings`).
Violation = Finding


@dataclass(frozen=True)
class CostItem:
    """The hourly price of one resource at idle (groups at min) and at max scale."""

    urn: str
    name: str
    type: str
    hourly_idle: float
    hourly_max: float
    description: str = ""
    component: str | None = None
    pricing: str = "on_demand"  # "on_demand" | "spot" | "reservation" | "capacity_block" | "usage"

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "name": self.name,
            "type": self.type,
            "component": self.component,
            "description": self.description,
            "pricing": self.pricing,
            "hourly_idle": round(self.hourly_idle, 4),
            "hourly_max": round(self.hourly_max, 4),
        }


@dataclass
class CostReport:
    currency: str = "USD"
    items: list[CostItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # resources of types with no recorded price: [{"type", "count", "urns"}], most first
    unpriced: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hourly_idle(self) -> float:
        return sum(i.hourly_idle for i in self.items)

    @property
    def hourly_max(self) -> float:
        return sum(i.hourly_max for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "hourly": {"idle": round(self.hourly_idle, 2), "max": round(self.hourly_max, 2)},
            "monthly": {
                "idle": round(self.hourly_idle * HOURS_PER_MONTH, 2),
                "max": round(self.hourly_max * HOURS_PER_MONTH, 2),
            },
            "hours_per_month": HOURS_PER_MONTH,
            "items": [i.to_json() for i in self.items],
            "notes": list(self.notes),
            "unpriced": list(self.unpriced),
        }
