"""What one training pod requests of its node: the training side of `workloads.pods.pod_size`.

Config validation (`infra.config.capacity`) checks these sizes against Kubernetes admission
before any resource is declared, so this module imports no Pulumi (and no torch).
"""

from __future__ import annotations

from infra.config import GpuNodeGroupConfig
from workloads import pods

# The pod takes this share of the node's CPU and memory; the rest is for the kubelet and
# the node's daemons (CNI, device plugins, DCGM, FSx CSI node, Pod Identity agent).
NODE_SHARE = 0.85
SHM_MAX_GIB = 64
SCRATCH_GIB = 50  # /tmp: torch.compile and Triton caches, torchrun's error files


def pod_size(group: GpuNodeGroupConfig) -> pods.PodSize:
    """One pod per node: the node's GPUs and EFA interfaces, most of its CPU and memory."""
    return pods.pod_size(
        group, node_share=NODE_SHARE, shm_max_gib=SHM_MAX_GIB, efa=True, ephemeral_gib=SCRATCH_GIB
    )
