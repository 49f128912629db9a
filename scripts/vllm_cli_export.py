"""Export the `vllm serve` command-line contract of one vLLM release to a dated data file.

The contract is read from vLLM itself, not transcribed: the script installs the release into a
throwaway venv (`pip install vllm==VERSION --no-deps`, then only the distributions the parser's
import chain needs, each at the version range the release's own metadata declares), builds the
parser exactly as `vllm serve` does (`ServeSubcommand().subparser_init`), and writes every
action (option strings, nargs, value kind, choices, positionals), the `VLLM_*` names of
`vllm/envs.py` (`environment_variables`), and two probes of the release's behaviour that our
manifests depend on. Run by hand when the pinned vLLM changes:

    python scripts/vllm_cli_export.py --version 0.33.0 --torch 2.13.0

torch is installed at `--torch` (the CPU build these machines have) instead of the CUDA
version the release pins: the parser does not depend on it, and the file records both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "workloads" / "serving" / "data"
MAX_INSTALL_ROUNDS = 60
TORCH_FAMILY = {"torch", "torchvision", "torchaudio"}
# import name -> distribution name, where they differ
DISTRIBUTION_OF_MODULE = {
    "yaml": "pyyaml",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "zmq": "pyzmq",
    "cpuinfo": "py-cpuinfo",
    "openai_harmony": "openai-harmony",
    "pythonjsonlogger": "python-json-logger",
    "google": "protobuf",
    "multipart": "python-multipart",
}

DUMPER_ENV = {"VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
# Runs inside the throwaway venv: builds the serve parser and prints the contract as JSON.
DUMPER = r"""
import argparse, json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import vllm, vllm.envs as envs
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser

root = FlexibleArgumentParser(prog="vllm")
sub = root.add_subparsers(dest="subparser")
parser = ServeSubcommand().subparser_init(sub)

def kind(fn):
    if fn is None:
        return "str"
    def ok(v):
        try:
            fn(v)
            return True
        except Exception:
            return False
    if ok("7") and not ok("x7") and not ok("1.5"):
        return "int"
    if ok("1.5") and not ok("x7"):
        return "float"
    return "str"

def jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)

group_of = {}
for g in parser._action_groups:
    for a in g._group_actions:
        group_of[id(a)] = g.title
actions = []
for a in parser._actions:
    if isinstance(a, argparse._HelpAction):
        continue
    nargs = a.nargs
    if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                      argparse._StoreConstAction, argparse._CountAction)):
        nargs = 0
    elif isinstance(a, argparse.BooleanOptionalAction):
        nargs = 0
    actions.append({
        "option_strings": list(a.option_strings),
        "dest": a.dest,
        "action": type(a).__name__,
        "nargs": nargs,
        "kind": kind(a.type) if nargs != 0 else None,
        "choices": [str(c) for c in a.choices] if a.choices is not None else None,
        "required": bool(a.required),
        "default": jsonable(a.default),
        "group": group_of.get(id(a)),
    })

# Probe 1: how `vllm serve --model X` is treated (rejected, or moved to the positional)
try:
    ns = root.parse_args(["serve", "--model", "probe-model"])
    model_option = {"accepted": True, "model_tag": getattr(ns, "model_tag", None)}
except (ValueError, SystemExit) as e:
    model_option = {"accepted": False, "error": str(e)}

# Probe 2: with HF_HUB_OFFLINE=1, does an s3:// model survive EngineArgs.__post_init__, or is it
# taken for a Hugging Face repo id and replaced?
from vllm.engine.arg_utils import EngineArgs
s3 = "s3://probe-bucket/probe-model/"
try:
    after = EngineArgs(model=s3).model
    offline = {"model_in": s3, "model_after_post_init": after, "kept": after == s3}
except Exception as e:
    offline = {"model_in": s3, "error": f"{type(e).__name__}: {e}", "kept": False}

# Options whose values vLLM checks after parsing (no argparse choices): the sets it checks
# them against, read from the release's own definitions.
import typing
value_sets = {}
from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
value_sets["quantization"] = sorted(QUANTIZATION_METHODS)
# model_loader imports every loader (torchvision, ...): read its LoadFormats Literal instead
import ast, importlib.util
src = importlib.util.find_spec("vllm.model_executor.model_loader").origin
for node in ast.walk(ast.parse(open(src).read())):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LoadFormats":
        value_sets["load_format"] = sorted(ast.literal_eval(e) for e in node.value.slice.elts)
from vllm.config.parallel import DistributedExecutorBackend
value_sets["distributed_executor_backend"] = sorted(typing.get_args(DistributedExecutorBackend))

print(json.dumps({
    "vllm_version": vllm.__version__,
    "value_sets": value_sets,
    "actions": actions,
    "env": sorted(envs.environment_variables),
    "probes": {"model_option": model_option, "hf_hub_offline_s3_model": offline},
}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def _requirements(py: Path) -> dict[str, str]:
    """The installed vLLM's Requires-Dist whose markers hold here (no extras): name -> spec."""
    code = (
        "import json, importlib.metadata as m\n"
        "from packaging.requirements import Requirement\n"
        "out = {}\n"
        "for r in m.requires('vllm') or []:\n"
        "    q = Requirement(r)\n"
        "    if q.marker is None or q.marker.evaluate({'extra': ''}):\n"
        "        out[q.name.lower().replace('_', '-')] = str(q)\n"
        "print(json.dumps(out))\n"
    )
    done = _run([str(py), "-c", code])
    if done.returncode:
        raise SystemExit(f"vllm_cli_export: cannot read vLLM's requirements: {done.stderr[-400:]}")
    return json.loads(done.stdout)


def _pip(py: Path, *args: str) -> None:
    done = _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args])
    if done.returncode:
        raise SystemExit(f"vllm_cli_export: pip install {' '.join(args)} failed:\n{done.stderr}")


def export(version: str, torch: str, venv: Path) -> dict:
    reused = (venv / "bin" / "python").exists()
    if not reused:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    _pip(py, "packaging")
    _pip(py, "--no-deps", f"vllm=={version}")
    _pip(py, f"torch=={torch}")
    reqs = _requirements(py)
    installed: list[str] = []
    for _ in range(MAX_INSTALL_ROUNDS):
        # the CUDA wheel cannot detect a GPU platform here; the CPU platform builds the same parser
        done = _run([str(py), "-c", DUMPER], cwd=venv, env={**os.environ, **DUMPER_ENV})
        missing = re.search(r"No module named '([^'.]+)", done.stderr)
        if done.returncode == 0:
            break
        if missing is None:
            raise SystemExit(f"vllm_cli_export: the parser did not build:\n{done.stderr[-3000:]}")
        module = missing.group(1)
        dist = DISTRIBUTION_OF_MODULE.get(module, module).lower().replace("_", "-")
        if dist in TORCH_FAMILY:  # would pull the release's CUDA torch over --torch
            raise SystemExit(
                f"vllm_cli_export: the parser's import chain needs {dist}; it must match "
                f"torch {torch}, install it into the venv by hand and rerun with --venv"
            )
        if dist in installed:
            raise SystemExit(f"vllm_cli_export: installing {dist} did not provide '{module}'")
        _pip(py, reqs.get(dist, dist))  # the release's own version range where it declares one
        installed.append(dist)
    else:
        raise SystemExit("vllm_cli_export: too many missing modules; giving up")
    contract = json.loads(done.stdout.strip().splitlines()[-1])
    freeze = _run([str(py), "-m", "pip", "freeze", "--all"]).stdout.split()
    contract["parser_environment"] = {
        "python": _run([str(py), "-c", "import sys; print(sys.version.split()[0])"]).stdout.strip(),
        "torch_required_by_release": reqs.get("torch"),
        "torch_installed": torch,
        "dumper_env": DUMPER_ENV,
        # the distributions this run installed after a missing import (empty when the venv
        # was reused from an earlier run)
        "installed_for_the_import": installed,
        "venv_reused": reused,
        "pip_freeze": freeze,
    }
    return contract


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="vLLM release, e.g. 0.33.0")
    p.add_argument("--torch", default="2.13.0", help="torch to install for the import")
    p.add_argument("--out", type=Path, help="default: workloads/serving/data/vllm-cli-VERSION.json")
    p.add_argument("--venv", type=Path, help="reuse or keep this venv (default: a temporary one)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", args.version):
        print(
            f"vllm_cli_export: --version {args.version!r}: a release like 0.33.0", file=sys.stderr
        )
        return 2
    out = args.out or DATA_DIR / f"vllm-cli-{args.version}.json"
    if args.venv is not None:
        contract = export(args.version, args.torch, args.venv)
    else:
        with tempfile.TemporaryDirectory(prefix="vllm-cli-") as tmp:
            contract = export(args.version, args.torch, Path(tmp) / "venv")
    if contract["vllm_version"] != args.version:
        print(f"vllm_cli_export: installed vllm {contract['vllm_version']}", file=sys.stderr)
        return 1
    record = {
        "description": (
            "`vllm serve` CLI contract of this vLLM release, read from the release's own parser "
            "(ServeSubcommand().subparser_init) and vllm/envs.py by scripts/vllm_cli_export.py"
        ),
        "vllm_version": args.version,
        "source": f"https://pypi.org/project/vllm/{args.version}/ (wheel, imported)",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python scripts/vllm_cli_export.py "
        + shlex.join([f"--version={args.version}", f"--torch={args.torch}"]),
        **{k: v for k, v in contract.items() if k != "vllm_version"},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    flags = sum(len(a["option_strings"]) for a in contract["actions"])
    print(
        f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {flags} option strings, "
        f"{len(contract['env'])} VLLM_* names"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
