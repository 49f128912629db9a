"""Findings as a rich table for people: the one table renderer of plan and audit findings.

Rule ids never wrap (they are what a reader copies into a waiver); the other columns fold.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text

from infra.reporting.findings import Finding


def _order(f: Finding) -> tuple[bool, bool, str, str]:
    return (not f.blocking, f.waived, f.policy, f.urn or f.resource or "")


def _style(f: Finding) -> str:
    if f.blocking:
        return "red"
    if f.waived:
        return "dim"
    return "red" if f.enforcement == "mandatory" else "yellow"


def findings_table(findings: Iterable[Finding], title: str = "Policy findings") -> Table | Text:
    """Blocking findings first, then advisory, then waived ones (with their reason)."""
    findings = sorted(findings, key=_order)
    if not findings:
        return Text(f"{title}: none", style="green")
    table = Table(title=title, header_style="bold", show_lines=False)
    width = max(len(f.policy) for f in findings)
    table.add_column("policy", no_wrap=True, min_width=width)
    table.add_column("enforcement", overflow="fold")
    table.add_column("severity", no_wrap=True)
    table.add_column("resource", overflow="fold")
    table.add_column("message", overflow="fold", ratio=1)
    for f in findings:
        enforcement = f"{f.enforcement} (waived)" if f.waived else f.enforcement
        message = f"{f.message} (waived: {f.suppression})" if f.waived else f.message
        table.add_row(
            Text(f.policy), enforcement, f.severity, Text(f.label), Text(message), style=_style(f)
        )
    return table
