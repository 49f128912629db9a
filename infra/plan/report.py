"""Render a plan report for people (a rich tree), for machines (JSON, SARIF) and for pull
requests (Markdown with a Mermaid graph of the components, which GitHub renders)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from infra.catalog import load_catalog
from infra.plan.engine import Plan, Resource
from infra.plan.results import HOURS_PER_MONTH
from infra.plan.run import PlanReport
from infra.plan.scheduling import instance_types_of
from infra.plan.scheduling import table_section as scheduling_section
from infra.reporting import sarif
from infra.reporting.markdown import findings_markdown
from infra.reporting.markdown import md_cell as _md
from infra.reporting.table import findings_table

FORMATS = ("table", "json", "markdown", "sarif", "terraform-plan")


def short_type(token: str) -> str:
    """`aws:ec2/subnet:Subnet` -> `aws:ec2:Subnet`; components keep their token."""
    parts = token.split(":")
    if len(parts) == 3 and "/" in parts[1]:
        return f"{parts[0]}:{parts[1].split('/')[0]}:{parts[2]}"
    return token


def components(plan: Plan) -> list[Resource]:
    return [r for r in plan.resources if not r.custom and r.type != "pulumi:pulumi:Stack"]


def descendants(plan: Plan, urn: str) -> list[Resource]:
    out, frontier = [], [urn]
    while frontier:
        parent = frontier.pop()
        for child in plan.children(parent):
            out.append(child)
            frontier.append(child.urn)
    return out


def gpu_totals(plan: Plan) -> dict[str, dict[str, int]]:
    """GPUs per GPU kind of every EKS node group at min and max scale."""
    catalog = load_catalog()
    totals: dict[str, dict[str, int]] = {}
    for group in plan.by_type("aws:eks/nodeGroup:NodeGroup"):
        types = instance_types_of(plan, group)
        scaling = group.inputs.get("scalingConfig") or {}
        for itype in types[:1]:
            inst = catalog.instance_types.get(itype)
            if inst is None or not inst.gpu:
                continue
            entry = totals.setdefault(inst.gpu, {"min": 0, "max": 0})
            entry["min"] += inst.gpu_count * int(scaling.get("minSize") or 0)
            entry["max"] += inst.gpu_count * int(scaling.get("maxSize") or 0)
    return totals


# ----------------------------------------------------------------------------- json


def render_json(report: PlanReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=False, default=str) + "\n"


# ----------------------------------------------------------------------------- table


def render_table(report: PlanReport, console: Console, full: bool = False) -> None:
    """The resource tree, findings, cost and outputs; `full` lists every resource name (else
    the first few of each type per component)."""
    plan = report.plan
    region = report.config.region if report.config else (report.plan.region or "-")
    title = Text.assemble(
        ("llmcloud plan ", "bold"),
        (f"{plan.project} / {plan.stack}", "bold cyan"),
        f"  region {region}  ·  {sum(r.custom for r in plan.resources)} resources "
        f"in {len(components(plan))} components  ·  {plan.elapsed_s:.1f}s",
    )
    tree = Tree(title)
    stack_urn = plan.stack_urn
    _add_children(plan, tree, stack_urn, full)
    console.print(tree)
    totals = gpu_totals(plan)
    if totals:
        console.print(
            "GPUs: "
            + ", ".join(f"{gpu} {t['min']}–{t['max']}" for gpu, t in sorted(totals.items()))
            + "  (node groups at min–max)"
        )
    if report.scheduling is not None and report.scheduling.pods:
        console.print(scheduling_section(report.scheduling))
    console.print(_violations_table(report))
    console.print(_cost_table(report))
    if plan.warnings:
        for w in plan.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}")
    for notice in plan.notices:  # what the offline plan synthesized or could not see
        console.print(f"[cyan]offline:[/] {escape(notice['message'])}")
    if plan.outputs:
        out = Table(title="Outputs", show_header=True, header_style="bold")
        out.add_column("name")
        out.add_column("value", overflow="fold")
        for k, v in plan.outputs.items():
            out.add_row(Text(k), Text(v if isinstance(v, str) else json.dumps(v)))
        console.print(out)
    verdict = (
        "[red bold]FAILED[/]: mandatory policy violations"
        if report.exit_code
        else "[green bold]OK[/]: no mandatory policy violations"
    )
    console.print(verdict)


NAMES_SHOWN = 4  # resource names per type and component in the tree, unless --full


def _add_children(plan: Plan, node: Tree, parent: str | None, full: bool = False) -> None:
    children = plan.children(parent)
    comps = [c for c in children if not c.custom]
    customs = [c for c in children if c.custom and not c.type.startswith("pulumi:providers:")]
    providers = [c for c in children if c.type.startswith("pulumi:providers:")]
    for p in providers:
        node.add(Text(f"provider {p.type.rsplit(':', 1)[1]} ({p.name})", style="dim"))
    for comp in sorted(comps, key=lambda c: c.urn):
        count = sum(r.custom for r in descendants(plan, comp.urn))
        branch = node.add(
            Text.assemble(
                (comp.type, "bold magenta"), f" {comp.name}  ", (f"{count} resources", "dim")
            )
        )
        _add_children(plan, branch, comp.urn, full)
    for token, n in sorted(Counter(c.type for c in customs).items()):
        names = sorted(c.name for c in customs if c.type == token)
        if full or len(names) <= NAMES_SHOWN:
            shown = ", ".join(names)
        else:
            shown = ", ".join(names[:NAMES_SHOWN]) + f", … (+{len(names) - NAMES_SHOWN}; --full)"
        node.add(Text.assemble((f"{short_type(token)}", "green"), f" ×{n}  ", (shown, "dim")))


def _violations_table(report: PlanReport) -> Any:
    if not report.violations:
        return Text("Policies: no violations", style="green")
    return findings_table(report.violations, "Policy findings")


def _cost_table(report: PlanReport) -> Any:
    cost = report.cost
    if not cost.items:
        return Text("Cost: nothing priced", style="dim")
    table = Table(title=f"Cost estimate ({cost.currency})", header_style="bold")
    table.add_column("resource", overflow="fold")
    table.add_column("pricing")
    table.add_column("$/h idle", justify="right")
    table.add_column("$/h max", justify="right")
    for item in sorted(cost.items, key=lambda i: -i.hourly_max):
        table.add_row(
            f"{escape(item.name)} [dim]{escape(item.description)}[/]",
            item.pricing,
            f"{item.hourly_idle:,.2f}",
            f"{item.hourly_max:,.2f}",
        )
    table.add_row(
        "[bold]total per hour[/]",
        "",
        f"[bold]{cost.hourly_idle:,.2f}",
        f"[bold]{cost.hourly_max:,.2f}",
    )
    table.add_row(
        f"[bold]total per month[/] ({HOURS_PER_MONTH:.0f} h)",
        "",
        f"[bold]{cost.hourly_idle * HOURS_PER_MONTH:,.0f}",
        f"[bold]{cost.hourly_max * HOURS_PER_MONTH:,.0f}",
    )
    return Group(table, *(Text(n, style="dim") for n in cost.notes))


# ----------------------------------------------------------------------------- markdown


def component_of(plan: Plan, resource: Resource) -> Resource | None:
    """The nearest component a resource belongs to (itself, for a component)."""
    if not resource.custom and resource.type != "pulumi:pulumi:Stack":
        return resource
    for ancestor in plan.ancestors(resource):
        if not ancestor.custom and ancestor.type != "pulumi:pulumi:Stack":
            return ancestor
    return None


def component_dependencies(plan: Plan) -> set[tuple[str, str]]:
    """(dependency, dependent) component URNs: a resource of the dependent component
    depends (recorded `dependencies`, property dependencies included) on one of the other,
    and neither component contains the other."""
    by_urn = {r.urn: r for r in plan.resources}
    owner = {r.urn: component_of(plan, r) for r in plan.resources}
    lineage = {c.urn: {a.urn for a in plan.ancestors(c)} | {c.urn} for c in components(plan)}
    edges: set[tuple[str, str]] = set()
    for r in plan.resources:
        dependent = owner.get(r.urn)
        if dependent is None:
            continue
        recorded = set(r.dependencies)
        for urns in (r.property_dependencies or {}).values():
            recorded.update(urns)
        for urn in recorded:
            dependency = owner.get(urn) if urn in by_urn else None
            if dependency is None or dependency.urn == dependent.urn:
                continue
            if dependency.urn in lineage[dependent.urn] or dependent.urn in lineage[dependency.urn]:
                continue
            edges.add((dependency.urn, dependent.urn))
    return edges


def transitive_reduction(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges not implied by a longer path (A -> C goes when A -> B -> C exists), so the
    graph shows the layers (network -> cluster -> workloads), not every pair."""
    successors: dict[str, set[str]] = {}
    for u, v in edges:
        successors.setdefault(u, set()).add(v)

    def reachable(start: str, target: str, skip: tuple[str, str]) -> bool:
        seen, frontier = {start}, [start]
        while frontier:
            node = frontier.pop()
            for nxt in successors.get(node, ()):
                if (node, nxt) == skip or nxt in seen:
                    continue
                if nxt == target:
                    return True
                seen.add(nxt)
                frontier.append(nxt)
        return False

    return {(u, v) for u, v in edges if not reachable(u, v, skip=(u, v))}


def mermaid_graph(plan: Plan) -> list[str]:
    """The components as a Mermaid flowchart: containment as solid arrows (parent -> child),
    dependencies between components as dotted ones (what is needed -> what needs it; the
    direct ones, those implied by a longer path left out), as in the README's diagram."""
    comps = sorted(components(plan), key=lambda c: c.urn)
    ids = {comp.urn: f"c{i}" for i, comp in enumerate(comps)}
    lines = ["graph TD"]
    for comp in comps:
        count = sum(r.custom for r in descendants(plan, comp.urn))
        label = f"{comp.type.rsplit(':', 1)[-1]}<br/>{comp.name}<br/>{count} resources"
        lines.append(f'  {ids[comp.urn]}["{label}"]')
    for comp in comps:
        if comp.parent in ids:
            lines.append(f"  {ids[comp.parent]} --> {ids[comp.urn]}")
    for dependency, dependent in sorted(transitive_reduction(component_dependencies(plan))):
        lines.append(f"  {ids[dependency]} -.-> {ids[dependent]}")
    return lines


def render_markdown(report: PlanReport) -> str:
    plan = report.plan
    lines = [f"## llmcloud plan: `{plan.project}` / `{plan.stack}`", ""]
    blocking = [v for v in report.violations if v.blocking]
    status = "❌ mandatory policy violations" if blocking else "✅ no mandatory policy violations"
    cost = report.cost
    lines.append(
        f"**{status}** · {sum(r.custom for r in plan.resources)} resources in "
        f"{len(components(plan))} components · cost ${cost.hourly_idle:,.2f}/h idle, "
        f"${cost.hourly_max:,.2f}/h at max (${cost.hourly_idle * HOURS_PER_MONTH:,.0f}–"
        f"${cost.hourly_max * HOURS_PER_MONTH:,.0f}/month)"
    )
    if plan.notices:  # what the offline plan synthesized or could not see
        lines += ["", "**Offline plan notices**", ""] + [
            f"- {_md(n['message'])}" for n in plan.notices
        ]
    lines += ["", "```mermaid", *mermaid_graph(plan)]
    lines += ["```", ""]
    totals = gpu_totals(plan)
    if totals:
        lines.append(
            "**GPUs** (min–max): "
            + ", ".join(f"{g} {t['min']}–{t['max']}" for g, t in sorted(totals.items()))
        )
        lines.append("")
    lines += ["### Policy findings", ""]
    lines += findings_markdown(report.violations)
    lines += ["", "### Cost estimate", ""]
    if cost.items:
        lines += [
            f"<details><summary>{len(cost.items)} priced resources: ${cost.hourly_idle:,.2f}/h idle, "
            f"${cost.hourly_max:,.2f}/h at max</summary>",
            "",
        ]
        lines += ["| resource | pricing | $/h idle | $/h max |", "|---|---|--:|--:|"]
        for item in sorted(cost.items, key=lambda i: -i.hourly_max):
            lines.append(
                f"| `{item.name}` {_md(item.description)} | {item.pricing} | {item.hourly_idle:,.2f} | {item.hourly_max:,.2f} |"
            )
        lines.append(
            f"| **total / hour** | | **{cost.hourly_idle:,.2f}** | **{cost.hourly_max:,.2f}** |"
        )
        lines += ["", "</details>", ""] + [f"_{n}_" for n in cost.notes]
    else:
        lines.append("Nothing priced.")
    lines += ["", "<details><summary>Resources by type</summary>", ""]
    lines += ["| type | count |", "|---|--:|"]
    for token, n in sorted(Counter(r.type for r in plan.resources if r.custom).items()):
        lines.append(f"| `{token}` | {n} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- sarif


def render_sarif(report: PlanReport, rules: Iterable[dict[str, Any]] = ()) -> str:
    """SARIF 2.1.0 for GitHub code scanning.

    One result per finding, located in the stack file (what a user edits to fix or waive it;
    a waived finding points at its waiver's line and carries a suppression, so code scanning
    lists it as dismissed). Mandatory findings are errors, advisory ones warnings; each rule
    carries `security-severity`, which code scanning ranks security results by."""
    plan = report.plan
    try:
        location = plan.stack_file.relative_to(plan.project_dir).as_posix()
    except ValueError:
        location = plan.stack_file.as_posix()
    stack_lines = _stack_file_lines(plan)
    return sarif.document(
        automation_id=f"llmcloud-plan/{plan.stack}/",
        location=location,
        findings=report.violations,
        rules=rules,
        version=sarif.llmcloud_version(),
        stack_name=f"{plan.project}/{plan.stack}",
        line=lambda v: _waiver_line(stack_lines, v.policy) if v.waived else 1,
    )


def _stack_file_lines(plan: Plan) -> list[str]:
    try:
        return plan.stack_file.read_text().splitlines()
    except OSError:
        return []


def _waiver_line(lines: list[str], rule_id: str) -> int:
    """1-based line of the waiver naming `rule_id` in the stack file (1 if not found)."""
    for i, line in enumerate(lines, start=1):
        if "rule" in line and rule_id in line:
            return i
    return 1
