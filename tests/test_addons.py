"""Add-ons on the cluster: pinned Helm charts, device plugins only where their hardware is,
DCGM and Prometheus scraping GPU and vLLM monitors, the CloudWatch alternative, KEDA, and
Kubernetes objects that validate against the upstream schemas of the cluster version."""

from __future__ import annotations

import json
import re

import pytest

from infra.addons import CHARTS, STORAGE_CLASS
from infra.plan.engine import Plan, Resource
from infra.plan.k8s import manifests, validate_manifests

RELEASE = "kubernetes:helm.sh/v3:Release"
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


def releases(plan: Plan) -> dict[str, Resource]:
    return {r.inputs["name"]: r for r in plan.by_type(RELEASE)}


def ours(plan: Plan, resource: Resource) -> bool:
    component = plan.component_of(resource)
    return component is not None and component.type.startswith("llmcloud:cluster:")


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_declared_kubernetes_objects_validate_against_the_cluster_version(stack_report, stack):
    report = stack_report(stack)
    plan = report.plan
    mine = [m for m in manifests(plan) if ours(plan, plan.get(m.urn))]
    assert {m.kind for m in mine} >= {"StorageClass", "Namespace"}
    assert validate_manifests(mine, report.config.cluster.version) == []


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_chart_is_pinned_to_an_exact_version_from_its_repository(stack_report, stack):
    found = releases(stack_report(stack).plan)
    assert found
    for name, release in found.items():
        chart = CHARTS[name]
        assert release.inputs["chart"] == chart.chart
        assert release.inputs["version"] == chart.version
        assert EXACT_VERSION.match(release.inputs["version"]), name
        assert release.inputs["repositoryOpts"]["repo"] == chart.repo
        assert chart.repo.startswith("https://")
        assert release.inputs["atomic"] is True


def test_prod_installs_device_plugins_dcgm_and_prometheus(stack_report):
    report = stack_report("prod")
    expected = {
        "nvidia-device-plugin",
        "efa-device-plugin",
        "dcgm-exporter",
        "kube-prometheus-stack",
    }
    if report.config.cluster.addons.keda:
        expected.add("keda")
    assert set(releases(report.plan)) == expected


def gpu_node_groups(plan: Plan) -> list[dict]:
    return [
        r.inputs
        for r in plan.by_type("aws:eks/nodeGroup:NodeGroup")
        if "nvidia.com/gpu.present" in r.inputs["labels"]
    ]


def selects(node_selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in node_selector.items())


def tolerates(tolerations: list[dict], taints: list[dict]) -> bool:
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute"}
    return all(
        any(
            t.get("key") == taint["key"]
            and t.get("operator") == "Exists"
            and t.get("effect") == effects[taint["effect"]]
            for t in tolerations
        )
        for taint in taints
    )


def test_nvidia_device_plugin_runs_on_every_al2023_gpu_node_group(prod_plan):
    values = releases(prod_plan)["nvidia-device-plugin"].inputs["values"]
    assert releases(prod_plan)["nvidia-device-plugin"].inputs["namespace"] == "kube-system"
    for group in gpu_node_groups(prod_plan):
        assert selects(values["nodeSelector"], group["labels"]), group["nodeGroupName"]
        assert tolerates(values["tolerations"], group["taints"])


def test_efa_device_plugin_selects_exactly_the_efa_node_groups(prod_plan):
    values = releases(prod_plan)["efa-device-plugin"].inputs["values"]
    for group in gpu_node_groups(prod_plan):
        lt = next(
            r
            for r in prod_plan.by_type("aws:ec2/launchTemplate:LaunchTemplate")
            if r.name == f"gpu-{group['nodeGroupName']}-launch-template"
        )
        has_efa = "networkInterfaces" in lt.inputs
        assert selects(values["nodeSelector"], group["labels"]) == has_efa, group["nodeGroupName"]
        if has_efa:
            assert tolerates(values["tolerations"], group["taints"])


def test_dcgm_exporter_runs_on_gpu_nodes_and_is_scraped(prod_plan):
    found = releases(prod_plan)
    dcgm = found["dcgm-exporter"]
    values = dcgm.inputs["values"]
    assert values["serviceMonitor"]["enabled"] is True
    for group in gpu_node_groups(prod_plan):
        assert selects(values["nodeSelector"], group["labels"])
        assert tolerates(values["tolerations"], group["taints"])
    assert found["kube-prometheus-stack"].urn in dcgm.dependencies  # CRDs first


def test_prometheus_scrapes_monitors_of_every_namespace(prod_plan):
    spec = releases(prod_plan)["kube-prometheus-stack"].inputs["values"]["prometheus"][
        "prometheusSpec"
    ]
    # vLLM PodMonitors live in the serving namespace with labels of their own
    for kind in ("podMonitor", "serviceMonitor"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
        assert spec[f"{kind}Selector"] == {}
        assert spec[f"{kind}NamespaceSelector"] == {}
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == STORAGE_CLASS
    assert spec["nodeSelector"] == {"llmcloud.io/node-group": "system"}


def test_releases_wait_for_system_nodes_and_coredns(prod_plan):
    system = next(
        r.urn
        for r in prod_plan.by_type("aws:eks/nodeGroup:NodeGroup")
        if r.name == "cluster-system-node-group"
    )
    coredns = next(
        r.urn for r in prod_plan.by_type("aws:eks/addon:Addon") if r.name == "cluster-coredns"
    )
    for release in prod_plan.by_type(RELEASE):
        assert {system, coredns} <= set(release.dependencies), release.name


def test_default_storage_class_encrypts_with_our_ebs_key(prod_plan):
    (sc,) = prod_plan.by_type("kubernetes:storage.k8s.io/v1:StorageClass")
    assert sc.inputs["metadata"]["name"] == STORAGE_CLASS
    assert (
        sc.inputs["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
        == "true"
    )
    assert sc.inputs["provisioner"] == "ebs.csi.aws.com"
    assert sc.inputs["parameters"] == {
        "type": "gp3",
        "encrypted": "true",
        "kmsKeyId": prod_plan.outputs["kms_key_arns"]["ebs"],
    }
    assert sc.inputs["volumeBindingMode"] == "WaitForFirstConsumer"


# ----------------------------------------------------------------------------- add-ons alone

ADDONS_PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s
from infra.addons import Addons, AddonsArgs
from infra.config import AddonsConfig, config_from_pulumi
from infra.context import make_context

test = pulumi.Config("test")
ctx = make_context(config_from_pulumi())
provider = k8s.Provider("k8s", kubeconfig="{}")
Addons(
    "addons",
    AddonsArgs(
        config=AddonsConfig.model_validate(test.require_object("addons")),
        cluster_name="demo",
        ebs_key_arn="arn:aws:kms:us-east-1:123456789012:key/ebs",
        logs_key_arn="arn:aws:kms:us-east-1:123456789012:key/logs",
        log_retention_days=30,
        kubernetes_version="1.33",
        gpu_amis=test.require_object("amis"),
        efa=test.require_bool("efa"),
    ),
    ctx,
    pulumi.ResourceOptions(providers={"aws": ctx.aws_provider, "kubernetes": provider}),
)
"""


def plan_addons(plan_program, addons: dict, amis: list[str], efa: bool) -> Plan:
    return plan_program(
        ADDONS_PROGRAM,
        config={
            "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
            "test:addons": addons,
            "test:amis": amis,
            "test:efa": efa,
        },
    )


def test_bottlerocket_only_clusters_get_no_nvidia_plugin_and_no_efa_without_efa(plan_program):
    plan = plan_addons(plan_program, {}, ["bottlerocket"], efa=False)
    assert set(releases(plan)) == {"kube-prometheus-stack", "dcgm-exporter"}


def test_cluster_without_gpu_groups_runs_no_gpu_daemons(plan_program):
    plan = plan_addons(plan_program, {"keda": True}, [], efa=False)
    assert set(releases(plan)) == {"kube-prometheus-stack", "keda"}
    keda = releases(plan)["keda"]
    assert keda.inputs["namespace"] == "keda"
    assert keda.inputs["values"]["prometheus"]["operator"]["podMonitor"]["enabled"] is True
    assert validate_manifests(manifests(plan), "1.33") == []


def test_cloudwatch_metrics_replace_prometheus_and_encrypt_their_log_groups(plan_program):
    plan = plan_addons(plan_program, {"metrics": "cloudwatch", "keda": True}, ["al2023"], efa=True)
    assert set(releases(plan)) == {"nvidia-device-plugin", "efa-device-plugin", "keda"}
    assert releases(plan)["keda"].inputs["values"]["prometheus"]["operator"]["podMonitor"] == {
        "enabled": False  # no Prometheus operator CRDs in this mode
    }
    (cw,) = [
        r
        for r in plan.by_type("aws:eks/addon:Addon")
        if r.inputs["addonName"] == "amazon-cloudwatch-observability"
    ]
    assert json.loads(cw.inputs["configurationValues"])["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    groups = plan.by_type("aws:cloudwatch/logGroup:LogGroup")
    assert {g.inputs["name"].rsplit("/", 1)[1] for g in groups} == {
        "performance",
        "application",
        "dataplane",
        "host",
    }
    for group in groups:
        assert group.inputs["kmsKeyId"].endswith(":key/logs")
        assert group.inputs["retentionInDays"] == 30
        assert group.urn in cw.dependencies
    (association,) = plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        "amazon-cloudwatch",
        "cloudwatch-agent",
    )
