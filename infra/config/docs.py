"""The README's stack config tables, generated from the model: each field's key path,
default and `Field(description=...)`, with the values and bounds the schema allows.

    python -m infra.config.docs            rewrite the README sections between the markers
    python -m infra.config.docs --check    exit 1 when the README is out of date

A table sits between `<!-- config-table:begin PATH -->` and `<!-- config-table:end -->`;
PATH is where its model lives in the stack config: `llmcloud` (the top level), `cluster`,
`cluster.gpu_node_groups[]`, `storage.fsx`, `training[]`, `serving[]`. A nested model is
listed in its parent's table (`network.vpc_cidr`) unless it has a table of its own.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from infra.config.loading import PULUMI_SET_FIELDS
from infra.config.schema import NAMESPACE, StackConfig

README_PATH = Path(__file__).resolve().parents[2] / "README.md"
TOP = NAMESPACE
_BEGIN = re.compile(r"<!-- config-table:begin (?P<path>\S+) -->\n")
_END = "<!-- config-table:end -->"
# Literal choices listed in full up to this many; longer lists are abridged.
_MAX_CHOICES_LISTED = 8
# Tables that have a section of their own, by path.
TABLE_PATHS = (
    TOP,
    "cluster",
    "cluster.gpu_node_groups[]",
    "storage.fsx",
    "training[]",
    "serving[]",
    "gateway",
    "deploy",
    "deploy.runner",
)


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the BaseModel an annotation holds, whether as a list or dict of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple, dict):
        inner, _ = _model_of(args[-1]) if args else (None, False)
        return inner, inner is not None
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            found, many = _model_of(arg)
            if found is not None:
                return found, many
    return None, False


def _literal_choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    choices: list[Any] = []
    for arg in typing.get_args(annotation):
        choices += _literal_choices(arg)
    return choices


def _code(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    return f"`{text}`"


def _default_text(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "doc_default" in extra:
        return str(extra["doc_default"])
    if info.default_factory is not None:
        default = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        default = info.default
    if default is None or isinstance(default, SecretStr):
        return "unset"
    if isinstance(default, BaseModel):
        return ""
    if isinstance(default, list) and default and isinstance(default[0], BaseModel):
        return ", ".join(_code(getattr(m, "name", "…")) for m in default)
    if isinstance(default, ipaddress.IPv4Network | ipaddress.IPv4Address):
        return _code(str(default))
    if isinstance(default, list):
        return _code([str(v) if not isinstance(v, int | float | str) else v for v in default])
    return _code(default)


def _bounds(info: FieldInfo) -> str:
    """`Range: 1–365.`, `At least 0.`, from the field's numeric constraints."""
    low = high = None
    for meta in info.metadata:
        for name in ("ge", "gt"):
            if getattr(meta, name, None) is not None:
                low = (name, getattr(meta, name))
        for name in ("le", "lt"):
            if getattr(meta, name, None) is not None:
                high = (name, getattr(meta, name))
    if low and high and low[0] == "ge" and high[0] == "le":
        return f"Range: {low[1]}–{high[1]}."
    parts = []
    if low:
        parts.append(("at least " if low[0] == "ge" else "above ") + str(low[1]))
    if high:
        parts.append(("at most " if high[0] == "le" else "below ") + str(high[1]))
    return (", ".join(parts).capitalize() + ".") if parts else ""


def _allowed(info: FieldInfo) -> str:
    choices = [c for c in _literal_choices(info.annotation) if c is not None]
    if not choices:
        return _bounds(info)
    if all(f"`{c}`" in (info.description or "") for c in choices):
        return ""  # the description names every choice already
    if len(choices) > _MAX_CHOICES_LISTED:
        shown = [*choices[:6], "…", choices[-1]]
        return "One of " + ", ".join(str(c) for c in shown) + "."
    return "One of " + ", ".join(_code(c) for c in choices) + "."


def _meaning(info: FieldInfo) -> str:
    text = (info.description or "").strip()
    if text and not text.endswith("."):
        text += "."
    allowed = _allowed(info)
    return " ".join(p for p in (text, allowed) if p).replace("|", "\\|")


def _rows(model: type[BaseModel], path: str, shown: str) -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every field of `model` at `path`, keys relative to the
    table (`shown` is the prefix they are written with)."""
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        if model is StackConfig and name in PULUMI_SET_FIELDS:
            continue
        inner, many = _model_of(info.annotation)
        sub_path = f"{path}.{name}" if path != TOP else name
        key = f"{shown}{name}"
        if inner is not None and many:
            sub_path += "[]"
        if inner is not None and sub_path in TABLE_PATHS:
            rows.append((f"`{key}{'[]' if many else ''}`", _default_text(info), _meaning(info)))
            continue
        if inner is None:
            rows.append((f"`{key}`", _default_text(info), _meaning(info)))
            continue
        optional = info.default is None or many
        if optional:
            rows.append((f"`{key}{'[]' if many else ''}`", _default_text(info), _meaning(info)))
        rows += _rows(inner, sub_path, f"{key}{'[]' if many else ''}.")
    return rows


def _model_at(path: str) -> type[BaseModel]:
    model: type[BaseModel] = StackConfig
    if path == TOP:
        return model
    for part in path.split("."):
        found, _ = _model_of(model.model_fields[part.removesuffix("[]")].annotation)
        if found is None:
            raise KeyError(f"{path}: {part} is not a config section")
        model = found
    return model


def render_table(path: str) -> str:
    """The markdown table of one config section."""
    rows = _rows(_model_at(path), path, "")
    if path == TOP:
        region = StackConfig.model_fields["region"]
        rows.insert(0, ("`aws:region`", "required", _meaning(region)))
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| {k} | {d} | {m} |" for k, d, m in rows]
    return "\n".join(lines) + "\n"


def render_readme(text: str) -> str:
    """README text with every marked table regenerated."""
    out, pos = [], 0
    for begin in _BEGIN.finditer(text):
        end = text.find(_END, begin.end())
        if end < 0:
            raise ValueError(f"README: no {_END} after {begin.group(0).strip()}")
        out += [text[pos : begin.end()], render_table(begin.group("path"))]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def table_paths(text: str) -> list[str]:
    return [m.group("path") for m in _BEGIN.finditer(text)]


def undocumented_fields() -> list[str]:
    """`Model.field` of every config field without a description."""
    missing: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            if not (info.description or "").strip():
                missing.append(f"{model.__name__}.{name}")
            inner, _ = _model_of(info.annotation)
            if inner is not None:
                walk(inner)

    walk(StackConfig)
    return missing


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    readme = Path(paths[0]) if paths else README_PATH
    missing = undocumented_fields()
    if missing:
        print("config fields without a description: " + ", ".join(missing), file=sys.stderr)
        return 1
    text = readme.read_text()
    rendered = render_readme(text)
    if rendered == text:
        return 0
    if check:
        print(
            f"{readme}: the config tables are out of date; run python -m infra.config.docs",
            file=sys.stderr,
        )
        return 1
    readme.write_text(rendered)
    print(f"{readme}: config tables rewritten ({', '.join(table_paths(text))})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
