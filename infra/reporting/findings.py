"""The one finding type of `llmcloud plan` and `llmcloud audit`, its severities and the one
severity -> SARIF level map.

A finding is a policy rule (by its pack id) judging one resource: a URN in a plan, a URN of
the live view in the audit (which also carries the live ARN and kind), or the stack (`urn`
None). Enforcement, severity and waivers come from the rule and the stack config; no caller
maps them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
# GitHub code scanning ranks security results by this score: low < 4.0, medium < 7.0,
# high < 9.0, critical from 9.0 ("About code scanning alerts", security severity levels).
SECURITY_SEVERITY: dict[str, str] = {
    "low": "3.0",
    "medium": "5.5",
    "high": "8.0",
    "critical": "9.5",
}
# SARIF 2.1.0 §3.27.10 levels: "error" a serious problem, "warning" a problem, "note" a minor one.
SARIF_LEVEL: dict[str, str] = {
    "low": "note",
    "medium": "warning",
    "high": "error",
    "critical": "error",
}


def sarif_level(severity: str, enforcement: str | None = None) -> str:
    """The SARIF level of a rule (`enforcement` None: its default configuration) or of a
    finding: a mandatory finding fails the run and is an error; an advisory one never is
    (at most a warning); otherwise the severity decides."""
    if enforcement == "mandatory":
        return "error"
    level = SARIF_LEVEL.get(severity, "warning")
    if enforcement == "advisory" and level == "error":
        return "warning"
    return level


def urn_name(urn: str | None) -> str:
    """The logical name at the end of a URN; `(stack)` for a stack-level finding."""
    if not urn:
        return "(stack)"
    return urn.rsplit("::", 1)[-1]


@dataclass(frozen=True)
class Finding:
    """One rule's finding on one resource (or on the stack, when `urn` is None)."""

    policy: str  # the rule id
    enforcement: str  # "advisory" | "mandatory"
    urn: str | None
    message: str
    severity: str = "medium"  # one of SEVERITIES
    waived: bool = False
    waiver_reason: str | None = None
    waiver_expires: str | None = None
    # The audit's live resource: its ARN (or id) and kind ("s3-bucket", "kms-key", ...).
    resource: str | None = None
    kind: str | None = None
    resource_name: str | None = None  # the name shown when there is no URN to take it from

    @property
    def rule(self) -> str:
        return self.policy

    @property
    def blocking(self) -> bool:
        """A mandatory finding that no live waiver covers fails the plan (exit 1)."""
        return self.enforcement == "mandatory" and not self.waived

    @property
    def name(self) -> str:
        """What a person reads as the resource: the logical name (`(stack)` for the stack)."""
        return self.resource_name or urn_name(self.urn)

    @property
    def label(self) -> str:
        """The resource column of tables: `kind name` for a live resource, else the name."""
        return f"{self.kind} {self.name}" if self.kind else self.name

    @property
    def suppression(self) -> str | None:
        """The waiver's justification, as SARIF and tables show it; None when not waived."""
        if not self.waived:
            return None
        reason = self.waiver_reason or ""
        return f"{reason} (waiver expires {self.waiver_expires})" if self.waiver_expires else reason

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "enforcement": self.enforcement,
            "urn": self.urn,
            "message": self.message,
            "severity": self.severity,
            "waived": self.waived,
        }
        if self.resource is not None:
            out.update(resource=self.resource, kind=self.kind, name=self.name)
        if self.waived:
            out["waiver"] = {"reason": self.waiver_reason, "expires": self.waiver_expires}
        return out
