"""Sharded checkpoints with `torch.distributed.checkpoint`, published atomically.

Layout under `checkpoint_dir` (a file system every rank shares, such as FSx for Lustre):

    step-00001000/              a complete checkpoint: the only kind ever loaded
        .metadata, __*_*.distcp   model and optimizer, sharded by DCP (any world size)
        trainer.json             step, data position, scheduler state
        rng/rank-00000.pt        each rank's RNG states
        COMPLETE                 written last, just before the rename
    .tmp-step-00001500/         being written (or left by a crash): never loaded

Every rank writes into the temp directory; rank 0 then writes the marker and renames the
directory to `step-N`. A directory without the marker is ignored, so a save cut short by a
crash cannot be resumed from. Saves can run in the background (`dcp.async_save`, on its
own gloo process group); the checkpoint is published when the write has finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from workloads.training.faults import fault_point
from workloads.training.layout import (
    COMPLETE,
    TRAINER_STATE,
    complete_checkpoints,
    step_dir_name,
)


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class _Pending:
    step: int
    tmp: Path
    future: Future
    started: float


@dataclass(frozen=True)
class Restored:
    step: int
    path: Path
    trainer: dict[str, Any]


class Checkpointer:
    """Saves, publishes, prunes and loads the checkpoints of one run."""

    def __init__(
        self,
        root: str,
        keep: int,
        *,
        rank: int,
        world_size: int,
        async_save: bool = False,
        upload_uri: str = "",
    ) -> None:
        self.root = Path(root)
        self.keep = keep
        self.rank = rank
        self.world_size = world_size
        self.async_save = async_save
        self.pending: _Pending | None = None
        self.mirror = None
        if upload_uri:
            from workloads.training.s3 import S3Mirror

            self.mirror = S3Mirror(upload_uri, keep=keep, enabled=rank == 0)
        # Background saves talk over their own gloo group: their collectives must not
        # interleave with the training collectives of the default group.
        self.group = dist.new_group(backend="gloo") if async_save else None
        if rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-step-*"):
                shutil.rmtree(stale, ignore_errors=True)
        dist.barrier()

    # ------------------------------------------------------------------ load

    def latest(self) -> Path | None:
        found = complete_checkpoints(self.root)
        return found[-1][1] if found else None

    def restore_from_mirror(self) -> None:
        """With an upload URI and no local checkpoint (a fresh node), fetch the latest
        complete one from S3 first."""
        if self.mirror is not None and self.rank == 0 and self.latest() is None:
            self.mirror.download_latest(self.root)
        dist.barrier()

    def load(
        self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> Restored:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        trainer = json.loads((path / TRAINER_STATE).read_text())
        rng_file = path / "rng" / f"rank-{self.rank:05d}.pt"
        if rng_file.is_file() and trainer.get("world_size") == self.world_size:
            _set_rng_state(torch.load(rng_file, weights_only=False))
        return Restored(step=int(trainer["step"]), path=path, trainer=trainer)

    # ------------------------------------------------------------------ save

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer: dict[str, Any],
    ) -> float:
        """Save step `step`; returns the seconds the training loop was blocked."""
        started = time.perf_counter()
        self.wait()  # one save in flight at a time
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        if self.rank == 0:
            (tmp / "rng").mkdir(parents=True, exist_ok=True)
            _write_file(
                tmp / TRAINER_STATE,
                json.dumps({**trainer, "step": step, "world_size": self.world_size}, indent=1),
            )
        dist.barrier()
        torch.save(_rng_state(), tmp / "rng" / f"rank-{self.rank:05d}.pt")
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        if self.async_save:
            response = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self.group)
            future = response if isinstance(response, Future) else response.upload_completion
            self.pending = _Pending(step, tmp, future, started)
        else:
            dcp.save(state, checkpoint_id=str(tmp))
            self._publish(step, tmp)
            dist.barrier()
        return time.perf_counter() - started

    def poll(self) -> None:
        """Publish a background save that has finished (called every step; cheap)."""
        if self.pending is not None and self.pending.future.done():
            self.wait()

    def wait(self) -> None:
        """Block until the background save (if any) is written and published."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        pending.future.result()  # raises if the write failed
        self._publish(pending.step, pending.tmp)

    def close(self) -> None:
        self.wait()
        dist.barrier()
        if self.mirror is not None:
            self.mirror.close()

    def _publish(self, step: int, tmp: Path) -> None:
        """Rank 0: marker, rename, prune. DCP's save has finished on every rank when it
        returns on rank 0 (rank 0 writes `.metadata` after gathering every rank's writes)."""
        fault_point("save", step, self.rank)
        if self.rank != 0:
            return
        _write_file(tmp / COMPLETE, json.dumps({"step": step, "time": time.time()}))
        _fsync_dir(tmp)
        final = self.root / step_dir_name(step)
        if final.exists():  # an incomplete leftover of the same name: never loadable
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        self._prune()
        if self.mirror is not None:
            self.mirror.upload(final)

    def _prune(self) -> None:
        found = complete_checkpoints(self.root)
        for _, path in found[: max(0, len(found) - self.keep)]:
            shutil.rmtree(path, ignore_errors=True)
