"""Token data: synthetic sequences for smoke tests, or token shards read by numpy memmap.

Sampling is a pure function of (seed, sample index): the run's data position is a single
integer (samples consumed so far), saved in checkpoints, and rank r of a world of W takes
its own slice of every global batch. A resumed or re-run job sees exactly the same batches.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from workloads.training.config import Batching, ConfigError

SYNTHETIC_STRIDES = (1, 2, 3, 5)


class SyntheticTokens:
    """Arithmetic progressions modulo the vocabulary, `a, a+d, a+2d, ...` with a random
    start and a stride from a small set: learnable (the loss falls quickly, towards 0) and
    generated in O(seq_len) with numpy."""

    def __init__(self, vocab_size: int, seq_len: int, seed: int) -> None:
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.seed = seed
        self._positions = np.arange(seq_len + 1, dtype=np.int64)

    def sample(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        start = int(rng.integers(self.vocab_size))
        stride = SYNTHETIC_STRIDES[int(rng.integers(len(SYNTHETIC_STRIDES)))]
        return (start + stride * self._positions) % self.vocab_size


class ShardTokens:
    """Non-overlapping windows of `seq_len + 1` tokens from every shard of a directory
    (`*.bin`: raw tokens of `dtype`; `*.npy`: numpy arrays), visited in a fresh seeded
    permutation each epoch. Shards are memory-mapped, never read whole."""

    def __init__(self, directory: str, dtype: str, vocab_size: int, seq_len: int, seed: int):
        root = Path(directory)
        files = sorted(p for p in root.iterdir() if p.suffix in (".bin", ".npy") and p.is_file())
        if not files:
            raise ConfigError(
                f"data = {directory!r}: no token shards (*.bin, *.npy) in this directory"
            )
        self.shards: list[np.ndarray] = []
        for f in files:
            array = np.load(f, mmap_mode="r") if f.suffix == ".npy" else np.memmap(f, dtype, "r")
            if array.ndim != 1 or array.dtype.kind not in "ui":
                raise ConfigError(
                    f"data = {directory!r}: {f.name} holds {array.dtype} of shape {array.shape}; "
                    "allowed: a flat array of integer token ids"
                )
            self.shards.append(array)
        self.names = [f.name for f in files]
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.seed = seed
        windows = np.array([max(0, (len(a) - 1) // seq_len) for a in self.shards], dtype=np.int64)
        self.ends = np.cumsum(windows)
        self.windows = int(self.ends[-1])
        if self.windows == 0:
            raise ConfigError(
                f"data = {directory!r}: no shard holds seq_len + 1 = {seq_len + 1} tokens"
            )

    @lru_cache(maxsize=2)  # noqa: B019 (one instance per run)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.windows)

    def sample(self, index: int) -> np.ndarray:
        epoch, offset = divmod(index, self.windows)
        window = int(self._permutation(epoch)[offset])
        shard = int(np.searchsorted(self.ends, window, side="right"))
        first = window - (int(self.ends[shard - 1]) if shard else 0)
        start = first * self.seq_len
        tokens = np.asarray(self.shards[shard][start : start + self.seq_len + 1], dtype=np.int64)
        top = int(tokens.max())
        if top >= self.vocab_size:
            raise ConfigError(
                f"vocab_size = {self.vocab_size}: token id {top} in {self.names[shard]}; "
                "allowed: a vocab_size larger than every token id of the data"
            )
        return tokens


def token_source(
    data: str, dtype: str, vocab_size: int, seq_len: int, seed: int
) -> SyntheticTokens | ShardTokens:
    if data == "synthetic":
        return SyntheticTokens(vocab_size, seq_len, seed)
    return ShardTokens(data, dtype, vocab_size, seq_len, seed)


class Batches:
    """This rank's micro batches. Global batch g (samples `position .. position+G-1`) is
    split micro step by micro step, and within one, rank by rank."""

    def __init__(
        self,
        source: SyntheticTokens | ShardTokens,
        batching: Batching,
        rank: int,
        device: torch.device,
        position: int = 0,
    ) -> None:
        self.source = source
        self.batching = batching
        self.rank = rank
        self.device = device
        self.position = position  # samples consumed by the whole job so far

    def micro_batch(self, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batching
        first = self.position + (micro * b.world_size + self.rank) * b.micro_batch
        rows = np.stack([self.source.sample(first + i) for i in range(b.micro_batch)])
        tokens = torch.from_numpy(rows)
        if self.device.type == "cuda":
            tokens = tokens.pin_memory().to(self.device, non_blocking=True)
        return tokens[:, :-1], tokens[:, 1:]

    def advance(self) -> None:
        self.position += self.batching.global_batch
