"""The pod parts every GPU workload shares: sizing from the catalog, security contexts, resources, placement.

Training (`workloads/training/job.py`) and serving (`workloads/serving/service.py`) build
their pod templates from these, so a pod's share of a node, the restricted security context
and the way a pod lands on its node group are decided in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from infra.config import GpuNodeGroupConfig
from infra.contracts import (
    DNS_PORT,
    EFA_RESOURCE,
    GPU_RESOURCE,
    KUBE_DNS_SELECTOR,
    KUBE_SYSTEM,
    NAMESPACE_NAME_LABEL,
    NODE_GROUP_LABEL,
    POD_IDENTITY_AGENT_CIDR,
    POD_IDENTITY_AGENT_PORT,
    RUN_AS_UID,
    gpu_toleration,
)

MIN_MEMORY_GIB = 4
SHM_MOUNT = "/dev/shm"
# /dev/shm takes a quarter of the pod's memory (NCCL's and DataLoader's shared buffers), at most
# the workload's cap.
SHM_SHARE_OF_MEMORY = 4


@dataclass(frozen=True)
class PodSize:
    """Requests (= limits) of a workload's main container, and its in-memory /dev/shm."""

    cpu: int
    memory_gib: int
    shm_gib: int
    gpus: int
    efa: int = 0
    ephemeral_gib: int = 0


def pod_size(
    group: GpuNodeGroupConfig,
    *,
    node_share: float,
    shm_max_gib: int,
    gpus: int | None = None,
    efa: bool = False,
    ephemeral_gib: int = 0,
) -> PodSize:
    """A pod's slice of one node of `group`: its GPUs' share of the node's CPU and memory,
    times `node_share` (the rest is for the kubelet and the node's daemons).

    `gpus` defaults to the whole node; `efa` requests every EFA interface of the node (when
    the group has EFA enabled), which only a whole-node pod may do."""
    instance = group.instance
    gpus = instance.gpu_count if gpus is None else gpus
    share = gpus / instance.gpu_count
    memory_gib = max(MIN_MEMORY_GIB, math.floor(instance.memory_gib * share * node_share))
    return PodSize(
        cpu=max(1, math.floor(instance.vcpus * share * node_share)),
        memory_gib=memory_gib,
        shm_gib=max(1, min(shm_max_gib, memory_gib // SHM_SHARE_OF_MEMORY)),
        gpus=gpus,
        efa=instance.efa_interfaces if efa and group.efa_enabled else 0,
        ephemeral_gib=ephemeral_gib,
    )


def guaranteed_resources(
    cpu: int,
    memory_gib: int,
    *,
    gpus: int = 0,
    efa: int = 0,
    ephemeral_gib: int = 0,
) -> dict[str, dict[str, str]]:
    """Requests equal to limits (Guaranteed QoS: the last pods the kubelet evicts). Extended
    resources (GPUs, EFA) must have requests = limits anyway; ephemeral storage is requested
    only, so the kubelet schedules for it without evicting at the exact byte."""
    amounts = {"cpu": str(cpu), "memory": f"{memory_gib}Gi"}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    if efa:
        amounts[EFA_RESOURCE] = str(efa)
    requests = dict(amounts)
    if ephemeral_gib:
        requests["ephemeral-storage"] = f"{ephemeral_gib}Gi"
    return {"requests": requests, "limits": amounts}


def size_resources(size: PodSize) -> dict[str, dict[str, str]]:
    """`guaranteed_resources` of a `PodSize`."""
    return guaranteed_resources(
        size.cpu, size.memory_gib, gpus=size.gpus, efa=size.efa, ephemeral_gib=size.ephemeral_gib
    )


def restricted_container(*, uid: int | None = None) -> dict[str, Any]:
    """The container security context of the `restricted` Pod Security Standard, with a
    read-only root file system. `uid`: run as that UID and GID (else the pod's)."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if uid is not None:
        context.update(runAsUser=uid, runAsGroup=uid)
    return context


def root_container(*, add_capabilities: tuple[str, ...]) -> dict[str, Any]:
    """A root container with only the named capabilities (for an init step that hands a
    shared directory to the workload's user); otherwise as locked down as the rest."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": list(add_capabilities)},
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 0,
        "runAsNonRoot": False,
    }


def pod_security_context(*, uid: int | None = RUN_AS_UID) -> dict[str, Any]:
    """The pod's security context: RuntimeDefault seccomp; with `uid`, every container runs
    as that non-root UID/GID and volumes are group-owned by it. `uid=None` when a container
    of the pod must run as root (it then sets its own)."""
    context: dict[str, Any] = {}
    if uid is not None:
        context = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def gpu_placement(node_group: str) -> dict[str, Any]:
    """`nodeSelector` and `tolerations` of a pod that runs on GPU node group `node_group`."""
    return {"nodeSelector": {NODE_GROUP_LABEL: node_group}, "tolerations": [gpu_toleration()]}


def shm_volume(size: PodSize) -> dict[str, Any]:
    """/dev/shm in memory, capped at the pod's `shm_gib` (it counts against its memory)."""
    return {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{size.shm_gib}Gi"}}


def shm_mount() -> dict[str, str]:
    return {"name": "shm", "mountPath": SHM_MOUNT}


def efa_environment(group: GpuNodeGroupConfig) -> dict[str, str]:
    """libfabric/NCCL settings of a pod that talks over the node's EFA interfaces (empty for a
    group without EFA): the efa provider, fork safety for dataloader/engine subprocesses, no
    huge pages (none reserved on the nodes), GPUDirect RDMA on the p-families that have it."""
    if not group.efa_enabled:
        return {}
    env = {
        "FI_PROVIDER": "efa",
        "FI_EFA_FORK_SAFE": "1",
        "FI_EFA_USE_HUGE_PAGE": "0",
        "NCCL_DEBUG": "WARN",
        "NCCL_SOCKET_IFNAME": "^lo,docker",
    }
    if group.instance.family.startswith("p"):  # GPUDirect RDMA: p4d, p5, p5e, p5en
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return env


def baseline_egress() -> list[dict[str, Any]]:
    """The egress rules every workload pod needs under its namespace's default-deny policy:
    cluster DNS, HTTPS out (AWS APIs, through the VPC endpoints or NAT) and the Pod Identity
    agent on its node (a fresh list: callers append their own peers)."""
    return [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: KUBE_SYSTEM}},
                    "podSelector": {"matchLabels": dict(KUBE_DNS_SELECTOR)},
                }
            ],
            "ports": [
                {"protocol": "UDP", "port": DNS_PORT},
                {"protocol": "TCP", "port": DNS_PORT},
            ],
        },
        {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        },
        {
            "to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT_CIDR}}],
            "ports": [{"protocol": "TCP", "port": POD_IDENTITY_AGENT_PORT}],
        },
    ]
