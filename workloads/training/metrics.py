"""Step metrics: one JSON object per logged step on stdout and in the metrics file, and the
model FLOPs utilization (MFU) when the GPU's bf16 peak is in the catalog.

Standard library only, so the FLOPs formula is testable without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

# The same data file the platform reads (`infra/data/catalog.json`), by path relative to
# this package: the container copies it alongside `workloads/`.
CATALOG_PATH = Path(__file__).resolve().parents[2] / "infra" / "data" / "catalog.json"


def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> int:
    """Training FLOPs per token, 6N + 12·L·H·Q·T (Chinchilla appendix F / PaLM appendix B,
    the formula of nanoGPT and llm-foundry): 6N for the forward and backward matmuls of
    the weights (2 forward, 4 backward), 12·L·H·Q·T for the attention scores and values
    over a context of T tokens. N excludes the position embeddings (a lookup, not a matmul);
    the tied token embedding counts once, as the output projection."""
    return 6 * n_params + 12 * n_layer * n_head * head_dim * seq_len


def gpu_peak_bf16_tflops(device_name: str, catalog_path: Path = CATALOG_PATH) -> float | None:
    """The dense bf16 peak of a GPU named like `torch.cuda.get_device_name()` ("NVIDIA
    H100 80GB HBM3"), from the catalog's `gpus` section; None if it is not listed."""
    try:
        gpus = json.loads(catalog_path.read_text())["gpus"]
    except (OSError, ValueError, KeyError):
        return None
    name = device_name.upper().replace("-", " ")
    words = set(name.split())
    # Longest names first, so "L40S" wins over "L4" and "A100" over "A10G"'s prefix.
    for gpu in sorted(gpus, key=len, reverse=True):
        key = gpu.upper()
        if key in words or any(w.startswith(key) and not w[len(key) :].isalnum() for w in words):
            return float(gpus[gpu]["peak_bf16_tflops"])
    return None


def mfu(
    tokens_per_second: float, flops_token: int, world_size: int, peak_tflops: float | None
) -> float | None:
    """Achieved model FLOPs over the peak of every GPU in the job."""
    if not peak_tflops:
        return None
    return tokens_per_second * flops_token / (world_size * peak_tflops * 1e12)


class MetricsWriter:
    """Writes step records (rank 0 only) as JSON lines to stdout and, appending, to a
    file: a restarted run continues the same file."""

    def __init__(self, path: str, enabled: bool, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.file: IO[str] | None = None
        if enabled and path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, separators=(",", ":"))
        print(line, file=self.stream, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
