"""GPU and system node groups: EFA interfaces derived from the catalog (checked against the
EC2 instance data moto ships), placement groups, capacity reservations and Capacity Blocks,
IMDSv2, KMS-encrypted volumes, NVMe RAID0, labels and taints of the cross-team contract."""

from __future__ import annotations

import base64
import copy
import dataclasses
import email
import gzip
import json
import tomllib
from pathlib import Path

import moto
import pytest
import yaml

from infra.catalog import load_catalog
from infra.cluster.nodegroups import (
    EfaInterface,
    efa_interfaces,
    max_pods,
    node_user_data,
)
from infra.config import ConfigError, parse_stack_config
from infra.plan.engine import Plan, Resource

ROOT = Path(__file__).resolve().parent.parent
LT = "aws:ec2/launchTemplate:LaunchTemplate"
NG = "aws:eks/nodeGroup:NodeGroup"
PG = "aws:ec2/placementGroup:PlacementGroup"
SG = "aws:ec2/securityGroup:SecurityGroup"

# prod's GPU groups (stacks/Pulumi.prod.yaml) and what each must be
PROD_EFA_GROUPS = {
    "h100": "p5.48xlarge",
    "a100": "p4d.24xlarge",
    "h200-block": "p5e.48xlarge",
    "h200-odcr": "p5en.48xlarge",
}


@pytest.fixture(scope="module")
def aws_instance_types() -> dict:
    path = Path(moto.__file__).parent / "ec2" / "resources" / "instance_types.json.gz"
    with gzip.open(path) as fh:
        return json.loads(fh.read())


def named(plan: Plan, token: str, name: str) -> Resource:
    found = [r for r in plan.by_type(token) if r.name == name]
    assert len(found) == 1, f"{token} {name}: {[r.name for r in plan.by_type(token)]}"
    return found[0]


def launch_template(plan: Plan, group: str) -> Resource:
    return named(plan, LT, f"gpu-{group}-launch-template")


def node_group(plan: Plan, group: str) -> Resource:
    return named(plan, NG, f"gpu-{group}-node-group")


def subnet_zones(plan: Plan) -> dict[str, str]:
    return {r.id: r.inputs["availabilityZone"] for r in plan.by_type("aws:ec2/subnet:Subnet")}


def user_data_node_config(lt: Resource) -> dict:
    message = email.message_from_bytes(base64.b64decode(lt.inputs["userData"]))
    assert message.is_multipart()
    parts = [p for p in message.get_payload() if p.get_content_type() == "application/node.eks.aws"]
    assert len(parts) == 1
    return yaml.safe_load(parts[0].get_payload())


# ----------------------------------------------------------------------------- EFA


@pytest.mark.parametrize(("group", "itype"), sorted(PROD_EFA_GROUPS.items()))
def test_prod_efa_interfaces_one_per_network_card_as_the_instance_data_says(
    prod_plan, aws_instance_types, group, itype
):
    nics = launch_template(prod_plan, group).inputs["networkInterfaces"]
    network = aws_instance_types[itype]["NetworkInfo"]
    expected = network["EfaInfo"]["MaximumEfaInterfaces"]
    assert expected == load_catalog().instance(itype).efa_interfaces  # catalog == AWS data
    assert len(nics) == expected
    assert {"efa", "efa-only"} >= {n["interfaceType"] for n in nics}
    cards = [n["networkCardIndex"] for n in nics]
    assert sorted(cards) == list(range(expected))  # distinct cards, none skipped
    assert max(cards) < network["MaximumNetworkCards"]
    per_card = {c["NetworkCardIndex"]: c for c in network["NetworkCards"]}
    for nic in nics:
        card = per_card[nic["networkCardIndex"]]
        assert nic["interfaceType"] in card["InterfaceTypes"]
        assert nic["deviceIndex"] < card["MaximumNetworkInterfaces"]


def test_prod_efa_counts_are_32_for_h100_and_p5e_16_for_p5en_4_for_a100(prod_plan):
    counts = {
        g: len(launch_template(prod_plan, g).inputs["networkInterfaces"]) for g in PROD_EFA_GROUPS
    }
    assert counts == {"h100": 32, "h200-block": 32, "h200-odcr": 16, "a100": 4}


def test_primary_interface_carries_ip_traffic_and_the_rest_are_efa_only(prod_plan):
    cluster_sg = prod_plan.outputs["node_security_group_id"]
    for group in PROD_EFA_GROUPS:
        nics = launch_template(prod_plan, group).inputs["networkInterfaces"]
        efa_sg = named(prod_plan, SG, f"gpu-{group}-efa-sg").id
        primary = [n for n in nics if n["networkCardIndex"] == 0 and n["deviceIndex"] == 0]
        assert len(primary) == 1
        assert primary[0]["interfaceType"] == "efa"
        assert set(primary[0]["securityGroups"]) == {cluster_sg, efa_sg}
        for nic in nics:
            if nic is not primary[0]:
                assert (nic["interfaceType"], nic["deviceIndex"]) == ("efa-only", 1)
                assert nic["securityGroups"] == [efa_sg]
            assert "associatePublicIpAddress" not in nic
            assert "subnetId" not in nic  # the node group places interfaces


def test_efa_security_group_allows_all_traffic_between_its_members_only(prod_plan):
    for group in PROD_EFA_GROUPS:
        sg = named(prod_plan, SG, f"gpu-{group}-efa-sg")
        for token, suffix in (
            ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "efa-in-from-self"),
            ("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule", "efa-out-to-self"),
        ):
            rule = named(prod_plan, token, f"gpu-{group}-{suffix}").inputs
            assert rule["securityGroupId"] == sg.id
            assert rule["referencedSecurityGroupId"] == sg.id
            assert rule["ipProtocol"] == "-1"
            assert "cidrIpv4" not in rule


def test_efa_layout_is_derived_from_the_catalog_not_literals():
    catalog = load_catalog()
    for name, instance in catalog.instance_types.items():
        if not instance.efa_supported:
            with pytest.raises(ValueError, match="has no EFA"):
                efa_interfaces(instance)
            continue
        layout = efa_interfaces(instance)
        assert len(layout) == instance.efa_interfaces, name
        assert layout[0] == EfaInterface(0, 0, "efa")
        assert [n.network_card_index for n in layout] == list(range(instance.efa_interfaces))


def test_non_efa_groups_use_the_cluster_security_group_without_interfaces(prod_plan):
    lt = launch_template(prod_plan, "l40s").inputs
    assert "networkInterfaces" not in lt
    assert lt["vpcSecurityGroupIds"] == [prod_plan.outputs["node_security_group_id"]]
    assert not [r for r in prod_plan.by_type(SG) if r.name == "gpu-l40s-efa-sg"]


# ----------------------------------------------------------------------------- placement, capacity


def test_placement_group_only_for_efa_groups_without_reservations(prod_plan):
    groups = {r.name: r for r in prod_plan.by_type(PG)}
    assert set(groups) == {"gpu-h100-placement-group", "gpu-a100-placement-group"}
    for name in ("h100", "a100"):
        pg = groups[f"gpu-{name}-placement-group"]
        assert pg.inputs["strategy"] == "cluster"
        assert (
            launch_template(prod_plan, name).inputs["placement"]["groupName"] == pg.outputs["name"]
        )
    for reserved in ("h200-block", "h200-odcr", "l40s"):
        assert "placement" not in launch_template(prod_plan, reserved).inputs


def test_capacity_block_group_targets_the_block_in_one_subnet_of_its_zone(prod_plan):
    ng = node_group(prod_plan, "h200-block").inputs
    lt = launch_template(prod_plan, "h200-block").inputs
    assert ng["capacityType"] == "CAPACITY_BLOCK"
    assert lt["instanceMarketOptions"] == {"marketType": "capacity-block"}
    target = lt["capacityReservationSpecification"]["capacityReservationTarget"]
    assert target == {"capacityReservationId": "cr-0a1b2c3d4e5f60718"}
    assert len(ng["subnetIds"]) == 1
    assert subnet_zones(prod_plan)[ng["subnetIds"][0]] == "us-east-2b"
    assert ng["scalingConfig"]["minSize"] == 0
    assert ng["updateConfig"]["updateStrategy"] == "MINIMAL"  # no room to surge


def test_odcr_group_is_on_demand_targeting_its_reservation_in_its_zone(prod_plan):
    ng = node_group(prod_plan, "h200-odcr").inputs
    lt = launch_template(prod_plan, "h200-odcr").inputs
    assert ng["capacityType"] == "ON_DEMAND"
    assert "instanceMarketOptions" not in lt
    target = lt["capacityReservationSpecification"]["capacityReservationTarget"]
    assert target == {"capacityReservationId": "cr-0f1e2d3c4b5a69788"}
    assert [subnet_zones(prod_plan)[s] for s in ng["subnetIds"]] == ["us-east-2c"]


def test_unreserved_groups_have_no_reservation_target(prod_plan, dev_plan):
    for plan, group in ((prod_plan, "h100"), (prod_plan, "l40s"), (dev_plan, "l4")):
        lt = launch_template(plan, group).inputs
        assert "capacityReservationSpecification" not in lt
        assert "instanceMarketOptions" not in lt


def test_dev_spot_serving_group_spans_the_configured_zones(dev_plan):
    ng = node_group(dev_plan, "l4").inputs
    assert ng["capacityType"] == "SPOT"
    assert sorted(subnet_zones(dev_plan)[s] for s in ng["subnetIds"]) == [
        "us-east-1a",
        "us-east-1b",
    ]


def test_efa_training_group_runs_in_one_zone(prod_plan):
    ng = node_group(prod_plan, "h100").inputs
    assert [subnet_zones(prod_plan)[s] for s in ng["subnetIds"]] == ["us-east-2a"]


# ----------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_launch_template_requires_imdsv2_with_hop_limit_1(stack_report, stack):
    plan = stack_report(stack).plan
    templates = plan.by_type(LT)
    assert len(templates) == len(plan.by_type(NG))  # every node group has its own template
    for lt in templates:
        meta = lt.inputs["metadataOptions"]
        assert meta["httpTokens"] == "required", lt.name
        assert meta["httpEndpoint"] == "enabled"
        assert meta["httpPutResponseHopLimit"] == 1, lt.name


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_node_volume_is_gp3_encrypted_with_our_ebs_key(stack_report, stack):
    plan = stack_report(stack).plan
    ebs_key = plan.outputs["kms_key_arns"]["ebs"]
    for lt in plan.by_type(LT):
        volumes = lt.inputs["blockDeviceMappings"]
        assert volumes, lt.name
        for volume in volumes:
            ebs = volume["ebs"]
            assert ebs["encrypted"] == "true", lt.name
            assert ebs["kmsKeyId"] == ebs_key, lt.name
            assert ebs["volumeType"] == "gp3"
            assert ebs["deleteOnTermination"] == "true"


def test_root_volume_size_comes_from_config(prod_plan):
    lt = launch_template(prod_plan, "h100").inputs
    assert [(v["deviceName"], v["ebs"]["volumeSize"]) for v in lt["blockDeviceMappings"]] == [
        ("/dev/xvda", 200)
    ]
    # containerd lives on the NVMe RAID0: the EBS root needs no provisioned performance
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert (ebs["iops"], ebs["throughput"]) == (3000, 125)


def test_nvme_instance_store_is_striped_raid0_and_pods_are_capped(prod_plan):
    for group in ("h100", "a100", "l40s", "h200-block"):
        spec = user_data_node_config(launch_template(prod_plan, group))["spec"]
        assert spec["instance"]["localStorage"]["strategy"] == "RAID0"
        assert spec["kubelet"]["config"]["maxPods"] == 250  # 192 / 48 vCPUs: the large cap


def test_instance_type_is_named_in_exactly_one_place(prod_plan, dev_plan):
    """EKS takes the type from the node group or the launch template, never both; a Capacity
    Block's launch template must name it (EKS user guide, Capacity Blocks with managed node
    groups), every other group carries it on the node group."""
    for plan in (prod_plan, dev_plan):
        templates = {lt.name.removesuffix("-launch-template"): lt for lt in plan.by_type(LT)}
        for ng in plan.by_type(NG):
            lt = templates[ng.name.removesuffix("-node-group")].inputs
            assert "imageId" not in lt  # EKS picks the AMI of ami_type
            assert "iamInstanceProfile" not in lt
            on_group = ng.inputs.get("instanceTypes") or []
            block = ng.inputs["capacityType"] == "CAPACITY_BLOCK"
            assert (lt.get("instanceType") is not None) == block, ng.name
            assert bool(on_group) != block, ng.name
    block_lt = launch_template(prod_plan, "h200-block").inputs
    assert block_lt["instanceType"] == "p5e.48xlarge"


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gpu_node_groups_carry_the_contract_labels_taint_and_tags(stack_report, stack):
    plan = stack_report(stack).plan
    config = stack_report(stack).config
    for group in config.cluster.gpu_node_groups:
        ng = node_group(plan, group.name).inputs
        labels = ng["labels"]
        assert labels["llmcloud.io/node-group"] == group.name
        assert labels["llmcloud.io/gpu-kind"] == group.gpu
        assert labels["llmcloud.io/instance-type"] == group.resolved_instance_type
        assert labels["nvidia.com/gpu.present"] == "true"
        assert ("vpc.amazonaws.com/efa.present" in labels) == group.efa_enabled
        assert ng["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        assert ng["tags"] == {
            "llmcloud:capacity": group.capacity.type,
            "llmcloud:node-group": group.name,
        }
        named_type = ng.get("instanceTypes") or [
            launch_template(plan, group.name).inputs["instanceType"]
        ]
        assert named_type == [group.resolved_instance_type]
        assert ng["amiType"] == "AL2023_x86_64_NVIDIA"
        assert ng["nodeRepairConfig"] == {"enabled": True}
        assert ng["scalingConfig"] == {
            "minSize": group.min_size,
            "desiredSize": group.desired,
            "maxSize": group.max_size,
        }
        lt = launch_template(plan, group.name).inputs
        instance_tags = lt["tagSpecifications"][0]["tags"]
        assert instance_tags["llmcloud:node-group"] == group.name
        assert instance_tags["team"] == config.tags["team"]  # cost allocation reaches instances


def test_training_groups_may_scale_to_zero(prod_plan):
    assert node_group(prod_plan, "h100").inputs["scalingConfig"]["minSize"] == 0


def test_system_node_group_is_on_demand_across_all_zones(prod_plan):
    ng = named(prod_plan, NG, "cluster-system-node-group").inputs
    assert ng["capacityType"] == "ON_DEMAND"
    assert ng["amiType"] == "AL2023_x86_64_STANDARD"
    assert ng["labels"] == {"llmcloud.io/node-group": "system"}
    assert "taints" not in ng
    zones = subnet_zones(prod_plan)
    assert sorted(zones[s] for s in ng["subnetIds"]) == ["us-east-2a", "us-east-2b", "us-east-2c"]
    assert ng["scalingConfig"] == {"minSize": 3, "desiredSize": 3, "maxSize": 6}


def test_gpu_node_groups_wait_for_the_cni_before_joining(prod_plan):
    cni = named(prod_plan, "aws:eks/addon:Addon", "cluster-vpc-cni").urn
    for ng in prod_plan.by_type(NG):
        assert cni in ng.dependencies, ng.name


def test_plan_report_counts_gpus_of_the_node_groups(stack_report):
    from infra.plan.report import gpu_totals

    totals = gpu_totals(stack_report("prod").plan)
    # h100 0-8 x8, p5e block 0-4 x8, p5en ODCR 2-2 x8 (H200); a100 0-4 x8; l40s 2-6 x4
    assert totals["H100"] == {"min": 0, "max": 64}
    assert totals["H200"] == {"min": 16, "max": 48}
    assert totals["A100"] == {"min": 0, "max": 32}
    assert totals["L40S"] == {"min": 8, "max": 24}


# ----------------------------------------------------------------------------- one group alone

GROUP_PROGRAM = """
import pulumi
from infra.config import GpuNodeGroupConfig, config_from_pulumi
from infra.cluster.nodegroups import GpuNodeGroup, GpuNodeGroupArgs, NodeGroupCluster
from infra.context import make_context

config = pulumi.Config("test")
cluster = NodeGroupCluster(
    cluster_name="demo",
    kubernetes_version="1.33",
    node_role_arn="arn:aws:iam::123456789012:role/node",
    node_security_group_id="sg-cluster",
    ebs_key_arn="arn:aws:kms:us-east-1:123456789012:key/ebs",
    vpc_id="vpc-1",
    subnet_by_zone={"us-east-1a": "subnet-a", "us-east-1b": "subnet-b"},
    autoscaler_cluster=config.get("autoscaler"),
)
ctx = make_context(config_from_pulumi())
group = GpuNodeGroupConfig.model_validate(config.require_object("group"))
GpuNodeGroup("g", GpuNodeGroupArgs(cluster, group, zones=config.require_object("zones")), ctx)
"""


def plan_group(plan_program, group: dict, zones: list[str], autoscaler: str | None = None) -> Plan:
    config = {
        "test:group": group,
        "test:zones": zones,
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
    }
    if autoscaler is not None:
        config["test:autoscaler"] = autoscaler
    return plan_program(GROUP_PROGRAM, config=config)


def test_bottlerocket_group_gets_os_and_data_volumes_and_toml_user_data(plan_program):
    plan = plan_group(
        plan_program,
        {"name": "h100", "gpu": "H100", "ami": "bottlerocket", "root_volume_gb": 400},
        ["us-east-1a"],
    )
    ng = named(plan, NG, "g-node-group").inputs
    assert ng["amiType"] == "BOTTLEROCKET_x86_64_NVIDIA"
    assert ng["labels"]["llmcloud.io/ami"] == "bottlerocket"
    lt = named(plan, LT, "g-launch-template").inputs
    volumes = {v["deviceName"]: v["ebs"] for v in lt["blockDeviceMappings"]}
    assert volumes["/dev/xvdb"]["volumeSize"] == 400
    assert all(
        v["encrypted"] == "true" and v["kmsKeyId"].endswith(":key/ebs") for v in volumes.values()
    )
    settings = tomllib.loads(base64.b64decode(lt["userData"]).decode())["settings"]
    assert settings["kubernetes"]["max-pods"] == 250
    commands = settings["bootstrap-commands"]["k8s-ephemeral-storage"]["commands"]
    assert commands[0] == ["apiclient", "ephemeral-storage", "init"]


def test_pods_need_imds_raises_the_hop_limit_to_2(plan_program):
    plan = plan_group(
        plan_program, {"name": "l4", "gpu": "L4", "pods_need_imds": True}, ["us-east-1a"]
    )
    assert named(plan, LT, "g-launch-template").inputs["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 2,
        "instanceMetadataTags": "disabled",
    }


def test_efa_on_a_serving_type_gets_its_catalog_count_and_a_placement_group(plan_program):
    plan = plan_group(
        plan_program,
        {"name": "l40s", "gpu": "L40S", "instance_type": "g6e.48xlarge", "efa": True},
        ["us-east-1a"],
    )
    nics = named(plan, LT, "g-launch-template").inputs["networkInterfaces"]
    assert len(nics) == load_catalog().instance("g6e.48xlarge").efa_interfaces == 4
    assert plan.by_type(PG)


def test_efa_off_on_a_training_kind_drops_interfaces_and_placement(plan_program):
    plan = plan_group(plan_program, {"name": "h100", "gpu": "H100", "efa": False}, ["us-east-1a"])
    lt = named(plan, LT, "g-launch-template").inputs
    assert "networkInterfaces" not in lt and "placement" not in lt
    assert not plan.by_type(PG) and not plan.by_type(SG)
    assert "vpc.amazonaws.com/efa.present" not in named(plan, NG, "g-node-group").inputs["labels"]


def test_instance_without_instance_store_gets_no_raid(plan_program):
    # user data is a pure function of the catalog facts
    no_disks = load_catalog().instance("m7i.xlarge")
    assert not no_disks.has_instance_store
    text = base64.b64decode(node_user_data("al2023", pods=max_pods(no_disks), local_storage=False))
    assert b"localStorage" not in text and b"maxPods: 110" in text


def test_max_pods_follows_prefix_delegation_and_the_eks_caps():
    catalog = load_catalog()
    assert max_pods(catalog.instance("g6.xlarge")) == 110  # 4 vCPUs: small cap
    assert max_pods(catalog.instance("p5.48xlarge")) == 250


# ----------------------------------------------------------------------------- config errors


def prod_raw() -> dict:
    return yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())["config"]


def config_error(groups_mutation) -> str:
    raw = copy.deepcopy(prod_raw())
    groups = raw["llmcloud:cluster"]["gpu_node_groups"]
    groups_mutation(groups)
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, project="llmcloud", stack="prod", source="stacks/Pulumi.prod.yaml")
    return str(info.value)


def group_named(groups: list[dict], name: str) -> dict:
    return next(g for g in groups if g["name"] == name)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda gs: group_named(gs, "l40s").update(instance_type="g6e.xlarge", efa=True),
            "llmcloud:cluster.gpu_node_groups[4].efa = true: g6e.xlarge has no EFA",
        ),
        (
            lambda gs: group_named(gs, "h200-block")["capacity"].update(type="spot"),
            "llmcloud:cluster.gpu_node_groups[1].capacity.reservation_id = 'cr-0a1b2c3d4e5f60718': "
            "spot instances cannot run in a capacity reservation or Capacity Block",
        ),
        (
            lambda gs: group_named(gs, "h100").update(min_size=4, max_size=2),
            "llmcloud:cluster.gpu_node_groups[0].max_size = 2: must be ≥ min_size (4)",
        ),
        (
            lambda gs: group_named(gs, "h100").update(capacity={"type": "spot"}),
            "spot is for serving kinds only",
        ),
        (
            lambda gs: group_named(gs, "h200-block").update(min_size=1),
            "llmcloud:cluster.gpu_node_groups[1].min_size = 1: must be 0 for a capacity_block group",
        ),
        (
            lambda gs: group_named(gs, "l40s").update(
                capacity={
                    "type": "capacity_block",
                    "reservation_id": "cr-0a1b2c3d4e5f60718",
                    "availability_zone": "us-east-2a",
                },
                min_size=0,
            ),
            "Capacity Blocks sell training instances",
        ),
        (
            lambda gs: group_named(gs, "h100").update(
                capacity={"type": "on_demand", "availability_zone": "us-east-2a"}
            ),
            "capacity.availability_zone = 'us-east-2a': only for reservation / capacity_block",
        ),
        (
            lambda gs: group_named(gs, "h100").update(labels={"nvidia.com/gpu.present": "false"}),
            "gpu_node_groups[0].labels.nvidia.com/gpu.present = 'false': label keys",
        ),
        (
            lambda gs: group_named(gs, "h100").update(labels={"team": "not ok!"}),
            "gpu_node_groups[0].labels.team = 'not ok!': label values",
        ),
        (
            lambda gs: group_named(gs, "h200-odcr")["capacity"].update(
                availability_zone="us-east-2d"
            ),
            "capacity.availability_zone = 'us-east-2d': must be one of network.availability_zones",
        ),
    ],
)
def test_bad_gpu_group_config_names_key_value_and_what_is_allowed(mutate, expected):
    message = config_error(mutate)
    assert message.startswith("stacks/Pulumi.prod.yaml: invalid config")
    assert expected in message


def test_gpu_kind_not_offered_in_the_group_zone_is_rejected():
    # EC2 offers p5en.48xlarge in us-east-1a and us-east-1c only (catalog, from moto's data)
    region = load_catalog().region("us-east-1")
    assert not region.offers("p5en.48xlarge", "us-east-1b")
    raw = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())["config"]
    raw["llmcloud:cluster"]["gpu_node_groups"][0].update(
        gpu="H200", instance_type="p5en.48xlarge", availability_zones=["us-east-1b"]
    )
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, project="llmcloud", stack="dev", source="stacks/Pulumi.dev.yaml")
    assert str(info.value) == (
        "stacks/Pulumi.dev.yaml: invalid config: "
        "llmcloud:cluster.gpu_node_groups[0].availability_zones = 'us-east-1b': "
        "p5en.48xlarge (H200) is not offered in us-east-1b; in this VPC's zones it is offered "
        "in: us-east-1a"
    )


# ----------------------------------------------------------------------------- how nodes arrive

ASG_TAG = "aws:autoscaling/tag:Tag"
SCHEDULE = "aws:autoscaling/schedule:Schedule"
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


def asg_tags(plan: Plan, component: str) -> dict[str, dict]:
    """tag key -> inputs of the aws.autoscaling.Tag resources of one node group component."""
    ng = named(plan, NG, f"{component}-node-group")
    return {
        t.inputs["tag"]["key"]: t.inputs for t in plan.by_type(ASG_TAG) if t.parent == ng.parent
    }


def test_autoscaled_groups_tag_their_asg_with_the_node_template(prod_plan):
    """Scale from zero: the autoscaler reads labels, taints and resources off the ASG
    (kubernetes/autoscaler cloudprovider/aws/README.md); EKS does not copy node group tags
    there, so each tag is an aws.autoscaling.Tag on the group's one ASG."""
    ng = named(prod_plan, NG, "gpu-h100-node-group")
    tags = asg_tags(prod_plan, "gpu-h100")
    asg = ng.outputs["resources"][0]["autoscalingGroups"][0]["name"]
    assert {t["autoscalingGroupName"] for t in tags.values()} == {asg}
    assert all(t["tag"]["propagateAtLaunch"] is False for t in tags.values())
    values = {k: t["tag"]["value"] for k, t in tags.items()}
    assert values["k8s.io/cluster-autoscaler/enabled"] == "true"
    assert values["k8s.io/cluster-autoscaler/llm-prod-eks"] == "owned"
    for label, value in ng.inputs["labels"].items():
        assert values[f"{TEMPLATE}/label/{label}"] == value
    assert values[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert values[f"{TEMPLATE}/resources/nvidia.com/gpu"] == "8"
    assert values[f"{TEMPLATE}/resources/vpc.amazonaws.com/efa"] == "32"
    # 8 x 3800 GB of NVMe in RAID0, in GiB
    assert values[f"{TEMPLATE}/resources/ephemeral-storage"] == f"{8 * 3800 * 10**9 // 2**30}Gi"


def test_a_group_whose_size_cannot_move_is_not_offered_to_the_autoscaler(prod_plan):
    assert asg_tags(prod_plan, "gpu-h200-odcr") == {}  # min = max = 2
    assert "k8s.io/cluster-autoscaler/enabled" in asg_tags(prod_plan, "cluster-system")


def test_capacity_block_window_scales_the_asg_in_and_out(prod_plan):
    schedules = {s.name: s.inputs for s in prod_plan.by_type(SCHEDULE)}
    asg = named(prod_plan, NG, "gpu-h200-block-node-group").outputs["resources"][0][
        "autoscalingGroups"
    ][0]["name"]
    start, end = schedules["gpu-h200-block-block-start"], schedules["gpu-h200-block-block-end"]
    assert start["autoscalingGroupName"] == end["autoscalingGroupName"] == asg
    assert (start["startTime"], start["minSize"], start["desiredCapacity"]) == (
        "2026-12-14T11:30:00Z",
        4,
        4,
    )
    # an hour before the block ends (EKS: more than 30 minutes, to drain)
    assert (end["startTime"], end["minSize"], end["desiredCapacity"]) == (
        "2026-12-28T10:30:00Z",
        0,
        0,
    )


def test_autoscaler_owns_the_size_only_where_it_may_move():
    from infra.cluster.nodegroups import NodeGroupCluster, autoscaled

    cluster = NodeGroupCluster(
        cluster_name="c",
        kubernetes_version="1.35",
        node_role_arn="r",
        node_security_group_id="sg",
        ebs_key_arn="k",
        vpc_id="v",
        subnet_by_zone={},
        autoscaler_cluster="c",
    )
    assert autoscaled(cluster, 0, 8)
    assert not autoscaled(cluster, 2, 2)
    assert not autoscaled(dataclasses.replace(cluster, autoscaler_cluster=None), 0, 8)
