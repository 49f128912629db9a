"""What one vLLM pod requests of its node: the serving side of `workloads.pods.pod_size`.

Config validation (`infra.config.capacity`) checks these sizes against Kubernetes admission
before any resource is declared, so this module imports no Pulumi: loading a stack config
(`llmcloud audit`, `preflight`, the plan's own config step) never pays for the SDK.
"""

from __future__ import annotations

import math

from infra.config import GpuNodeGroupConfig, ServingConfig
from workloads import pods
from workloads.serving.fit import GIB, Topology, checkpoint_bytes

# A pod takes this share of its GPUs' slice of the node's CPU and memory; the rest is for
# the kubelet, system daemons (CNI, device plugin, DCGM exporter) and the page cache.
NODE_SHARE = 0.75
SHM_MAX_GIB = 16
CACHE_DISK_GIB = 20  # torch.compile / Triton / FlashInfer caches, logs


def pod_size(svc: ServingConfig, group: GpuNodeGroupConfig, gpus: int) -> pods.PodSize:
    """Requests (= limits) of the vLLM container: its GPUs' share of the node, and disk for
    the synced model and the caches. A pod of a multi-node replica holds a whole node and
    requests its EFA interfaces (where the group has them): tensor and pipeline traffic
    between the nodes goes over NCCL, which falls back to TCP without them."""
    model_gib = math.ceil(checkpoint_bytes(svc) * 1.1 / GIB) if svc.loader == "init_sync" else 0
    return pods.pod_size(
        group,
        node_share=NODE_SHARE,
        shm_max_gib=SHM_MAX_GIB,
        gpus=gpus,
        efa=Topology(svc.gpus_per_replica, group.instance.gpu_count).multi_node,
        ephemeral_gib=model_gib + CACHE_DISK_GIB,
    )
