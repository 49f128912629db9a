"""The SDKs' own type declarations, used to check what the plan recorded.

Under mocks, a misspelled key inside a nested input (`vpc_config={"endpoint_public_acess":
False}`) reaches the engine untranslated and nobody complains; the real provider would reject
it at preview. Every pulumi-aws / pulumi-kubernetes resource class ships typed `*Args`
declarations; this module maps a type token to them and walks recorded inputs against them.
"""

from __future__ import annotations

import collections.abc
import difflib
import enum
import importlib
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
from pulumi import _types as pulumi_types

_PACKAGES = {
    "aws": "pulumi_aws",
    "kubernetes": "pulumi_kubernetes",
    "random": "pulumi_random",
    "awsx": "pulumi_awsx",
    "eks": "pulumi_eks",
}


@dataclass(frozen=True)
class UnknownProperty:
    urn: str
    type: str
    path: str
    suggestion: str | None

    def message(self) -> str:
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"{self.urn}: unknown input property {self.path!r} of {self.type}{hint}"


@cache
def _token_index(package: str) -> dict[str, tuple[str, str]]:
    """type token -> (python module, class name), from the package's own registration data."""
    module_name = _PACKAGES.get(package)
    if module_name is None:
        return {}
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return {}
    source = Path(module.__file__).read_text()  # read once, cached
    match = re.search(r'resource_modules="""(.*?)"""', source, re.S)
    index: dict[str, tuple[str, str]] = {}
    if match:
        for entry in json.loads(match.group(1)):
            for token, cls in entry["classes"].items():
                index[token] = (entry["fqn"], cls)
    match = re.search(r'resource_packages="""(.*?)"""', source, re.S)
    if match:
        for entry in json.loads(match.group(1)):
            token = entry.get("token")
            if token:
                index[token] = (entry["fqn"], entry["class"])
    return index


@cache
def _module_index(package: str) -> dict[str, str]:
    """token module (`ec2`, `apps/v1`) -> python module, from the same registration data."""
    index: dict[str, str] = {}
    root = _PACKAGES.get(package)
    if root:
        index["index"] = root
    for token, (fqn, _) in _token_index(package).items():
        module = token.split(":")[1]
        index.setdefault(module, fqn)
        if package == "aws":  # aws tokens carry the file in the module: `ec2/vpc`
            index.setdefault(module.split("/")[0], fqn)
    return index


@cache
def resource_class(token: str) -> type | None:
    """The Python resource class for a type token, or None for unknown packages."""
    if token.startswith("pulumi:providers:"):
        package = token.rsplit(":", 1)[1]
        module_name = _PACKAGES.get(package)
        if module_name is None:
            return None
        return getattr(importlib.import_module(module_name), "Provider", None)
    found = _token_index(token.split(":", 1)[0]).get(token)
    if found is None:
        return None
    return getattr(importlib.import_module(found[0]), found[1], None)


@cache
def args_class(token: str) -> type | None:
    cls = resource_class(token)
    if cls is None:
        return None
    module = (
        importlib.import_module(cls.__module__.rsplit(".", 1)[0]) if "." in cls.__module__ else None
    )
    for candidate in (f"{cls.__name__}InitArgs", f"{cls.__name__}Args"):
        for mod in (module, importlib.import_module(cls.__module__)):
            found = getattr(mod, candidate, None) if mod else None
            if found is not None and pulumi_types.is_input_type(found):
                return found
    return None


@cache
def resource_output_names(token: str) -> frozenset[str]:
    """camelCase names of a resource's output properties (empty if the class is unknown)."""
    return frozenset(resource_output_shapes(token))  # the class's type hints resolved once


@cache
def _input_fields(cls: type) -> tuple[dict[str, Any], dict[str, str]]:
    """(camelCase name -> declared type, snake_case name -> camelCase name) of an input type."""
    return pulumi_types.input_type_types(cls), pulumi_types.input_type_py_to_pulumi_names(cls)


def _per_annotation(table: dict, compute: Callable[[Any], Any], typ: Any) -> Any:
    """`compute(typ)`, once per declared annotation (the walks run per value); an
    annotation that cannot be hashed is computed each time."""
    try:
        return table[typ]
    except KeyError:
        found = table[typ] = compute(typ)
        return found
    except TypeError:
        return compute(typ)


_CANDIDATES: dict[Any, tuple[Any, ...]] = {}


def _candidates(typ: Any) -> tuple[Any, ...]:
    """Strip Input/Optional/Union/Awaitable/Output down to the concrete types a value may be."""
    return _per_annotation(_CANDIDATES, lambda t: tuple(_strip(t)), typ)


def _strip(typ: Any) -> list[Any]:
    origin = typing.get_origin(typ)
    if origin is typing.Union:
        out: list[Any] = []
        for arg in typing.get_args(typ):
            out.extend(_strip(arg))
        return out
    if origin is collections.abc.Awaitable or (
        isinstance(origin, type) and origin.__name__ == "Output"
    ):
        return []
    if typ is type(None):
        return []
    return [typ]


def check_inputs(urn: str, token: str, inputs: dict[str, Any]) -> list[UnknownProperty]:
    """Every input key the SDK does not declare for this resource type, with a suggestion."""
    if token.startswith("pulumi:providers:"):
        return []
    cls = args_class(token)
    if cls is None:
        return []
    problems: list[UnknownProperty] = []
    _walk_object(urn, token, inputs, cls, "", problems)
    return problems


def _walk_object(urn: str, token: str, value: dict, cls: type, path: str, out: list) -> None:
    types, py_names = _input_fields(cls)
    for key, item in value.items():
        here = f"{path}.{key}" if path else key
        if key not in types:
            if key.startswith("__") or (
                token.startswith("kubernetes:") and key in ("apiVersion", "kind")
            ):
                continue
            names = list(types) + list(py_names)
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
            suggestion = py_names.get(close[0], close[0]) if close else None
            if key in py_names:
                suggestion = py_names[key]
            out.append(UnknownProperty(urn, token, here, suggestion))
            continue
        _walk_value(urn, token, item, types[key], here, out)


def _walk_value(urn: str, token: str, value: Any, typ: Any, path: str, out: list) -> None:
    if value is None:
        return
    for kind, inner, walk in _walk_steps(typ):
        if kind == "obj":
            if isinstance(value, dict):
                _walk_object(urn, token, value, inner, path, out)
                return
        elif kind == "seq":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _walk_value(urn, token, item, inner, f"{path}[{i}]", out)
                return
        elif isinstance(value, dict):  # "map"
            if walk:
                for k, item in value.items():
                    _walk_value(urn, token, item, inner, f"{path}.{k}", out)
            return


_WALK_STEPS: dict[Any, tuple[tuple[str, Any, bool], ...]] = {}


def _walk_steps(typ: Any) -> tuple[tuple[str, Any, bool], ...]:
    """What a value of a declared annotation may be, tried in order, compiled once per
    annotation: ("obj", input type, _), ("seq", element annotation, _), ("map", value
    annotation, whether its values are input types to walk)."""
    return _per_annotation(_WALK_STEPS, _compile_steps, typ)


def _compile_steps(typ: Any) -> tuple[tuple[str, Any, bool], ...]:
    steps: list[tuple[str, Any, bool]] = []
    for candidate in _candidates(typ):
        origin = typing.get_origin(candidate)
        if isinstance(candidate, type) and pulumi_types.is_input_type(candidate):
            steps.append(("obj", candidate, True))
        elif origin in (collections.abc.Sequence, list):
            (inner,) = typing.get_args(candidate) or (Any,)
            steps.append(("seq", inner, True))
        elif origin in (collections.abc.Mapping, dict):
            args = typing.get_args(candidate)
            inner = args[1] if len(args) == 2 else Any
            walk = any(
                isinstance(c, type) and pulumi_types.is_input_type(c) for c in _candidates(inner)
            )
            steps.append(("map", inner, walk))
    return tuple(steps)


# ---------------------------------------------------------------- output shapes
#
# A shape is what a value of a declared output type looks like, compiled once per type:
#   ("obj", cls)     an `@pulumi.output_type` class (fields: `object_fields(cls)`)
#   ("list", shape)  a Sequence of one element type
#   ("map", shape)   a Mapping of string keys
#   ("res", cls)     a reference to another resource (a component's `vpc: aws.ec2.Vpc`)
#   ("str",) ("int",) ("float",) ("bool",) ("any",) ("lit", value)

Shape = tuple


def _shape(typ: Any) -> Shape:
    candidates = _candidates(typ)
    if not candidates:
        return ("any",)
    typ = candidates[0]
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        return ("lit", typing.get_args(typ)[0])
    if origin in (collections.abc.Sequence, list, tuple):
        args = typing.get_args(typ)
        return ("list", _shape(args[0]) if args else ("any",))
    if origin in (collections.abc.Mapping, dict):
        args = typing.get_args(typ)
        return ("map", _shape(args[1]) if len(args) == 2 else ("any",))
    if isinstance(typ, type):
        if pulumi_types.is_output_type(typ):
            return ("obj", typ)
        if issubclass(typ, pulumi.Resource):
            return ("res", typ)
        if issubclass(typ, enum.Enum):
            return ("lit", next(iter(typ)).value)  # a declared value, not a made-up string
        if issubclass(typ, bool):
            return ("bool",)
        if issubclass(typ, str):
            return ("str",)
        if issubclass(typ, int):
            return ("int",)
        if issubclass(typ, float):
            return ("float",)
    return ("any",)


@cache
def object_fields(cls: type) -> dict[str, Shape]:
    """camelCase field -> shape of an `@pulumi.output_type` class."""
    try:
        return {k: _shape(t) for k, t in pulumi_types.output_type_types(cls).items()}
    except Exception:
        return {}


@cache
def resource_output_shapes(token: str) -> dict[str, Shape]:
    """camelCase output property -> shape, from the resource class's typed getters."""
    cls = resource_class(token)
    if cls is None:
        return {}
    try:
        return {k: _shape(t) for k, t in pulumi_types.resource_types(cls).items()}
    except Exception:
        return {}


@cache
def input_fields(token: str) -> dict[str, Any]:
    """camelCase input property -> declared type of a resource's typed Args (empty if none)."""
    cls = args_class(token)
    return _input_fields(cls)[0] if cls is not None else {}


_NESTED_FIELDS: dict[Any, dict[str, Any] | None] = {}


def nested_input_fields(typ: Any) -> dict[str, Any] | None:
    """The fields of the input type a declared input annotation resolves to (None if none);
    once per annotation (the output synthesis asks per recorded object)."""
    return _per_annotation(_NESTED_FIELDS, _nested_input_fields, typ)


def _nested_input_fields(typ: Any) -> dict[str, Any] | None:
    for candidate in _candidates(typ):
        origin = typing.get_origin(candidate)
        if isinstance(candidate, type) and pulumi_types.is_input_type(candidate):
            return _input_fields(candidate)[0]
        if origin in (collections.abc.Sequence, list):
            (inner,) = typing.get_args(candidate) or (Any,)
            found = nested_input_fields(inner)
            if found is not None:
                return found
    return None


@cache
def invoke_result_shapes(token: str) -> dict[str, Shape] | None:
    """camelCase field -> shape of an invoke's declared result type (`GetVpcResult` for
    `aws:ec2/getVpc:getVpc`), or None when the package or function is unknown."""
    package, module, function = [*token.split(":"), "", ""][:3]
    module_name = _module_index(package).get(module.split("/")[0] if package == "aws" else module)
    if module_name is None:
        return None
    try:
        module_obj = importlib.import_module(module_name)
    except ImportError:
        return None
    result = getattr(module_obj, function[:1].upper() + function[1:] + "Result", None)
    if result is None or not pulumi_types.is_output_type(result):
        return None
    return object_fields(result)


@cache
def _class_tokens() -> dict[type, str]:
    return {}


def resource_token(cls: type) -> str | None:
    """The type token of a resource class (the inverse of `resource_class`)."""
    tokens = _class_tokens()
    if cls in tokens:
        return tokens[cls]
    package = next(
        (p for p, m in _PACKAGES.items() if cls.__module__.split(".")[0] == m),
        None,
    )
    found = None
    if package is not None:
        if cls.__name__ == "Provider":
            found = f"pulumi:providers:{package}"
        else:
            for token, (fqn, name) in _token_index(package).items():
                if name == cls.__name__ and cls.__module__.startswith(fqn):
                    found = token
                    break
    tokens[cls] = found
    return found


def package_tokens(package: str) -> frozenset[str]:
    """Every resource type token a provider package registers (empty if unknown)."""
    return frozenset(_token_index(package))
