"""Capacity rules: every pod the stack declares can be placed at max scale (the plan's
scheduling simulation, `infra.plan.scheduling`, run on what CrossGuard hands the pack), and
NetworkPolicies are enforced by some engine rather than stored and ignored."""

from __future__ import annotations

import json
from typing import Any

from infra.plan.scheduling import Obj, simulate
from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleStackPolicy,
    StackView,
    cis_eks,
    is_unknown,
)

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
EKS_ADDON = "aws:eks/addon:Addon"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
# Helm charts of NetworkPolicy engines other than the VPC CNI's agent.
ENGINE_CHARTS = ("cilium", "calico", "tigera-operator", "antrea")

K8S_SCHEDULABLE = RuleInfo(
    id="k8s-schedulable",
    title="Every pod can be scheduled at max scale",
    description="Each pod template (Jobs, Deployments, LeaderWorkerSets, JobSets, add-on "
    "DaemonSets), at its maximum replicas, is admitted by its namespace's ResourceQuota and "
    "fits a node its node group can have (allocatable CPU, memory, GPUs, EFA, pods, ephemeral "
    "storage; labels, taints, affinity, hostname spread), with something to bring the nodes.",
    severity="high",
    remediation="Raise the node group's max_size or the namespace's quota, fix the pod's node "
    "selector or tolerations, or lower the workload's replicas, nodes or requests.",
    kind="stack",
)

K8S_NETWORK_POLICY_ENFORCED = RuleInfo(
    id="k8s-network-policy-enforced",
    title="NetworkPolicies are enforced",
    description="A stack that declares NetworkPolicies runs an engine that enforces them: the "
    'VPC CNI add-on with `"enableNetworkPolicy": "true"` in its configuration, or a Cilium, '
    "Calico or Antrea release. Without one, the API server stores the policies and nothing "
    "filters a packet.",
    severity="high",
    remediation='Set `"enableNetworkPolicy": "true"` in the vpc-cni add-on\'s configuration '
    "values (VPC CNI v1.14.0 or later, EKS 1.25 or later), or install another engine.",
    controls=(cis_eks("5.4.4"),),
    kind="stack",
)


def _objects(view: StackView) -> list[Obj]:
    out = []
    for r in view.resources:
        parent = getattr(r, "parent", None)
        out.append(
            Obj(
                urn=r.urn,
                type=r.resource_type,
                name=r.name,
                props=view.props[r.urn],
                parent=getattr(parent, "urn", None),
                id=view.props[r.urn].get("id"),
            )
        )
    return out


def check_schedulable(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    result = simulate(_objects(view))
    for pod in result.pending:
        t = pod.template
        report(
            f"{t.label}: {pod.placed} of {t.count} pods can be placed at max scale; "
            f"the rest stay Pending: {pod.reason}",
            t.workload.urn,
        )


def vpc_cni_enforces(props: dict[str, Any]) -> bool:
    """Whether a vpc-cni add-on's configuration starts its network policy agent."""
    raw = props.get("configurationValues")
    if not isinstance(raw, str) or is_unknown(raw):
        return False
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        return False
    return isinstance(config, dict) and str(config.get("enableNetworkPolicy")).lower() == "true"


def check_network_policy_enforced(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    policies = list(view.of_type(NETWORK_POLICY))
    if not policies:
        return
    cni = [a for a in view.of_type(EKS_ADDON) if view.props[a.urn].get("addonName") == "vpc-cni"]
    if any(vpc_cni_enforces(view.props[a.urn]) for a in cni):
        return
    engines = [
        r
        for r in view.of_type(HELM_RELEASE)
        if str(view.props[r.urn].get("chart", "")).rsplit("/", 1)[-1] in ENGINE_CHARTS
    ]
    if engines:
        return
    where = (
        'the vpc-cni add-on\'s configuration lacks "enableNetworkPolicy": "true"'
        if cni
        else "the stack has no vpc-cni add-on"
    )
    report(
        f"{len(policies)} NetworkPolicies are declared but nothing enforces them: {where}, and no "
        "Cilium, Calico or Antrea release is installed",
        cni[0].urn if cni else None,
    )


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleStackPolicy(K8S_SCHEDULABLE, settings, check_schedulable),
        RuleStackPolicy(K8S_NETWORK_POLICY_ENFORCED, settings, check_network_policy_enforced),
    ]
