"""Run the `vllm serve` command lines of `llmcloud plan --format json` files through vLLM's own
parser (not the exported contract): parse_args, validate_parsed_serve_args and EngineArgs, in a
venv made by scripts/vllm_cli_export.py. The tests check the exported contract; this is the
cross-check of that reading against the real thing, run by hand after an export:

    python scripts/vllm_cli_export.py --version 0.33.0 --venv /tmp/vllm-venv
    llmcloud plan --stack prod --format json --out /tmp/prod.json
    python scripts/vllm_parse_plans.py --venv /tmp/vllm-venv /tmp/prod.json

Local model paths (`/models/<name>`) must exist for EngineArgs offline; they are created in a
temporary directory and the arguments rewritten to it. Exit 0 when every command line parses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workloads.serving import vllm_cli
from workloads.serving.service import MODELS_DIR

# what the LeaderWorkerSet webhook injects (the kubelet expands $(VAR) in args)
LWS_ENV = {"LWS_LEADER_ADDRESS": "leader-0.lws.serving", "LWS_WORKER_INDEX": "1"}

PARSER = r"""
import json, os, sys
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.entrypoints.common.cli_args import validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.engine.arg_utils import AsyncEngineArgs
root = FlexibleArgumentParser(prog="vllm")
ServeSubcommand().subparser_init(root.add_subparsers(dest="subparser"))
failed = 0
for name, argv in json.load(open(sys.argv[1])):
    try:
        ns = root.parse_args(["serve", *argv])
        validate_parsed_serve_args(ns)
        ns.model = ns.model_tag
        engine = AsyncEngineArgs.from_cli_args(ns)
        print(f"ok   {name}: tp {engine.tensor_parallel_size} pp {engine.pipeline_parallel_size}"
              f" nnodes {engine.nnodes} rank {engine.node_rank} headless {ns.headless}")
    except BaseException as e:
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
sys.exit(1 if failed else 0)
"""


def command_lines(plan: dict, models_root: Path) -> list[tuple[str, list[str]]]:
    """(resource/template, argv after `vllm serve`) of every vllm container in the plan."""
    found = []
    for r in plan["resources"]:
        spec = r["inputs"].get("spec")
        if not isinstance(spec, dict):
            continue
        templates = {"template": (spec.get("template") or {}).get("spec")}
        lwt = spec.get("leaderWorkerTemplate") or {}
        templates |= {
            t: (lwt.get(t) or {}).get("spec") for t in ("leaderTemplate", "workerTemplate")
        }
        for where, pod in templates.items():
            for c in (pod or {}).get("containers", []):
                if c.get("name") != "vllm" or c.get("command") != ["vllm", "serve"]:
                    continue
                argv = [vllm_cli.expand_kube_vars(str(a), LWS_ENV) for a in c["args"]]
                if argv and argv[0].startswith(MODELS_DIR + "/"):
                    local = models_root / argv[0].removeprefix(MODELS_DIR + "/")
                    local.mkdir(parents=True, exist_ok=True)
                    argv[0] = str(local)
                found.append((f"{plan['stack']}:{r['name']}:{where}", argv))
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, required=True, help="a venv from vllm_cli_export.py")
    p.add_argument("plans", nargs="+", type=Path, help="llmcloud plan --format json files")
    args = p.parse_args(argv)
    python = args.venv / "bin" / "python"
    if not python.exists():
        print(f"vllm_parse_plans: --venv {args.venv}: no bin/python there", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vllm-models-") as tmp:
        lines = [
            x for plan in args.plans for x in command_lines(json.loads(plan.read_text()), Path(tmp))
        ]
        if not lines:
            print("vllm_parse_plans: no `vllm serve` containers in these plans", file=sys.stderr)
            return 2
        todo = Path(tmp) / "argv.json"
        todo.write_text(json.dumps(lines))
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
        done = subprocess.run(
            [str(python), "-c", PARSER, str(todo)], env=env, text=True, capture_output=True
        )
    print(done.stdout, end="")
    if done.returncode not in (0, 1):
        print(done.stderr[-2000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
