"""Does a model fit its GPUs? The memory arithmetic behind a serving entry, run by config
validation before any resource is declared.

vLLM needs the weights plus room for the KV cache of at least one sequence of
`max_model_len` tokens inside `gpu_memory_utilization` of each GPU's memory; if it does not
get that, the pod crash-loops after minutes of loading. We catch it at config time, and say
how many GPUs of which kind would fit.

The estimate, stated so a reader can check it:
- weights: parameters x bytes per parameter of the dtype (bf16/fp16 2, fp8 1, AWQ/GPTQ 4-bit
  0.6: half a byte plus group scales/zeros and the unquantized embeddings and head);
- KV cache per token: 2 (K and V) x layers x KV heads x head dim x 2 bytes (fp16/bf16 cache),
  with the shape taken from the reference table below (grouped-query attention with 8 KV
  heads of dim 128, the shape of current Llama/Qwen/Mistral models, layers by size class),
  unless the entry gives `kv_cache_bytes_per_token` from the model's config.json;
- runtime overhead: activations, CUDA graphs and NCCL buffers, 1 GiB per GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra.catalog import load_catalog

if TYPE_CHECKING:
    from infra.config import GpuNodeGroupConfig, ServingConfig

GIB = 1024**3
GB = 1000**3

BYTES_PER_PARAM = {"auto": 2.0, "bfloat16": 2.0, "float16": 2.0}
QUANTIZED_BYTES_PER_PARAM = {"fp8": 1.0, "awq": 0.6, "gptq": 0.6}
KV_CACHE_DTYPE_BYTES = 2
RUNTIME_OVERHEAD_GIB_PER_GPU = 1.0
# Free local disk a node keeps for images (the vLLM image alone is ~10 GB), logs and caches.
LOCAL_DISK_HEADROOM_FRACTION = 0.2

# (largest parameter count in billions, layers, KV heads, head dim): the deepest common
# model of each size class, so the estimate errs on the large side.
REFERENCE_SHAPES: tuple[tuple[float, int, int, int], ...] = (
    (2.0, 28, 8, 128),
    (4.5, 36, 8, 128),
    (9.0, 36, 8, 128),
    (15.0, 48, 8, 128),
    (35.0, 64, 8, 128),
    (75.0, 80, 8, 128),
    (130.0, 96, 8, 128),
    (410.0, 126, 8, 128),
)


class FitError(Exception):
    """A serving entry that cannot run as configured; `field` is the key to change."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.message = message


@dataclass(frozen=True)
class MemoryEstimate:
    """What one replica needs, in bytes."""

    weights_bytes: float
    kv_cache_bytes: float
    overhead_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


@dataclass(frozen=True)
class Topology:
    """How a replica maps onto nodes: tensor parallel inside a node, pipeline across."""

    gpus_per_replica: int
    gpus_per_node: int

    @property
    def multi_node(self) -> bool:
        return self.gpus_per_replica > self.gpus_per_node

    @property
    def tensor_parallel(self) -> int:
        return self.gpus_per_node if self.multi_node else self.gpus_per_replica

    @property
    def pipeline_parallel(self) -> int:
        return self.gpus_per_replica // self.gpus_per_node if self.multi_node else 1

    @property
    def nodes_per_replica(self) -> int:
        return self.pipeline_parallel

    @property
    def replicas_per_node(self) -> int:
        return 1 if self.multi_node else self.gpus_per_node // self.gpus_per_replica


def bytes_per_param(dtype: str, quantization: str | None) -> float:
    if quantization is not None:
        return QUANTIZED_BYTES_PER_PARAM[quantization]
    return BYTES_PER_PARAM[dtype]


def weights_bytes(params_billion: float, dtype: str, quantization: str | None) -> float:
    return params_billion * 1e9 * bytes_per_param(dtype, quantization)


def checkpoint_bytes(svc: ServingConfig) -> float:
    """Bytes read from S3 at startup. An fp8 entry may point at a bf16 checkpoint that vLLM
    quantizes while loading, so fp8 counts 2 bytes per parameter here (load time errs long)."""
    if svc.quantization == "fp8":
        return svc.params_billion * 1e9 * 2
    return weights_bytes(svc.params_billion, svc.dtype, svc.quantization)


def reference_shape(params_billion: float) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of the reference model for a parameter count; beyond the
    table, layers grow with the cube root of the size."""
    for limit, layers, kv_heads, head_dim in REFERENCE_SHAPES:
        if params_billion <= limit:
            return layers, kv_heads, head_dim
    limit, layers, kv_heads, head_dim = REFERENCE_SHAPES[-1]
    return math.ceil(layers * (params_billion / limit) ** (1 / 3)), kv_heads, head_dim


def kv_bytes_per_token(params_billion: float, override: int | None = None) -> int:
    if override is not None:
        return override
    layers, kv_heads, head_dim = reference_shape(params_billion)
    return 2 * layers * kv_heads * head_dim * KV_CACHE_DTYPE_BYTES


def memory_needed(svc: ServingConfig, gpus: int | None = None) -> MemoryEstimate:
    """Memory one replica needs on `gpus` GPUs (default: the entry's gpus_per_replica)."""
    n = svc.gpus_per_replica if gpus is None else gpus
    return MemoryEstimate(
        weights_bytes=weights_bytes(svc.params_billion, svc.dtype, svc.quantization),
        kv_cache_bytes=kv_bytes_per_token(svc.params_billion, svc.kv_cache_bytes_per_token)
        * svc.max_model_len,
        overhead_bytes=RUNTIME_OVERHEAD_GIB_PER_GPU * GIB * n,
    )


def usable_bytes(gpu_memory_mib: int, gpus: int, utilization: float) -> float:
    return gpu_memory_mib * 1024 * 1024 * gpus * utilization


def gpus_needed(svc: ServingConfig, gpu_memory_mib: int, limit: int = 64) -> int | None:
    """The smallest power-of-two GPU count (tensor/pipeline parallel sizes are powers of two
    for current models) on which the entry fits, or None beyond `limit`."""
    n = 1
    while n <= limit:
        if memory_needed(svc, n).total_bytes <= usable_bytes(
            gpu_memory_mib, n, svc.gpu_memory_utilization
        ):
            return n
        n *= 2
    return None


def alternatives(svc: ServingConfig, first_kind: str) -> list[str]:
    """`8 × L4`, `2 × H100`, ...: the GPU count per catalog kind that would fit, the
    configured kind first, then by GPU memory."""
    catalog = load_catalog()
    kinds = sorted(
        catalog.kinds.values(),
        key=lambda k: (
            k.name != first_kind,
            catalog.instance(k.default_instance_type).gpu_memory_mib,
            k.name,
        ),
    )
    out = []
    for kind in kinds:
        memory_mib = catalog.instance(kind.default_instance_type).gpu_memory_mib
        n = gpus_needed(svc, memory_mib)
        if n is not None:
            out.append(f"{n} × {kind.name}")
    return out


def check_fit(svc: ServingConfig, group: GpuNodeGroupConfig) -> Topology:
    """Raise FitError if the entry cannot run on its node group; return its topology."""
    instance = group.instance
    per_node = instance.gpu_count
    n = svc.gpus_per_replica
    topology = Topology(gpus_per_replica=n, gpus_per_node=per_node)
    if n & (n - 1):
        raise FitError(
            "gpus_per_replica",
            n,
            "tensor and pipeline parallel sizes must divide the model's attention heads and "
            "layers: use a power of two (1, 2, 4, 8, 16, ...)",
        )
    if topology.multi_node and n % per_node:
        raise FitError(
            "gpus_per_replica",
            n,
            f"a replica larger than one node takes whole nodes: {group.name} "
            f"({instance.name}) has {per_node} GPUs per node, so use a multiple of {per_node}",
        )
    need = memory_needed(svc)
    have = usable_bytes(instance.gpu_memory_mib, n, svc.gpu_memory_utilization)
    if need.total_bytes > have:
        fits = alternatives(svc, group.gpu)
        hint = (
            f"it needs ≥ {' or '.join(fits)} (set gpus_per_replica, or node_group to a group of "
            "that kind; quantization fp8/awq also shrinks the weights)"
            if fits
            else "no GPU kind of the catalog fits it in 64 GPUs"
        )
        raise FitError(
            "gpus_per_replica",
            n,
            f"{svc.name} ({svc.params_billion:g}B params, "
            f"{svc.quantization or svc.dtype}) needs {need.total_gib:.1f} GiB "
            f"(weights {need.weights_bytes / GIB:.1f} GiB + KV cache "
            f"{need.kv_cache_bytes / GIB:.1f} GiB for max_model_len {svc.max_model_len} + "
            f"runtime {need.overhead_bytes / GIB:.1f} GiB) but {n} × {group.gpu} "
            f"({instance.gpu_memory_mib / 1024:.1f} GiB each) × gpu_memory_utilization "
            f"{svc.gpu_memory_utilization:g} gives {have / GIB:.1f} GiB; {hint}",
        )
    capacity = group.max_size * per_node
    if svc.replicas_max * n > capacity:
        raise FitError(
            "replicas_max",
            svc.replicas_max,
            f"{svc.replicas_max} replicas × {n} GPUs exceed node group {group.name}: at most "
            f"{group.max_size} nodes × {per_node} GPUs = {capacity}; lower replicas_max or "
            f"raise the group's max_size",
        )
    if svc.loader == "init_sync":
        local_gb = (
            instance.nvme_disks * instance.nvme_disk_gb
            if instance.has_instance_store
            else group.root_volume_gb
        )
        usable_gb = local_gb * (1 - LOCAL_DISK_HEADROOM_FRACTION)
        model_gb = checkpoint_bytes(svc) / GB * topology.replicas_per_node
        if model_gb > usable_gb:
            raise FitError(
                "loader",
                svc.loader,
                f"init_sync copies the model to node-local disk: {model_gb:.0f} GB for "
                f"{topology.replicas_per_node} replica(s) per node, but {instance.name} has "
                f"{usable_gb:.0f} GB to spare of {local_gb} GB; use loader: s3_streamer",
            )
    return topology
