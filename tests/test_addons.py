"""Add-ons on the cluster: pinned Helm charts, device plugins only where their hardware is,
DCGM and Prometheus scraping GPU and vLLM monitors, the CloudWatch alternative, KEDA,
metrics-server, the workload controllers (Load Balancer Controller with a least-privilege pod
role, LeaderWorkerSet, JobSet) only where a workload uses them, and Kubernetes objects that
validate against the upstream schemas of the cluster version."""

from __future__ import annotations

import copy
import json
import re
import shutil
from datetime import date, timedelta

import pytest
import yaml

from infra import pins
from infra.cluster.addons import (
    CHARTS,
    LB_CLUSTER_TAG,
    STORAGE_CLASS,
    Chart,
    WorkloadControllers,
)
from infra.config import ServingConfig, parse_stack_config
from infra.plan.engine import Plan, Resource
from infra.plan.k8s import manifests, validate_manifests
from infra.plan.policy_runner import evaluate_policies
from infra.plan.run import run_plan
from infra.security.statements import is_read_only, statement_problems
from policies.rules.base import PolicySettings
from tests.conftest import ROOT
from workloads.serving.service import AWS_CLI_IMAGE

RELEASE = "kubernetes:helm.sh/v3:Release"
SERVICE = "kubernetes:core/v1:Service"
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
        if chart.repo is None:  # an OCI registry: the chart is the full reference
            assert chart.chart.startswith("oci://registry.k8s.io/")
            assert "repositoryOpts" not in release.inputs
        else:
            assert release.inputs["repositoryOpts"]["repo"] == chart.repo
            assert chart.repo.startswith("https://")
        assert release.inputs["atomic"] is True


def test_prod_installs_device_plugins_dcgm_prometheus_and_its_workload_controllers(
    stack_report,
):
    report = stack_report("prod")
    expected = {
        "nvidia-device-plugin",
        "efa-device-plugin",
        "dcgm-exporter",
        "kube-prometheus-stack",
        "metrics-server",
        # llama-70b is served through an internal NLB; no entry is multi-node or a JobSet
        "aws-load-balancer-controller",
        # its own component (infra/cluster/autoscaler.py), on the system nodes like the rest
        "cluster-autoscaler",
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
from infra.cluster.addons import Addons, AddonsArgs, WorkloadControllers
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
        pod_identity=test.get("pod_identity") or "pod_identity",
        oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X",
        oidc_issuer="https://oidc.eks.us-east-1.amazonaws.com/id/X",
        vpc_id="vpc-0123456789abcdef0",
        controllers=WorkloadControllers(**(test.get_object("controllers") or {})),
    ),
    ctx,
    pulumi.ResourceOptions(providers={"aws": ctx.aws_provider, "kubernetes": provider}),
)
"""


def plan_addons(
    plan_program,
    addons: dict,
    amis: list[str],
    efa: bool,
    controllers: dict | None = None,
    pod_identity: str = "pod_identity",
) -> Plan:
    return plan_program(
        ADDONS_PROGRAM,
        config={
            "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
            "test:addons": addons,
            "test:amis": amis,
            "test:efa": efa,
            "test:controllers": controllers or {},
            "test:pod_identity": pod_identity,
        },
    )


def test_bottlerocket_only_clusters_get_no_nvidia_plugin_and_no_efa_without_efa(plan_program):
    plan = plan_addons(plan_program, {}, ["bottlerocket"], efa=False)
    assert set(releases(plan)) == {"kube-prometheus-stack", "dcgm-exporter", "metrics-server"}


def test_cluster_without_gpu_groups_runs_no_gpu_daemons(plan_program):
    plan = plan_addons(plan_program, {"keda": True}, [], efa=False)
    assert set(releases(plan)) == {"kube-prometheus-stack", "keda", "metrics-server"}
    keda = releases(plan)["keda"]
    assert keda.inputs["namespace"] == "keda"
    assert keda.inputs["values"]["prometheus"]["operator"]["podMonitor"]["enabled"] is True
    assert validate_manifests(manifests(plan), "1.33") == []


def test_cloudwatch_metrics_replace_prometheus_and_encrypt_their_log_groups(plan_program):
    plan = plan_addons(plan_program, {"metrics": "cloudwatch", "keda": True}, ["al2023"], efa=True)
    assert set(releases(plan)) == {
        "nvidia-device-plugin",
        "efa-device-plugin",
        "keda",
        "metrics-server",
    }
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


# ------------------------------------------------------------------- metrics-server


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_metrics_server_runs_in_every_stack_on_the_system_nodes(stack_report, stack):
    # dev and staging serve with the HPA-on-CPU fallback (no KEDA): it reads metrics.k8s.io
    release = releases(stack_report(stack).plan)["metrics-server"]
    values = release.inputs["values"]
    assert release.inputs["namespace"] == "kube-system"
    assert values["nodeSelector"] == {"llmcloud.io/node-group": "system"}
    assert values["replicas"] == 2 and values["podDisruptionBudget"]["enabled"] is True
    assert values["resources"]["requests"] and values["resources"]["limits"]["memory"]


def test_dev_serves_through_an_hpa_on_cpu_that_metrics_server_feeds(dev_plan):
    (hpa,) = dev_plan.by_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa.inputs["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "metrics-server" in releases(dev_plan)


# ------------------------------------------------------- AWS Load Balancer Controller


def lb_controller(plan: Plan) -> Resource:
    return releases(plan)["aws-load-balancer-controller"]


def lb_policy(plan: Plan) -> dict:
    (policy,) = [
        r
        for r in plan.by_type("aws:iam/rolePolicy:RolePolicy")
        if r.name == "addons-aws-load-balancer-controller-policy"
    ]
    return json.loads(policy.inputs["policy"])


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_stacks_whose_only_nlb_is_the_gateways_get_the_load_balancer_controller(
    stack_report, stack
):
    plan = stack_report(stack).plan
    balancers = [s for s in plan.by_type(SERVICE) if s.inputs["spec"].get("type") == "LoadBalancer"]
    assert [s.inputs["metadata"]["namespace"] for s in balancers] == ["gateway"]
    assert "aws-load-balancer-controller" in releases(plan)


def test_prod_nlb_service_is_created_after_the_load_balancer_controller(prod_plan):
    (service,) = [
        s for s in prod_plan.by_type(SERVICE) if s.inputs["spec"].get("type") == "LoadBalancer"
    ]
    assert service.inputs["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    addons = prod_plan.component_of(lb_controller(prod_plan))
    # the Service waits for the add-ons (and is deleted before the controller that owns its NLB)
    assert {addons.urn, lb_controller(prod_plan).urn} & set(service.dependencies)


def test_prod_load_balancer_controller_knows_its_cluster_and_runs_on_system_nodes(prod_plan):
    release = lb_controller(prod_plan)
    values = release.inputs["values"]
    assert release.inputs["namespace"] == "kube-system"
    assert values["clusterName"] == prod_plan.outputs["cluster_name"]
    assert values["region"] == prod_plan.outputs["region"] == "us-east-2"
    assert values["vpcId"] == prod_plan.outputs["vpc_id"]
    assert values["replicaCount"] == 2
    assert values["nodeSelector"] == {"llmcloud.io/node-group": "system"}
    assert values["resources"]["requests"] and values["resources"]["limits"]["memory"]
    assert values["enableServiceMutatorWebhook"] is False  # only Services that ask for it
    assert values["createIngressClassResource"] is False
    assert values["defaultTags"]["environment"] == "prod"


def test_prod_load_balancer_controller_pod_role_binds_its_service_account(prod_plan):
    release = lb_controller(prod_plan)
    (association,) = [
        a
        for a in prod_plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if a.name == "addons-aws-load-balancer-controller-association"
    ]
    account = release.inputs["values"]["serviceAccount"]
    assert account["create"] is True
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        "kube-system",
        account["name"],
    )
    assert association.inputs["clusterName"] == prod_plan.outputs["cluster_name"]
    # Pulumi records a component dependency as its children: the association comes first
    assert association.urn in release.dependencies  # credentials exist before the pods start


def test_prod_load_balancer_controller_policy_writes_nothing_on_every_resource(prod_plan):
    statements = lb_policy(prod_plan)["Statement"]
    for statement in statements:
        assert statement_problems(statement) == [], statement["Sid"]
        if statement["Resource"] == "*":
            assert all(is_read_only(a) for a in statement["Action"]), statement["Sid"]
    actions = {a for s in statements for a in s["Action"]}
    # ALB-only, WAF, Shield and certificate writes are not granted
    assert not {a for a in actions if a.split(":")[0] in ("wafv2", "waf-regional", "shield")}
    assert "elasticloadbalancing:CreateRule" not in actions
    assert "elasticloadbalancing:SetWebAcl" not in actions
    resources = json.dumps([s["Resource"] for s in statements])
    assert "loadbalancer/app/" not in resources and "arn:aws:ec2:*" not in resources
    # what an NLB needs is there
    assert {
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:CreateTargetGroup",
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:RegisterTargets",
        "ec2:CreateSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
    } <= actions


def test_prod_load_balancer_controller_writes_only_this_clusters_resources_in_its_vpc(
    prod_plan,
):
    cluster = prod_plan.outputs["cluster_name"]
    vpc_arn = f"arn:aws:ec2:us-east-2:123456789012:vpc/{prod_plan.outputs['vpc_id']}"
    by_sid = {s["Sid"]: s for s in lb_policy(prod_plan)["Statement"]}
    tag_scoped = [
        s
        for s in by_sid.values()
        if any(f"/{LB_CLUSTER_TAG}" in key for c in s.get("Condition", {}).values() for key in c)
    ]
    assert len(tag_scoped) >= 7
    for statement in tag_scoped:
        # the cluster's own name, not merely "has some cluster's tag"
        assert cluster in json.dumps(statement["Condition"]), statement["Sid"]
    rules = by_sid["SecurityGroupRulesInClusterVpc"]
    assert rules["Condition"] == {"ArnEquals": {"ec2:Vpc": vpc_arn}}
    assert by_sid["CreateSecurityGroupsInClusterVpc"]["Resource"] == vpc_arn
    for sid in ("RetagOwnSecurityGroups", "RetagOwnNlbs"):  # the cluster tag stays put
        condition = by_sid[sid]["Condition"]
        assert condition["Null"] == {f"aws:RequestTag/{LB_CLUSTER_TAG}": "true"}
        assert condition["ForAllValues:StringNotEquals"] == {"aws:TagKeys": [LB_CLUSTER_TAG]}


def test_prod_load_balancer_controller_role_passes_the_iam_rules_and_prod_has_no_blockers(
    stack_report,
):
    report = stack_report("prod")
    findings = evaluate_policies(
        report.plan,
        PolicySettings.for_stack(report.config),
        only=["iam-no-wildcard-actions", "iam-no-write-on-wildcard-resources"],
    )
    assert [f for f in findings if "load-balancer-controller" in (f.urn or "")] == []
    assert [v for v in report.violations if v.blocking] == []


def test_iam_rule_would_reject_the_reference_policys_unscoped_security_group_write(prod_plan):
    """The rule the role passes is not vacuous: the reference's own statement fails it."""
    from policies.rules.iam import check_write_on_wildcard

    class Args:
        resource_type = "aws:iam/rolePolicy:RolePolicy"
        name = "reference"

    reference = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:CreateSecurityGroup"],
                "Resource": "*",
            }
        ],
    }
    found: list[str] = []
    check_write_on_wildcard(Args(), {"policy": json.dumps(reference)}, found.append, None)
    assert found and "every resource" in found[0]
    mine: list[str] = []
    check_write_on_wildcard(Args(), {"policy": json.dumps(lb_policy(prod_plan))}, mine.append, None)
    assert mine == []


def test_irsa_mode_annotates_the_controllers_service_account_instead_of_associating(
    plan_program,
):
    plan = plan_addons(
        plan_program, {}, [], efa=False, controllers={"load_balancer": True}, pod_identity="irsa"
    )
    account = lb_controller(plan).inputs["values"]["serviceAccount"]
    (role,) = [r for r in plan.by_type("aws:iam/role:Role") if "load-balancer" in r.name]
    assert account["annotations"] == {"eks.amazonaws.com/role-arn": role.outputs["arn"]}
    assert not plan.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Condition"]["StringEquals"]["oidc.eks.us-east-1.amazonaws.com/id/X:sub"] == (
        "system:serviceaccount:kube-system:aws-load-balancer-controller"
    )


# ------------------------------------------------------------- LeaderWorkerSet, JobSet


def parsed(stack: str, change) -> WorkloadControllers:
    raw = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw = copy.deepcopy(raw)
    change(raw)
    config = parse_stack_config(raw, project="llmcloud", stack=stack)
    return WorkloadControllers.for_stack(config)


def test_our_stacks_need_only_the_load_balancer_controller_for_the_gateway():
    def no_gateway(raw):
        del raw["llmcloud:gateway"]

    for stack in ("dev", "staging", "prod"):
        assert parsed(stack, lambda raw: None) == WorkloadControllers(load_balancer=True)
    # without the model gateway no stack has an NLB (prod's endpoint sits behind it)
    assert parsed("staging", no_gateway) == WorkloadControllers()
    assert parsed("dev", no_gateway) == WorkloadControllers()


def test_a_replica_larger_than_one_node_needs_leader_worker_set():
    # l40s is g6e.12xlarge: 4 GPUs per node, so 8 GPUs per replica span two nodes
    def eight_gpus(raw):
        raw["llmcloud:serving"][0].update(gpus_per_replica=8, replicas_min=1, replicas_max=3)

    def four_gpus(raw):
        raw["llmcloud:serving"][0].update(gpus_per_replica=4)

    assert parsed("prod", eight_gpus).leader_worker_set is True
    assert parsed("prod", four_gpus).leader_worker_set is False  # a whole node, not more


def test_only_a_training_entry_with_jobset_true_needs_jobset():
    def jobset(raw):
        raw["llmcloud:training"][0]["jobset"] = True

    assert parsed("prod", jobset).jobset is True
    assert parsed("staging", jobset).jobset is True
    assert parsed("prod", lambda raw: None).jobset is False


def test_workload_controllers_run_on_system_nodes_in_their_own_namespaces(plan_program):
    plan = plan_addons(
        plan_program,
        {},
        [],
        efa=False,
        controllers={"leader_worker_set": True, "jobset": True},
    )
    found = releases(plan)
    assert {"lws", "jobset"} <= set(found) and "aws-load-balancer-controller" not in found
    namespaces = {
        n.inputs["metadata"]["name"]: n for n in plan.by_type("kubernetes:core/v1:Namespace")
    }
    lws, jobset = found["lws"], found["jobset"]
    assert lws.inputs["namespace"] == "lws-system"
    assert jobset.inputs["namespace"] == "jobset-system"
    assert namespaces["lws-system"].urn in lws.dependencies
    assert namespaces["jobset-system"].urn in jobset.dependencies
    system = {"llmcloud.io/node-group": "system"}
    assert lws.inputs["values"]["nodeSelector"] == system
    assert jobset.inputs["values"]["controller"]["nodeSelector"] == system
    for resources in (
        lws.inputs["values"]["resources"],
        jobset.inputs["values"]["controller"]["resources"],
    ):
        assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    assert validate_manifests(manifests(plan), "1.33") == []


@pytest.fixture(scope="module")
def multi_node_jobset_prod(tmp_path_factory) -> Plan:
    """Prod with a two-node serving replica and a JobSet training job, planned in full."""
    project = tmp_path_factory.mktemp("controllers") / "repo"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project)
    shutil.copy(ROOT / "__main__.py", project)
    shutil.copytree(ROOT / "stacks", project / "stacks")
    stack_file = project / "stacks" / "Pulumi.prod.yaml"
    data = yaml.safe_load(stack_file.read_text())
    data["config"]["llmcloud:serving"][0].update(gpus_per_replica=8, replicas_min=1, replicas_max=3)
    data["config"]["llmcloud:training"][0]["jobset"] = True
    stack_file.write_text(yaml.safe_dump(data))
    report = run_plan(project, "prod")
    assert [v for v in report.violations if v.blocking] == []
    return report.plan


def test_multi_node_endpoint_and_jobset_job_wait_for_their_controllers(multi_node_jobset_prod):
    plan = multi_node_jobset_prod
    found = releases(plan)
    assert {"lws", "jobset", "aws-load-balancer-controller", "metrics-server"} <= set(found)
    addons = plan.component_of(found["lws"]).urn
    (lws_object,) = plan.by_type("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    (jobset_object,) = plan.by_type("kubernetes:jobset.x-k8s.io/v1alpha2:JobSet")
    for obj, release in ((lws_object, found["lws"]), (jobset_object, found["jobset"])):
        assert {addons, release.urn} & set(obj.dependencies), obj.name
    mine = [m for m in manifests(plan) if ours(plan, plan.get(m.urn))]
    assert {"lws-system", "jobset-system"} <= {
        m.object["metadata"]["name"] for m in mine if m.kind == "Namespace"
    }
    assert validate_manifests(mine, "1.33") == []


# --------------------------------------------------------------------------- pins


def _latest_day(released: str) -> date:
    """The last day a `YYYY`, `YYYY-MM` or `YYYY-MM-DD` release date can mean."""
    parts = [int(p) for p in released.split("-")]
    if len(parts) == 3:
        return date(*parts)
    year, month = parts[0], parts[1] if len(parts) == 2 else 12
    return date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)


def test_every_pin_has_its_source_its_release_and_the_day_it_was_checked():
    checked_on = date.fromisoformat(pins.load()["checked_on"])
    seen = pins.entries()
    assert {s for s, _, _ in seen} == {"charts", "images", "installers"}
    for section, key, entry in seen:
        assert pins.value(section, entry), key
        assert entry["source"].startswith("https://"), key
        assert date.fromisoformat(entry["checked"]) <= checked_on, key
        behind_days = (checked_on - _latest_day(entry["released"])).days
        # no pin more than 6 months older than the check, unless the file says why
        assert behind_days <= 183 or entry.get("behind_reason"), (key, behind_days)


def test_charts_and_images_come_from_the_pins_file():
    for key, pin in pins.load()["charts"].items():
        assert CHARTS[key] == Chart(pin["chart"], pin["version"], pin["repo"])
    assert pins.image("aws_cli") == AWS_CLI_IMAGE
    assert ServingConfig.model_fields["image"].default == pins.image("vllm")


def test_oci_charts_are_pinned_without_the_v_helm_cannot_find():
    for key, chart in CHARTS.items():
        if chart.repo is None:
            assert not chart.version.startswith("v"), key


def test_trainer_dockerfile_installs_the_pinned_efa_installer():
    dockerfile = (ROOT / "workloads" / "training" / "Dockerfile").read_text()
    (arg,) = re.findall(r"^ARG EFA_INSTALLER_VERSION=(\S+)$", dockerfile, re.M)
    assert arg == pins.installer("efa_installer")
