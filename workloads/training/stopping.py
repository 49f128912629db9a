"""Stopping on a signal: SIGTERM (Kubernetes eviction, spot reclaim, `kubectl delete`) and
SIGINT (Ctrl-C) end the run after the step in flight, with a final checkpoint when the grace
period allows, and one line that says where the run stopped and how to resume it.

torchrun forwards SIGTERM to its workers and SIGKILLs them `--shutdown-timeout` seconds later
(`TORCH_ELASTIC_SHUTDOWN_TIMEOUT`, default 30, torch/distributed/run.py); the TrainingJob sets
that timeout and `LLMCLOUD_STOP_GRACE_S` from the pod's termination grace period, so the
trainer knows how long it has. A second signal, later than the first by more than a moment,
aborts at once.
"""

from __future__ import annotations

import math
import os
import signal
import time
from types import FrameType

GRACE_ENV = "LLMCLOUD_STOP_GRACE_S"
DEFAULT_GRACE_S = 30.0  # torchrun's default shutdown timeout
SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_WINDOW_S = 2.0


class StopRequest:
    """Remembers the first SIGTERM/SIGINT and when it came; the loop polls `signum`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received_at: float | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.received_at = signum, now
            return
        # Ctrl-C reaches the workers twice (from the terminal and forwarded by torchrun):
        # a repeat within the window is the same request; a later one aborts at once.
        if self.received_at is not None and now - self.received_at < REPEAT_WINDOW_S:
            return
        raise KeyboardInterrupt

    def time_left_s(self, grace_s: float | None = None) -> float:
        """Seconds of the grace period left since the signal came."""
        grace = grace_period_s() if grace_s is None else grace_s
        if self.received_at is None:
            return grace
        return grace - (time.monotonic() - self.received_at)


def grace_period_s() -> float:
    try:
        return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S))
    except ValueError:
        return DEFAULT_GRACE_S


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + the signal number."""
    return 128 + signum


# What a checkpoint holds per parameter: fp32 weights and AdamW's two fp32 moments (bf16 runs
# keep fp32 master weights under autocast and FSDP2's mixed precision alike).
CHECKPOINT_BYTES_PER_PARAM = 12
STEP_MARGIN_S = 30  # the step in flight when the signal comes, and the stop vote
EXIT_MARGIN_S = 10  # torchrun's own shutdown after its workers exit
MIN_GRACE_S = 60


def checkpoint_bytes(parameters: int) -> int:
    return parameters * CHECKPOINT_BYTES_PER_PARAM


def termination_grace_s(parameters: int, write_mb_per_s: float) -> int:
    """The pod's `terminationGracePeriodSeconds`: the step in flight, a final save of the whole
    checkpoint at the storage's write rate (twice, for margin), and torchrun's exit."""
    save_s = checkpoint_bytes(parameters) / (write_mb_per_s * 1e6)
    return max(MIN_GRACE_S, math.ceil(STEP_MARGIN_S + 2 * save_s + EXIT_MARGIN_S))


def shutdown_timeouts(grace_s: int) -> tuple[int, int]:
    """(torchrun's `--shutdown-timeout`, the trainer's `LLMCLOUD_STOP_GRACE_S`) within a pod
    grace period: torchrun SIGKILLs its workers after the first, the kubelet the pod after
    `grace_s`, so each inner budget ends before the outer one."""
    torchrun_s = grace_s - EXIT_MARGIN_S
    return torchrun_s, torchrun_s - 5
