"""The stable ids of the pack's rules, for waivers, reports and the stack config.

Derived from the registry (`policies.rules.RULE_MODULES`) by reading each registered module's
`RuleInfo(id=...)` declarations, without importing the modules or the policy SDK: the stack
config imports this to validate waiver rule ids. Nothing to edit here when adding a rule.
"""

from __future__ import annotations

from policies.rules import rule_ids, waivable_rule_ids

RULE_IDS: tuple[str, ...] = rule_ids()

# A waiver cannot waive the finding that a waiver has expired (`waivable=False`).
WAIVABLE_RULE_IDS: tuple[str, ...] = waivable_rule_ids()
