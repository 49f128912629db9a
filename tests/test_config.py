"""Stack config: every environment parses; bad config is rejected before any resource is
declared, with one message naming the key path, the value and what is allowed."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config import (
    ClusterConfig,
    ConfigError,
    load_eks_calendar,
    load_stack_config,
    parse_stack_config,
)
from infra.config.eks_versions import EKS_VERSIONS_PATH, support_note

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
            "llmcloud:network.bogus: unknown key; allowed keys here: vpc_cidr",
        ),
        (
            lambda c: c.update({"llmcloud:clutser": {}}),
            "llmcloud:clutser: unknown key (did you mean llmcloud:cluster?)",
        ),
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
            "llmcloud:cluster.version = '1.20': is not a version of the EKS calendar on ",
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


# ----------------------------------------------------------------------------- EKS calendar

DAY = date(2026, 12, 1)  # the day the calendar was checked


def _months_later(day: date, months: int) -> date:
    month = day.month - 1 + months
    return day.replace(year=day.year + month // 12, month=month % 12 + 1)


def test_eks_calendar_follows_aws_lifecycle_of_14_plus_12_months():
    # docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html: standard support for
    # 14 months after the EKS release, then extended support for 12 months.
    calendar = load_eks_calendar()
    dated = [v for v in calendar.versions if v.end_of_standard_support is not None]
    assert {v.version for v in dated} >= {"1.31", "1.32", "1.33", "1.34", "1.35"}
    for v in dated:
        assert v.eks_release is not None and v.end_of_extended_support is not None
        assert _months_later(v.end_of_standard_support, 12) == v.end_of_extended_support
        gap = v.end_of_standard_support - _months_later(v.eks_release, 14)
        assert abs(gap.days) <= 2, v  # AWS dates the release by its announcement day
    assert calendar.get("1.34").end_of_standard_support == date(2026, 12, 2)
    raw = json.loads(EKS_VERSIONS_PATH.read_text())
    assert raw["checked"] == "2026-12-01" and "kubernetes-release-calendar" in raw["sources"]["aws"]


def test_eks_version_support_before_inside_and_after_extended_support():
    v = load_eks_calendar().get("1.33")  # standard until 2026-07-29, extended until 2027-07-29
    assert v.support(date(2025, 5, 28)) == "unreleased"
    assert v.support(date(2026, 7, 28)) == "standard"
    assert v.support(date(2026, 7, 29)) == "extended"  # billed from the start of that day
    assert v.support(date(2027, 7, 28)) == "extended"
    assert v.support(date(2027, 7, 29)) == "ended"


def test_allowed_versions_and_default_follow_the_day_of_the_plan():
    calendar = load_eks_calendar()
    assert calendar.allowed(DAY) == ("1.32", "1.33", "1.34", "1.35")  # 1.31 ended 2026-11-26
    assert calendar.standard(DAY) == ("1.34", "1.35")
    assert calendar.default(DAY) == "1.35"
    assert calendar.standard(date(2026, 12, 2)) == ("1.35",)  # 1.34 left standard support
    assert calendar.default(date(2025, 6, 1)) == "1.33"
    assert "1.36" not in calendar.allowed(DAY)  # no EKS release date recorded


def cluster_on(day: date, **cluster) -> str:
    raw = copy.deepcopy(raw_config("dev"))
    raw["llmcloud:cluster"].pop("version")
    raw["llmcloud:cluster"].update(cluster)
    return parse_stack_config(raw, project="llmcloud", stack="dev", today=day).cluster.version


def test_default_cluster_version_is_the_newest_in_standard_support_that_day():
    assert cluster_on(DAY) == "1.35"
    assert cluster_on(date(2025, 6, 1)) == "1.33"
    assert ClusterConfig.model_validate({}, context={"today": DAY}).version == "1.35"


def test_cluster_version_is_checked_against_the_calendar_on_the_plan_day():
    with pytest.raises(ConfigError, match=r"cluster.version = '1.31': is past EKS extended"):
        cluster_on(DAY, version="1.31")
    assert cluster_on(date(2026, 11, 25), version="1.31", extended_support=True) == "1.31"
    with pytest.raises(ConfigError, match=r"'1.36': has no EKS release on or before"):
        cluster_on(DAY, version="1.36")
    with pytest.raises(ConfigError, match=r'quote the version \(version: "1.3"\)'):
        cluster_on(DAY, version=1.30)


def test_a_version_in_extended_support_needs_the_extended_upgrade_policy():
    with pytest.raises(ConfigError) as info:
        cluster_on(DAY, version="1.33")
    message = str(info.value)
    assert "cluster.version = '1.33': is in EKS extended support on 2026-12-01" in message
    assert "use a version in standard support (1.34, 1.35)" in message
    assert "extended_support: true" in message
    assert cluster_on(DAY, version="1.33", extended_support=True) == "1.33"
    assert cluster_on(date(2026, 7, 28), version="1.33") == "1.33"  # still standard that day


def test_policy_rule_versions_are_the_calendars_on_the_check_day():
    from policies.rules.base import PolicySettings

    assert PolicySettings(today=DAY).supported_eks_versions() == load_eks_calendar().allowed(DAY)
    assert "1.31" in PolicySettings(today=date(2026, 11, 25)).supported_eks_versions()
    assert "1.31" not in PolicySettings(today=DAY).supported_eks_versions()


def test_support_notes_warn_before_and_during_extended_support():
    assert support_note("1.35", DAY) is None
    soon = support_note("1.34", DAY)
    assert soon and "leaves EKS standard support on 2026-12-02 (in 1 day)" in soon
    extended = support_note("1.33", DAY)
    assert extended and "is in EKS extended support on 2026-12-01" in extended
    assert "upgrade cluster.version to 1.35" in extended
    assert "past EKS extended support" in (support_note("1.31", DAY) or "")


CLUSTER_PROGRAM = """
import pulumi_aws as aws
aws.eks.Cluster("c", version="{version}", role_arn="arn:aws:iam::123456789012:role/c",
    vpc_config={{"subnet_ids": ["subnet-1", "subnet-2"]}})
"""


@pytest.mark.parametrize(
    ("day", "hourly_usd", "noted"),
    [
        (date(2026, 7, 28), 0.10, False),  # standard support, ends in 1 day: noted below
        (date(2026, 7, 29), 0.60, True),  # first day of extended support
        (date(2027, 7, 28), 0.60, True),  # last day of extended support
    ],
)
def test_cost_prices_the_control_plane_by_its_support_on_the_plan_day(
    plan_program, day, hourly_usd, noted
):
    from infra.plan.cost import estimate_cost

    plan = plan_program(CLUSTER_PROGRAM.format(version="1.33"))
    report = estimate_cost(plan, None, today=day)
    (control_plane,) = [i for i in report.items if i.type == "aws:eks/cluster:Cluster"]
    assert control_plane.hourly_idle == control_plane.hourly_max == pytest.approx(hourly_usd)
    assert any("Kubernetes 1.33" in n for n in report.notes)  # extended, or ending soon
    assert any("extended support on" in n for n in report.notes) is noted


# ----------------------------------------------------------------------------- README tables


def test_every_config_field_has_a_description():
    from infra.config.docs import undocumented_fields

    assert undocumented_fields() == []


def test_readme_config_tables_are_generated_from_the_model():
    from infra.config.docs import README_PATH, TABLE_PATHS, render_readme, table_paths

    text = README_PATH.read_text()
    assert table_paths(text) == list(TABLE_PATHS)  # every section has its table, once
    assert render_readme(text) == text, (
        "README config tables are stale: python -m infra.config.docs"
    )


def test_docs_script_rewrites_a_stale_table_and_check_mode_reports_it(tmp_path, capsys):
    from infra.config.docs import README_PATH, main

    readme = tmp_path / "README.md"
    stale = README_PATH.read_text().replace(
        "| `network.vpc_cidr` | `10.0.0.0/16` |", "| `vpc` | x |"
    )
    readme.write_text(stale)
    assert main(["--check", str(readme)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main([str(readme)]) == 0
    assert readme.read_text() == README_PATH.read_text()
    assert main(["--check", str(readme)]) == 0


def test_config_tables_show_defaults_bounds_and_choices():
    from infra.config.docs import render_table

    top = render_table("llmcloud")
    assert "| `network.nat_gateways` | `per_az` |" in top
    assert "| `security.kms_deletion_window_days` | `30` |" in top and "Range: 7–30." in top
    assert "| `security.namespaces[]` | `training`, `serving` |" in top
    assert "| `aws:region` | required |" in top
    assert "`project`" not in top and "`stack`" not in top  # set by Pulumi, not stack-file keys
    serving = render_table("serving[]")
    assert "| `dtype` | `bfloat16` |" in serving and "`float16`" in serving
    cluster = render_table("cluster")
    assert "| `version` | newest in standard support on the plan's day |" in cluster


def test_prod_spans_three_zones():
    def as_prod(c):  # dev's two zones, made a prod stack
        c["llmcloud:environment"] = "prod"
        c["llmcloud:cluster"].update(endpoint_public_access=False, public_access_cidrs=[])
        c["llmcloud:serving"] = []
        c["llmcloud:deploy"] = {}

    message = broken(as_prod)
    assert "llmcloud:network.availability_zones = " in message
    assert "prod spans 3 zones" in message


def test_every_version_the_config_allows_has_a_matching_cluster_autoscaler():
    # the autoscaler's minor must match the cluster's (kubernetes/autoscaler README, Releases)
    from infra.cluster.autoscaler import image_tags

    tags = image_tags()
    for version in load_eks_calendar().allowed(DAY):
        assert tags[version].startswith(f"v{version}."), version
