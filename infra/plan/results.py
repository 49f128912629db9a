"""What a plan reports besides resources: policy violations and the cost estimate.

Shapes follow the `llmcloud plan --format json` contract of ARCHITECTURE.md; extra keys
(severity, waivers, per-item descriptions) are additive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class Violation:
    """One policy finding on one resource (or on the stack, when `urn` is None)."""

    policy: str
    enforcement: str  # "advisory" | "mandatory"
    urn: str | None
    message: str
    severity: str = "medium"  # "low" | "medium" | "high" | "critical"
    waived: bool = False
    waiver_reason: str | None = None
    waiver_expires: str | None = None

    @property
    def blocking(self) -> bool:
        """A mandatory finding that no live waiver covers fails the plan (exit 1)."""
        return self.enforcement == "mandatory" and not self.waived

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "enforcement": self.enforcement,
            "urn": self.urn,
            "message": self.message,
            "severity": self.severity,
            "waived": self.waived,
        }
        if self.waived:
            out["waiver"] = {"reason": self.waiver_reason, "expires": self.waiver_expires}
        return out


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
        }
