"""The names infra, workloads and policies must agree on: labels, taints, namespaces, UIDs, addresses.

Each value here is read by another system or by another part of llmcloud (node groups set a
label, workloads select it, the policy pack checks it), so it is defined once and imported
everywhere. Plain constants only: the policy pack imports this module in its own virtualenv.
"""

from __future__ import annotations

from typing import Any, Final

# --- node groups: labels every node carries, the taint GPU nodes carry -------------------
NODE_GROUP_LABEL: Final = "llmcloud.io/node-group"  # value: the node group's name
GPU_KIND_LABEL: Final = "llmcloud.io/gpu-kind"  # value: the catalog's GPU kind (H100, ...)
INSTANCE_TYPE_LABEL: Final = "llmcloud.io/instance-type"
CAPACITY_LABEL: Final = "llmcloud.io/capacity"
AMI_LABEL: Final = "llmcloud.io/ami"
# Set by us so the device plugins' DaemonSets select GPU / EFA nodes before their own
# feature discovery runs.
GPU_PRESENT_LABEL: Final = "nvidia.com/gpu.present"
EFA_PRESENT_LABEL: Final = "vpc.amazonaws.com/efa.present"
SYSTEM_GROUP: Final = "system"  # the system node group's name (and NODE_GROUP_LABEL value)

# GPU nodes carry `nvidia.com/gpu=true:NoSchedule`; only pods that tolerate it land there.
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
GPU_TAINT_EFFECT: Final = "NoSchedule"  # the Kubernetes spelling (EKS API: NO_SCHEDULE)
# Taint effects as the EKS node group API spells them -> as Kubernetes does
# (https://docs.aws.amazon.com/eks/latest/APIReference/API_Taint.html).
EKS_TAINT_EFFECTS: Final = {
    "NO_SCHEDULE": "NoSchedule",
    "NO_EXECUTE": "NoExecute",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
}


GPU_TAINT_VALUE: Final = "true"


def gpu_toleration() -> dict[str, str]:
    """The toleration of the GPU taint (a fresh dict: callers may embed it in manifests)."""
    return {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}


def gpu_taint() -> dict[str, str]:
    """The GPU taint as Kubernetes shows it on a node."""
    return {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}


def tolerates(tolerations: Any, taint: dict[str, str]) -> bool:
    """Does a pod's `tolerations` list tolerate a node's taint? The scheduler's rule
    (Kubernetes "Taints and Tolerations"): an empty effect matches every effect; `Exists`
    with no key tolerates everything; `Exists` matches the key; `Equal` (the default) also
    needs the value. Entries that are not mappings tolerate nothing."""
    for t in tolerations if isinstance(tolerations, list | tuple) else ():
        if not isinstance(t, dict):
            continue
        effect = t.get("effect")
        if effect and effect != taint["effect"]:
            continue
        op = t.get("operator") or "Equal"
        key = t.get("key")
        if op == "Exists" and (not key or key == taint["key"]):
            return True
        if op == "Equal" and key == taint["key"] and str(t.get("value") or "") == taint["value"]:
            return True
    return False


# --- extended resources, advertised by the device plugins --------------------------------
GPU_RESOURCE: Final = "nvidia.com/gpu"  # NVIDIA device plugin
EFA_RESOURCE: Final = "vpc.amazonaws.com/efa"  # AWS EFA device plugin

# --- namespaces ---------------------------------------------------------------------------
KUBE_SYSTEM: Final = "kube-system"
# Namespaces Kubernetes itself owns; workloads never run there.
SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
MONITORING_NAMESPACE: Final = "monitoring"  # kube-prometheus-stack; scrapes workload metrics
# Names a stack's `security.namespaces` may not take: Kubernetes' own, and ours.
RESERVED_NAMESPACES: Final = ("default", *SYSTEM_NAMESPACES, MONITORING_NAMESPACE)
# Set by the API server on every namespace (Kubernetes >= 1.22): what NetworkPolicies select.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
# CoreDNS's pods in kube-system (the EKS add-on keeps the kube-dns label).
KUBE_DNS_SELECTOR: Final = {"k8s-app": "kube-dns"}
DNS_PORT: Final = 53

# --- workload labels ------------------------------------------------------------------------
WORKLOAD_LABEL: Final = "llmcloud.io/workload"  # value: "training" or "serving"
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
PART_OF: Final = "llmcloud"

# --- identity ----------------------------------------------------------------------------------
# The UID (and GID) workload containers run as: the trainer image's `trainer` user, and vLLM's
# images, which run as root by default and need none of it. Above 10000: never a host account.
RUN_AS_UID: Final = 10001
# The EKS Pod Identity agent, a link-local address on every node where pods get their pod
# role's credentials (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html).
POD_IDENTITY_AGENT_IP: Final = "169.254.170.23"
POD_IDENTITY_AGENT_CIDR: Final = f"{POD_IDENTITY_AGENT_IP}/32"
POD_IDENTITY_AGENT_PORT: Final = 80
# The audience of the tokens IRSA exchanges with STS (AssumeRoleWithWebIdentity).
STS_AUDIENCE: Final = "sts.amazonaws.com"
