"""The packaged trainer, run for real: `torchrun --nproc-per-node=2` with gloo on CPU,
synthetic data, the tiny model. A run that is killed and started again must end exactly
where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = 24
EVERY = 8
TRAIN_FLAGS = [
    f"--steps={STEPS}",
    f"--checkpoint-every={EVERY}",
    "--keep-checkpoints=2",
    "--seq-len=32",
    "--batch-size=8",
    "--lr=3e-3",
    "--warmup-steps=4",
    "--seed=7",
]

pytestmark = pytest.mark.slow


def torchrun(
    run_dir: Path,
    *flags: str,
    fault: str | None = None,
    max_restarts: int = 0,
    c10d: bool = False,
) -> subprocess.CompletedProcess:
    """torchrun with 2 CPU workers. `c10d`: the rendezvous the TrainingJob uses (c10d,
    with a fresh store per attempt as its pods set); otherwise torchrun's default static
    rendezvous, whose shared store the trainer isolates per attempt itself."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMCLOUD_", "TORCHELASTIC", "TORCH_DISABLE_SHARE"))
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if fault:
        env["LLMCLOUD_TRAIN_FAULT"] = fault
    rendezvous = []
    if c10d:
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        rendezvous = ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", "--rdzv-id=test"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        "--nproc-per-node=2",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.2",
        "-m",
        "workloads.training",
        *TRAIN_FLAGS,
        f"--checkpoint-dir={run_dir / 'ckpt'}",
        f"--metrics-file={run_dir / 'metrics.jsonl'}",
        *flags,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def records(run_dir: Path) -> list[dict]:
    """The step records of the metrics file (events such as a resume left out)."""
    return [r for r in lines(run_dir) if "step" in r]


def timeline(run_dir: Path) -> list[int | str]:
    """Steps and resume markers in file order: `[1, 2, 3, "resume@2", 3, ...]`. A step is
    never logged twice unless a resume marker says the run went back to an earlier step."""
    out: list[int | str] = []
    last = 0
    for r in lines(run_dir):
        if r.get("event") == "resume":
            out.append(f"resume@{r['from_step']}")
            last = r["from_step"]
        else:
            assert r["step"] > last, f"step {r['step']} repeated without a resume marker"
            out.append(r["step"])
            last = r["step"]
    return out


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "ckpt").iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, the baseline every interrupted run is compared with."""
    run_dir = tmp_path_factory.mktemp("reference")
    proc = torchrun(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_uninterrupted_run_learns_and_logs_every_step(reference: Path):
    log = records(reference)
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    for r in log:
        assert {"step", "loss", "lr", "tokens_per_second", "step_time_s"} <= set(r)
        assert r["tokens_per_second"] > 0 and r["step_time_s"] > 0
    assert "mfu" not in log[0]  # no GPU peak on a CPU
    first, last = log[0]["loss"], log[-1]["loss"]
    assert first > 6.0  # ln(512) = 6.24 at initialisation
    assert last < first - 0.5
    assert sum(r["loss"] for r in log[-4:]) < sum(r["loss"] for r in log[:4])
    # keep-checkpoints=2: only the two newest complete checkpoints remain
    assert checkpoints(reference) == ["step-00000016", "step-00000024"]
    for name in checkpoints(reference):
        assert (reference / "ckpt" / name / "COMPLETE").is_file()


def test_worker_killed_under_max_restarts_resumes_and_matches_uninterrupted(
    reference: Path, tmp_path: Path
):
    proc = torchrun(tmp_path, fault="step:13", max_restarts=1, c10d=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fault injection: step:13" in proc.stderr
    assert "resumed from" in proc.stderr and "step-00000008 (step 8)" in proc.stderr
    # first attempt 1..13, killed; the restart continues after the checkpoint at 8, and the
    # metrics file says so before it logs steps 9..13 again
    assert timeline(tmp_path) == [*range(1, 14), "resume@8", *range(9, STEPS + 1)]
    assert records(tmp_path)[-1]["loss"] == records(reference)[-1]["loss"]


def test_restart_after_crash_mid_save_skips_half_written_checkpoints(
    reference: Path, tmp_path: Path
):
    crashed = torchrun(tmp_path, fault="save:16")
    assert crashed.returncode != 0
    ckpt = tmp_path / "ckpt"
    # the save of step 16 wrote its shards but was never published
    assert (ckpt / ".tmp-step-00000016" / ".metadata").is_file()
    assert not (ckpt / ".tmp-step-00000016" / "COMPLETE").exists()
    assert checkpoints(tmp_path) == [".tmp-step-00000016", "step-00000008"]
    # a loadable-looking copy without the completion marker must be ignored as well
    shutil.copytree(ckpt / ".tmp-step-00000016", ckpt / "step-00000020")

    resumed = torchrun(tmp_path, "--async-checkpoint=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000008 (step 8)" in resumed.stderr
    # first run: 1..15 logged, killed while saving 16; second run: from the checkpoint at 8
    assert timeline(tmp_path) == [*range(1, 16), "resume@8", *range(9, STEPS + 1)]
    log = records(tmp_path)
    # the background (async) saves of the second run leave training bit-identical
    assert log[-1]["loss"] == records(reference)[-1]["loss"]
    assert not (ckpt / ".tmp-step-00000016").exists()  # cleaned up on start
    assert (ckpt / "step-00000024" / "COMPLETE").is_file()


def test_fsdp_run_resumes_from_its_sharded_checkpoint(tmp_path: Path):
    proc = torchrun(
        tmp_path,
        "--parallel=fsdp",
        "--steps=8",
        "--checkpoint-every=4",
        "--micro-batch-size=2",  # 2 micro steps per rank: accumulation without sync
        fault="step:6",
        max_restarts=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fsdp on 2 rank(s)" in proc.stderr and "2 micro steps" in proc.stderr
    assert "step-00000004 (step 4)" in proc.stderr
    assert timeline(tmp_path) == [1, 2, 3, 4, 5, 6, "resume@4", 5, 6, 7, 8]
    log = records(tmp_path)
    # the steps redone after the restart reproduce the first attempt's losses
    assert log[6]["loss"] == log[4]["loss"] and log[7]["loss"] == log[5]["loss"]
    assert log[-1]["loss"] < log[0]["loss"]


def launch_and_signal(
    run_dir: Path, sig: signal.Signals, *, to_group: bool, grace_s: str | None = None
) -> subprocess.CompletedProcess:
    """Start a long run under `workloads.training.launch` (torchrun), send `sig` once five
    steps are logged — to the launcher alone, as the kubelet signals a container's PID 1, or
    to the whole process group, as Ctrl-C in a terminal does — and wait for the exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCLOUD_", "TORCHELASTIC"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if grace_s is not None:
        env["LLMCLOUD_STOP_GRACE_S"] = grace_s
    cmd = [
        sys.executable,
        "-m",
        "workloads.training.launch",
        "--nproc-per-node=2",
        "--monitor-interval=0.2",
        "-m",
        "workloads.training",
        *TRAIN_FLAGS,
        "--steps=5000",  # far more than run before the signal
        "--checkpoint-every=1000",
        f"--checkpoint-dir={run_dir / 'ckpt'}",
        f"--metrics-file={run_dir / 'metrics.jsonl'}",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.1)
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_sigterm_saves_a_final_checkpoint_says_where_and_the_rerun_resumes_there(tmp_path):
    proc = launch_and_signal(tmp_path, signal.SIGTERM, to_group=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    stopped = [line for line in proc.stderr.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1, proc.stderr  # one line, from rank 0 only
    step = records(tmp_path)[-1]["step"]
    name = f"step-{step:08d}"
    assert f"at step {step}; last checkpoint {name}" in stopped[0]
    assert "resume by running the same command again" in stopped[0]
    assert (tmp_path / "ckpt" / name / "COMPLETE").is_file()  # saved on the way out

    rerun = torchrun(tmp_path, f"--steps={step + 2}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert timeline(tmp_path)[-3:] == [f"resume@{step}", step + 1, step + 2]


def test_ctrl_c_ends_with_one_line_and_no_traceback_and_no_save_past_the_grace(tmp_path):
    # a grace period of 0 s leaves no time for a final save: nothing is half-written
    proc = launch_and_signal(tmp_path, signal.SIGINT, to_group=True, grace_s="0")
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("workloads.training:")]
    assert len(ours) == 1 and "stopped by SIGINT at step" in ours[0], proc.stderr
    assert "no complete checkpoint" in ours[0] and "a rerun starts from step 0" in ours[0]
    assert not any((tmp_path / "ckpt").glob("step-*"))
