"""Fault injection for resilience drills and tests: `LLMCLOUD_TRAIN_FAULT=step:N` kills rank 0
with SIGKILL after step N, `save:N` in the middle of saving step N (shards written, not yet
published). Fires in the first attempt only, not after a torchrun restart, so the restarted
job can finish."""

from __future__ import annotations

import os
import signal
import sys

FAULT_ENV = "LLMCLOUD_TRAIN_FAULT"


def fault_point(kind: str, step: int, rank: int) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if rank != 0 or spec != f"{kind}:{step}":
        return
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    print(f"[trainer] fault injection: {spec}, SIGKILL", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
