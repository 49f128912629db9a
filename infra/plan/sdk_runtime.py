"""How the engine runs the Pulumi SDK: the settings it runs the program under.

Each context manager here replaces one piece of the SDK's per-registration work with a
cheaper one that gives the program, and the mock monitor, the same answers. `sdk_settings()`
is all of them; the engine runs every program under it, and `benchmarks/plan.py` runs its SDK
floors under it too, so a ratio there measures the engine and not these settings.

Patched names (pulumi 3.272.0, the version `pyproject.toml` pins): `runtime.resource.
_get_stack_trace`, `runtime.resource._resolve_depends_on_urns`, `runtime.rpc.
declare_dependency`, `runtime.rpc.contains_unknowns`, `_types._types_from_annotations`.
`tests/test_sdk_runtime.py` checks each against the SDK's own function.
"""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any

import pulumi
from pulumi import _types as pulumi_types
from pulumi._types import _types_from_annotations as _sdk_types_from_annotations
from pulumi.output import Unknown
from pulumi.runtime import resource as pulumi_resource
from pulumi.runtime import resource_cycle_breaker, rpc
from pulumi.runtime._depends_on import _resolve_depends_on_urns as _sdk_depends_on_urns
from pulumi.runtime.proto import source_pb2


@contextmanager
def sdk_settings() -> Iterator[None]:
    """Every setting below, for one run of a program."""
    with (
        fast_stack_traces(),
        fast_dependency_walks(),
        fast_unknown_checks(),
        cached_annotation_types(),
        no_cyclic_gc(),
    ):
        yield


@contextmanager
def replaced(module: Any, name: str, value: Any) -> Iterator[None]:
    """`module.name` is `value` inside the block, and what it was again after it."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """The SDK allocates tens of thousands of short-lived futures and tasks that reference
    each other; with the cyclic collector on, its passes over the growing heap cost a third
    of a large plan. A plan is bounded, so collect once afterwards instead."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ------------------------------------------------------------------ stack traces


@lru_cache(maxsize=1024)
def _source_uri(filename: str) -> str | None:
    """The SDK's `Path(filename).as_uri()`, once per file rather than once per resource."""
    position = pulumi_resource._get_source_position_for_frame(
        traceback.FrameSummary(filename, 1, "", lookup_line=False)
    )
    return position.uri if position is not None else None


def _stack_trace_without_source_lines() -> source_pb2.StackTrace:
    """`pulumi.runtime.resource._get_stack_trace`, reduced to what the mock monitor keeps.

    The SDK captures a stack trace per registration for the engine's display, reading every
    frame's source line and resolving every frame's path; the mock monitor discards all of it
    but the source position (the first frame: the program's line that constructed the
    resource). This finds that frame the way the SDK does (the caller of the third
    `__init__` up the stack: the resource class, its typed base, `Resource.__init__`) without
    extracting the stack or reading any source, and returns it as the trace's only frame."""
    frame = sys._getframe(1)
    inits = 0
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            inits += 1
            if inits == 3:
                break
        frame = frame.f_back
    caller = frame.f_back if frame is not None else None
    if caller is None:
        return source_pb2.StackTrace()
    uri = _source_uri(caller.f_code.co_filename)
    line = caller.f_lineno
    position = source_pb2.SourcePosition(uri=uri, line=line) if uri and line is not None else None
    return source_pb2.StackTrace(frames=[source_pb2.StackFrame(pc=position)])


def fast_stack_traces() -> AbstractContextManager[None]:
    return replaced(pulumi_resource, "_get_stack_trace", _stack_trace_without_source_lines)


# ------------------------------------------------------------------ dependencies

# Set on a resource once some other resource has declared a dependency on it. A resource
# without it has no dependents yet, so no chain of dependencies can lead back to it.
_DEPENDED_ON = "_llmcloud_depended_on"
_DEPENDENCIES = resource_cycle_breaker._DEPENDENCIES_PROPERTY


def _reaches(start: pulumi.Resource, target: pulumi.Resource) -> bool:
    """Whether `target` is among `start`'s transitive dependencies, as the cycle breaker
    records them. An explicit stack: the SDK's recursive generators pass every resource
    they find up through one frame per level, which costs depth × size on a deep graph."""
    seen = {start}
    pending = [start]
    while pending:
        for dependency in getattr(pending.pop(), _DEPENDENCIES, ()):
            if dependency is target:
                return True
            if dependency not in seen:
                seen.add(dependency)
                pending.append(dependency)
    return False


def declare_dependency(from_resource: pulumi.Resource, to_resource: pulumi.Resource) -> bool:
    """`resource_cycle_breaker.declare_dependency`, with the same answer: record that
    `from_resource` depends on `to_resource`, unless that closes a cycle (then False, and the
    SDK raises its circular-dependency error). Resources compare by identity."""
    if to_resource is from_resource:
        return False
    if getattr(from_resource, _DEPENDED_ON, False) and _reaches(to_resource, from_resource):
        return False
    dependencies = getattr(from_resource, _DEPENDENCIES, None)
    if dependencies is None:
        setattr(from_resource, _DEPENDENCIES, {to_resource})
    else:
        dependencies.add(to_resource)
    setattr(to_resource, _DEPENDED_ON, True)
    return True


async def _depends_on_urns(
    depends_on: Any, from_resource: pulumi.Resource | None = None
) -> set[str]:
    """`_depends_on._resolve_depends_on_urns`, without wrapping each listed resource in an
    Output first when `depends_on` is a plain list of resources (the usual case: the SDK's
    wrappers then hold nothing but the resource). Anything else goes to the SDK's own."""
    if not isinstance(depends_on, list) or not all(
        isinstance(d, pulumi.Resource) for d in depends_on
    ):
        return await _sdk_depends_on_urns(depends_on, from_resource)
    if not depends_on:
        return set()
    expanded = await rpc._expand_dependencies(set(depends_on), from_resource)
    return set(expanded)


@contextmanager
def fast_dependency_walks() -> Iterator[None]:
    """The SDK checks every dependency a resource declares for a cycle by walking all that
    the dependency itself depends on, and wraps each `depends_on` entry in an Output. Both
    answered the same, cheaper: see `declare_dependency` and `_depends_on_urns`."""
    with (
        replaced(rpc, "declare_dependency", declare_dependency),
        replaced(pulumi_resource, "_resolve_depends_on_urns", _depends_on_urns),
    ):
        yield


# ------------------------------------------------------------------ unknown values

_ATOMS = frozenset({str, int, float, bool, type(None)})  # exactly these types: never Unknown


def contains_unknowns(value: Any) -> bool:
    """`rpc.contains_unknowns`, with the same answer: whether an `Unknown` is anywhere in
    `value`, through dicts and lists (each container visited once).

    The SDK's defines a recursive closure on every call, and a closure that refers to itself
    is a reference cycle: each of the ~12 000 calls in a plan of prod (every Output's data is
    checked) leaves a function, its cell and its annotations for the cyclic collector, which
    then spent a sixth of the plan freeing them."""
    if type(value) in _ATOMS:  # most values: answered without the walk's set and list
        return False
    seen: set[int] = set()
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) in _ATOMS:
            continue
        if isinstance(item, Unknown):
            return True
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            pending.extend([item[k] for k in item])
        elif isinstance(item, list):
            pending.extend(item)
    return False


def fast_unknown_checks() -> AbstractContextManager[None]:
    """Every Output's data is checked for unknowns when it resolves (`_OutputData.__post_init__`
    and `Output.future` call `output.contains_unknowns`, which calls `rpc.contains_unknowns`)."""
    return replaced(rpc, "contains_unknowns", contains_unknowns)


# ------------------------------------------------------------------ declared types


@lru_cache(maxsize=4096)
def _types_from_annotations(cls: type) -> dict[str, type]:
    """`_types._types_from_annotations`, once per class. The SDK computes it on every
    registration (`resource_types`, when it resolves the outputs): a new class built from
    the annotations, then `get_type_hints`, which compiles each string annotation anew. Its
    only caller copies the result, and a class's annotations do not change once defined
    (the SDK caches the other half, `_types_from_py_properties`, the same way)."""
    return _sdk_types_from_annotations(cls)


def cached_annotation_types() -> AbstractContextManager[None]:
    return replaced(pulumi_types, "_types_from_annotations", _types_from_annotations)
