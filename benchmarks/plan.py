"""How much `llmcloud plan` costs on top of the Pulumi SDK's own registration work.

Measures, in one process, after a warm-up run of each (imports and caches excluded):
  plan      `evaluate()` of the prod stack: our program, mocks, recording, schema checks
  bare_sdk  the SDK registering the same number of bare custom resources under the SDK's
            stock MockMonitor with trivial mocks (the floor any Pulumi unit test pays)
and reports plan / bare_sdk (target: <= 1.3).

    python benchmarks/plan.py [--stack prod] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pulumi
from pulumi.runtime import settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.plan.engine import evaluate  # noqa: E402


class _TrivialMocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args):
        return {}


class _Bare(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("bench:index:Bare", name, {"value": name})


def bare_sdk(count: int) -> float:
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(_TrivialMocks(), project="bench", stack="bench", preview=False)
    started = time.perf_counter()

    def program() -> None:
        for i in range(count):
            _Bare(f"r{i}")

    _sync_await(run_pulumi_func(program))
    elapsed = time.perf_counter() - started
    settings.set_root_resource(None)  # type: ignore[arg-type]
    return elapsed


def plan_once(stack: str) -> tuple[float, int]:
    started = time.perf_counter()
    plan = evaluate(ROOT, stack)
    return time.perf_counter() - started, len(plan.resources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    _, count = plan_once(args.stack)  # warm-up: imports, schema caches
    bare_sdk(count)
    plans, bares = [], []
    for _ in range(args.repeat):
        plans.append(plan_once(args.stack)[0])
        bares.append(bare_sdk(count))
    plan_s, bare_s = statistics.median(plans), statistics.median(bares)
    print(f"stack {args.stack}: {count} resources (median of {args.repeat})")
    print(f"  plan      {plan_s:7.3f} s   {1000 * plan_s / count:5.2f} ms/resource")
    print(f"  bare_sdk  {bare_s:7.3f} s   {1000 * bare_s / count:5.2f} ms/resource")
    print(f"  ratio plan/bare_sdk = {plan_s / bare_s:.2f}  (target <= 1.30)")


if __name__ == "__main__":
    main()
