"""Every `vllm serve` command line and VLLM_* variable we generate, checked against the CLI
contract exported from the pinned vLLM release itself (workloads/serving/data/)."""

from __future__ import annotations

import itertools
import json
from typing import Any, get_args

import pytest

from infra import pins
from infra.config import ServingConfig, parse_stack_config
from infra.plan.engine import Plan
from infra.plan.k8s import manifests
from tests.test_serving import raw_config
from workloads.serving import vllm_cli
from workloads.serving.fit import Topology
from workloads.serving.service import vllm_args, vllm_environment

# What the LeaderWorkerSet webhook injects into every container (the kubelet expands them).
LWS_ENV = {"LWS_LEADER_ADDRESS": "llama-405b-0.llama-405b.serving", "LWS_WORKER_INDEX": "1"}


@pytest.fixture(scope="module")
def cli() -> vllm_cli.VllmCli:
    version = vllm_cli.image_version(pins.image("vllm"))
    assert version is not None
    return vllm_cli.load(version)


def serve_argv(container: dict[str, Any]) -> list[str]:
    """The arguments after `vllm serve` of a container that runs it, `$(VAR)` expanded."""
    assert container["command"] == ["vllm", "serve"], container["command"]
    return [vllm_cli.expand_kube_vars(str(a), LWS_ENV) for a in container["args"]]


def vllm_containers(plan: Plan) -> list[dict[str, Any]]:
    found = []
    for item in manifests(plan):
        spec = item.object.get("spec", {})
        templates = [spec.get("template", {}).get("spec")]
        lwt = spec.get("leaderWorkerTemplate", {})
        templates += [lwt.get(t, {}).get("spec") for t in ("leaderTemplate", "workerTemplate")]
        for pod in filter(None, templates):
            found += [c for c in pod.get("containers", []) if c["name"] == "vllm"]
    return found


# --------------------------------------------------------------------------- the contract


def test_the_pinned_image_has_an_exported_cli_contract_that_says_when_and_how(cli):
    raw = json.loads((vllm_cli.DATA_DIR / f"vllm-cli-{cli.version}.json").read_text())
    assert raw["vllm_version"] == cli.version == "0.33.0"
    assert raw["generated_at"].startswith("2026-")
    assert raw["command"].startswith("python scripts/vllm_cli_export.py --version=")
    assert raw["parser_environment"]["pip_freeze"]
    # the real parser, not a transcription: hundreds of options, the model positional
    assert len(cli.options) > 200
    assert [p.dest for p in cli.positionals] == ["model_tag"]
    assert "VLLM_API_KEY" in cli.env and "VLLM_HOST_IP" in cli.env


def test_hf_hub_offline_keeps_an_s3_model_in_the_pinned_release(cli):
    # the export ran EngineArgs(model="s3://...") with HF_HUB_OFFLINE=1 in the release itself
    assert cli.hf_offline_keeps_s3_model()


# --------------------------------------------------------------------------- the checker


def test_checker_refuses_model_as_an_option(cli):
    problems = vllm_cli.serve_argv_problems(["--model", "m", "--port", "8000"], cli)
    assert any("positional" in p for p in problems)
    assert any("--model" in p for p in vllm_cli.serve_argv_problems(["m", "--model=/x"], cli))


def test_checker_refuses_unknown_flags_bad_choices_and_bad_numbers(cli):
    assert vllm_cli.serve_argv_problems(["m", "--port", "8000"], cli) == []
    assert vllm_cli.serve_argv_problems(["m", "--tensor_parallel_size", "2"], cli) == []
    (unknown,) = vllm_cli.serve_argv_problems(["m", "--tensor-paralel-size", "2"], cli)
    assert "not an option" in unknown
    (choice,) = vllm_cli.serve_argv_problems(["m", "--dtype", "bf16"], cli)
    assert "not one of" in choice and "bfloat16" in choice
    (number,) = vllm_cli.serve_argv_problems(["m", "--max-model-len", "lots"], cli)
    assert "int expected" in number
    (flag_value,) = vllm_cli.serve_argv_problems(["m", "--headless=yes"], cli)
    assert "takes no value" in flag_value
    (missing,) = vllm_cli.serve_argv_problems(["m", "--port"], cli)
    assert "expects 1" in missing


def test_checker_refuses_unknown_vllm_variables_only(cli):
    assert vllm_cli.env_problems(["VLLM_API_KEY", "HF_HUB_OFFLINE", "FI_PROVIDER"], cli) == []
    (typo,) = vllm_cli.env_problems(["VLLM_API_KEYS"], cli)
    assert "VLLM_API_KEYS" in typo


# --------------------------------------------------------------------------- what we generate


def serving(**changes: Any) -> ServingConfig:
    base = {
        "name": "m",
        "model": "org/model",
        "model_prefix": "model/",
        "params_billion": 8,
        "node_group": "h100",
    }
    return ServingConfig.model_validate({**base, **changes})


def literal_values(annotation: Any) -> set[str]:
    """The strings of a Literal[...] (or Literal[...] | None) annotation."""
    out: set[str] = set()
    for arg in get_args(annotation) or ():
        out |= literal_values(arg) if get_args(arg) else ({arg} if isinstance(arg, str) else set())
    return out


def test_every_config_choice_is_a_value_vllm_accepts(cli):
    # argparse choices (--dtype) or the sets vLLM checks after parsing (--quantization)
    for option, field in (("--dtype", "dtype"), ("--quantization", "quantization")):
        allowed = literal_values(ServingConfig.model_fields[field].annotation)
        action = cli.options[option]
        accepted = set(action.choices or cli.value_sets[action.dest])
        assert allowed and allowed <= accepted, (option, allowed - accepted)
    assert {"runai_streamer"} <= cli.value_sets["load_format"]
    assert {"mp", "ray"} <= cli.value_sets["distributed_executor_backend"]
    (bad,) = vllm_cli.serve_argv_problems(["m", "--quantization", "fp9"], cli)
    assert "not one of" in bad


@pytest.mark.parametrize(
    ("loader", "quantization", "dtype", "multi_node"),
    list(
        itertools.product(
            ["init_sync", "s3_streamer"], [None, "awq", "gptq", "fp8"], ["auto", "float16"], [0, 1]
        )
    ),
)
def test_every_serving_option_renders_a_command_line_vllm_parses(
    cli, loader, quantization, dtype, multi_node
):
    svc = serving(
        loader=loader,
        quantization=quantization,
        dtype=dtype,
        served_model_name="alias",
        gpu_memory_utilization=0.85,
        gpus_per_replica=16 if multi_node else 8,
    )
    topo = Topology(svc.gpus_per_replica, 8)
    model = "s3://bucket/model/" if loader == "s3_streamer" else "/models/m"
    ranks = ["0", "$(LWS_WORKER_INDEX)"] if multi_node else ["0"]
    for rank in ranks:
        argv = [
            vllm_cli.expand_kube_vars(str(a), LWS_ENV)
            for a in vllm_args(svc, topo, model, node_rank=rank)
        ]
        assert vllm_cli.serve_argv_problems(argv, cli) == [], argv


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_command_lines_and_env_parse_in_the_pinned_vllm(stack_report, stack, cli):
    containers = vllm_containers(stack_report(stack).plan)
    assert containers
    for container in containers:
        assert vllm_cli.serve_argv_problems(serve_argv(container), cli) == []
        assert vllm_cli.env_problems([e["name"] for e in container["env"]], cli) == []


def test_multi_node_environment_names_are_vllm_variables(cli):
    config = parse_stack_config(raw_config("prod"), project="llmcloud", stack="prod")
    group = config.cluster.node_group("h100")
    svc = serving(gpus_per_replica=16, loader="s3_streamer")
    env = vllm_environment(svc, group, Topology(16, group.instance.gpu_count), "us-east-2")
    names = [e["name"] for e in env]
    assert "VLLM_HOST_IP" in names
    assert vllm_cli.env_problems(names, cli) == []
