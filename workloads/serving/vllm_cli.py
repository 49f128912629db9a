"""The `vllm serve` command-line contract of a vLLM release, and checks of what we generate.

The contract is `workloads/serving/data/vllm-cli-<version>.json`, exported from the release's
own parser by `scripts/vllm_cli_export.py`. `serve_argv_problems` reads an argument list the
way vLLM's `FlexibleArgumentParser` does (underscores in option names become dashes, `--k=v`
or `--k v`, BooleanOptionalAction's `--no-k`), and is stricter in two places on purpose: the
model must be the positional argument (`--model` is refused: vLLM 0.11.0 rejected it and later
releases only warn before moving it), and option names must be spelled out (no prefix
abbreviations).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
_IMAGE_VERSION = re.compile(r"^(?:.*/)?vllm-openai:v(\d+\.\d+\.\d+(?:\.post\d+)?)$")
_KUBE_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class Action:
    """One argparse action of `vllm serve`."""

    option_strings: tuple[str, ...]
    dest: str
    nargs: int | str | None  # None: one value; 0: a flag; "?", "*", "+"; or a count
    kind: str | None  # "int", "float", "str" (what the action's type accepts); None: a flag
    choices: tuple[str, ...] | None


@dataclass(frozen=True)
class VllmCli:
    version: str
    generated_at: str
    options: Mapping[str, Action]
    positionals: tuple[Action, ...]
    env: frozenset[str]
    # per dest, the values vLLM accepts where it checks them after parsing (quantization,
    # load format, executor backend: no argparse choices)
    value_sets: Mapping[str, frozenset[str]]
    probes: Mapping[str, Any]

    def hf_offline_keeps_s3_model(self) -> bool:
        """Whether `HF_HUB_OFFLINE=1` leaves an s3:// model alone (the export's probe)."""
        return bool(self.probes.get("hf_hub_offline_s3_model", {}).get("kept"))


def available_versions() -> list[str]:
    return sorted(
        (p.stem.removeprefix("vllm-cli-") for p in DATA_DIR.glob("vllm-cli-*.json")),
        key=lambda v: tuple(int(x) for x in re.findall(r"\d+", v)),
    )


@cache
def load(version: str) -> VllmCli:
    """The exported contract of vLLM `version`; KeyError when none was exported."""
    path = DATA_DIR / f"vllm-cli-{version}.json"
    if not path.exists():
        raise KeyError(
            f"no vLLM CLI data for {version} (have {', '.join(available_versions()) or 'none'}); "
            f"run scripts/vllm_cli_export.py --version {version}"
        )
    raw = json.loads(path.read_text())
    options: dict[str, Action] = {}
    positionals: list[Action] = []
    for a in raw["actions"]:
        action = Action(
            option_strings=tuple(a["option_strings"]),
            dest=a["dest"],
            nargs=a["nargs"],
            kind=a["kind"],
            choices=tuple(a["choices"]) if a["choices"] is not None else None,
        )
        if not action.option_strings:
            positionals.append(action)
        for opt in action.option_strings:
            options[opt] = action
    return VllmCli(
        version=raw["vllm_version"],
        generated_at=raw["generated_at"],
        options=options,
        positionals=tuple(positionals),
        env=frozenset(raw["env"]),
        probes=raw.get("probes", {}),
        value_sets={k: frozenset(v) for k, v in raw.get("value_sets", {}).items()},
    )


def image_version(image: str) -> str | None:
    """The vLLM release of an upstream `vllm/vllm-openai:vX.Y.Z` image; None for others."""
    m = _IMAGE_VERSION.match(image)
    return m.group(1) if m else None


def expand_kube_vars(arg: str, env: Mapping[str, str]) -> str:
    """`$(NAME)` as the kubelet expands it in command and args (unknown names stay as-is)."""
    return _KUBE_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg)


def _normalize(opt: str) -> str:
    """FlexibleArgumentParser: underscores in a long option's name (up to a '.') become dashes."""
    if not opt.startswith("--"):
        return opt
    name, dot, rest = opt[2:].partition(".")
    return "--" + name.replace("_", "-") + dot + rest


def _value_problem(opt: str, action: Action, value: str, cli: VllmCli) -> str | None:
    choices = action.choices
    if choices is None and action.dest in cli.value_sets:
        choices = tuple(sorted(cli.value_sets[action.dest]))
    if choices is not None and value not in choices:
        return f"{opt} {value!r}: not one of {', '.join(choices)}"
    try:
        if action.kind == "int":
            int(value)
        elif action.kind == "float":
            float(value)
    except ValueError:
        return f"{opt} {value!r}: vLLM {action.kind} expected"
    return None


def serve_argv_problems(argv: Sequence[str], cli: VllmCli) -> list[str]:
    """What vLLM's `vllm serve` parser (or our stricter reading) rejects in argv, the
    arguments after `vllm serve`; empty when it parses."""
    problems: list[str] = []
    args = list(argv)
    if not args or args[0].startswith("-"):
        problems.append("the model must be the first, positional argument of `vllm serve`")
    else:
        args = args[1:]
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if not tok.startswith("-") or tok == "-":
            problems.append(f"unexpected positional argument {tok!r}")
            continue
        opt, eq, inline = tok.partition("=")
        opt = _normalize(opt)
        if opt == "--model":
            problems.append("--model: give the model as the positional argument of `vllm serve`")
            i += 0 if eq else 1
            continue
        action = cli.options.get(opt)
        if action is None:
            problems.append(f"{opt}: not an option of vllm {cli.version} `vllm serve`")
            while not eq and i < len(args) and not args[i].startswith("-"):
                i += 1  # its values, whatever their number
            continue
        if action.nargs == 0:
            if eq:
                problems.append(f"{opt} is a flag and takes no value (got {inline!r})")
            continue
        if eq:
            values = [inline]
        else:
            want: int | str = 1 if action.nargs is None else action.nargs
            values = []
            while i < len(args) and not (args[i].startswith("-") and len(args[i]) > 1):
                if isinstance(want, int) and len(values) == want:
                    break
                if want == "?" and values:
                    break
                values.append(args[i])
                i += 1
            if isinstance(want, int) and len(values) != want:
                problems.append(f"{opt} expects {want} value(s), got {len(values)}")
                continue
            if want == "+" and not values:
                problems.append(f"{opt} expects at least one value")
                continue
        problems += [p for v in values if (p := _value_problem(opt, action, v, cli))]
    return problems


def env_problems(names: Iterable[str], cli: VllmCli) -> list[str]:
    """`VLLM_*` names that vLLM's envs.py does not define (a typo is silently ignored)."""
    return [
        f"{n}: not a VLLM_* variable of vllm {cli.version} (vllm/envs.py)"
        for n in names
        if n.startswith("VLLM_") and n not in cli.env
    ]
