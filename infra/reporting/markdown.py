"""Findings as GitHub-flavoured Markdown: the one Markdown renderer of plan, audit and diff
findings (pull-request comments, job summaries)."""

from __future__ import annotations

from collections.abc import Iterable

from infra.reporting.findings import Finding


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(findings: Iterable[Finding], empty: str = "No findings.") -> list[str]:
    """A table of findings, blocking first; waived ones say their waiver."""
    findings = sorted(findings, key=lambda f: (not f.blocking, f.waived, f.policy, f.urn or ""))
    if not findings:
        return [empty]
    lines = ["| policy | enforcement | severity | resource | message |", "|---|---|---|---|---|"]
    for f in findings:
        enforcement = f"{f.enforcement} (waived: {f.suppression})" if f.waived else f.enforcement
        mark = "❌ " if f.blocking else ""
        lines.append(
            f"| {mark}`{f.policy}` | {md_cell(enforcement)} | {f.severity} | `{md_cell(f.label)}` "
            f"| {md_cell(f.message)} |"
        )
    return lines
