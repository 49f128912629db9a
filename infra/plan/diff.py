"""`llmcloud diff`: what a change does to a stack, from two `llmcloud plan --format json` reports.

Resources are matched by URN; a head resource whose `aliases` name a base URN is the same
resource renamed (Pulumi moves it; nothing is deleted). Each matched pair is compared input by
input: the changed property paths (`scalingConfig.maxSize`, `policy.Statement[0].Action`;
JSON-string documents are compared as documents) with old -> new values, secrets masked. A
change to a property the provider cannot update in place (infra/data/replace_on_change.json,
from the providers' replace-on-change schema) makes the resource a replacement. Findings are
compared by rule, resource and message (new and resolved), and the cost estimate by its idle
and max totals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TextIO

REPLACE_ON_CHANGE_PATH = Path(__file__).resolve().parent.parent / "data" / "replace_on_change.json"
SECRET = "[secret]"  # how a plan records a secret value (infra.plan.engine.SECRET_PLACEHOLDER)
# Leaf keys whose values are credentials whatever the resource (masked even if not marked).
_SECRET_KEYS = frozenset({"password", "masterpassword", "secretstring", "token", "apikey"})
# Kubernetes Secrets hold their values under these keys.
_K8S_SECRET = "kubernetes:core/v1:Secret"
_K8S_SECRET_FIELDS = ("data", "stringData")
FORMATS = ("table", "markdown", "json")
ACTIONS = ("replace", "remove", "add", "update")  # in the order a reviewer reads them


class DiffError(Exception):
    """A plan JSON that cannot be read: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class PropertyChange:
    path: str
    old: Any
    new: Any
    replaces: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new, "replaces": self.replaces}


@dataclass(frozen=True)
class ResourceChange:
    action: str  # "add" | "remove" | "replace" | "update"
    urn: str
    type: str
    name: str
    changes: tuple[PropertyChange, ...] = ()
    old_urn: str | None = None  # the base URN, when the head answers to it through an alias
    replacement_known: bool = True  # False: no replace-on-change metadata for this type

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "changes": [c.to_json() for c in self.changes],
        }
        if self.old_urn:
            out["old_urn"] = self.old_urn
        if self.action in ("update", "replace"):
            out["replacement_known"] = self.replacement_known
        return out


@dataclass
class PlanDiff:
    base: str  # "project/stack" of each side
    head: str
    resources: list[ResourceChange] = field(default_factory=list)
    new_findings: list[dict[str, Any]] = field(default_factory=list)
    resolved_findings: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)  # hourly/monthly -> deltas
    currency: str = "USD"

    def of(self, action: str) -> list[ResourceChange]:
        return [r for r in self.resources if r.action == action]

    @property
    def empty(self) -> bool:
        return not (self.resources or self.new_findings or self.resolved_findings) and not any(
            abs(v["delta"]) >= 0.005 for period in self.cost.values() for v in period.values()
        )

    def summary(self) -> dict[str, int]:
        return {a: len(self.of(a)) for a in ACTIONS}

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "summary": self.summary(),
            "resources": [r.to_json() for r in self.resources],
            "findings": {"new": self.new_findings, "resolved": self.resolved_findings},
            "cost": {"currency": self.currency, **self.cost},
        }


# ----------------------------------------------------------------------------- reading


def load_plan(path: Path) -> dict[str, Any]:
    """A plan report written by `llmcloud plan --format json` (DiffError otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DiffError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DiffError(f"{path}: is a directory, not a plan JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DiffError(f"{path}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise DiffError(
            f"{path}: not JSON (line {e.lineno}: {e.msg}); write one with "
            "`llmcloud plan --format json --out FILE`"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise DiffError(
            f"{path}: not an llmcloud plan report (no 'resources' list); write one with "
            "`llmcloud plan --format json --out FILE`"
        )
    return data


@cache
def _replace_on_change() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    data = json.loads(REPLACE_ON_CHANGE_PATH.read_text())
    types = {k: tuple(v) for k, v in data["types"].items()}
    packages = {k: tuple(v) for k, v in data["packages"].items()}
    return types, packages


def replace_paths(type_: str) -> tuple[str, ...] | None:
    """The property paths whose change replaces a resource of this type; None if unknown."""
    types, packages = _replace_on_change()
    found = types.get(type_)
    package = packages.get(type_.split(":", 1)[0])
    if found is None and package is None:
        return None
    return (*(found or ()), *(package or ()))


# ----------------------------------------------------------------------------- comparing


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z_$][\w$]*", key) else json.dumps(key)


def _join(path: str, key: str) -> str:
    part = _key(key)
    if part.startswith('"'):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _as_document(value: Any) -> Any:
    """A JSON object/array held as a string (IAM/S3/KMS policies, JSON config) as data."""
    if isinstance(value, str) and value[:1] in ("{", "[") and value != SECRET:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _changes(old: Any, new: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    old, new = _as_document(old), _as_document(new)
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _changes(old.get(key), new.get(key), _join(path, str(key)))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _changes(a, b, f"{path}[{i}]")
    else:
        yield path, old, new


def _strip_indices(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)


def _under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or lies inside it (list indices ignored)."""
    bare = _strip_indices(path)
    return bare == prefix or bare.startswith(prefix + ".") or bare.startswith(prefix + "[")


def _masked(type_: str, path: str, value: Any) -> Any:
    if value is None:
        return None
    leaf = _strip_indices(path).rsplit(".", 1)[-1].strip('"[]').lower()
    secret = value == SECRET or leaf in _SECRET_KEYS
    if type_ == _K8S_SECRET and any(_under(path, f) for f in _K8S_SECRET_FIELDS):
        secret = True
    if secret:
        return SECRET
    if isinstance(value, dict | list) and type_ == _K8S_SECRET:
        return SECRET
    return value


def _resource_change(base: dict[str, Any], head: dict[str, Any], renamed: bool) -> ResourceChange:
    type_ = head["type"]
    forced = replace_paths(type_)
    changes = []
    for path, old, new in _changes(base.get("inputs") or {}, head.get("inputs") or {}):
        replaces = forced is not None and any(_under(path, f) or _under(f, path) for f in forced)
        changes.append(
            PropertyChange(path, _masked(type_, path, old), _masked(type_, path, new), replaces)
        )
    if base["type"] != type_:
        changes.insert(0, PropertyChange("(type)", base["type"], type_, replaces=False))
    replace = any(c.replaces for c in changes)
    action = "replace" if replace else "update"
    return ResourceChange(
        action,
        head["urn"],
        type_,
        head.get("name") or head["urn"].rsplit("::", 1)[-1],
        tuple(changes),
        old_urn=base["urn"] if renamed else None,
        replacement_known=forced is not None,
    )


def _finding_key(v: dict[str, Any], canonical: dict[str, str]) -> tuple[str, str, str]:
    urn = v.get("urn") or ""
    return (v.get("policy", ""), canonical.get(urn, urn), v.get("message", ""))


def _cost(plan: dict[str, Any]) -> dict[str, dict[str, float]]:
    cost = plan.get("cost") or {}
    return {
        period: {
            level: float((cost.get(period) or {}).get(level) or 0.0) for level in ("idle", "max")
        }
        for period in ("hourly", "monthly")
    }


def diff_plans(base: dict[str, Any], head: dict[str, Any]) -> PlanDiff:
    """Everything that differs between two plan reports of a stack."""
    diff = PlanDiff(
        base=f"{base.get('project', '?')}/{base.get('stack', '?')}",
        head=f"{head.get('project', '?')}/{head.get('stack', '?')}",
        currency=(head.get("cost") or {}).get("currency", "USD"),
    )

    def relevant(r: dict[str, Any]) -> bool:
        return r.get("type") != "pulumi:pulumi:Stack"

    base_by_urn = {r["urn"]: r for r in base["resources"] if relevant(r)}
    canonical: dict[str, str] = {}  # head urn -> the base urn it is
    matched: set[str] = set()
    for r in head["resources"]:
        if not relevant(r):
            continue
        if r["urn"] in base_by_urn:
            old, renamed = base_by_urn[r["urn"]], False
        else:
            alias = next((a for a in r.get("aliases") or [] if a in base_by_urn), None)
            if alias is None:
                diff.resources.append(ResourceChange("add", r["urn"], r["type"], r["name"]))
                continue
            old, renamed = base_by_urn[alias], True
        if old["urn"] in matched:  # two head resources claim one base: the second is new
            diff.resources.append(ResourceChange("add", r["urn"], r["type"], r["name"]))
            continue
        matched.add(old["urn"])
        canonical[r["urn"]] = old["urn"]
        change = _resource_change(old, r, renamed)
        if change.changes or renamed:
            diff.resources.append(change)
    for urn, r in base_by_urn.items():
        if urn not in matched:
            diff.resources.append(ResourceChange("remove", urn, r["type"], r["name"]))
    diff.resources.sort(key=lambda c: (ACTIONS.index(c.action), c.type, c.urn))

    base_findings = {_finding_key(v, {}): v for v in base.get("violations") or []}
    head_findings = {_finding_key(v, canonical): v for v in head.get("violations") or []}
    diff.new_findings = [v for k, v in head_findings.items() if k not in base_findings]
    diff.resolved_findings = [v for k, v in base_findings.items() if k not in head_findings]

    old_cost, new_cost = _cost(base), _cost(head)
    diff.cost = {
        period: {
            level: {
                "base": round(old_cost[period][level], 2),
                "head": round(new_cost[period][level], 2),
                "delta": round(new_cost[period][level] - old_cost[period][level], 2),
            }
            for level in ("idle", "max")
        }
        for period in ("hourly", "monthly")
    }
    return diff


# ----------------------------------------------------------------------------- rendering


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "…"


def _signed(amount: float) -> str:
    return f"{'+' if amount > 0 else '−' if amount < 0 else '±'}{abs(amount):,.2f}"


def change_lines(change: ResourceChange) -> list[str]:
    """`path: old → new` per changed property, replacing ones marked."""
    return [
        f"{c.path}: {_value(c.old)} → {_value(c.new)}"
        + ("  (forces replacement)" if c.replaces else "")
        for c in change.changes
    ]


def _finding_text(v: dict[str, Any]) -> str:
    urn = v.get("urn")
    name = urn.rsplit("::", 1)[-1] if urn else "(stack)"
    return f"{v.get('policy')} [{v.get('enforcement')}] {name}: {v.get('message')}"


def render_markdown(diff: PlanDiff) -> str:
    from infra.reporting.markdown import md_cell

    s = diff.summary()
    lines = [f"## llmcloud diff: `{diff.base}` → `{diff.head}`", ""]
    if diff.empty:
        return "\n".join([*lines, "No changes: the same resources, findings and cost.", ""])
    lines.append(
        f"**{s['add']} to add, {s['update']} to update, {s['replace']} to replace, "
        f"{s['remove']} to remove**"
        + (" · ⚠️ replacements delete and recreate cloud resources" if s["replace"] else "")
    )
    lines.append("")
    if diff.resources:
        lines += ["| | resource | type | changes |", "|---|---|---|---|"]
        marks = {
            "add": "➕ add",
            "remove": "➖ remove",
            "replace": "♻️ replace",
            "update": "✏️ update",
        }
        for r in diff.resources:
            details = "<br>".join(f"`{md_cell(line)}`" for line in change_lines(r))
            if r.old_urn:
                details = f"renamed from `{md_cell(r.old_urn.rsplit('::', 1)[-1])}` (alias)" + (
                    "<br>" + details if details else ""
                )
            lines.append(f"| {marks[r.action]} | `{md_cell(r.name)}` | `{r.type}` | {details} |")
        lines.append("")
    cost = diff.cost
    lines += [
        f"**Cost** ({diff.currency}/h): idle {cost['hourly']['idle']['base']:,.2f} → "
        f"{cost['hourly']['idle']['head']:,.2f} ({_signed(cost['hourly']['idle']['delta'])}), "
        f"max {cost['hourly']['max']['base']:,.2f} → {cost['hourly']['max']['head']:,.2f} "
        f"({_signed(cost['hourly']['max']['delta'])}); per month: idle "
        f"{_signed(cost['monthly']['idle']['delta'])}, max {_signed(cost['monthly']['max']['delta'])}",
        "",
    ]
    for title, found in (
        ("New findings", diff.new_findings),
        ("Resolved findings", diff.resolved_findings),
    ):
        if found:
            lines += (
                [f"**{title}**", ""] + [f"- `{md_cell(_finding_text(v))}`" for v in found] + [""]
            )
    return "\n".join(lines)


def render_table(diff: PlanDiff, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    s = diff.summary()
    console.print(
        Text.assemble(
            ("llmcloud diff ", "bold"),
            (f"{diff.base} → {diff.head}", "bold cyan"),
            f"  {s['add']} to add, {s['update']} to update, {s['replace']} to replace, "
            f"{s['remove']} to remove",
        )
    )
    if diff.empty:
        console.print("No changes: the same resources, findings and cost.")
        return
    if diff.resources:
        table = Table(header_style="bold", show_lines=True)
        table.add_column("action", no_wrap=True)
        table.add_column("resource", overflow="fold")
        table.add_column("type", overflow="fold")
        table.add_column("changes", overflow="fold", ratio=1)
        styles = {"add": "green", "remove": "red", "replace": "red bold", "update": "yellow"}
        for r in diff.resources:
            details = change_lines(r)
            if r.old_urn:
                details.insert(0, f"renamed from {r.old_urn.rsplit('::', 1)[-1]} (alias)")
            table.add_row(
                Text(r.action, style=styles[r.action]),
                Text(r.name),
                r.type,
                Text("\n".join(details)),
            )
        console.print(table)
    cost = diff.cost["hourly"]
    console.print(
        f"Cost {diff.currency}/h: idle {cost['idle']['base']:,.2f} → {cost['idle']['head']:,.2f} "
        f"({_signed(cost['idle']['delta'])}), max {cost['max']['base']:,.2f} → "
        f"{cost['max']['head']:,.2f} ({_signed(cost['max']['delta'])})",
        highlight=False,
    )
    for title, found in (("new finding", diff.new_findings), ("resolved", diff.resolved_findings)):
        for v in found:
            console.print(Text(f"{title}: {_finding_text(v)}"))


def render_json(diff: PlanDiff) -> str:
    return json.dumps(diff.to_json(), indent=2, default=str) + "\n"


# ----------------------------------------------------------------------------- plan --compare


def compared(
    base: dict[str, Any], report: Any, format: str, full: bool = False
) -> Callable[[TextIO], None]:
    """`llmcloud plan --compare BASE.json`: the diff against BASE first, then the plan itself
    (markdown: the full plan collapsed under the diff, as the pull-request comment shows it;
    json: the plan report with an added top-level `diff`)."""
    from infra.plan import report as plan_report

    head = report.to_json()
    diff = diff_plans(base, head)

    def render(fh: TextIO) -> None:
        if format == "json":
            fh.write(json.dumps({**head, "diff": diff.to_json()}, indent=2, default=str) + "\n")
        elif format == "markdown":
            fh.write(render_markdown(diff))
            fh.write("\n<details><summary>Full plan</summary>\n\n")
            fh.write(plan_report.render_markdown(report))
            fh.write("\n</details>\n")
        else:
            from rich.console import Console

            console = (
                Console(file=fh) if fh.isatty() else Console(file=fh, width=140, no_color=True)
            )
            plan_report.render_table(report, console, full=full)
            console.print()
            render_table(diff, console)

    return render
