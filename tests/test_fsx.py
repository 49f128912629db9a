"""FSx for Lustre: config FSx would reject fails early with a clear message; the component
declares an encrypted PERSISTENT_2 file system in the training zone, only Lustre's ports,
S3 links for datasets (import) and checkpoints (export), and a PV/PVC that validate."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config import ConfigError, parse_stack_config
from infra.plan.engine import Plan, Resource, evaluate
from infra.plan.k8s import manifests, validate_manifests
from infra.storage.lustre import training_zone
from tests.conftest import copy_project_with, write_project

ROOT = Path(__file__).resolve().parent.parent
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/data"
NODE_SG = "sg-0nodes"


def raw_config(stack: str = "dev") -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def parse(raw: dict, stack: str = "dev"):
    return parse_stack_config(raw, project="llmcloud", stack=stack, source=f"Pulumi.{stack}.yaml")


def with_fsx(stack: str = "dev", **fsx) -> dict:
    raw = copy.deepcopy(raw_config(stack))
    raw["llmcloud:storage"]["fsx"].update(fsx)
    return raw


def config_error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw)
    return str(info.value)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("capacity", [1000, 3600, 4000, 0, -2400])
def test_capacity_that_is_not_a_persistent_2_step_is_rejected(capacity):
    message = config_error(with_fsx(storage_capacity_gib=capacity))
    assert f"llmcloud:storage.fsx.storage_capacity_gib = {capacity}: " in message
    assert "1200, 2400 or a multiple of 2400 GiB" in message


@pytest.mark.parametrize("capacity", [1200, 2400, 4800, 9600])
def test_every_persistent_2_capacity_step_is_accepted(capacity):
    assert (
        parse(with_fsx(storage_capacity_gib=capacity)).storage.fsx.storage_capacity_gib == capacity
    )


@pytest.mark.parametrize("tier", [50, 200, 2000])
def test_unknown_throughput_tier_is_rejected_naming_the_tiers(tier):
    message = config_error(with_fsx(throughput_mbps_per_tib=tier))
    assert f"llmcloud:storage.fsx.throughput_mbps_per_tib = {tier}: " in message
    assert "125, 250, 500, 1000" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("datasets_prefix", "s3://someone-elses-bucket/datasets/", "not a URL"),
        ("datasets_prefix", "/datasets/", "no leading '/'"),
        ("datasets_prefix", "../other-team/", "outside the prefix"),
        ("datasets_prefix", "tokens/../../", "outside the prefix"),
        ("datasets_prefix", "a//b/", "outside the prefix"),
        ("datasets_prefix", "", "give a key prefix inside the datasets bucket"),
        ("checkpoints_prefix", "checkpoints", "ends with '/'"),
        ("checkpoints_prefix", "s3://llm-dev-checkpoints-123456789012/ckpt/", "not a URL"),
        ("checkpoints_prefix", "run\n1/", "control characters"),
        ("checkpoints_prefix", "x" * 1024 + "/", "at most 1024 bytes"),
    ],
)
def test_dra_path_outside_the_bucket_or_not_a_prefix_is_rejected(key, value, expected):
    message = config_error(with_fsx(**{key: value}))
    assert f"llmcloud:storage.fsx.{key} = " in message
    # the value is quoted; a long one is cut short with an ellipsis
    shown = repr(value)
    assert shown in message or (shown[:100] in message and "…" in message)
    assert expected in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("daily_backup_start_utc", "3am"),
        ("daily_backup_start_utc", "24:00"),
        ("weekly_maintenance_start_utc", "8:05:00"),
        ("weekly_maintenance_start_utc", "05:00"),
    ],
)
def test_backup_and_maintenance_windows_must_be_in_fsx_format(key, value):
    assert f"llmcloud:storage.fsx.{key} = {value!r}: a UTC" in config_error(
        with_fsx(**{key: value})
    )


def test_cli_plan_exits_2_on_a_broken_fsx_config_without_a_traceback(tmp_path):
    def edit(config: dict[str, Any]) -> None:
        config["llmcloud:storage"]["fsx"]["datasets_prefix"] = "s3://elsewhere/tokens/"

    project = copy_project_with(tmp_path / "repo", "dev", edit)
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "dev"])
    assert result.exit_code == 2
    assert "llmcloud:storage.fsx.datasets_prefix = 's3://elsewhere/tokens/'" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- zone


def test_the_zone_is_the_configured_one_first():
    assert training_zone(parse(raw_config("prod"), "prod")) == "us-east-2a"


def test_without_a_zone_the_file_system_follows_the_first_efa_group():
    raw = copy.deepcopy(raw_config("prod"))
    del raw["llmcloud:storage"]["fsx"]["availability_zone"]
    raw["llmcloud:cluster"]["gpu_node_groups"][0]["availability_zones"] = ["us-east-2b"]
    config = parse(raw, "prod")
    assert config.cluster.gpu_node_groups[0].efa_enabled
    assert training_zone(config) == "us-east-2b"


def test_without_efa_groups_the_file_system_goes_to_the_first_vpc_zone():
    raw = copy.deepcopy(raw_config("dev"))
    del raw["llmcloud:storage"]["fsx"]["availability_zone"]
    raw["llmcloud:cluster"]["gpu_node_groups"] = [
        g for g in raw["llmcloud:cluster"]["gpu_node_groups"] if g["name"] == "l4"
    ]
    raw["llmcloud:training"] = []
    raw["llmcloud:serving"][0]["node_group"] = "l4"
    assert training_zone(parse(raw)) == "us-east-1a"


# --------------------------------------------------------------------------- component

PROGRAM = """
import pulumi
import pulumi_kubernetes as kubernetes
from infra.config import config_from_pulumi
from infra.context import make_context
from infra.storage.lake import BucketRef
from infra.storage.lustre import Lustre, LustreArgs

config = config_from_pulumi()
ctx = make_context(config)
k8s = kubernetes.Provider("k8s", kubeconfig="{}")
namespace = kubernetes.core.v1.Namespace(
    "training-ns", metadata={"name": "ml-train"}, opts=pulumi.ResourceOptions(provider=k8s)
)
lustre = Lustre(
    "lustre",
    LustreArgs(
        config=config.storage.fsx,
        vpc_id="vpc-0123",
        subnet_id="subnet-0train",
        client_security_group_id="sg-0nodes",
        kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/data",
        datasets=BucketRef(
            "llm-dev-datasets-123456789012", "arn:aws:s3:::llm-dev-datasets-123456789012"
        ),
        checkpoints=BucketRef(
            "llm-dev-checkpoints-123456789012", "arn:aws:s3:::llm-dev-checkpoints-123456789012"
        ),
        namespace="ml-train",
        depends_on=[namespace],
    ),
    ctx,
    pulumi.ResourceOptions(providers={"aws": ctx.aws_provider, "kubernetes": k8s}),
)
pulumi.export("pvc_name", lustre.pvc_name)
pulumi.export("file_system_id", lustre.file_system.id)
"""


@pytest.fixture(scope="module")
def lustre_plan(tmp_path_factory) -> Callable[[str], Plan]:
    """The component planned alone, once per stack config (dev: no backups; prod: backups)."""
    cache: dict[str, Plan] = {}

    def get(stack: str) -> Plan:
        if stack not in cache:
            raw = copy.deepcopy(raw_config(stack))
            raw["aws:region"] = "us-east-1"
            raw["llmcloud:network"] = {"availability_zones": ["us-east-1a", "us-east-1b"]}
            raw["llmcloud:environment"] = "dev"
            raw["llmcloud:storage"]["fsx"]["availability_zone"] = "us-east-1a"
            for key in ("llmcloud:cluster", "llmcloud:training", "llmcloud:serving"):
                raw.pop(key, None)
            directory = tmp_path_factory.mktemp(stack)
            cache[stack] = evaluate(write_project(directory, PROGRAM, raw), "dev")
        return cache[stack]

    return get


def one(plan: Plan, token: str, name: str | None = None) -> Resource:
    (found,) = [r for r in plan.by_type(token) if name is None or r.name == name]
    return found


FS = "aws:fsx/lustreFileSystem:LustreFileSystem"
DRA = "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation"


def test_file_system_is_persistent_2_encrypted_with_the_data_key_and_lz4(lustre_plan):
    fs = one(lustre_plan("prod"), FS).inputs
    assert fs["deploymentType"] == "PERSISTENT_2"
    assert fs["storageType"] == "SSD"
    assert fs["storageCapacity"] == 4800
    assert fs["perUnitStorageThroughput"] == 500
    assert fs["kmsKeyId"] == KEY_ARN
    assert fs["dataCompressionType"] == "LZ4"
    assert fs["subnetIds"] == "subnet-0train"


def test_daily_backups_with_retention_and_tags_copied(lustre_plan):
    prod = one(lustre_plan("prod"), FS).inputs
    assert prod["automaticBackupRetentionDays"] == 30
    assert prod["dailyAutomaticBackupStartTime"] == "03:00"
    assert prod["copyTagsToBackups"] is True
    assert prod["skipFinalBackup"] is False
    # dev turns backups off: no backup window and no final backup.
    dev = one(lustre_plan("dev"), FS).inputs
    assert dev["automaticBackupRetentionDays"] == 0
    assert "dailyAutomaticBackupStartTime" not in dev
    assert dev["skipFinalBackup"] is True


def test_security_group_opens_only_lustre_ports_to_nodes_and_itself(lustre_plan):
    plan = lustre_plan("prod")
    sg = one(plan, "aws:ec2/securityGroup:SecurityGroup")
    assert "ingress" not in sg.inputs and "egress" not in sg.inputs
    own = [
        r
        for token in (
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        )
        for r in plan.by_type(token)
        if r.inputs["securityGroupId"] == sg.id
    ]
    seen = set()
    for rule in own:
        i = rule.inputs
        assert i["ipProtocol"] == "tcp"
        assert "cidrIpv4" not in i and "cidrIpv6" not in i and "prefixListId" not in i
        assert i["referencedSecurityGroupId"] in (sg.id, NODE_SG)
        seen.add(
            (
                rule.type.rsplit(":", 1)[1],
                i["fromPort"],
                i["toPort"],
                i["referencedSecurityGroupId"],
            )
        )
    expected = {
        (kind, low, high, peer)
        for kind in ("SecurityGroupIngressRule", "SecurityGroupEgressRule")
        for low, high in ((988, 988), (1018, 1023))
        for peer in (sg.id, NODE_SG)
    }
    assert seen == expected


def test_nodes_accept_lustre_callbacks_from_the_file_servers_only(lustre_plan):
    plan = lustre_plan("prod")
    sg = one(plan, "aws:ec2/securityGroup:SecurityGroup")
    on_nodes = [
        r.inputs
        for r in plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == NODE_SG
    ]
    assert sorted((i["fromPort"], i["toPort"]) for i in on_nodes) == [(988, 988), (1018, 1023)]
    assert all(i["referencedSecurityGroupId"] == sg.id for i in on_nodes)


def test_datasets_prefix_is_imported_automatically_and_checkpoints_exported(lustre_plan):
    plan = lustre_plan("prod")
    fs = one(plan, FS)
    datasets = one(plan, DRA, "datasets-dra").inputs
    assert datasets["fileSystemId"] == fs.id
    assert datasets["fileSystemPath"] == "/datasets"
    assert datasets["dataRepositoryPath"] == "s3://llm-dev-datasets-123456789012/datasets/"
    assert datasets["s3"] == {"autoImportPolicy": {"events": ["NEW", "CHANGED", "DELETED"]}}
    assert datasets["batchImportMetaDataOnCreate"] is True
    checkpoints = one(plan, DRA, "checkpoints-dra").inputs
    assert checkpoints["fileSystemPath"] == "/checkpoints"
    assert checkpoints["dataRepositoryPath"] == "s3://llm-dev-checkpoints-123456789012/checkpoints/"
    assert checkpoints["s3"] == {"autoExportPolicy": {"events": ["NEW", "CHANGED", "DELETED"]}}
    assert not datasets["deleteDataInFilesystem"] and not checkpoints["deleteDataInFilesystem"]


def test_fsx_service_role_may_use_the_data_key_only_for_the_linked_buckets(lustre_plan):
    plan = lustre_plan("prod")
    fs_id = one(plan, FS).id
    grants = {g.name: g for g in plan.by_type("aws:kms/grant:Grant")}
    assert set(grants) == {"datasets-fsx-s3-key-grant", "checkpoints-fsx-s3-key-grant"}
    dras = {r.urn for r in plan.by_type(DRA)}
    for purpose in ("datasets", "checkpoints"):
        grant = grants[f"{purpose}-fsx-s3-key-grant"]
        assert grant.inputs["keyId"] == KEY_ARN
        assert grant.inputs["granteePrincipal"] == (
            "arn:aws:iam::123456789012:role/aws-service-role/s3.data-source.lustre.fsx."
            f"amazonaws.com/AWSServiceRoleForFSxS3Access_{fs_id}"
        )
        assert grant.inputs["constraints"] == [
            {
                "encryptionContextSubset": {
                    "aws:s3:arn": f"arn:aws:s3:::llm-dev-{purpose}-123456789012"
                }
            }
        ]
        assert "CreateGrant" not in grant.inputs["operations"]
        # the role exists once an association does
        assert dras <= set(grant.dependencies)


def test_pv_and_pvc_bind_statically_to_the_file_system_and_validate(lustre_plan):
    plan = lustre_plan("prod")
    fs = one(plan, FS)
    pv = one(plan, "kubernetes:core/v1:PersistentVolume").inputs
    pvc_resource = one(plan, "kubernetes:core/v1:PersistentVolumeClaim")
    pvc = pvc_resource.inputs
    csi = pv["spec"]["csi"]
    assert csi["driver"] == "fsx.csi.aws.com"
    assert csi["volumeHandle"] == fs.id
    assert csi["volumeAttributes"] == {
        "dnsname": fs.outputs["dnsName"],
        "mountname": fs.outputs["mountName"],
    }
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["capacity"] == {"storage": "4800Gi"}
    assert pv["spec"]["mountOptions"] == ["flock"]
    assert pv["spec"]["storageClassName"] == ""
    assert pv["spec"]["claimRef"] == {"namespace": "ml-train", "name": "fsx-lustre"}
    assert pvc["metadata"] == {
        "name": "fsx-lustre",
        "namespace": "ml-train",
        "labels": {"llmcloud.io/storage": "fsx-lustre"},
    }
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == ""
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert plan.outputs["pvc_name"] == "fsx-lustre"
    namespace = one(plan, "kubernetes:core/v1:Namespace")
    assert namespace.urn in pvc_resource.dependencies
    assert validate_manifests(manifests(plan), "1.33") == []


def test_kubernetes_objects_use_the_kubernetes_provider_passed_in(lustre_plan):
    plan = lustre_plan("dev")
    for token in (
        "kubernetes:core/v1:PersistentVolume",
        "kubernetes:core/v1:PersistentVolumeClaim",
    ):
        assert one(plan, token).provider.endswith("pulumi:providers:kubernetes::k8s")
    (component,) = plan.by_type("llmcloud:storage:Lustre")
    assert all(
        r.parent == component.urn
        for r in plan.resources
        if r.type.startswith(("aws:fsx", "aws:kms/grant", "kubernetes:core/v1:Persistent"))
    )


# --------------------------------------------------------------------------- the stacks


def test_each_stack_puts_lustre_in_the_private_subnet_of_its_training_zone(
    dev_plan, staging_plan, prod_plan
):
    for plan, zone in (
        (dev_plan, "us-east-1a"),
        (staging_plan, "us-east-1a"),
        (prod_plan, "us-east-2a"),
    ):
        fs = one(plan, FS)
        subnet = one(plan, "aws:ec2/subnet:Subnet", f"private-{zone}")
        assert fs.inputs["subnetIds"] == subnet.id
        data_key = one(plan, "aws:kms/key:Key", "data-key")
        assert fs.inputs["kmsKeyId"] == data_key.outputs["arn"]
        assert plan.outputs["fsx_file_system_id"] == fs.id
        assert plan.outputs["fsx_availability_zone"] == zone


def test_prod_lustre_admits_the_cluster_nodes_and_links_the_data_lake_buckets(prod_plan):
    cluster = one(prod_plan, "aws:eks/cluster:Cluster")
    node_sg = cluster.outputs["vpcConfig"]["clusterSecurityGroupId"]
    from_nodes = [
        r.inputs
        for r in prod_plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.name.startswith("lustre-") and r.name.endswith("-from-nodes")
    ]
    assert {i["referencedSecurityGroupId"] for i in from_nodes} == {node_sg}
    datasets = one(prod_plan, DRA, "datasets-dra").inputs
    assert datasets["dataRepositoryPath"] == "s3://llm-prod-datasets-123456789012/datasets/"
    pvc = one(prod_plan, "kubernetes:core/v1:PersistentVolumeClaim", "lustre-pvc")
    assert pvc.inputs["metadata"]["namespace"] == "training"
    (namespace,) = [
        m.urn for m in manifests(prod_plan) if m.kind == "Namespace" and m.name == "training"
    ]
    assert namespace in pvc.dependencies
    assert prod_plan.outputs["fsx_pvc"] == "training/fsx-lustre"
    assert (
        validate_manifests(
            [m for m in manifests(prod_plan) if m.kind.startswith("PersistentVolume")], "1.33"
        )
        == []
    )


def test_fsx_without_a_training_namespace_for_its_claim_exits_2(tmp_path):
    def edit(config: dict[str, Any]) -> None:
        config["llmcloud:security"]["namespaces"] = [{"name": "serving", "purpose": "serving"}]
        config["llmcloud:training"] = []
        config["llmcloud:serving"][0]["allowed_namespaces"] = []

    project = copy_project_with(tmp_path / "repo", "dev", edit)
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "dev"])
    assert result.exit_code == 2, result.output
    assert "llmcloud:storage.fsx = " in result.output
    assert "needs a namespace with purpose: training" in result.output
    assert "Traceback" not in result.output
