"""Cost estimate: each priced resource from the data files, at idle and at max, with spot
and reserved capacity labelled; the dev stack's totals pinned against the data files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from infra.catalog import load_catalog
from infra.config import parse_stack_config
from infra.network.vpc import INTERFACE_ENDPOINTS
from infra.plan.cost import PRICES_PATH, estimate_cost, load_prices
from infra.plan.report import render_markdown
from infra.plan.results import HOURS_PER_MONTH
from infra.security.keys import PURPOSES

PRICES = load_prices()
CATALOG = load_catalog()

# A node group per the cross-team contract: instance type on the node group, volumes and
# the reservation in its launch template, the capacity label as a tag.
NODE_GROUP_PROGRAM = """
import pulumi_aws as aws

def group(name, itype, lo, hi, capacity, capacity_type="ON_DEMAND", volume=None, reservation=None):
    lt_args = {}
    if volume:
        lt_args["block_device_mappings"] = [{"device_name": "/dev/xvda", "ebs": volume}]
    if reservation:
        lt_args["capacity_reservation_specification"] = {
            "capacity_reservation_target": {"capacity_reservation_id": reservation}
        }
    lt = aws.ec2.LaunchTemplate(f"{name}-lt", **lt_args)
    aws.eks.NodeGroup(
        name,
        cluster_name="c",
        node_role_arn="arn:aws:iam::123456789012:role/node",
        subnet_ids=["subnet-1"],
        instance_types=[itype],
        capacity_type=capacity_type,
        scaling_config={"min_size": lo, "desired_size": lo, "max_size": hi},
        launch_template={"id": lt.id, "version": "1"},
        tags={"llmcloud:capacity": capacity, "llmcloud:node-group": name},
    )
"""


def plan_groups(plan_program, calls: str):
    return plan_program(NODE_GROUP_PROGRAM + calls)


def item(report, name):
    matches = [i for i in report.items if i.name == name]
    assert len(matches) == 1, [i.name for i in report.items]
    return matches[0]


def rate(itype: str) -> float:
    return CATALOG.instance(itype).on_demand_hourly_usd


def gp3_hourly(size_gb: float) -> float:
    return size_gb * PRICES.ebs_gb_month_usd["gp3"] / HOURS_PER_MONTH


# ----------------------------------------------------------------------------- node groups


def test_on_demand_group_costs_min_nodes_idle_and_max_nodes_at_max(plan_program):
    plan = plan_groups(
        plan_program,
        'group("h100", "p5.48xlarge", 1, 4, "on_demand", volume={"volume_size": 200, "volume_type": "gp3"})',
    )
    report = estimate_cost(plan, None)
    nodes = item(report, "h100")
    assert nodes.pricing == "on_demand"
    assert nodes.hourly_idle == pytest.approx(1 * rate("p5.48xlarge"))
    assert nodes.hourly_max == pytest.approx(4 * rate("p5.48xlarge"))
    volumes = item(report, "h100-lt")
    assert volumes.hourly_idle == pytest.approx(1 * gp3_hourly(200))
    assert volumes.hourly_max == pytest.approx(4 * gp3_hourly(200))
    assert report.hourly_max == pytest.approx(nodes.hourly_max + volumes.hourly_max)


def test_spot_group_is_labelled_and_priced_at_the_on_demand_upper_bound(plan_program):
    plan = plan_groups(plan_program, 'group("l4", "g6.xlarge", 0, 3, "spot", "SPOT")')
    report = estimate_cost(plan, None)
    nodes = item(report, "l4")
    assert nodes.pricing == "spot"
    assert (nodes.hourly_idle, nodes.hourly_max) == (0, pytest.approx(3 * rate("g6.xlarge")))
    assert "upper bound" in nodes.description
    assert any(n.startswith("spot:") for n in report.notes)


def test_capacity_label_falls_back_to_the_eks_capacity_type(plan_program):
    plan = plan_program(
        NODE_GROUP_PROGRAM.replace(
            'tags={"llmcloud:capacity": capacity, "llmcloud:node-group": name}', "tags={}"
        )
        + 'group("l4", "g6.xlarge", 0, 3, "spot", "SPOT")'
    )
    assert item(estimate_cost(plan, None), "l4").pricing == "spot"


def test_reserved_group_is_billed_at_max_size_even_when_idle(plan_program):
    plan = plan_groups(
        plan_program,
        'group("h200", "p5en.48xlarge", 0, 2, "reservation", reservation="cr-0f1e2d3c4b5a69788")',
    )
    report = estimate_cost(plan, None)
    nodes = item(report, "h200")
    assert nodes.pricing == "reservation"
    assert nodes.hourly_idle == nodes.hourly_max == pytest.approx(2 * rate("p5en.48xlarge"))
    assert "cr-0f1e2d3c4b5a69788" in nodes.description
    assert "used or not" in nodes.description
    assert any(n.startswith("reservation:") for n in report.notes)


def test_capacity_block_is_prepaid_zero_hourly_but_its_volumes_are_billed(plan_program):
    plan = plan_groups(
        plan_program,
        'group("block", "p5e.48xlarge", 0, 4, "capacity_block", "CAPACITY_BLOCK", '
        'volume={"volume_size": 500, "volume_type": "gp3"}, reservation="cr-0a1b2c3d4e5f60718")',
    )
    report = estimate_cost(plan, None)
    nodes = item(report, "block")
    assert nodes.pricing == "capacity_block"
    assert nodes.hourly_idle == nodes.hourly_max == 0
    assert f"${4 * rate('p5e.48xlarge'):,.2f}/h" in nodes.description
    assert item(report, "block-lt").hourly_max == pytest.approx(4 * gp3_hourly(500))
    assert any(n.startswith("capacity_block:") for n in report.notes)


def test_gp3_iops_and_throughput_above_baseline_are_billed(plan_program):
    plan = plan_groups(
        plan_program,
        'group("g", "g6.xlarge", 1, 1, "on_demand", volume={"volume_size": 100, '
        '"volume_type": "gp3", "iops": 6000, "throughput": 250})',
    )
    extra_month = (6000 - 3000) * PRICES.ebs_gp3_iops_month_usd + (
        250 - 125
    ) * PRICES.ebs_gp3_throughput_mbps_month_usd
    expected = gp3_hourly(100) + extra_month / HOURS_PER_MONTH
    assert item(estimate_cost(plan, None), "g-lt").hourly_max == pytest.approx(expected)


def test_group_without_launch_template_volumes_prices_its_disk_size(plan_program):
    plan = plan_program(
        """
import pulumi_aws as aws
aws.eks.NodeGroup("system", cluster_name="c", node_role_arn="arn:aws:iam::123456789012:role/n",
    subnet_ids=["subnet-1"], instance_types=["m7i.large"], disk_size=50,
    scaling_config={"min_size": 2, "desired_size": 2, "max_size": 3})
"""
    )
    report = estimate_cost(plan, None)
    assert item(report, "system").hourly_idle == pytest.approx(2 * rate("m7i.large"))
    disks = item(report, "system-volumes")
    assert (disks.hourly_idle, disks.hourly_max) == (
        pytest.approx(2 * gp3_hourly(50)),
        pytest.approx(3 * gp3_hourly(50)),
    )


def test_instance_type_missing_from_the_catalog_is_noted_not_guessed(plan_program):
    plan = plan_groups(plan_program, 'group("odd", "x2iedn.32xlarge", 0, 1, "on_demand")')
    report = estimate_cost(plan, None)
    assert not [i for i in report.items if i.name == "odd"]
    assert any("x2iedn.32xlarge has no recorded price" in n for n in report.notes)
    assert [u["type"] for u in report.unpriced] == ["aws:eks/nodeGroup:NodeGroup"]


# ----------------------------------------------------------------------------- other resources


@pytest.mark.parametrize("tier", [125, 250, 500, 1000])
def test_fsx_lustre_is_priced_by_capacity_and_throughput_tier(plan_program, tier):
    plan = plan_program(
        f"""
import pulumi_aws as aws
aws.fsx.LustreFileSystem("scratch", storage_capacity=2400, subnet_ids="subnet-1",
    deployment_type="PERSISTENT_2", per_unit_storage_throughput={tier})
"""
    )
    fs = item(estimate_cost(plan, None), "scratch")
    per_gb = PRICES.fsx_lustre_gb_month_usd["PERSISTENT_2"][tier]
    assert fs.hourly_idle == fs.hourly_max == pytest.approx(2400 * per_gb / HOURS_PER_MONTH)


def test_interface_endpoints_cost_per_zone_and_gateway_endpoints_are_free(plan_program):
    plan = plan_program(
        """
import pulumi_aws as aws
aws.ec2.VpcEndpoint("sts", vpc_id="vpc-1", service_name="com.amazonaws.us-east-1.sts",
    vpc_endpoint_type="Interface", subnet_ids=["subnet-a", "subnet-b", "subnet-c"])
aws.ec2.VpcEndpoint("s3", vpc_id="vpc-1", service_name="com.amazonaws.us-east-1.s3",
    vpc_endpoint_type="Gateway")
"""
    )
    report = estimate_cost(plan, None)
    assert item(report, "sts").hourly_max == pytest.approx(
        3 * PRICES.interface_endpoint_hourly_usd_per_az
    )
    assert not [i for i in report.items if i.name == "s3"]


def test_cluster_nat_public_ip_and_kms_key_are_fixed_costs(plan_program):
    plan = plan_program(
        """
import pulumi_aws as aws
aws.eks.Cluster("eks", role_arn="arn:aws:iam::123456789012:role/c",
    vpc_config={"subnet_ids": ["subnet-1"]})
eip = aws.ec2.Eip("nat", domain="vpc")
aws.ec2.NatGateway("nat", allocation_id=eip.id, subnet_id="subnet-1")
aws.kms.Key("data", enable_key_rotation=True)
"""
    )
    report = estimate_cost(plan, None)
    by_type = {i.type.rsplit(":", 1)[-1]: i for i in report.items}
    assert by_type["Cluster"].hourly_idle == PRICES.eks_cluster_hourly_usd
    assert by_type["NatGateway"].hourly_idle == PRICES.nat_gateway_hourly_usd
    assert by_type["Eip"].hourly_idle == PRICES.public_ipv4_hourly_usd
    assert by_type["Key"].hourly_max == pytest.approx(PRICES.kms_key_month_usd / HOURS_PER_MONTH)
    assert all(i.hourly_idle == i.hourly_max for i in report.items)
    assert any("NAT gateways: hours only" in n for n in report.notes)


def test_load_balancer_service_is_priced_and_cloudtrail_is_noted(plan_program):
    plan = plan_program(
        """
import pulumi_kubernetes as k8s
import pulumi_aws as aws
k8s.core.v1.Service("api", metadata={"name": "api"},
    spec={"type": "LoadBalancer", "ports": [{"port": 80}]})
k8s.core.v1.Service("internal", metadata={"name": "internal"}, spec={"ports": [{"port": 80}]})
aws.cloudtrail.Trail("trail", s3_bucket_name="logs")
"""
    )
    report = estimate_cost(plan, None)
    assert [i.name for i in report.items] == ["api"]
    assert item(report, "api").hourly_max == PRICES.nlb_hourly_usd
    assert any(n.startswith("CloudTrail: 1 trail(s) not priced") for n in report.notes)


BUCKET_PROGRAM = """
import pulumi_aws as aws
aws.s3.Bucket("datasets")
aws.s3.Bucket("checkpoints")
aws.cloudwatch.LogGroup("flow-logs", retention_in_days=30)
"""


def stack_config(**llmcloud):
    raw = {
        "aws:region": llmcloud.pop("region", "us-east-1"),
        "llmcloud:environment": "dev",
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
    }
    raw.update({f"llmcloud:{k}": v for k, v in llmcloud.items()})
    return parse_stack_config(raw, project="demo", stack="dev")


def test_s3_is_left_out_unless_an_expected_size_is_configured(plan_program):
    plan = plan_program(BUCKET_PROGRAM)
    report = estimate_cost(plan, stack_config())
    assert not [i for i in report.items if i.type == "aws:s3/bucket:Bucket"]
    assert any("S3: 2 bucket(s) left out" in n for n in report.notes)

    sized = estimate_cost(plan, stack_config(storage={"expected_size_gb": {"datasets": 1000}}))
    datasets = item(sized, "datasets")
    assert datasets.hourly_idle == pytest.approx(
        1000 * PRICES.s3_standard_gb_month_usd / HOURS_PER_MONTH
    )
    assert not [i for i in sized.items if i.name == "checkpoints"]


def test_log_ingestion_is_left_out_and_said_so(plan_program):
    report = estimate_cost(plan_program(BUCKET_PROGRAM), stack_config())
    assert not [i for i in report.items if "logGroup" in i.type]
    assert any(n.startswith("CloudWatch Logs: 1 log group(s) left out") for n in report.notes)


def test_region_without_recorded_prices_is_flagged_as_an_approximation(plan_program):
    plan = plan_program(BUCKET_PROGRAM)
    config = stack_config(
        region="eu-west-1",
        network={"availability_zones": ["eu-west-1a", "eu-west-1b"]},
    )
    notes = estimate_cost(plan, config).notes
    assert any(n.startswith("Region eu-west-1: priced with us-east-1") for n in notes)
    assert not any(n.startswith("Region") for n in estimate_cost(plan, stack_config()).notes)


def test_every_item_names_its_enclosing_component(plan_program):
    plan = plan_program(
        """
import pulumi
import pulumi_aws as aws

class Storage(pulumi.ComponentResource):
    def __init__(self, name):
        super().__init__("llmcloud:storage:Demo", name, None, None)
        aws.kms.Key("key", opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})

Storage("storage")
"""
    )
    (key,) = estimate_cost(plan, None).items
    assert key.component == "storage"


# ----------------------------------------------------------------------------- the dev stack


def expected_stack_hourly(config) -> tuple[float, float]:
    """Idle and max $/h of a stack computed from the config and the data files alone (not
    from the plan): what each component is specified to create, at list price."""
    per_month = 1 / HOURS_PER_MONTH
    zones = config.network.availability_zones
    fixed = PRICES.eks_cluster_hourly_usd
    nat_count = 1 if config.network.nat_gateways == "single" else len(zones)
    fixed += nat_count * (PRICES.nat_gateway_hourly_usd + PRICES.public_ipv4_hourly_usd)
    if config.network.interface_endpoints:
        fixed += len(INTERFACE_ENDPOINTS) * len(zones) * PRICES.interface_endpoint_hourly_usd_per_az
    fixed += len(PURPOSES) * PRICES.kms_key_month_usd * per_month
    fsx = config.storage.fsx
    if fsx is not None:
        per_gb = PRICES.fsx_lustre_gb_month_usd["PERSISTENT_2"][fsx.throughput_mbps_per_tib]
        fixed += fsx.storage_capacity_gib * per_gb * per_month
    fixed += (
        sum(config.storage.expected_size_gb.values()) * PRICES.s3_standard_gb_month_usd * per_month
    )
    if config.gateway is not None:  # the model gateway's LoadBalancer Service: one NLB
        fixed += PRICES.nlb_hourly_usd
        # and a Secrets Manager secret per team key
        fixed += len(config.gateway.teams) * PRICES.secretsmanager_secret_month_usd * per_month
    gp3 = PRICES.ebs_gb_month_usd["gp3"] * per_month
    system = config.cluster.system_nodes
    system_node = rate(system.instance_types[0]) + system.disk_gb * gp3
    idle, peak = fixed + system.min_size * system_node, fixed + system.max_size * system_node
    for group in config.cluster.gpu_node_groups:
        node, disk = rate(group.resolved_instance_type), group.root_volume_gb * gp3
        kind = group.capacity.type
        if kind == "capacity_block":
            node = 0.0
        if kind == "reservation":
            idle += group.max_size * node + group.min_size * disk
        else:
            idle += group.min_size * (node + disk)
        peak += group.max_size * (node + disk)
    return idle, peak


def test_dev_stack_idle_and_max_cost_match_the_data_files(stack_report):
    report = stack_report("dev")
    idle, peak = expected_stack_hourly(report.config)
    breakdown = "\n".join(
        f"{i.type} {i.name}: {i.hourly_idle:.4f} / {i.hourly_max:.4f}" for i in report.cost.items
    )
    assert report.cost.hourly_idle == pytest.approx(idle, rel=1e-9), breakdown
    assert report.cost.hourly_max == pytest.approx(peak, rel=1e-9), breakdown


def test_plan_json_carries_cost_per_the_contract(stack_report):
    cost = json.loads(json.dumps(stack_report("dev").to_json()))["cost"]
    assert cost["currency"] == "USD"
    assert set(cost["hourly"]) == set(cost["monthly"]) == {"idle", "max"}
    assert cost["monthly"]["idle"] == pytest.approx(cost["hourly"]["idle"] * 730, abs=0.01 * 730)
    assert cost["hourly"]["idle"] <= cost["hourly"]["max"]
    assert cost["items"] and all(
        {"urn", "hourly_idle", "hourly_max", "component", "pricing"} <= set(i)
        for i in cost["items"]
    )
    assert cost["notes"]


def test_markdown_report_shows_the_cost_table_and_notes(stack_report):
    text = render_markdown(stack_report("dev"))
    assert "### Cost estimate" in text and "**total / hour**" in text
    assert "infra/data/prices.json" in text


def test_prod_reserved_capacity_is_labelled_not_guessed(stack_report):
    items = {i.name: i for i in stack_report("prod").cost.items}
    block = next(i for n, i in items.items() if "h200-block" in n and i.type.endswith("NodeGroup"))
    odcr = next(i for n, i in items.items() if "h200-odcr" in n and i.type.endswith("NodeGroup"))
    assert (block.pricing, block.hourly_max) == ("capacity_block", 0.0)
    assert odcr.pricing == "reservation" and odcr.hourly_idle == odcr.hourly_max > 0


# ----------------------------------------------------------------------------- services next to a platform


def test_non_gpu_instance_sizes_are_priced_by_memory_from_motos_instance_data():
    """Every recorded size's memory is moto's (the sizes' source), and the family rate is
    the reference size's list price over its memory: m5.24xlarge = 48 × m5.large."""
    import moto

    data_file = Path(moto.__file__).parent / "ec2" / "resources" / "instance_types.json.gz"
    moto_types = json.loads(gzip.decompress(data_file.read_bytes()))
    for itype, gib in PRICES.ec2_memory_gib.items():
        assert moto_types[itype]["MemoryInfo"]["SizeInMiB"] / 1024 == pytest.approx(gib), itype
    raw = json.loads(PRICES_PATH.read_text())
    for family, ref in raw["ec2_reference_size"].items():
        assert PRICES.ec2_hourly_usd(ref["type"]) == pytest.approx(ref["hourly_usd"]), family
    assert PRICES.ec2_hourly_usd("m5.24xlarge") == pytest.approx(
        48 * PRICES.ec2_hourly_usd("m5.large")
    )
    assert PRICES.ec2_hourly_usd("x2iedn.xlarge") is None


SERVICES = """
import pulumi_aws as aws
aws.ec2.Instance("web", ami="ami-1", instance_type="t3.micro",
                 root_block_device={"volume_size": 30, "volume_type": "gp3"})
aws.lb.LoadBalancer("alb", subnets=["subnet-1", "subnet-2"])
aws.lb.LoadBalancer("nlb", load_balancer_type="network", subnets=["subnet-1"])
aws.rds.Instance("db", engine="postgres", instance_class="db.t3.medium", allocated_storage=100,
                 multi_az=True, username="app", password="not-a-real-one")
for i in range(3):
    aws.rds.Instance(f"legacy{i}", engine="oracle-ee", instance_class="db.r5.24xlarge",
                     allocated_storage=20)
aws.ecs.Service("api", cluster="c", task_definition="t", launch_type="FARGATE")
aws.iam.Role("role", assume_role_policy="{}")
"""


def test_instances_load_balancers_and_databases_are_priced_and_the_rest_listed(plan_program):
    report = estimate_cost(plan_program(SERVICES), None)
    web = item(report, "web")
    assert web.hourly_max == pytest.approx(PRICES.ec2_hourly_usd("t3.micro") + gp3_hourly(30))
    assert item(report, "alb").hourly_max == pytest.approx(PRICES.alb_hourly_usd)
    assert item(report, "nlb").hourly_max == pytest.approx(PRICES.nlb_hourly_usd)
    # Multi-AZ bills the standby instance and its storage too; gp2 is the API's default.
    rds_rate = PRICES.rds_instance_hourly_usd["postgres"]["db.t3.medium"]
    storage = 100 * PRICES.rds_storage_gb_month_usd["gp2"] / HOURS_PER_MONTH
    assert item(report, "db").hourly_max == pytest.approx(2 * (rds_rate + storage))
    unpriced = {u["type"]: u["count"] for u in report.unpriced}
    assert unpriced == {"aws:rds/instance:Instance": 3, "aws:ecs/service:Service": 1}
    assert any(
        n.startswith("not priced: 3 × aws:rds/instance:Instance, 1 × aws:ecs/service:Service")
        for n in report.notes
    )
    assert report.to_json()["unpriced"][0]["count"] == 3
