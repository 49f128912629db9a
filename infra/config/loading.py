"""Loading a stack config: the project and stack files (YAML that refuses duplicate keys),
Pulumi's runtime config, and the validation error text that names the key path, the value
and what is allowed."""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from infra.config.schema import (
    ENVIRONMENTS,
    NAMESPACE,
    PATTERN_MEANINGS,
    ConfigError,
    StackConfig,
)

# StackConfig fields Pulumi sets (the project name, the stack name, aws:region): never keys
# of the llmcloud namespace.
PULUMI_SET_FIELDS = ("project", "stack", "region")
_SHOWN_VALUE_MAX_CHARS = 120


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping names the same key twice (PyYAML alone keeps the last one silently)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=again)
        self.key, self.first, self.again = key, first, again


class StrictSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may be overridden by the keys next to it
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first is not None:
                raise _DuplicateKeyError(key, first.start_mark, key_node.start_mark)
            seen[key] = key_node
        # named, not super(): the libyaml loader below shares this method
        return yaml.constructor.SafeConstructor.construct_mapping(self, node, deep=deep)


class _CStrictSafeLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):
    """StrictSafeLoader on libyaml's parser (a tenth of the time on a stack file); the same
    constructor and resolver. Any error is re-reported by StrictSafeLoader, so the messages
    (line, column, context) stay PyYAML's own."""

    construct_mapping = StrictSafeLoader.construct_mapping


# path -> parsed document while `yaml_read_once()` is active (one plan's steps share it)
_READ_ONCE: ContextVar[dict[Path, Any] | None] = ContextVar("yaml_read_once", default=None)


@contextmanager
def yaml_read_once() -> Iterator[None]:
    """Within, each YAML file is parsed once (callers get their own copy): a plan reads the
    project and stack files from several steps (config, evaluation, policies)."""
    if _READ_ONCE.get() is not None:
        yield
        return
    token = _READ_ONCE.set({})
    try:
        yield
    finally:
        _READ_ONCE.reset(token)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; errors name the file, the line and what is wrong (ConfigError)."""
    cache = _READ_ONCE.get()
    if cache is None:
        return _parse_yaml(path)
    key = path.resolve()
    if key not in cache:
        cache[key] = _parse_yaml(path)
    return copy.deepcopy(cache[key])


def _parse_yaml(path: Path) -> Any:
    shown = shown_path(path)
    try:
        text = path.read_text()
        try:
            return yaml.load(text, Loader=_CStrictSafeLoader)
        except yaml.YAMLError:
            pass  # parsed again below, for PyYAML's own message
        return yaml.load(text, Loader=StrictSafeLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as e:
        raise ConfigError(
            f"{shown}:{e.again.line + 1}: duplicate key {e.key!r} (first at line "
            f"{e.first.line + 1}); YAML would keep only the last one: remove or merge one of them"
        ) from None
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"{shown}: not valid YAML: {_yaml_problem(e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{shown}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{shown}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    """`line L, column C: <problem> (<context> at line L', column C')`, 1-based."""
    mark = error.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    text = where + (error.problem or "unreadable")
    if error.context:
        cm = error.context_mark
        text += f" ({error.context}" + (
            f" that starts at line {cm.line + 1}, column {cm.column + 1})" if cm else ")"
        )
    return text


def stack_file(project_dir: Path, stack: str) -> Path:
    """Where a stack's config lives, honouring `stackConfigDir` of Pulumi.yaml."""
    project = read_project(project_dir)
    config_dir = project.get("stackConfigDir") or "."
    return project_dir / config_dir / f"Pulumi.{stack}.yaml"


def read_project(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "Pulumi.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no Pulumi.yaml here; pass --project DIR of a Pulumi project")
    data = load_yaml(path) or {}
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{shown_path(path)}: must be a mapping with a 'name' key")
    return data


def read_stack_file(path: Path) -> dict[str, Any]:
    """The raw `config:` map of a stack file (`{key: value}`; secrets stay `{secure: ...}`)."""
    if not path.is_file():
        stacks = sorted(p.name for p in path.parent.glob("Pulumi.*.yaml"))
        raise ConfigError(
            f"{path}: no such stack file; stacks here: " + (", ".join(stacks) or "none")
        )
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown_path(path)}: must be a mapping with a 'config' key")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{shown_path(path)}: 'config' must be a mapping of keys to values")
    return config


def top_level_keys() -> list[str]:
    """The keys a stack file may set in the llmcloud namespace."""
    return [name for name in StackConfig.model_fields if name not in PULUMI_SET_FIELDS]


def parse_stack_config(
    raw: dict[str, Any],
    *,
    project: str,
    stack: str,
    source: str = "stack config",
    today: date | None = None,
) -> StackConfig:
    """Validate the raw config map of one stack. `raw` keys are `namespace:key`. `today` is
    the day of the plan (the EKS calendar's day; default: today, UTC)."""
    values: dict[str, Any] = {"project": project, "stack": stack}
    for key, value in raw.items():
        if not isinstance(key, str) or ":" not in key:
            raise ConfigError(
                f"{source}: key {key!r} has no namespace; write it as {NAMESPACE}:{key}"
            )
        namespace, name = key.split(":", 1)
        if key == "aws:region":
            values["region"] = value
        elif namespace == NAMESPACE:
            if name in PULUMI_SET_FIELDS:
                raise ConfigError(
                    f"{source}: {key} is set by Pulumi (the project name, the stack name, "
                    "aws:region); remove it"
                )
            values[name] = _decode(value)
    if "region" not in values:
        raise ConfigError(f"{source}: aws:region is required (for example us-east-1)")
    if "environment" not in values:
        if stack not in ENVIRONMENTS:
            raise ConfigError(
                f"{source}: {NAMESPACE}:environment is required for stack {stack!r}: only "
                f"stacks named {', '.join(ENVIRONMENTS)} take it from their name, and it picks "
                "the defaults and checks (policy enforcement, prod's 3 zones and private "
                f"endpoint); set {NAMESPACE}:environment to one of: {', '.join(ENVIRONMENTS)}"
            )
        values["environment"] = stack
    context = {"today": today} if today is not None else None
    try:
        return StackConfig.model_validate(values, context=context)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def _decode(value: Any) -> Any:
    """Pulumi hands object values to programs as JSON strings; the stack file has them as
    YAML. Accept both. A `{secure: ...}` value the offline plan cannot decrypt stays a
    placeholder string."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, dict) and set(value) == {"secure"}:
        return "[secret]"
    return value


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per error: `<key path> = <value>: <what is allowed>`."""
    lines = []
    for err in error.errors(include_url=False):
        loc = list(err["loc"])
        ctx = err.get("ctx") or {}
        key = _key_path(loc)
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: {_unknown_key(loc)}")
            continue
        if err["type"] == "llmcloud":
            if ctx.get("field"):
                loc.extend(_split_path(ctx["field"]))
                key = _key_path(loc)
            value, allowed = ctx.get("value"), ctx.get("allowed")
            if isinstance(value, str) and isinstance(allowed, str):
                allowed += _did_you_mean(value, _listed_choices(allowed))
        elif err["type"] == "missing":
            value = None
            allowed = "required"
        elif err["type"] == "string_pattern_mismatch":
            value = err.get("input")
            pattern = str(ctx.get("pattern", ""))
            meaning = PATTERN_MEANINGS.get(pattern)
            allowed = (
                f"must be {meaning} (pattern {pattern})"
                if meaning
                else f"must match the pattern {pattern}"
            )
        else:
            value = err.get("input")
            allowed = err["msg"].removeprefix("Value error, ")
            if err["type"] == "literal_error" and isinstance(value, str):
                allowed += _did_you_mean(value, _literal_choices(str(ctx.get("expected", ""))))
        shown = "(missing)" if value is None and err["type"] == "missing" else _show(value)
        lines.append(f"{key} = {shown}: {allowed}")
    head = f"{source}: invalid config"
    if len(lines) == 1:
        return f"{head}: {lines[0]}"
    return head + ":\n" + "\n".join(f"  - {line}" for line in lines)


def _unknown_key(loc: list[str | int]) -> str:
    """`unknown key (did you mean ...?); allowed keys ...` for the last element of `loc`."""
    name = str(loc[-1])
    if len(loc) == 1:
        allowed = top_level_keys()
        return (
            "unknown key"
            + _did_you_mean(name, allowed, prefix=f"{NAMESPACE}:")
            + f"; the keys of the {NAMESPACE} namespace are: "
            + ", ".join(allowed)
            + " (and aws:region)"
        )
    allowed = _allowed_keys(loc[:-1])
    return (
        "unknown key" + _did_you_mean(name, allowed) + "; allowed keys here: " + ", ".join(allowed)
    )


def _did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """` (did you mean X?)` for the closest choice, ignoring case; "" when none is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    if not close or by_lower[close[0]] == word:
        return ""
    return f" (did you mean {prefix}{by_lower[close[0]]}?)"


# "must be one of A, B, C" / "must name a GPU node group: a, b": the choices a check lists
_LISTED_CHOICES = re.compile(
    r"(?:one of|node group:|regions in the catalog:) ([^;()]+?)(?:$|;| \()"
)


def _listed_choices(allowed: str) -> list[str]:
    found = _LISTED_CHOICES.search(allowed)
    return [c.strip() for c in found.group(1).split(",")] if found else []


def _literal_choices(expected: str) -> list[str]:
    """The choices of pydantic's literal_error text `'a', 'b' or 'c'`."""
    return re.findall(r"'([^']*)'", expected)


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return parts


def _key_path(loc: list[str | int]) -> str:
    if loc and loc[0] == "region":
        return "aws:region"
    out = NAMESPACE + ":"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("" if i == 0 else ".") + str(part)
    return out


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except TypeError:
            text = repr(value)
    if len(text) > _SHOWN_VALUE_MAX_CHARS:
        text = text[: _SHOWN_VALUE_MAX_CHARS - 1] + "…"
    return text


def _allowed_keys(loc: list[str | int]) -> list[str]:
    """The field names of the model found at `loc` inside StackConfig."""
    model: Any = StackConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def load_stack_config(project_dir: Path, stack: str, *, today: date | None = None) -> StackConfig:
    """Read and validate `stacks/Pulumi.<stack>.yaml` of a project directory."""
    project = read_project(project_dir)
    path = stack_file(project_dir, stack)
    raw = read_stack_file(path)
    return parse_stack_config(
        raw, project=project["name"], stack=stack, source=shown_path(path), today=today
    )


def config_from_pulumi() -> StackConfig:
    """The stack config as the Pulumi engine hands it to the running program."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return parse_stack_config(
        raw,
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        source=f"stack {pulumi.get_stack()}",
    )
