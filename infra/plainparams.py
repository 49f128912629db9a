"""Typer parameter conversion without pydantic for the plain values a command's flags take.

Why: typer 0.29 converts every parameter through a pydantic TypeAdapter, and importing
pydantic and building the adapters costs ~80 ms of a command that is over in ~0.4 s
(`llmcloud stage` re-run, measured with `python -X importtime` and cProfile). A `str`
arrives from the command line as a `str`, an `int` as ASCII digits, a repeated `list[str]`
option as a tuple of `str`: for exactly those values the result is known without pydantic.
Anything else (`--concurrency abc`, `--concurrency 1_0`, another annotation, a parser,
min/max) goes to typer's own conversion, so its values, error messages and exit codes are
typer's, unchanged.

Use: `@app.command(cls=PlainParamsCommand)`, and `typer.Typer(cls=PlainParamsGroup)` for the
group's own --help option (converted on every command, given or not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from typer._click import Context
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer.core import TyperCommand, TyperGroup

# What pydantic (lax mode) turns into int(value) for certain; anything else is its call.
_ASCII_INT = re.compile(r"-?[0-9]+")

_PLAIN_KINDS: dict[Any, str] = {str: "str", int: "int", bool: "bool", list[str]: "strs"}


@dataclass(frozen=True)
class PlainRuntimeParam(RuntimeParam):
    """`str`, `int`, `bool` or `list[str]` converted directly; any other value by typer."""

    kind: str  # "str" | "int" | "bool" | "strs"

    def _coerce_value(self, value: Any, param: Any, ctx: Context) -> Any:
        if self.kind in ("str", "bool") and type(value) is (str if self.kind == "str" else bool):
            return value
        if self.kind == "int":
            if type(value) is int:  # a default (bool is not an int here)
                return value
            if type(value) is str and _ASCII_INT.fullmatch(value):
                return int(value)
        if (
            self.kind == "strs"
            and isinstance(value, (list, tuple))
            and all(type(v) is str for v in value)
        ):
            return list(value)
        return build_runtime_param(param.type_descriptor)._coerce_value(value, param, ctx)


def plain_runtime_param(descriptor: TypeDescriptor) -> PlainRuntimeParam | None:
    """The direct conversion of a parameter, None when typer's own is needed."""
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None:
        return None
    if (
        getattr(info, "click_type", None) is not None
        or info.min is not None
        or info.max is not None
    ):
        return None
    try:
        kind = _PLAIN_KINDS.get(descriptor.annotation)
    except TypeError:  # an unhashable annotation: not one of ours
        return None
    if kind is None:
        return None
    return PlainRuntimeParam(parameter_info=info, annotation=descriptor.annotation, kind=kind)


def _use_plain(param: Any) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(param, "_runtime_param", None) is not None:
        return
    plain = plain_runtime_param(descriptor)
    if plain is not None:
        param._runtime_param = plain  # typer's lazily built converter, built now


class PlainParamsCommand(TyperCommand):
    """A typer command whose str/int/bool/list[str] parameters skip pydantic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _use_plain(param)

    def get_help_option(self, ctx: Context) -> Any:
        # --help is made lazily; its value is None unless given, which typer converts too
        option = super().get_help_option(ctx)
        _use_plain(option)
        return option


class PlainParamsGroup(TyperGroup):
    """A typer group whose own --help skips pydantic (its commands choose for themselves)."""

    def get_help_option(self, ctx: Context) -> Any:
        option = super().get_help_option(ctx)
        _use_plain(option)
        return option
