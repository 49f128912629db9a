"""The EKS Kubernetes version calendar (`infra/data/eks_versions.json`): which versions a
cluster may run on a given day, the default version, and whether a version is billed at the
extended-support rate.

One definition for every reader: the config's allowed versions and default, the policy
pack's `eks-supported-version`, and the cost estimate's control-plane rate. The day is a
parameter everywhere (tests inject it); callers pass the day the plan runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

EKS_VERSIONS_PATH = Path(__file__).resolve().parents[1] / "data" / "eks_versions.json"

Support = Literal["unreleased", "standard", "extended", "ended"]
# AWS announces the end of standard support at least 60 days ahead (EKS version FAQ).
STANDARD_SUPPORT_NOTICE_DAYS = 60


@dataclass(frozen=True)
class EksVersion:
    """One Kubernetes minor version on EKS; a date is None where AWS has not published it."""

    version: str
    upstream_release: date | None
    eks_release: date | None
    end_of_standard_support: date | None
    end_of_extended_support: date | None

    def support(self, day: date) -> Support:
        """Its support on `day` (UTC): AWS bills extended support from the first day of
        `end_of_standard_support`, and ends it on `end_of_extended_support`."""
        if self.eks_release is None or day < self.eks_release:
            return "unreleased"
        if self.end_of_standard_support is None or day < self.end_of_standard_support:
            return "standard"
        if self.end_of_extended_support is None or day < self.end_of_extended_support:
            return "extended"
        return "ended"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True)
class EksCalendar:
    """Every version of the data file, oldest first, with the day the file was checked."""

    checked: date
    versions: tuple[EksVersion, ...]

    def get(self, version: str) -> EksVersion | None:
        return next((v for v in self.versions if v.version == version), None)

    def support(self, version: str, day: date) -> Support | None:
        """The version's support on `day`; None for a version the calendar does not list."""
        found = self.get(version)
        return None if found is None else found.support(day)

    def allowed(self, day: date) -> tuple[str, ...]:
        """Versions a cluster may run on `day`: released and not past extended support."""
        return tuple(v.version for v in self.versions if v.support(day) in ("standard", "extended"))

    def standard(self, day: date) -> tuple[str, ...]:
        """Versions in standard support on `day` (billed at the standard rate)."""
        return tuple(v.version for v in self.versions if v.support(day) == "standard")

    def default(self, day: date) -> str:
        """The newest version in standard support on `day`."""
        standard = self.standard(day)
        if not standard:
            raise ValueError(
                f"{EKS_VERSIONS_PATH.name} lists no version in standard support on {day}; "
                "update it from the EKS release calendar"
            )
        return standard[-1]


def support_note(version: str, day: date, calendar: EksCalendar | None = None) -> str | None:
    """What a plan says about a cluster on `version` on `day`: extended support (billed at the
    extended rate), past it, standard support ending within STANDARD_SUPPORT_NOTICE_DAYS, or
    None."""
    calendar = calendar or load_eks_calendar()
    found = calendar.get(version)
    if found is None:
        return None
    support = found.support(day)
    newest = calendar.standard(day)[-1:] or ("a newer version",)
    if support == "extended":
        return (
            f"Kubernetes {version} is in EKS extended support on {day} (standard support ended "
            f"{found.end_of_standard_support}, extended support ends "
            f"{found.end_of_extended_support}): its control plane is priced at the "
            f"extended-support rate; upgrade cluster.version to {newest[0]}."
        )
    if support == "ended":
        return (
            f"Kubernetes {version} is past EKS extended support on {day} (it ended "
            f"{found.end_of_extended_support}): EKS creates no cluster on it and upgrades "
            f"existing control planes; upgrade cluster.version to {newest[0]}."
        )
    end = found.end_of_standard_support
    if support == "standard" and end is not None:
        left = (end - day).days
        if left <= STANDARD_SUPPORT_NOTICE_DAYS:
            days = "1 day" if left == 1 else f"{left} days"
            return (
                f"Kubernetes {version} leaves EKS standard support on {end} (in {days}): "
                f"upgrade cluster.version to {newest[-1]} before then; from that day EKS "
                "upgrades the control plane (upgrade policy STANDARD) or bills the "
                "extended-support rate (cluster.extended_support: true)."
            )
    return None


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


@cache
def load_eks_calendar(path: Path = EKS_VERSIONS_PATH) -> EksCalendar:
    """Load (once per process) the calendar data file."""
    raw = json.loads(path.read_text())
    versions = tuple(
        EksVersion(
            version=name,
            upstream_release=_day(info.get("upstream_release")),
            eks_release=_day(info.get("eks_release")),
            end_of_standard_support=_day(info.get("end_of_standard_support")),
            end_of_extended_support=_day(info.get("end_of_extended_support")),
        )
        for name, info in sorted(raw["versions"].items(), key=lambda kv: _key(kv[0]))
    )
    return EksCalendar(checked=date.fromisoformat(raw["checked"]), versions=versions)


def plan_day(context: object = None) -> date:
    """The day a plan runs: `today` of a pydantic validation context (tests inject it), else
    the UTC date now."""
    if isinstance(context, dict) and isinstance(context.get("today"), date):
        return context["today"]
    from datetime import UTC, datetime

    return datetime.now(UTC).date()
