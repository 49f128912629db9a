"""What one node of an instance type offers pods: kubelet's pod limit, ephemeral storage, and
the allocatable CPU, memory and storage left after EKS's kube-reserved and eviction thresholds.

Pure functions of the GPU catalog (no Pulumi imports): the node groups' launch templates and
autoscaler tags, the config's admission check, and the plan's scheduling simulation (which the
policy pack also runs, in its own virtualenv) all read these, so a node is sized once.

The reservations are nodeadm's, the bootstrap of the EKS AL2023 AMIs (awslabs/amazon-eks-ami
v20260724, nodeadm/internal/kubelet/config.go): kube-reserved CPU 6 % of the first core, 1 % of
the second, 0.5 % of the third and fourth, 0.25 % of every other core
(`getCPUMillicoresToReserve`); kube-reserved memory 11 MiB per pod + 255 MiB
(`getMemoryMebibytesToReserve`); kube-reserved ephemeral storage 1 GiB; eviction at
`memory.available` 100 MiB and `nodefs.available` 10 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import InstanceType
from infra.contracts import EFA_RESOURCE, GPU_RESOURCE

# Prefix delegation gives each ENI slot 16 addresses; kubelet caps stay at the values EKS
# recommends (110 below 30 vCPUs, 250 above) so the API server is not flooded.
IPV4_PER_PREFIX = 16
MAX_PODS_SMALL, MAX_PODS_LARGE, LARGE_NODE_VCPUS = 110, 250, 30

MIB = 2**20
GIB = 2**30
# nodeadm: (upper bound of the range in millicores, reserved per 10000 of it)
_CPU_RESERVE_RANGES = ((1000, 600), (2000, 100), (4000, 50), (None, 25))
MEMORY_RESERVED_PER_POD_MIB = 11
MEMORY_RESERVED_BASE_MIB = 255
EPHEMERAL_RESERVED_GIB = 1
EVICTION_MEMORY_MIB = 100
EVICTION_NODEFS_FRACTION = 0.10


def max_pods(instance: InstanceType) -> int:
    """Pods per node with VPC CNI prefix delegation, capped at EKS's recommended kubelet maximum."""
    cap = MAX_PODS_LARGE if instance.vcpus >= LARGE_NODE_VCPUS else MAX_PODS_SMALL
    by_addresses = (
        instance.max_network_interfaces * (instance.ipv4_per_interface - 1) * IPV4_PER_PREFIX + 2
    )
    return min(cap, by_addresses)


def ephemeral_storage_gib(instance: InstanceType, root_volume_gb: int) -> int:
    """What kubelet reports as the node's ephemeral-storage capacity: the NVMe instance store
    striped into RAID0 where the instance has one (containerd and kubelet live there), else
    the volume that holds them (the root volume on AL2023, the data volume on Bottlerocket)."""
    if instance.has_instance_store:
        return instance.nvme_disks * instance.nvme_disk_gb * 10**9 // GIB
    return root_volume_gb


def kube_reserved_cpu_millicores(vcpus: int) -> int:
    total = vcpus * 1000
    reserved, start = 0, 0
    for end, per_10000 in _CPU_RESERVE_RANGES:
        top = total if end is None else min(total, end)
        if total > start:
            reserved += (top - start) * per_10000 // 10000
        if end is None:
            break
        start = end
    return reserved


@dataclass(frozen=True)
class Allocatable:
    """A node's allocatable resources in base units (cores, bytes, counts)."""

    cpu: float
    memory: float
    ephemeral_storage: float
    pods: int
    gpus: int
    efa: int

    def as_resources(self) -> dict[str, float]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "ephemeral-storage": self.ephemeral_storage,
            "pods": float(self.pods),
            GPU_RESOURCE: float(self.gpus),
            EFA_RESOURCE: float(self.efa),
        }


def allocatable(
    instance: InstanceType, *, pods: int, ephemeral_gib: float, efa: int
) -> Allocatable:
    """Capacity minus kube-reserved minus the hard eviction threshold, as kubelet reports it.
    Memory starts from the instance type's nominal size (the kernel keeps a little more)."""
    memory = (
        instance.memory_mib
        - MEMORY_RESERVED_PER_POD_MIB * pods
        - MEMORY_RESERVED_BASE_MIB
        - EVICTION_MEMORY_MIB
    ) * MIB
    storage = ephemeral_gib * GIB
    return Allocatable(
        cpu=(instance.vcpus * 1000 - kube_reserved_cpu_millicores(instance.vcpus)) / 1000,
        memory=float(memory),
        ephemeral_storage=storage
        - EPHEMERAL_RESERVED_GIB * GIB
        - EVICTION_NODEFS_FRACTION * storage,
        pods=pods,
        gpus=instance.gpu_count,
        efa=efa,
    )
