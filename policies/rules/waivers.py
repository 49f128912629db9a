"""`waiver-expired`: a waiver past its expiry date is itself a finding (mandatory outside
dev), and it no longer waives anything. Waivers live in the stack config
(`policies.waivers`); the pack reads the same stack config under `pulumi preview`.
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import PolicySettings, Reporter, RuleInfo, RuleStackPolicy

WAIVER_EXPIRED = RuleInfo(
    id="waiver-expired",
    title="Policy waivers are current",
    description="Every waiver in policies.waivers is before its expiry date; an expired waiver "
    "waives nothing and must be renewed (with a new reason) or removed by fixing the finding.",
    severity="medium",
    remediation="Fix the waived finding and delete the waiver, or renew it with a new expiry "
    "date and the reason it is still needed.",
    kind="stack",
    waivable=False,
)


def check_waivers(args: Any, report: Reporter, settings: PolicySettings) -> None:
    for waiver in settings.waivers:
        if waiver.expired(settings.today):
            report(
                f"the waiver of {waiver.rule} for {waiver.resource!r} expired on "
                f"{waiver.expires.isoformat()} ({waiver.reason})",
                None,
            )


def policies(settings: PolicySettings) -> list[Any]:
    return [RuleStackPolicy(WAIVER_EXPIRED, settings, check_waivers)]
