"""Stack config: every environment parses; bad config is rejected before any resource is
declared, with one message naming the key path, the value and what is allowed."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config import ConfigError, load_stack_config, parse_stack_config

ROOT = Path(__file__).resolve().parent.parent


def raw_config(stack: str = "dev") -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def parse(raw: dict, stack: str = "dev"):
    return parse_stack_config(
        raw, project="llmcloud", stack=stack, source=f"stacks/Pulumi.{stack}.yaml"
    )


def broken(mutate: Callable[[dict], None], stack: str = "dev") -> str:
    raw = copy.deepcopy(raw_config(stack))
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse(raw, stack)
    return str(info.value)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_file_parses(stack):
    config = load_stack_config(ROOT, stack)
    assert config.environment == stack
    assert config.stack == stack


def test_dev_is_small_and_cheap():
    dev = load_stack_config(ROOT, "dev")
    assert dev.network.nat_gateways == "single"
    assert len(dev.network.availability_zones) >= 2
    assert all(g.min_size == 0 for g in dev.cluster.gpu_node_groups)
    assert dev.cluster.endpoint_public_access and dev.cluster.public_access_cidrs


def test_prod_is_hardened():
    prod = load_stack_config(ROOT, "prod")
    assert len(prod.network.availability_zones) == 3
    assert prod.network.nat_gateways == "per_az"
    assert prod.network.interface_endpoints
    assert not prod.cluster.endpoint_public_access
    assert prod.security.cloudtrail
    assert prod.policy_enforcement == "mandatory"


def test_defaults_are_the_hardened_ones():
    raw = {
        "aws:region": "us-east-1",
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
    }
    config = (
        parse(raw, stack="team-x")
        if False
        else parse({**raw, "llmcloud:environment": "staging"}, "team-x")
    )
    assert config.network.nat_gateways == "per_az"
    assert config.network.interface_endpoints
    assert not config.cluster.endpoint_public_access
    assert config.security.cloudtrail
    assert not config.storage.force_destroy


def test_derived_private_subnets_are_large_and_disjoint():
    prod = load_stack_config(ROOT, "prod")
    private, public = prod.network.private_subnets, prod.network.public_subnets
    assert all(net.prefixlen == 18 for net in private)
    nets = private + public
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["llmcloud:network"].update(bogus=1),
            "llmcloud:network.bogus = 1: unknown key; allowed keys here: vpc_cidr",
        ),
        (lambda c: c.update({"llmcloud:clutser": {}}), "llmcloud:clutser = {}: unknown key"),
        (
            lambda c: c["llmcloud:cluster"].update(endpoint_public_access="maybe"),
            "llmcloud:cluster.endpoint_public_access = 'maybe': Input should be a valid boolean",
        ),
        (
            lambda c: c["llmcloud:network"].update(vpc_cidr="10.0.0.0/33"),
            "llmcloud:network.vpc_cidr = '10.0.0.0/33'",
        ),
        (
            lambda c: c["llmcloud:network"].update(vpc_cidr="8.8.0.0/16"),
            "must be a private (RFC 1918) range",
        ),
        (
            lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(min_size=5),
            "llmcloud:cluster.gpu_node_groups[0].max_size = 2: must be ≥ min_size (5)",
        ),
        (
            lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(gpu="B200"),
            "llmcloud:cluster.gpu_node_groups[0].gpu = 'B200': must be one of A100, A100-80G, H100, H200",
        ),
        (
            lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(
                availability_zones=["us-east-1z"]
            ),
            "gpu_node_groups[0].availability_zones[0] = 'us-east-1z': us-east-1 has zones us-east-1a",
        ),
        (
            lambda c: c["llmcloud:network"].update(availability_zones=["us-east-1a", "eu-west-1a"]),
            "llmcloud:network.availability_zones[1] = 'eu-west-1a': us-east-1 has zones",
        ),
        (
            lambda c: c["llmcloud:network"].update(
                private_subnet_cidrs=["10.10.0.0/18", "10.10.32.0/19"]
            ),
            "overlaps private_subnet_cidrs[1] (10.10.32.0/19); subnets must not overlap",
        ),
        (
            lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(
                capacity={"type": "reservation", "reservation_id": "cr-0a1b2c3d4e5f60718"}
            ),
            "gpu_node_groups[0].capacity.availability_zone = null: required when type is reservation",
        ),
        (
            lambda c: c["llmcloud:cluster"]["gpu_node_groups"][1].update(efa=True),
            "gpu_node_groups[1].efa = true: g6.xlarge has no EFA",
        ),
        (
            lambda c: c["llmcloud:cluster"]["gpu_node_groups"][0].update(capacity={"type": "spot"}),
            "capacity.type = 'spot': spot is for serving kinds only",
        ),
        (
            lambda c: c["llmcloud:cluster"].update(public_access_cidrs=["0.0.0.0/0"]),
            "0.0.0.0/0 opens the Kubernetes API to the internet",
        ),
        (
            lambda c: c["llmcloud:cluster"].update(version="1.20"),
            "llmcloud:cluster.version = '1.20': supported EKS versions",
        ),
        (lambda c: c.pop("aws:region"), "aws:region is required"),
        (
            lambda c: c.update({"aws:region": "mars-north-1"}),
            "aws:region = 'mars-north-1': regions in the catalog",
        ),
    ],
)
def test_bad_config_names_key_value_and_what_is_allowed(mutate, expected):
    message = broken(mutate)
    assert message.startswith("stacks/Pulumi.dev.yaml: ")
    assert expected in message


def test_gpu_kind_not_offered_in_the_chosen_zone_is_rejected():
    # p4de is offered only in us-east-1b and us-east-1c (EC2 offerings data).
    def mutate(c):
        c["llmcloud:cluster"]["gpu_node_groups"][0].update(
            gpu="A100-80G", availability_zones=["us-east-1a"]
        )

    message = broken(mutate)
    assert "p4de.24xlarge (A100-80G) is not offered in us-east-1a" in message
    assert "us-east-1b" in message


def test_prod_refuses_a_public_endpoint():
    def mutate(c):
        c["llmcloud:cluster"].update(
            endpoint_public_access=True, public_access_cidrs=["203.0.113.0/24"]
        )

    assert "prod clusters have a private endpoint only" in broken(mutate, "prod")


def test_workload_references_are_checked():
    assert "must name a GPU node group: h100, l4" in broken(
        lambda c: c["llmcloud:training"][0].update(node_group="nope")
    )
    assert "'latest' is not a pinned tag" in broken(
        lambda c: c["llmcloud:training"][0].update(image="trainer:latest")
    )


def test_secure_values_are_placeholders_offline():
    raw = copy.deepcopy(raw_config("dev"))
    raw["llmcloud:serving_api_key"] = {"secure": "v1:AAAA"}
    config = parse(raw)
    assert config.serving_api_key is not None
    assert config.serving_api_key.get_secret_value() == "[secret]"


def test_object_values_arrive_as_json_strings_from_the_engine():
    raw = copy.deepcopy(raw_config("dev"))
    import json

    engine_style = {
        k: (json.dumps(v, default=str) if isinstance(v, dict | list) else v) for k, v in raw.items()
    }
    assert parse(engine_style) == parse(raw)


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "repo"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project)
    shutil.copy(ROOT / "__main__.py", project)
    shutil.copytree(ROOT / "stacks", project / "stacks")
    return project


def test_plan_exits_2_with_one_clear_message_on_a_broken_stack_file(tmp_path):
    project = copy_project(tmp_path)
    stack_file = project / "stacks" / "Pulumi.dev.yaml"
    data = yaml.safe_load(stack_file.read_text())
    data["config"]["llmcloud:cluster"]["gpu_node_groups"][0]["max_size"] = -1
    stack_file.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "dev"])
    assert result.exit_code == 2
    assert "llmcloud:cluster.gpu_node_groups[0].max_size = -1" in result.output
    assert "Traceback" not in result.output


def test_plan_exits_2_for_a_missing_stack(tmp_path):
    result = CliRunner().invoke(app, ["plan", "--project", str(ROOT), "--stack", "nope"])
    assert result.exit_code == 2
    assert "Pulumi.nope.yaml: no such stack file; stacks here: Pulumi.dev.yaml" in result.output


def test_fsx_needs_a_training_namespace_for_its_claim():
    def mutate(c):
        c["llmcloud:security"]["namespaces"] = [{"name": "serving", "purpose": "serving"}]
        c["llmcloud:training"] = []
        c["llmcloud:serving"][0]["allowed_namespaces"] = []

    assert "llmcloud:storage.fsx = " in broken(mutate)
    assert "needs a namespace with purpose: training" in broken(mutate)


def test_training_jobs_that_mount_fsx_run_where_its_claim_is():
    def mutate(c):
        c["llmcloud:security"]["namespaces"].append({"name": "research", "purpose": "training"})
        c["llmcloud:training"][0]["namespace"] = "research"

    message = broken(mutate)
    assert (
        "llmcloud:training[0].namespace = 'research': jobs that mount FSx run in 'training'"
        in message
    )
