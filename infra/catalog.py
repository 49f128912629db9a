"""The GPU catalog: one data file (`infra/data/catalog.json`) read by node groups, workloads,
cost and preflight, so an instance type's GPUs, EFA interfaces and price are stated once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CATALOG_PATH = Path(__file__).resolve().parent / "data" / "catalog.json"


@dataclass(frozen=True)
class InstanceType:
    """Hardware facts and the on-demand price of one EC2 instance type."""

    name: str
    vcpus: int
    memory_mib: int
    gpu: str | None
    gpu_count: int
    gpu_memory_mib: int
    efa_interfaces: int
    network_cards: int
    max_network_interfaces: int
    ipv4_per_interface: int
    nvme_disks: int
    nvme_disk_gb: int
    on_demand_hourly_usd: float

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def efa_supported(self) -> bool:
        return self.efa_interfaces > 0

    @property
    def gpu_memory_gib(self) -> float:
        return self.gpu_memory_mib / 1024

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def has_instance_store(self) -> bool:
        return self.nvme_disks > 0

    @property
    def max_pods(self) -> int:
        """EKS max pods without prefix delegation: ENIs x (IPs per ENI - 1) + 2, capped at 250."""
        return min(250, self.max_network_interfaces * (self.ipv4_per_interface - 1) + 2)


@dataclass(frozen=True)
class GpuKind:
    """A GPU kind users name in config (`H100`, `A100-80G`, `L4`, ...)."""

    name: str
    gpu: str
    role: str  # "training" or "serving": serving kinds may use spot, training kinds get EFA
    instance_types: tuple[str, ...]
    peak_bf16_tflops: float

    @property
    def default_instance_type(self) -> str:
        return self.instance_types[0]


@dataclass(frozen=True)
class Region:
    name: str
    zones: dict[str, str]  # zone name -> zone id
    offerings: dict[str, tuple[str, ...]]  # instance type -> zone names offering it

    def offers(self, instance_type: str, zone: str) -> bool:
        return zone in self.offerings.get(instance_type, ())


@dataclass(frozen=True)
class Catalog:
    date: str
    sources: dict[str, str]
    instance_types: dict[str, InstanceType]
    kinds: dict[str, GpuKind]
    regions: dict[str, Region]
    gpu_peaks_tflops: dict[str, float]

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instance_types[name]
        except KeyError:
            raise KeyError(
                f"instance type {name!r} is not in the catalog; known: "
                + ", ".join(sorted(self.instance_types))
            ) from None

    def kind(self, name: str) -> GpuKind:
        try:
            return self.kinds[name]
        except KeyError:
            raise KeyError(
                f"GPU kind {name!r} is not in the catalog; known: " + ", ".join(self.kinds)
            ) from None

    def region(self, name: str) -> Region:
        try:
            return self.regions[name]
        except KeyError:
            raise KeyError(
                f"region {name!r} is not in the catalog; known: " + ", ".join(self.regions)
            ) from None


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """Load (once per process) the catalog data file."""
    raw = json.loads(path.read_text())
    instance_types = {
        name: InstanceType(name=name, **facts) for name, facts in raw["instance_types"].items()
    }
    peaks = {gpu: float(info["peak_bf16_tflops"]) for gpu, info in raw["gpus"].items()}
    kinds = {
        name: GpuKind(
            name=name,
            gpu=info["gpu"],
            role=info["role"],
            instance_types=tuple(info["instance_types"]),
            peak_bf16_tflops=peaks[info["gpu"]],
        )
        for name, info in raw["kinds"].items()
    }
    regions = {
        name: Region(
            name=name,
            zones=dict(info["zones"]),
            offerings={t: tuple(z) for t, z in info["offerings"].items()},
        )
        for name, info in raw["regions"].items()
    }
    return Catalog(
        date=raw["date"],
        sources=dict(raw["sources"]),
        instance_types=instance_types,
        kinds=kinds,
        regions=regions,
        gpu_peaks_tflops=peaks,
    )
