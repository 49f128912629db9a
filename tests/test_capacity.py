"""Admission before deploy (infra/config/capacity.py): workloads at max scale within their
namespaces' quotas and their node groups' GPUs, checked at config validation with a message
naming the key and the numbers; quotas the stack does not set derived from the node groups;
the Capacity Block window validated."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, parse_stack_config
from infra.config.capacity import admission_problem, demands, node_capacity, quotas

ROOT = Path(__file__).resolve().parent.parent
QUOTA = "kubernetes:core/v1:ResourceQuota"


def raw(stack: str) -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def error(stack: str, mutation) -> str:
    config = copy.deepcopy(raw(stack))
    mutation(config)
    with pytest.raises(ConfigError) as info:
        parse_stack_config(config, project="llmcloud", stack=stack, source=f"Pulumi.{stack}.yaml")
    return str(info.value)


def namespace(config: dict, name: str) -> dict:
    return next(n for n in config["llmcloud:security"]["namespaces"] if n["name"] == name)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_are_admitted(stack_report, stack):
    assert admission_problem(stack_report(stack).config) is None


def test_prod_training_job_over_the_old_default_quota_is_a_config_error():
    """Before: 4 pods of 163 CPU / 1740Gi against 512 CPU / 4Ti."""
    message = error("prod", lambda c: namespace(c, "training").update(cpu_quota="512"))
    assert "llmcloud:security.namespaces[0].cpu_quota = '512'" in message
    assert "need 652 CPU at max scale (training[0] gpt-1b-pretrain: 4 pods x 163)" in message
    assert "raise it to at least 652" in message
    message = error("prod", lambda c: namespace(c, "training").update(memory_quota="4Ti"))
    assert "namespaces[0].memory_quota = '4Ti'" in message
    assert "need 6960 GiB memory" in message and "4 pods x 1740" in message


def test_gpu_and_efa_quotas_are_checked_against_the_workloads():
    message = error("prod", lambda c: namespace(c, "training").update(gpu_quota=16))
    assert "namespaces[0].gpu_quota = 16" in message and "need 32 GPUs" in message
    message = error("prod", lambda c: namespace(c, "training").update(efa_quota=64))
    assert "namespaces[0].efa_quota = 64" in message
    assert "need 128 EFA interfaces" in message  # 4 p5 nodes x 32


def test_two_endpoints_on_one_group_are_summed_against_its_gpus():
    """Before: two endpoints on dev's l4 group (2 nodes x 1 GPU) needing 3 GPUs at max."""

    def second_endpoint(c: dict) -> None:
        first = c["llmcloud:serving"][0]
        c["llmcloud:serving"].append(
            {**first, "name": "qwen-b", "replicas_min": 1, "replicas_max": 1}
        )

    message = error("dev", second_endpoint)
    assert "llmcloud:cluster.gpu_node_groups[1].max_size = 2" in message
    assert "node group l4's workloads need 3 GPUs at max scale" in message
    assert "serving[0] qwen-1-5b: 2; serving[1] qwen-b: 1" in message
    assert "2 nodes x 1 GPUs hold 2; raise max_size to at least 3" in message


def test_unset_quotas_are_derived_from_the_workloads_node_groups(stack_report):
    report = stack_report("prod")
    derived = quotas(report.config)["training"]
    h100 = report.config.cluster.node_group("h100")
    node = node_capacity(h100)
    assert derived.amounts["cpu"] == pytest.approx(8 * node["cpu"], abs=1e-3)
    assert derived.derived["memory"] == f"h100 8 x {node['memory']:.2f}"
    assert derived.amounts["gpus"] == 128  # set in the stack: kept
    hard = {
        q.inputs["metadata"]["namespace"]: q.inputs["spec"]["hard"]
        for q in report.plan.by_type(QUOTA)
    }
    assert hard["training"] == derived.hard()
    assert hard["training"]["requests.vpc.amazonaws.com/efa"] == "256"


def test_demands_use_the_pod_sizes_the_workloads_render(stack_report):
    report = stack_report("prod")
    (job,) = [d for d in demands(report.config) if d.key == "training[0]"]
    template = next(r for r in report.plan.by_type("kubernetes:batch/v1:Job")).inputs["spec"][
        "template"
    ]["spec"]
    requests = template["containers"][0]["resources"]["requests"]
    assert str(int(job.per_pod["cpu"])) == str(requests["cpu"])
    assert f"{int(job.per_pod['memory'])}Gi" == requests["memory"]


# ----------------------------------------------------------------------------- Capacity Blocks


def block(c: dict) -> dict:
    return next(
        g["capacity"] for g in c["llmcloud:cluster"]["gpu_node_groups"] if g["name"] == "h200-block"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"end_utc": "2026-12-13T11:30:00Z"},
            "capacity.end_utc = '2026-12-13 11:30:00+00:00': must be after start_utc",
        ),
        (
            {"start_utc": "2026-12-14T11:30:00+02:00"},
            "capacity.start_utc = '2026-12-14 11:30:00+02:00': a UTC time with its zone",
        ),
        ({"start_utc": "2026-12-14T11:30:00"}, "a UTC time with its zone"),
        ({"end_utc": None}, "capacity.end_utc = null: give both start_utc and end_utc"),
        ({"end_utc": "2027-12-28T11:30:00Z"}, "a Capacity Block lasts at most 182 days"),
    ],
)
def test_capacity_block_window_is_validated(change, expected):
    def apply(c: dict) -> None:
        capacity = block(c)
        capacity.update(change)
        for k in [k for k, v in capacity.items() if v is None]:
            del capacity[k]

    assert expected in error("prod", apply)


def test_a_window_on_a_group_that_is_not_a_block_is_refused():
    def on_h100(c: dict) -> None:
        group = next(g for g in c["llmcloud:cluster"]["gpu_node_groups"] if g["name"] == "h100")
        group["capacity"] = {"start_utc": "2026-12-14T11:30:00Z", "end_utc": "2026-12-15T11:30:00Z"}

    assert "capacity.start_utc" in error("prod", on_h100)
    assert "only for type: capacity_block" in error("prod", on_h100)


def test_plan_refuses_a_stack_over_its_quota_with_exit_2_and_one_message(tmp_path):
    from typer.testing import CliRunner

    from infra.cli import app

    project = tmp_path / "repo"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    config = copy.deepcopy(raw("prod"))
    namespace(config, "training").update(cpu_quota="512", memory_quota="4Ti")
    (project / "stacks" / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": config}))
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "prod"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "llmcloud:security.namespaces[0].cpu_quota = '512'" in output
    assert "need 652 CPU at max scale" in output
    assert "Traceback" not in result.output
