"""The serving fit check: a model that does not fit its GPUs is a config error (exit 2) that
says what it needs, what it has and which GPU counts of which kinds would fit."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config import ConfigError, parse_stack_config
from workloads.serving.fit import (
    GIB,
    REFERENCE_SHAPES,
    kv_bytes_per_token,
    memory_needed,
    weights_bytes,
)

ROOT = Path(__file__).resolve().parent.parent


def raw_config(stack: str) -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def parse(raw: dict, stack: str = "dev"):
    return parse_stack_config(raw, project="llmcloud", stack=stack, source="stack")


def with_serving(stack: str = "dev", **changes) -> dict:
    raw = copy.deepcopy(raw_config(stack))
    raw["llmcloud:serving"][0].update(changes)
    return raw


def error_of(raw: dict, stack: str = "dev") -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw, stack)
    return str(info.value)


def test_70b_bf16_on_one_l4_is_rejected_with_the_numbers_and_what_would_fit():
    message = error_of(with_serving(params_billion=70, dtype="bfloat16", max_model_len=8192))
    assert "llmcloud:serving[0].gpus_per_replica = 1" in message
    needed = float(re.search(r"needs ([\d.]+) GiB", message).group(1))
    available = float(re.search(r"gives ([\d.]+) GiB", message).group(1))
    # 70e9 params x 2 bytes = 130.4 GiB of weights alone; one L4 (22.35 GiB) x 0.9 = 20.1 GiB
    assert needed > 130.4 and available == pytest.approx(20.1, abs=0.05)
    assert "8 × L4" in message and "2 × H100" in message
    assert message.index("8 × L4") < message.index("2 × H100")  # the group's own kind first


def test_a_model_that_fits_is_accepted():
    config = parse(with_serving(params_billion=7, dtype="bfloat16", max_model_len=4096))
    assert config.serving[0].params_billion == 7


def test_quantization_shrinks_the_weights_so_the_same_model_fits():
    # 14B in bf16 = 26 GiB does not fit one 22 GiB L4; AWQ 4-bit (~7.8 GiB) does
    assert "gpus_per_replica" in error_of(with_serving(params_billion=14, max_model_len=4096))
    config = parse(with_serving(params_billion=14, quantization="awq", max_model_len=4096))
    assert config.serving[0].quantization == "awq"


def test_a_long_context_can_be_what_does_not_fit():
    # 8B bf16 fits an L40S at 16k tokens (staging), but not with the KV cache of a 1M context
    message = error_of(with_serving("staging", max_model_len=1_048_576), "staging")
    assert "KV cache" in message and "max_model_len 1048576" in message


def test_weights_and_kv_cache_follow_the_stated_rules():
    assert weights_bytes(70, "bfloat16", None) == 140e9
    assert weights_bytes(70, "bfloat16", "fp8") == 70e9
    assert weights_bytes(70, "bfloat16", "awq") == pytest.approx(0.6 * 70e9)
    # Llama-3.1-70B: 80 layers, 8 KV heads of 128: 2 x 80 x 8 x 128 x 2 bytes = 320 KiB/token
    assert kv_bytes_per_token(70) == 320 * 1024
    assert kv_bytes_per_token(70, override=1000) == 1000
    layers = [kv_bytes_per_token(limit) for limit, *_ in REFERENCE_SHAPES]
    assert layers == sorted(layers)
    assert kv_bytes_per_token(1000) > kv_bytes_per_token(405)


def test_memory_estimate_adds_overhead_per_gpu():
    svc = parse(raw_config("prod"), "prod").serving[0]
    one, four = memory_needed(svc, 1), memory_needed(svc, 4)
    assert four.total_bytes - one.total_bytes == pytest.approx(3 * GIB)


def test_tensor_parallel_must_be_a_power_of_two():
    message = error_of(with_serving("prod", gpus_per_replica=3), "prod")
    assert "gpus_per_replica = 3" in message and "power of two" in message


def test_multi_node_replicas_take_whole_nodes():
    # 2 replicas: with prod's training job, the 8 H100 nodes are full at max scale
    raw = with_serving("prod", node_group="h100", gpus_per_replica=16, replicas_max=2)
    assert parse(raw, "prod").serving[0].gpus_per_replica == 16  # 2 nodes x 8 H100
    # 16 GPUs on l40s = 4 nodes x 4 L40S
    raw["llmcloud:serving"][0].update(node_group="l40s", replicas_min=1, replicas_max=1)
    assert parse(raw, "prod").serving[0].node_group == "l40s"


def test_replicas_beyond_the_node_group_are_rejected():
    message = error_of(with_serving("prod", replicas_max=7), "prod")
    assert "replicas_max = 7" in message and "at most 6 nodes × 4 GPUs = 24" in message


def test_init_sync_needs_room_on_the_node_local_disk():
    # 120B bf16 over 16 single-L4 nodes fits in GPU memory, but every node would have to
    # hold the whole 240 GB checkpoint on a 250 GB NVMe disk
    raw = with_serving(params_billion=120, gpus_per_replica=16, replicas_max=1)
    raw["llmcloud:cluster"]["gpu_node_groups"][1]["max_size"] = 16
    for ns in raw["llmcloud:security"]["namespaces"]:
        ns.pop("gpu_quota", None)  # derived from the node groups: not what this test is about
    message = error_of(raw)
    assert "serving[0].loader = 'init_sync'" in message
    assert "240 GB" in message and "use loader: s3_streamer" in message
    raw["llmcloud:serving"][0]["loader"] = "s3_streamer"
    assert parse(raw).serving[0].loader == "s3_streamer"


def test_plan_of_a_stack_with_a_model_that_does_not_fit_exits_2(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (project / "__main__.py").write_text((ROOT / "__main__.py").read_text())
    (project / "stacks").mkdir()
    raw = with_serving(params_billion=70, dtype="bfloat16")
    (project / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": raw}))
    result = CliRunner().invoke(app, ["plan", "--stack", "dev", "--project", str(project)])
    assert result.exit_code == 2, result.output
    assert "serving[0].gpus_per_replica" in result.output and "8 × L4" in result.output
    assert "Traceback" not in result.output


def test_serving_entry_rejects_zero_replicas_and_open_cidrs():
    message = error_of(with_serving(replicas_min=0))
    assert "serving[0].replicas_min = 0" in message and "never scale up" in message
    message = error_of(with_serving(allowed_cidrs=["0.0.0.0/0"]))
    assert "serving[0].allowed_cidrs[0] = '0.0.0.0/0'" in message
