"""Loading a stack config: the project and stack files, Pulumi's runtime config, and the
validation error text that names the key path, the value and what is allowed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from infra.config.schema import ENVIRONMENTS, NAMESPACE, ConfigError, StackConfig


def stack_file(project_dir: Path, stack: str) -> Path:
    """Where a stack's config lives, honouring `stackConfigDir` of Pulumi.yaml."""
    project = read_project(project_dir)
    config_dir = project.get("stackConfigDir") or "."
    return project_dir / config_dir / f"Pulumi.{stack}.yaml"


def read_project(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "Pulumi.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no Pulumi.yaml here; pass --project DIR of a Pulumi project")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{path}: must be a mapping with a 'name' key")
    return data


def read_stack_file(path: Path) -> dict[str, Any]:
    """The raw `config:` map of a stack file (`{key: value}`; secrets stay `{secure: ...}`)."""
    if not path.is_file():
        stacks = sorted(p.name for p in path.parent.glob("Pulumi.*.yaml"))
        raise ConfigError(
            f"{path}: no such stack file; stacks here: " + (", ".join(stacks) or "none")
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping with a 'config' key")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: 'config' must be a mapping of keys to values")
    return config


def parse_stack_config(
    raw: dict[str, Any], *, project: str, stack: str, source: str = "stack config"
) -> StackConfig:
    """Validate the raw config map of one stack. `raw` keys are `namespace:key`."""
    values: dict[str, Any] = {"project": project, "stack": stack}
    for key, value in raw.items():
        if ":" not in key:
            raise ConfigError(
                f"{source}: key {key!r} has no namespace; write it as {NAMESPACE}:{key}"
            )
        namespace, name = key.split(":", 1)
        if key == "aws:region":
            values["region"] = value
        elif namespace == NAMESPACE:
            if name in ("project", "stack", "region"):
                raise ConfigError(
                    f"{source}: {key} is set by Pulumi (the project name, the stack name, aws:region)"
                )
            values[name] = _decode(value)
    if "region" not in values:
        raise ConfigError(f"{source}: aws:region is required (for example us-east-1)")
    if "environment" not in values and stack in ENVIRONMENTS:
        values["environment"] = stack
    try:
        return StackConfig.model_validate(values)
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
    lines = []
    for err in error.errors(include_url=False):
        loc = list(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "llmcloud":
            if ctx.get("field"):
                loc.extend(_split_path(ctx["field"]))
            value, allowed = ctx.get("value"), ctx.get("allowed")
        elif err["type"] == "extra_forbidden":
            value = err.get("input")
            allowed = "unknown key; allowed keys here: " + ", ".join(_allowed_keys(loc[:-1]))
        elif err["type"] == "missing":
            value = None
            allowed = "required"
        else:
            value = err.get("input")
            allowed = err["msg"].removeprefix("Value error, ")
        key = _key_path(loc)
        shown = "(missing)" if value is None and err["type"] == "missing" else _show(value)
        lines.append(f"{key} = {shown}: {allowed}")
    head = f"{source}: invalid config"
    if len(lines) == 1:
        return f"{head}: {lines[0]}"
    return head + ":\n" + "\n".join(f"  - {line}" for line in lines)


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
        return repr(value)
    try:
        return json.dumps(value, default=str)
    except TypeError:
        return repr(value)


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


def load_stack_config(project_dir: Path, stack: str) -> StackConfig:
    """Read and validate `stacks/Pulumi.<stack>.yaml` of a project directory."""
    project = read_project(project_dir)
    path = stack_file(project_dir, stack)
    raw = read_stack_file(path)
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    return parse_stack_config(raw, project=project["name"], stack=stack, source=str(shown))


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
