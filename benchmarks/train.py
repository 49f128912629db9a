"""Trainer overhead and checkpoint stall, 2 processes on CPU (gloo).

1. Throughput: our trainer (`-m workloads.training`) against a bare DDP loop (forward,
   backward, AdamW step; nothing else) on the same model, data and batch. Runs alternate
   (bare, ours, bare, ours, ...) so machine noise hits both; the ratio of the medians is
   the result (target >= 0.95).
2. Checkpoint stall: how long a save blocks the training loop, synchronous
   (`dcp.save` + publish) against background (`dcp.async_save`), and the step time
   around saves.

    python benchmarks/train.py [--rounds 2] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL, SEQ_LEN, BATCH, LR = "tiny", 128, 32, 1e-3
WARMUP_STEPS = 10  # excluded: allocator warm-up, DDP bucket rebuild


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCLOUD_", "TORCHELASTIC"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc


def _common(steps: int) -> list[str]:
    return [
        f"--model={MODEL}",
        f"--seq-len={SEQ_LEN}",
        f"--batch-size={BATCH}",
        f"--steps={steps}",
        f"--lr={LR}",
        "--warmup-steps=0",
        "--grad-clip=0",
        "--seed=0",
    ]


def run_ours(steps: int, work: Path, *extra: str) -> list[dict]:
    metrics = work / f"ours-{time.monotonic_ns()}.jsonl"
    _torchrun("-m", "workloads.training", *_common(steps), f"--metrics-file={metrics}", *extra)
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def run_bare(steps: int) -> float:
    proc = _torchrun(str(Path(__file__).resolve()), "--bare", f"--steps={steps}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["tokens_per_second"])


def throughput(records: list[dict]) -> float:
    """Tokens/s from the end of warm-up to the last step, by the wall clock of the metric
    lines (everything the loop does counts, logging included)."""
    tokens_per_step = BATCH * SEQ_LEN
    start = next(r for r in records if r["step"] == WARMUP_STEPS)
    end = records[-1]
    return tokens_per_step * (end["step"] - start["step"]) / (end["time"] - start["time"])


# --------------------------------------------------------------------------- bare loop


def bare_loop(steps: int) -> None:
    """The baseline: DDP on the same GPT and synthetic batches, nothing else."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from workloads.training.config import TrainConfig, batching
    from workloads.training.data import Batches, SyntheticTokens
    from workloads.training.model import GPT

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = TrainConfig(model=MODEL, seq_len=SEQ_LEN, batch_size=BATCH)
    torch.manual_seed(0)
    model = DDP(GPT(cfg.shape))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.95),
    )
    split = batching(cfg, world)
    data = Batches(
        SyntheticTokens(cfg.shape.vocab_size, SEQ_LEN, 0), split, rank, torch.device("cpu")
    )
    for step in range(steps):
        if step == WARMUP_STEPS:
            dist.barrier()
            started = time.perf_counter()
        x, y = data.micro_batch(0)
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        data.advance()
    dist.barrier()
    elapsed = time.perf_counter() - started
    if rank == 0:
        tps = split.global_batch * SEQ_LEN * (steps - WARMUP_STEPS) / elapsed
        print(json.dumps({"tokens_per_second": tps, "last_loss": loss.item()}))
    dist.destroy_process_group()


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_loop(args.steps)
        return

    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i in range(args.rounds):
            # alternate who goes first, so a change in machine load favours neither
            for kind in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                if kind == "bare":
                    bare.append(run_bare(args.steps))
                else:
                    ours.append(throughput(run_ours(args.steps, work, "--log-every=1")))
        stall: dict[str, dict[str, float]] = {}
        for mode in ("sync", "async"):
            records = run_ours(
                args.steps,
                work,
                "--log-every=1",
                f"--checkpoint-dir={work / f'ckpt-{mode}'}",
                "--checkpoint-every=10",
                f"--async-checkpoint={'true' if mode == 'async' else 'false'}",
            )
            saves = [r["checkpoint_stall_s"] for r in records if "checkpoint_stall_s" in r]
            after = [
                r["step_time_s"] for r in records if r["step"] % 10 in (1, 2) and r["step"] > 10
            ]
            plain = [
                r["step_time_s"]
                for r in records
                if r["step"] % 10 not in (0, 1, 2) and r["step"] > 10
            ]
            stall[mode] = {
                "saves": len(saves),
                "stall_s": statistics.median(saves),
                "step_after_save_s": statistics.median(after),
                "step_s": statistics.median(plain),
            }

    ratio = statistics.median(o / b for o, b in zip(ours, bare, strict=True))
    print(
        f"model {MODEL}, seq {SEQ_LEN}, global batch {BATCH}, 2 ranks (gloo, CPU), "
        f"{args.steps} steps ({WARMUP_STEPS} warm-up excluded), {args.rounds} rounds"
    )
    print()
    print("| run | tokens/s (median) | runs |")
    print("|---|---:|---|")
    print(
        f"| bare DDP loop | {statistics.median(bare):,.0f} | {', '.join(f'{v:,.0f}' for v in bare)} |"
    )
    print(
        f"| workloads.training | {statistics.median(ours):,.0f} | {', '.join(f'{v:,.0f}' for v in ours)} |"
    )
    print()
    print(f"ratio trainer / bare (median of the rounds' ratios): {ratio:.3f} (target >= 0.95)")
    print()
    print(
        "| checkpoint | saves | loop blocked per save (s) | step after a save (s) | other steps (s) |"
    )
    print("|---|---:|---:|---:|---:|")
    for mode, s in stall.items():
        print(
            f"| {mode} | {s['saves']:.0f} | {s['stall_s']:.3f} | {s['step_after_save_s']:.3f} | "
            f"{s['step_s']:.3f} |"
        )
    print()
    print(f"async / sync stall: {stall['async']['stall_s'] / stall['sync']['stall_s']:.2f}")


if __name__ == "__main__":
    main()
