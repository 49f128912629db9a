"""How much `llmcloud plan` costs on top of the Pulumi SDK's own registration work.

In one process, after a warm-up of each (imports and caches excluded), interleaved, median
of --repeat runs:

  plan        `evaluate()` of the stack: our program (components, Outputs, invokes), the
              recording mock monitor, the synthesized outputs, the schema checks
  sdk_same    the SDK registering the very resources the plan recorded (same types, same
              inputs, through their typed pulumi-aws / pulumi-kubernetes classes), flat,
              under the SDK's stock MockMonitor with trivial mocks: the SDK's own work for
              this stack
  sdk_bare    the SDK registering the same number of bare custom resources (one input
              each) under the stock mocks: the floor of any Pulumi unit test
  sdk_program the SDK running the stack's own program (its components, Outputs, apply
              callbacks, invokes) under the stock MockMonitor, each registration and invoke
              answered from a table of what the plan's mocks answered (a dict lookup, like
              the trivial mocks): the program's own work in the SDK, which sdk_same (flat,
              plain values) does not do. plan / sdk_program is the engine's own share
              (recording, output synthesis, schema checks, reading the stack);
              sdk_program / sdk_same the program's
  checks      the rest of `run_plan` on the plan: the policy pack, the cost estimate and
              the scheduling simulation (its growth from 1× to N× must be linear)
  no_sim      the same without the simulation (every rule but `k8s-schedulable`)

Every SDK floor runs under the settings the engine itself uses (`infra.plan.sdk_runtime.
sdk_settings`: cyclic GC off, stack traces reduced to the source position, and the SDK's
dependency walks, unknown checks and annotation types done cheaper with the same answers),
timed like `evaluate`: the stack is dropped inside the settings, so the run's resources are
garbage when the collector is on again, and its first pass over what the run allocated (and
freeing it) counts on both sides. So a ratio measures the engine, not the settings. Each
timed run starts after a full collection (outside the clock), so a full pass over the
imported modules' objects, due from the allocations of the run before, never lands in a
later run's time. Times are CPU seconds of this process (all threads: the mock monitor runs
in the SDK's executor), which a shared machine disturbs far less than wall time.

`--scale N` also plans generated 1× and N× stacks: a project whose program registers the
prod plan's custom resources once or N times (names suffixed), flat, through the same typed
classes, so plan and sdk_same register exactly the same resources (the engine's own overhead,
without our program's components), and the growth from 1× to N× shows whether the engine
and the checks (policy, cost, scheduling) grow linearly.

The scheduling simulation's share (issue 14: at most 10 %): the stack's whole plan
(evaluation + checks) with the simulation (the `k8s-schedulable` rule and the plan's
`scheduling` report) and without it, alternated in the same command; the ratio of their
medians, and the simulation's own CPU time over the plan's.

Then the whole command a user waits for: `llmcloud plan --format json` in a fresh process
(imports included), beside the evaluation alone.

    python benchmarks/plan.py [--stack prod] [--repeat 7] [--scale 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pulumi
from pulumi import _types as pulumi_types
from pulumi.runtime import settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.config import read_project, read_stack_file, stack_file  # noqa: E402
from infra.plan.engine import (  # noqa: E402
    Plan,
    _program_environment,
    engine_config,
    evaluate,
)
from infra.plan.mocks import PlanMocks  # noqa: E402
from infra.plan.schema import args_class, resource_class  # noqa: E402
from infra.plan.sdk_runtime import no_cyclic_gc, sdk_settings  # noqa: E402


class _TrivialMocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args):
        return {}


class _Bare(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("bench:index:Bare", name, {"value": name})


def _run_under_stock_mocks(program) -> float:
    """The program under the SDK's stock MockMonitor, with the engine's own settings (no
    cyclic GC, no source lines in stack traces): a fair floor."""
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(_TrivialMocks(), project="bench", stack="bench", preview=False)
    started = time.process_time()
    with sdk_settings():
        try:
            _sync_await(run_pulumi_func(program))
        finally:
            settings.set_root_resource(None)  # type: ignore[arg-type]
    # timed to after the `with`, as `evaluate` is: both drop the stack (so the run's
    # resources become garbage) inside it, and both pay the collector's first pass over what
    # the run allocated once it is enabled again
    return time.process_time() - started


class _ReplayMocks(pulumi.runtime.Mocks):
    """Each registration and invoke answered with what the plan's mocks answered it."""

    def __init__(self, answers: dict, invokes: dict) -> None:
        self.answers, self.invokes = answers, invokes

    def new_resource(self, args):
        resource_id, state = self.answers[(args.typ, args.name)]
        return resource_id, dict(state)

    def call(self, args):
        return dict(self.invokes[(args.token, json.dumps(dict(args.args), sort_keys=True))])


def plan_answers(project: Path, stack: str) -> tuple[dict, dict]:
    """What the plan's mocks answer the program: (type, name) -> (id, outputs), and
    (invoke token, arguments) -> result, recorded from one evaluation."""
    answers: dict = {}
    invokes: dict = {}
    resource_state, call = PlanMocks.resource_state, PlanMocks.call

    def recorded_state(self, token, name, inputs, urn):
        answers[(token, name)] = found = resource_state(self, token, name, inputs, urn)
        return found

    def recorded_call(self, args):
        key = (args.token, json.dumps(dict(args.args), sort_keys=True))
        invokes[key] = found = call(self, args)
        return found

    PlanMocks.resource_state, PlanMocks.call = recorded_state, recorded_call  # type: ignore[method-assign]
    try:
        evaluate(project, stack)
    finally:
        PlanMocks.resource_state, PlanMocks.call = resource_state, call  # type: ignore[method-assign]
    return answers, invokes


def sdk_program(project: Path, stack: str, answers: tuple[dict, dict]) -> float:
    """The project's own program under the stock MockMonitor, answered from `answers`, with
    the engine's settings and the config the plan hands it (read before the clock starts)."""
    project_file = read_project(project)
    name = project_file["name"]
    config, secret_keys = engine_config(read_stack_file(stack_file(project, stack)), name)
    main = project / (project_file.get("main") or "__main__.py")
    settings.set_root_resource(None)  # type: ignore[arg-type]
    set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(_ReplayMocks(*answers), project=name, stack=stack, preview=False)
    with _program_environment(project):
        started = time.process_time()
        with sdk_settings():
            try:
                _sync_await(run_pulumi_func(lambda: runpy.run_path(str(main), run_name="__main__")))
            finally:  # as `evaluate`: inside the settings, so timed alike
                settings.set_root_resource(None)  # type: ignore[arg-type]
                set_all_config({}, [])
        return time.process_time() - started


def sdk_bare(count: int) -> float:
    def program() -> None:
        for i in range(count):
            _Bare(f"r{i}")

    return _run_under_stock_mocks(program)


def same_resources(plan: Plan) -> list[tuple[type, str, dict]]:
    """(class, name, python kwargs) for every custom resource the plan recorded."""
    out = []
    for i, r in enumerate(plan.resources):
        if not r.custom or r.type.startswith("pulumi:providers:"):
            continue
        cls, args = resource_class(r.type), args_class(r.type)
        if cls is None or args is None:  # custom resources without a typed class
            cls, kwargs = None, {"t": r.type, "props": dict(r.inputs)}
        else:
            to_python = {v: k for k, v in pulumi_types.input_type_py_to_pulumi_names(args).items()}
            kwargs = {
                to_python.get(k, k): v
                for k, v in r.inputs.items()
                if not (r.type.startswith("kubernetes:") and k in ("apiVersion", "kind"))
            }
        out.append((cls, f"{r.name}-{i}", kwargs))
    return out


def same_tree(plan: Plan) -> list[tuple[str, type | None, str, dict, str | None, str | None]]:
    """Every registration the plan recorded, in order: (urn, class or None for a component,
    type token, python kwargs, parent urn, provider urn). The stack itself is the root."""
    out = []
    for r in plan.resources:
        if r.type == "pulumi:pulumi:Stack":
            continue
        cls, args = resource_class(r.type), args_class(r.type)
        kwargs: dict = {}
        if r.custom and cls is not None and args is not None:
            to_python = {v: k for k, v in pulumi_types.input_type_py_to_pulumi_names(args).items()}
            kwargs = {
                to_python.get(k, k): v
                for k, v in r.inputs.items()
                if not (r.type.startswith("kubernetes:") and k in ("apiVersion", "kind"))
            }
        elif r.custom:
            cls, kwargs = pulumi.CustomResource, {"props": dict(r.inputs)}
        out.append((r.urn, cls if r.custom else None, r.type, {"name": r.name, **kwargs},
                    r.parent, r.provider))  # fmt: skip
    return out


def sdk_tree(tree: list) -> float:
    """The SDK registering the plan's whole tree (components with their children, explicit
    providers, custom resources through their typed classes) under the stock mocks."""

    def program() -> None:
        made: dict[str, pulumi.Resource] = {}
        for urn, cls, token, kwargs, parent, provider in tree:
            opts = pulumi.ResourceOptions(
                parent=made.get(parent or ""), provider=made.get(provider or "")
            )
            kwargs = dict(kwargs)
            name = kwargs.pop("name")
            if cls is None:
                made[urn] = pulumi.ComponentResource(token, name, None, opts)
            elif cls is pulumi.CustomResource:
                made[urn] = pulumi.CustomResource(token, name, kwargs["props"], opts)
            else:
                made[urn] = cls(name, **kwargs, opts=opts)
        for registered in made.values():
            if type(registered) is pulumi.ComponentResource:
                registered.register_outputs({})

    return _run_under_stock_mocks(program)


def sdk_same(resources: list[tuple[type, str, dict]]) -> float:
    def program() -> None:
        for cls, name, kwargs in resources:
            if cls is None:
                pulumi.CustomResource(kwargs["t"], name, kwargs["props"])
            else:
                cls(name, **kwargs)

    return _run_under_stock_mocks(program)


def scaled_project(plan: Plan, scale: int, directory: Path) -> Path:
    """A project whose program registers the plan's custom resources `scale` times, through
    their typed classes (names suffixed), with the stack's region."""
    rows = []
    for cls, name, kwargs in same_resources(plan):
        if cls is None:
            continue
        rows.append([cls.__module__, cls.__name__, name, kwargs])
    (directory / "resources.json").write_text(json.dumps(rows, default=str))
    (directory / "Pulumi.yaml").write_text("name: scaled\nruntime: python\n")
    (directory / "Pulumi.bench.yaml").write_text("config:\n  aws:region: us-east-1\n")
    (directory / "__main__.py").write_text(
        "import importlib, json\n"
        "rows = json.load(open('resources.json'))\n"
        f"for copy in range({scale}):\n"
        "    for module, cls, name, kwargs in rows:\n"
        "        getattr(importlib.import_module(module), cls)(f'{name}-{copy}', **kwargs)\n"
    )
    return directory


SCHEDULING_RULE = "k8s-schedulable"  # the pack's rule that runs the simulation


def checks(plan: Plan, simulation: bool = True) -> float:
    """CPU seconds of `run_plan`'s steps after the evaluation: the policy pack, the cost
    estimate and (with `simulation`) the scheduling report; without it, every rule but the
    one that runs the simulation."""
    from infra.plan.cost import estimate_cost
    from infra.plan.policy_runner import evaluate_policies
    from infra.plan.scheduling import simulate_plan
    from policies.rules import build_policies
    from policies.rules.base import PolicySettings

    settings = PolicySettings.for_stack(None, drop_waived=False)
    only = None if simulation else [p.name for p in build_policies() if p.name != SCHEDULING_RULE]
    started = time.process_time()
    with no_cyclic_gc():  # as `run_plan`
        evaluate_policies(plan, settings, only=only)
        estimate_cost(plan, None)
        if simulation:
            simulate_plan(plan)
    return time.process_time() - started


def scheduled_pods(plan: Plan) -> int:
    """Pods the simulation places or reports Pending (a DaemonSet's: one per node it selects)."""
    from infra.plan.scheduling import simulate_plan

    return sum(p.template.count for p in simulate_plan(plan).pods)


def simulation_share(project: Path, stack: str, repeat: int) -> None:
    """The whole plan (evaluation + checks) with and without the scheduling simulation,
    alternated; and the simulation's own CPU time (its rule + the report) over the plan's."""
    from infra.plan.policy_runner import evaluate_policies
    from infra.plan.scheduling import simulate_plan
    from policies.rules.base import PolicySettings

    runs: dict[str, list[float]] = {"with": [], "without": [], "simulation": []}
    settings = PolicySettings.for_stack(None, drop_waived=False)
    for i in range(2 * repeat):
        simulation = i % 2 == 0
        started = time.process_time()
        plan = evaluate(project, stack)
        checks(plan, simulation)
        runs["with" if simulation else "without"].append(time.process_time() - started)
        if simulation:
            started = time.process_time()
            evaluate_policies(plan, settings, only=[SCHEDULING_RULE])
            simulate_plan(plan)
            runs["simulation"].append(time.process_time() - started)
    m = {k: statistics.median(v) for k, v in runs.items()}
    print(f"scheduling simulation, stack {stack}: median of {repeat} alternated plans each")
    print(f"  plan with simulation    {m['with']:7.3f} s")
    print(f"  plan without simulation {m['without']:7.3f} s")
    print(
        f"  with / without = {m['with'] / m['without']:.3f}  (target <= 1.10); the simulation "
        f"alone {m['simulation']:.4f} s = {100 * m['simulation'] / m['with']:.1f} % of the plan"
    )


def measure(label: str, project: Path, stack: str, repeat: int) -> dict[str, float]:
    plan = evaluate(project, stack, check_schema=True)  # warm-up: imports, schema caches
    count, resources = len(plan.resources), same_resources(plan)
    tree = same_tree(plan)
    answers = plan_answers(project, stack)
    sdk_same(resources)
    sdk_tree(tree)
    sdk_program(project, stack, answers)
    sdk_bare(count)
    checks(plan)
    runs: dict[str, list[float]] = {
        "plan": [], "sdk_same": [], "sdk_tree": [], "sdk_program": [], "sdk_bare": [],
        "checks": [], "no_sim": [],
    }  # fmt: skip
    for _ in range(repeat):
        gc.collect()  # each timed run starts with no pending garbage (see the docstring)
        started = time.process_time()
        plan = evaluate(project, stack)
        runs["plan"].append(time.process_time() - started)
        gc.collect()
        runs["sdk_same"].append(sdk_same(resources))
        gc.collect()
        runs["sdk_tree"].append(sdk_tree(tree))
        gc.collect()
        runs["sdk_program"].append(sdk_program(project, stack, answers))
        gc.collect()
        runs["sdk_bare"].append(sdk_bare(count))
        runs["checks"].append(checks(plan))
        runs["no_sim"].append(checks(plan, simulation=False))
    median = {k: statistics.median(v) for k, v in runs.items()}
    median["pods"] = float(scheduled_pods(plan))
    print(f"{label}: {count} resources, median of {repeat} interleaved runs")
    for name in runs:
        seconds = median[name]
        print(f"  {name:11s} {seconds:7.3f} s   {1000 * seconds / count:5.2f} ms/resource")
    print(f"  plan / sdk_same = {median['plan'] / median['sdk_same']:.2f}  (target <= 1.30)")
    print(
        f"    = sdk_program / sdk_same {median['sdk_program'] / median['sdk_same']:.2f} (the "
        f"program's own work) x plan / sdk_program {median['plan'] / median['sdk_program']:.2f} "
        "(the engine's: recording, synthesis, checks, files)"
    )
    print(
        f"  plan / sdk_tree = {median['plan'] / median['sdk_tree']:.2f}  (the same tree: "
        "components, explicit providers and parents too)"
    )
    print(f"  plan / sdk_bare = {median['plan'] / median['sdk_bare']:.2f}")
    return {"count": float(count), **median}


def whole_command(stack: str, repeat: int) -> tuple[float, float]:
    """`llmcloud plan --format json` in a fresh process, as a user runs it (imports
    included): (wall seconds, CPU seconds of the child), medians."""
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "infra", "plan", "--stack", stack, "--format", "json",
                 "--out", f"{out}/plan.json"],
                cwd=ROOT, check=False, capture_output=True,
            )  # fmt: skip
            walls.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--scale", type=int, default=10, help="also plan an N× stack (0: skip)")
    args = parser.parse_args()

    base = measure(f"stack {args.stack}", ROOT, args.stack, args.repeat)
    if args.scale > 1:
        # growth is measured between the generated 1× and N× stacks: the same resource mix
        plan = evaluate(ROOT, args.stack)
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
            flat = measure(
                "1× generated stack", scaled_project(plan, 1, Path(one)), "bench", args.repeat
            )
            scaled = measure(
                f"{args.scale}× generated stack",
                scaled_project(plan, args.scale, Path(many)),
                "bench",
                max(2, args.repeat // 2),
            )
        growth = scaled["count"] / flat["count"]
        for step in ("plan", "sdk_same", "checks", "no_sim"):
            print(f"  {step} grew {scaled[step] / flat[step]:.1f}× for {growth:.1f}× the resources")
        print(
            f"  (the simulation places {scaled['pods'] / flat['pods']:.0f}× the pods: "
            f"{scaled['pods']:.0f} vs {flat['pods']:.0f}, as {args.scale}× DaemonSets run on "
            f"{args.scale}× the nodes)"
        )
    simulation_share(ROOT, args.stack, args.repeat)
    wall, cpu = whole_command(args.stack, max(1, args.repeat // 2))
    print(
        f"whole command `llmcloud plan --stack {args.stack} --format json`: {cpu:.2f} s CPU, "
        f"{wall:.2f} s wall (of it, evaluation {base['plan']:.2f} s and checks "
        f"{base['checks']:.3f} s CPU)"
    )


if __name__ == "__main__":
    main()
