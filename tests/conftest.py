"""Shared fixtures: each stack is planned once per test session and tests assert on what
the plan recorded; small throwaway Pulumi programs are planned through the same engine."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.plan.engine import Plan, Resource, evaluate
from infra.plan.run import PlanReport, run_plan

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def stack_report() -> Callable[[str], PlanReport]:
    """`stack_report("prod")`: the full plan report (resources, violations, cost) of one of
    our stacks, computed once per session."""
    cache: dict[str, PlanReport] = {}

    def get(stack: str) -> PlanReport:
        if stack not in cache:
            cache[stack] = run_plan(ROOT, stack)
        return cache[stack]

    return get


@pytest.fixture(scope="session")
def dev_plan(stack_report) -> Plan:
    return stack_report("dev").plan


@pytest.fixture(scope="session")
def staging_plan(stack_report) -> Plan:
    return stack_report("staging").plan


@pytest.fixture(scope="session")
def prod_plan(stack_report) -> Plan:
    return stack_report("prod").plan


def write_project(
    directory: Path,
    program: str,
    config: dict[str, Any] | None = None,
    *,
    name: str = "demo",
    stack: str = "dev",
) -> Path:
    """Write a small Pulumi Python project (Pulumi.yaml, __main__.py, stack file)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Pulumi.yaml").write_text(
        yaml.safe_dump({"name": name, "runtime": "python", "stackConfigDir": "stacks"})
    )
    (directory / "__main__.py").write_text(textwrap.dedent(program))
    (directory / "stacks").mkdir(exist_ok=True)
    stack_config = {"aws:region": "us-east-1", **(config or {})}
    (directory / "stacks" / f"Pulumi.{stack}.yaml").write_text(
        yaml.safe_dump({"config": stack_config})
    )
    return directory


def copy_project_with(directory: Path, stack: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of this project (program and stack files) in `directory`, with `edit` applied
    to the `config:` mapping of stack `stack`'s file; for CLI tests of a broken stack."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Pulumi.yaml", directory)
    shutil.copy(ROOT / "__main__.py", directory)
    shutil.copytree(ROOT / "stacks", directory / "stacks")
    stack_file = directory / "stacks" / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(stack_file.read_text())
    edit(data["config"])
    stack_file.write_text(yaml.safe_dump(data))
    return directory


@pytest.fixture
def plan_program(tmp_path) -> Callable[..., Plan]:
    """`plan_program(program_source, config={...})`: plan a throwaway project."""

    def run(program: str, config: dict[str, Any] | None = None, **kwargs: Any) -> Plan:
        project = write_project(tmp_path / "project", program, config, **kwargs)
        return evaluate(project, kwargs.get("stack", "dev"))

    return run


def mutated(plan: Plan, change: Callable[[Resource], Resource | None]) -> Plan:
    """A copy of the plan with each resource passed through `change` (None drops it)."""
    out = []
    for r in plan.resources:
        changed = change(dataclasses.replace(r, inputs=copy.deepcopy(r.inputs)))
        if changed is not None:
            out.append(changed)
    return dataclasses.replace(plan, resources=out)


def inputs_json(resource: Resource) -> str:
    return json.dumps(resource.inputs, sort_keys=True)
