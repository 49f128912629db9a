"""How much `llmcloud plan` costs on top of the Pulumi SDK's own registration work.

In one process, after a warm-up of each (imports and caches excluded), interleaved, median
of --repeat runs:

  plan        `evaluate()` of the stack: our program (components, Outputs, invokes), the
              recording mock monitor, the schema checks
  sdk_same    the SDK registering the very resources the plan recorded (same types, same
              inputs, through their typed pulumi-aws / pulumi-kubernetes classes), flat,
              under the SDK's stock MockMonitor with trivial mocks: the SDK's own work for
              this stack
  sdk_bare    the SDK registering the same number of bare custom resources (one input
              each) under the stock mocks: the floor of any Pulumi unit test

and reports plan / sdk_same (target <= 1.3) and plan / sdk_bare.

    python benchmarks/plan.py [--stack prod] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pulumi
from pulumi import _types as pulumi_types
from pulumi.runtime import settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.plan.engine import Plan, evaluate  # noqa: E402
from infra.plan.schema import args_class, resource_class  # noqa: E402


class _TrivialMocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args):
        return {}


class _Bare(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("bench:index:Bare", name, {"value": name})


def _run_under_stock_mocks(program) -> float:
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(_TrivialMocks(), project="bench", stack="bench", preview=False)
    started = time.perf_counter()
    _sync_await(run_pulumi_func(program))
    elapsed = time.perf_counter() - started
    settings.set_root_resource(None)  # type: ignore[arg-type]
    return elapsed


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


def sdk_same(resources: list[tuple[type, str, dict]]) -> float:
    def program() -> None:
        for cls, name, kwargs in resources:
            if cls is None:
                pulumi.CustomResource(kwargs["t"], name, kwargs["props"])
            else:
                cls(name, **kwargs)

    return _run_under_stock_mocks(program)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    plan = evaluate(ROOT, args.stack)  # warm-up: imports, schema caches
    count, resources = len(plan.resources), same_resources(plan)
    sdk_same(resources)
    sdk_bare(count)
    runs: dict[str, list[float]] = {"plan": [], "sdk_same": [], "sdk_bare": []}
    for _ in range(args.repeat):
        started = time.perf_counter()
        evaluate(ROOT, args.stack)
        runs["plan"].append(time.perf_counter() - started)
        runs["sdk_same"].append(sdk_same(resources))
        runs["sdk_bare"].append(sdk_bare(count))
    median = {k: statistics.median(v) for k, v in runs.items()}
    print(f"stack {args.stack}: {count} resources, median of {args.repeat} interleaved runs")
    for name, seconds in median.items():
        print(f"  {name:9s} {seconds:7.3f} s   {1000 * seconds / count:5.2f} ms/resource")
    print(f"  plan / sdk_same = {median['plan'] / median['sdk_same']:.2f}  (target <= 1.30)")
    print(f"  plan / sdk_bare = {median['plan'] / median['sdk_bare']:.2f}")


if __name__ == "__main__":
    main()
