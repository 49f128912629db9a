"""The plan's scheduling simulation and the capacity rules: the shipped stacks place every pod
at max scale, and each capacity defect the platform once had, rebuilt on a shipped stack's
plan, comes out as a mandatory `k8s-schedulable` (or `k8s-network-policy-enforced`) finding
that names the workload and the numbers, in the scheduler's own words."""

from __future__ import annotations

import json

import pytest

from infra.catalog import load_catalog
from infra.cluster.node_shape import (
    MIB,
    allocatable,
    kube_reserved_cpu_millicores,
    max_pods,
)
from infra.plan.engine import Plan, Resource
from infra.plan.policy_runner import evaluate_policies
from infra.plan.report import render_json, render_markdown, render_sarif
from infra.plan.run import PlanReport
from infra.plan.scheduling import Obj, parse_quantity, simulate, simulate_plan
from policies.rules.base import PolicySettings
from tests.conftest import mutated

JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
QUOTA = "kubernetes:core/v1:ResourceQuota"
RELEASE = "kubernetes:helm.sh/v3:Release"
ADDON = "aws:eks/addon:Addon"


def workload(plan: Plan, token: str, name: str) -> Resource:
    (found,) = [r for r in plan.by_type(token) if r.inputs["metadata"]["name"] == name]
    return found


def findings(plan: Plan, rule: str, environment: str = "prod") -> list:
    settings = PolicySettings(environment=environment, enforcement="advisory")
    return evaluate_policies(plan, settings, only=[rule])


# ----------------------------------------------------------------------------- shipped stacks


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_place_every_pod_at_max_scale(stack_report, stack):
    report = stack_report(stack)
    scheduling = report.scheduling
    assert scheduling is not None and not scheduling.pending
    workloads = [p for p in scheduling.pods if not p.template.daemon]
    assert workloads, "every shipped stack has a job and an endpoint"
    assert all(p.placed == p.template.count for p in workloads)
    assert not [v for v in report.violations if v.policy.startswith("k8s-schedulable")]
    assert not [v for v in report.violations if v.policy == "k8s-network-policy-enforced"]
    body = report.to_json()["scheduling"]
    assert body["schedulable_at_max"] is True
    assert {p["workload"] for p in body["pods"]} >= {
        f"Job training/{j.name}" for j in report.config.training
    }


def test_prod_training_job_lands_on_four_h100_nodes(stack_report):
    pods = {p.template.label: p for p in stack_report("prod").scheduling.pods}
    job = pods["Job training/gpt-1b-pretrain"]
    assert (job.placed, job.groups) == (4, {"h100": 4})
    assert pods["Deployment serving/llama-70b"].groups == {"l40s": 6}  # KEDA's max replicas


def test_node_groups_report_allocatable_and_who_brings_the_nodes(stack_report):
    groups = {g["name"]: g for g in stack_report("prod").to_json()["scheduling"]["node_groups"]}
    assert groups["h100"]["capacity_from"] == "autoscaler"
    assert groups["h200-odcr"]["capacity_from"] == "desired_size"  # min = max: nothing to scale
    assert groups["h100"]["allocatable"]["nvidia.com/gpu"] == 8
    assert groups["h100"]["allocatable"]["vpc.amazonaws.com/efa"] == 32
    assert groups["h100"]["allocatable"]["cpu"] == "191450m"


# ----------------------------------------------------------------------------- the Why, rebuilt


def test_training_job_over_its_namespace_quota_is_refused_like_the_api_server(stack_report):
    """Before: prod's gpt-1b-pretrain (4 pods of 163 CPU / 1740Gi) in the old default quota
    (512 CPU / 4Ti): two pods are refused with 403 exceeded quota."""

    def old_quota(r: Resource) -> Resource:
        if r.type == QUOTA and r.inputs["metadata"]["namespace"] == "training":
            r.inputs["spec"]["hard"].update({"requests.cpu": "512", "requests.memory": "4Ti"})
        return r

    plan = mutated(stack_report("prod").plan, old_quota)
    pods = {p.template.label: p for p in simulate_plan(plan).pods}
    job = pods["Job training/gpt-1b-pretrain"]
    assert (job.placed, job.template.count) == (2, 4)
    assert job.reason == (
        "forbidden: exceeded quota: workload-quota, requested: requests.memory=1740Gi, "
        "used: requests.memory=3480Gi, limited: requests.memory=4Ti"
    )
    (finding,) = findings(plan, "k8s-schedulable")
    assert finding.urn == workload(plan, JOB, "gpt-1b-pretrain").urn
    assert finding.enforcement == "mandatory"  # whatever the stack's level
    assert "2 of 4 pods" in finding.message and "limited: requests.memory=4Ti" in finding.message


def test_groups_at_zero_with_no_autoscaler_leave_training_pending(stack_report):
    """Before: nothing scaled the node groups; every GPU group starts at desiredSize 0."""
    plan = mutated(
        stack_report("dev").plan,
        lambda r: None if r.type == RELEASE and r.inputs.get("name") == "cluster-autoscaler" else r,
    )
    pods = {p.template.label: p for p in simulate_plan(plan).pods}
    job = pods["Job training/gpt-smoke"]
    assert job.placed == 0
    assert job.reason.startswith("0/2 nodes are available: 2 node(s) didn't match Pod's node")
    assert "h100" in job.reason and "nothing scales them" in job.reason
    messages = [f.message for f in findings(plan, "k8s-schedulable", "dev")]
    assert any("gpt-smoke" in m and "0 of 1 pods" in m for m in messages)


def test_a_pod_larger_than_any_node_gets_the_schedulers_insufficient_message(stack_report):
    def huge(r: Resource) -> Resource:
        if r.type == JOB:
            container = r.inputs["spec"]["template"]["spec"]["containers"][0]
            container["resources"]["requests"]["memory"] = "2100Gi"
            container["resources"]["limits"]["memory"] = "2100Gi"
        return r

    plan = mutated(stack_report("prod").plan, huge)
    (job,) = [p for p in simulate_plan(plan).pods if p.template.label.startswith("Job ")]
    # 30 nodes at max: system 6, h100 8, h200-block 4, h200-odcr 2 (its fixed size), a100 4,
    # l40s 6; the 8 H100 nodes hold 2045Gi each after kube-reserved and eviction
    assert job.reason == (
        "0/30 nodes are available: 8 Insufficient memory, "
        "22 node(s) didn't match Pod's node affinity/selector."
    )


def test_a_gpu_pod_without_the_toleration_meets_the_taint(stack_report):
    def untolerated(r: Resource) -> Resource:
        if r.type == JOB:
            r.inputs["spec"]["template"]["spec"]["tolerations"] = []
        return r

    plan = mutated(stack_report("dev").plan, untolerated)
    (job,) = [p for p in simulate_plan(plan).pods if p.template.label.startswith("Job ")]
    assert "2 node(s) had untolerated taint {nvidia.com/gpu: true}" in job.reason


def test_endpoints_needing_more_gpus_than_the_group_holds_stay_pending(stack_report):
    """Before: serving capacity per node group, not per endpoint: dev's l4 group holds 2 x 1
    GPU; 3 replicas of one GPU cannot all run."""

    def three(r: Resource) -> Resource:
        spec = r.inputs.get("spec") or {}
        if r.type.endswith(":HorizontalPodAutoscaler"):  # dev scales on CPU, 1-2 replicas
            spec["maxReplicas"] = 3
        if r.type == QUOTA:  # the derived quota would refuse the third first
            spec["hard"] = {"pods": "500"}
        return r

    plan = mutated(stack_report("dev").plan, three)
    (svc,) = [
        p for p in simulate_plan(plan).pods if p.template.label.startswith("Deployment serving/")
    ]
    assert (svc.placed, svc.template.count) == (2, 3)
    assert "2 Insufficient nvidia.com/gpu" in svc.reason
    # with the quota the stack derives, the API server refuses it first
    (svc,) = [
        p
        for p in simulate_plan(stack_report("dev").plan).pods
        if p.template.label.startswith("Deployment serving/")
    ]
    assert svc.schedulable  # 2 replicas as shipped


def test_network_policies_without_an_engine_are_flagged(stack_report):
    """Before: 15-16 NetworkPolicies per stack and a vpc-cni add-on without its agent."""
    shipped = stack_report("prod").plan
    assert not findings(shipped, "k8s-network-policy-enforced")

    def agent_off(r: Resource) -> Resource:
        if r.type == ADDON and r.inputs.get("addonName") == "vpc-cni":
            config = json.loads(r.inputs["configurationValues"])
            config.pop("enableNetworkPolicy")
            r.inputs["configurationValues"] = json.dumps(config)
        return r

    plan = mutated(shipped, agent_off)
    count = len(plan.by_type("kubernetes:networking.k8s.io/v1:NetworkPolicy"))
    (finding,) = findings(plan, "k8s-network-policy-enforced")
    assert count >= 10
    assert finding.message.startswith(f"{count} NetworkPolicies are declared but nothing enforces")
    assert "enableNetworkPolicy" in finding.message


def test_pending_pods_show_in_markdown_and_sarif(stack_report):
    report = stack_report("dev")
    plan = mutated(
        report.plan,
        lambda r: None if r.type == RELEASE and r.inputs.get("name") == "cluster-autoscaler" else r,
    )
    violations = findings(plan, "k8s-schedulable", "dev")
    broken = PlanReport(plan, report.config, violations, report.cost, simulate_plan(plan))
    assert broken.exit_code == 1
    assert "k8s-schedulable" in render_markdown(broken)
    results = json.loads(render_sarif(broken))["runs"][0]["results"]
    assert any(r["ruleId"] == "k8s-schedulable" and r["level"] == "error" for r in results)
    assert json.loads(render_json(broken))["scheduling"]["schedulable_at_max"] is False


# ----------------------------------------------------------------------------- node shapes


def test_kube_reserved_cpu_follows_nodeadm():
    # awslabs/amazon-eks-ami nodeadm getCPUMillicoresToReserve: 6 %, 1 %, 0.5 % x 2, 0.25 %
    assert kube_reserved_cpu_millicores(1) == 60
    assert kube_reserved_cpu_millicores(2) == 70
    assert kube_reserved_cpu_millicores(4) == 80
    assert kube_reserved_cpu_millicores(192) == 80 + 188 * 1000 * 25 // 10000


def test_allocatable_memory_is_capacity_minus_kube_reserved_and_eviction():
    instance = load_catalog().instance("g6.xlarge")
    pods = max_pods(instance)
    node = allocatable(instance, pods=pods, ephemeral_gib=200, efa=0)
    assert node.memory == (instance.memory_mib - (11 * pods + 255) - 100) * MIB
    assert node.ephemeral_storage == pytest.approx((200 - 1 - 20) * 2**30)


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("500m", 0.5), ("4Ti", 4 * 2**40), ("1740Gi", 1740 * 2**30), ("1e3", 1000.0), ("16", 16.0)],
)
def test_quantities_parse_like_kubernetes(quantity, value):
    assert parse_quantity(quantity) == value


# ----------------------------------------------------------------------------- synthetic stacks

COMPONENT = "urn:pulumi:t::p::llmcloud:cluster:GpuNodeGroup::gpu-l40s"


def l40s_group(max_size: int = 2, autoscaled: bool = True) -> list[Obj]:
    """One g6e.12xlarge group (4 L40S) as the node group component plans it."""
    group = Obj(
        urn="urn:ng",
        type="aws:eks/nodeGroup:NodeGroup",
        name="gpu-l40s-node-group",
        parent=COMPONENT,
        props={
            "nodeGroupName": "l40s",
            "instanceTypes": ["g6e.12xlarge"],
            "scalingConfig": {"minSize": 0, "desiredSize": 0, "maxSize": max_size},
            "labels": {"llmcloud.io/node-group": "l40s"},
            "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
            "launchTemplate": {"id": "lt-1"},
        },
    )
    template = Obj(
        "urn:lt", "aws:ec2/launchTemplate:LaunchTemplate", "lt", {}, COMPONENT, id="lt-1"
    )
    out = [group, template]
    if autoscaled:
        tag = {"key": "k8s.io/cluster-autoscaler/enabled", "value": "true"}
        out += [
            Obj("urn:tag", "aws:autoscaling/tag:Tag", "t", {"tag": tag}, COMPONENT),
            Obj("urn:ca", RELEASE, "ca", {"chart": "cluster-autoscaler", "name": "ca"}),
        ]
    return out


def gpu_pod(gpus: int, **extra) -> dict:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {
            "nodeSelector": {"llmcloud.io/node-group": "l40s"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {
                    "name": "c",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "8Gi", "nvidia.com/gpu": str(gpus)}
                    },
                }
            ],
            **extra,
        },
    }


def custom(kind: str, spec: dict) -> Obj:
    return Obj(
        f"urn:{kind}",
        "kubernetes:apiextensions.k8s.io:CustomResource",
        kind.lower(),
        {"kind": kind, "metadata": {"name": kind.lower(), "namespace": "serving"}, "spec": spec},
    )


def test_leader_worker_set_counts_leaders_and_workers_per_replica():
    lws = custom(
        "LeaderWorkerSet",
        {"replicas": 2, "leaderWorkerTemplate": {"size": 2, "workerTemplate": gpu_pod(4)}},
    )
    pods = {p.template.role: p for p in simulate([*l40s_group(max_size=3), lws]).pods}
    assert (pods["leader"].placed, pods["leader"].template.count) == (2, 2)
    worker = pods["worker"]
    assert (worker.placed, worker.template.count) == (1, 2)  # 3 nodes for 4 whole-node pods
    assert worker.reason == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def test_jobset_pods_are_replicas_times_parallelism():
    jobset = custom(
        "JobSet",
        {
            "replicatedJobs": [
                {
                    "name": "node",
                    "replicas": 1,
                    "template": {"spec": {"parallelism": 2, "template": gpu_pod(4)}},
                }
            ]
        },
    )
    (pod,) = simulate([*l40s_group(max_size=2), jobset]).pods
    assert (pod.template.count, pod.placed, pod.groups) == (2, 2, {"l40s": 2})


def test_without_an_autoscaler_only_desired_nodes_exist():
    job = Obj(
        "urn:job",
        JOB,
        "job",
        {
            "metadata": {"name": "j", "namespace": "t"},
            "spec": {"parallelism": 1, "template": gpu_pod(1)},
        },
    )
    (pod,) = simulate([*l40s_group(autoscaled=False), job]).pods
    assert pod.reason == (
        "no nodes available to schedule pods. Node group(s) l40s stay at their desired size: "
        "nothing scales them (no Cluster Autoscaler, or its discovery tags are missing)."
    )
    assert pod.placed == 0


def test_hostname_spread_and_anti_affinity_hold_one_pod_per_node():
    anti = {
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": "x"}},
                    }
                ]
            }
        }
    }
    deployment = Obj(
        "urn:d",
        DEPLOYMENT,
        "d",
        {
            "metadata": {"name": "d", "namespace": "s"},
            "spec": {"replicas": 3, "template": gpu_pod(1, **anti)},
        },
    )
    (pod,) = simulate([*l40s_group(max_size=2), deployment]).pods
    assert (pod.placed, pod.groups) == (2, {"l40s": 2})
    assert pod.reason == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."


def test_required_node_affinity_not_in_excludes_the_group():
    affinity = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "node.kubernetes.io/instance-type",
                                    "operator": "NotIn",
                                    "values": ["g6e.12xlarge"],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    }
    job = Obj(
        "urn:job",
        JOB,
        "job",
        {"metadata": {"name": "j", "namespace": "t"}, "spec": {"template": gpu_pod(1, **affinity)}},
    )
    (pod,) = simulate([*l40s_group(), job]).pods
    assert (
        pod.reason
        == "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )


def test_a_capacity_block_is_noted_as_existing_only_in_its_window(stack_report):
    notes = stack_report("prod").scheduling.notes
    assert any(n.startswith("node group h200-block is a Capacity Block") for n in notes)
