"""One component shape: `Name(name, args: NameArgs, ctx: Context, opts=None)`, a `Context` of
providers and account facts only, and children named `f"{name}-<role>"` (names from before
the convention are kept: a rename would replace the cloud resource)."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from infra.config import StackConfig
from infra.context import Context
from tests.conftest import ROOT, STACKS

SNAPSHOTS = ROOT / "tests" / "snapshots"
COMPONENT_ROOTS = ("infra", "workloads")

# Components whose children were named before the convention and still add children under
# that scheme (so their new children are not in the URN snapshot yet).
LEGACY_CHILD_NAMES = {
    # `admin-<account>-<role>` / `readonly-...` per principal, one child per namespace
    "llmcloud:security:ClusterAccess",
    # `deploy-role`, `preview-role`, `github`: the CI bootstrap roles' names
    "llmcloud:cicd:GithubOidc",
}


def _components() -> list[tuple[Path, ast.ClassDef]]:
    found = []
    for root in COMPONENT_ROOTS:
        for path in sorted((ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(base).endswith("ComponentResource") for base in node.bases
                ):
                    found.append((path.relative_to(ROOT), node))
    return found


COMPONENTS = _components()


def test_the_component_scan_finds_the_platforms_components():
    names = {node.name for _, node in COMPONENTS}
    assert {"DataLake", "Network", "TrainingJob", "VllmService", "GpuNodeGroup"} <= names


@pytest.mark.parametrize(("path", "node"), COMPONENTS, ids=[f"{p}:{n.name}" for p, n in COMPONENTS])
def test_every_component_takes_name_typed_args_context_and_opts(path, node):
    (init,) = [f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
    params = init.args.args[1:]  # after self
    shape = [(a.arg, ast.unparse(a.annotation) if a.annotation else None) for a in params]
    assert [name for name, _ in shape] == ["name", "args", "ctx", "opts"], f"{path}: {shape}"
    assert shape[0][1] == "str"
    assert shape[1][1] == f"{node.name}Args", f"{path}: {node.name}'s args are {shape[1][1]}"
    assert shape[2][1] == "Context"
    defaults = init.args.defaults
    assert len(defaults) == 1 and ast.unparse(defaults[0]) == "None", f"{path}: opts=None"


def test_context_carries_providers_and_account_facts_not_the_stack_config():
    hints = typing.get_type_hints(Context)
    fields = {f.name for f in dataclasses.fields(Context)}
    assert StackConfig not in hints.values()
    assert fields == {"aws_provider", "account_id", "partition", "region", "prefix", "providers"}


def test_no_component_reads_the_stack_config_through_its_context():
    readers = []
    for root in (*COMPONENT_ROOTS, "policies"):
        for path in sorted((ROOT / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "config"
                    and isinstance(node.value, ast.Name | ast.Attribute)
                    and ast.unparse(node.value) in ("ctx", "self._ctx", "self.ctx", "context")
                ):
                    readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not readers


@pytest.mark.parametrize("stack", STACKS)
def test_new_children_are_named_after_their_component(stack, stack_report):
    plan = stack_report(stack).plan
    legacy = set((SNAPSHOTS / f"urns-{stack}.txt").read_text().split())
    by_urn = {r.urn: r for r in plan.resources}
    misnamed = []
    for resource in plan.resources:
        parent = by_urn.get(resource.parent or "")
        if parent is None or not parent.type.startswith("llmcloud:"):
            continue
        if resource.name == parent.name or resource.name.startswith(f"{parent.name}-"):
            continue
        if resource.urn in legacy or parent.type in LEGACY_CHILD_NAMES:
            continue
        misnamed.append(f"{parent.name} ({parent.type}) -> {resource.name}")
    assert not misnamed, misnamed
