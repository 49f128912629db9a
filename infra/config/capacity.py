"""Admission before deploy: the stack's workloads at max scale fit their namespaces' quotas and
their node groups' GPUs, and the quotas a namespace does not set are derived from the node
groups its workloads use.

Checked at config validation (exit 2, before any resource is declared), from the same pod
sizes the workloads render (`workloads.training.sizing.pod_size`, `workloads.serving.sizing
.pod_size`), so that what Kubernetes admission would refuse at `pulumi up` (a pod over its
namespace's ResourceQuota is rejected with 403 "exceeded quota") or what could never get
nodes (more GPUs than a group holds at max) fails here:

- per namespace: the sum over its jobs (nodes x per-pod requests) and endpoints
  (`replicas_max` x pods per replica x per-pod requests) of CPU, memory, GPUs, EFA interfaces
  and pods, against the namespace's quota;
- per node group: the GPUs of every job and endpoint on it at max, against
  `max_size x GPUs per node`.

Derived quotas: a namespace that does not set `cpu_quota`, `memory_quota`, `gpu_quota` or
`efa_quota` gets, for each, the sum over the node groups its workloads run on of `max_size x`
one node's allocatable amount (`infra.cluster.node_shape`): everything those groups can hold,
so the namespace's own workloads always fit and a runaway one is still bounded by the groups.
A namespace without workloads keeps the schema's defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.cluster.node_shape import GIB, allocatable, ephemeral_storage_gib, max_pods
from infra.contracts import EFA_RESOURCE, GPU_RESOURCE

if TYPE_CHECKING:
    from infra.config.schema import GpuNodeGroupConfig, NamespaceConfig, StackConfig
    from workloads.pods import PodSize

RESOURCES = ("cpu", "memory", "gpus", "efa", "pods")
# the quota keys of NamespaceConfig, per resource
QUOTA_FIELDS = {
    "cpu": "cpu_quota",
    "memory": "memory_quota",
    "gpus": "gpu_quota",
    "efa": "efa_quota",
    "pods": "pod_quota",
}
_UNITS = {
    "cpu": "CPU",
    "memory": "GiB memory",
    "gpus": "GPUs",
    "efa": "EFA interfaces",
    "pods": "pods",
}


@dataclass(frozen=True)
class Demand:
    """One workload at max scale: `pods` pods of `per_pod` each, on one node group."""

    key: str  # training[0], serving[1]
    name: str
    namespace: str
    group: str
    pods: int
    per_pod: dict[str, float]  # cpu cores, memory GiB, gpus, efa, pods
    gpus: int  # GPUs at max scale

    def total(self, resource: str) -> float:
        return self.pods * self.per_pod.get(resource, 0.0)

    def describe(self, resource: str) -> str:
        each = _fmt(self.per_pod.get(resource, 0.0))
        return f"{self.key} {self.name}: {self.pods} pods x {each}"


def _fmt(amount: float) -> str:
    return str(int(amount)) if float(amount).is_integer() else f"{amount:.2f}"


def demands(config: StackConfig) -> list[Demand]:
    """Every job and endpoint of the stack at max scale, with its per-pod requests."""
    from workloads.serving.fit import Topology
    from workloads.serving.sizing import pod_size as serving_pod_size
    from workloads.training.sizing import pod_size as training_pod_size

    out: list[Demand] = []
    for i, job in enumerate(config.training):
        group = config.cluster.node_group(job.node_group)
        if group is None:
            continue
        size = training_pod_size(group)
        per_pod = _per_pod(size)
        gpus = job.nodes * size.gpus
        out.append(
            Demand(f"training[{i}]", job.name, job.namespace, group.name, job.nodes, per_pod, gpus)
        )
    for i, svc in enumerate(config.serving):
        group = config.cluster.node_group(svc.node_group)
        if group is None:
            continue
        topo = Topology(svc.gpus_per_replica, group.instance.gpu_count)
        size = serving_pod_size(svc, group, topo.tensor_parallel)
        per_pod = _per_pod(size)
        pods = svc.replicas_max * topo.nodes_per_replica
        gpus = svc.replicas_max * svc.gpus_per_replica
        out.append(
            Demand(f"serving[{i}]", svc.name, svc.namespace, group.name, pods, per_pod, gpus)
        )
    return out


def _per_pod(size: PodSize) -> dict[str, float]:
    """A workload pod's requests in the units of `RESOURCES`."""
    return {
        "cpu": size.cpu,
        "memory": size.memory_gib,
        "gpus": size.gpus,
        "efa": size.efa,
        "pods": 1,
    }


def node_capacity(group: GpuNodeGroupConfig) -> dict[str, float]:
    """One node's allocatable amounts, in the units of `Demand.per_pod`."""
    instance = group.instance
    efa = instance.efa_interfaces if group.efa_enabled else 0
    node = allocatable(
        instance,
        pods=max_pods(instance),
        ephemeral_gib=ephemeral_storage_gib(instance, group.root_volume_gb),
        efa=efa,
    )
    return {
        "cpu": node.cpu,
        "memory": node.memory / GIB,
        "gpus": node.gpus,
        "efa": node.efa,
        "pods": node.pods,
    }


@dataclass(frozen=True)
class Quota:
    """A namespace's hard limits (CPU cores, memory GiB, counts) and which were derived."""

    namespace: str
    amounts: dict[str, float]
    derived: dict[str, str] = field(default_factory=dict)  # resource -> how it was derived

    def hard(self) -> dict[str, str]:
        """The ResourceQuota's `spec.hard`."""
        return {
            f"requests.{GPU_RESOURCE}": str(int(self.amounts["gpus"])),
            "requests.cpu": str(int(self.amounts["cpu"]))
            if float(self.amounts["cpu"]).is_integer()
            else f"{math.floor(self.amounts['cpu'] * 1000)}m",
            "requests.memory": f"{int(self.amounts['memory'])}Gi",
            f"requests.{EFA_RESOURCE}": str(int(self.amounts["efa"])),
            "pods": str(int(self.amounts["pods"])),
        }


def _explicit(ns: NamespaceConfig, resource: str) -> Any:
    key = QUOTA_FIELDS[resource]
    return getattr(ns, key) if key in ns.model_fields_set else None


def _schema_amount(ns: NamespaceConfig, resource: str) -> float:
    from infra.plan.scheduling import parse_quantity

    value = getattr(ns, QUOTA_FIELDS[resource])
    if resource == "memory":
        return parse_quantity(value) / GIB
    return parse_quantity(value)


def quotas(config: StackConfig) -> dict[str, Quota]:
    """Every namespace's quota: what it sets, else derived from its workloads' node groups."""
    work = demands(config)
    out: dict[str, Quota] = {}
    for ns in config.security.namespaces:
        groups = sorted({d.group for d in work if d.namespace == ns.name})
        amounts: dict[str, float] = {}
        derived: dict[str, str] = {}
        for resource in RESOURCES:
            explicit = _explicit(ns, resource)
            if explicit is not None or not groups or resource == "pods":
                amounts[resource] = _schema_amount(ns, resource)
                continue
            parts = []
            total = 0.0
            for name in groups:
                group = config.cluster.node_group(name)
                assert group is not None  # demands() kept only known groups
                per_node = node_capacity(group)[resource]
                total += group.max_size * per_node
                parts.append(f"{name} {group.max_size} x {_fmt(per_node)}")
            amounts[resource] = (
                math.floor(total) if resource != "cpu" else math.floor(total * 1000) / 1000
            )
            derived[resource] = " + ".join(parts)
        out[ns.name] = Quota(ns.name, amounts, derived)
    return out


def admission_problem(config: StackConfig) -> tuple[str, Any, str] | None:
    """(key, value, allowed) of the first workload set that would not be admitted or placed
    at max scale, else None."""
    work = demands(config)
    index = {ns.name: i for i, ns in enumerate(config.security.namespaces)}
    for i, group in enumerate(config.cluster.gpu_node_groups):
        mine = [d for d in work if d.group == group.name]
        need = sum(d.gpus for d in mine)
        have = group.max_size * group.instance.gpu_count
        if need > have:
            parts = "; ".join(f"{d.key} {d.name}: {d.gpus}" for d in mine)
            return (
                f"cluster.gpu_node_groups[{i}].max_size",
                group.max_size,
                f"node group {group.name}'s workloads need {need} GPUs at max scale ({parts}) "
                f"but {group.max_size} nodes x {group.instance.gpu_count} GPUs hold {have}; raise "
                f"max_size to at least {math.ceil(need / group.instance.gpu_count)}",
            )
    for name, quota in quotas(config).items():
        mine = [d for d in work if d.namespace == name]
        for resource in RESOURCES:
            need = sum(d.total(resource) for d in mine)
            limit = quota.amounts[resource]
            if need <= limit + 1e-9:
                continue
            key = f"security.namespaces[{index[name]}].{QUOTA_FIELDS[resource]}"
            parts = "; ".join(d.describe(resource) for d in mine if d.total(resource))
            value = (
                f"derived {_fmt(limit)} ({quota.derived[resource]})"
                if resource in quota.derived
                else getattr(config.security.namespaces[index[name]], QUOTA_FIELDS[resource])
            )
            return (
                key,
                value,
                f"namespace {name}'s workloads need {_fmt(need)} {_UNITS[resource]} at max scale "
                f"({parts}) but the quota allows {_fmt(limit)}; raise it to at least "
                f"{_fmt(math.ceil(need))}, or unset it to derive it from the node groups",
            )
    return None
