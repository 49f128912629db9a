"""The training loop: set up the process group, build and wrap the model (DDP or FSDP2),
resume from the latest complete checkpoint, then step: micro batches with gradient
accumulation, clipping, AdamW, cosine LR; metrics and checkpoints on their cadence.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from workloads.training import metrics
from workloads.training.checkpoint import Checkpointer
from workloads.training.config import Batching, TrainConfig, batching
from workloads.training.data import Batches, token_source
from workloads.training.faults import fault_point
from workloads.training.model import GPT
from workloads.training.stopping import StopRequest


@dataclass(frozen=True)
class RunResult:
    """How a run ended: the step reached, the last loss logged on rank 0, the newest
    complete checkpoint, and the signal that stopped it early (None: it finished)."""

    step: int
    loss: float | None
    checkpoint: str | None
    signum: int | None = None

    @property
    def stopped_by(self) -> str | None:
        """The stopping signal's name (`SIGTERM`), None when the run finished."""
        return signal.Signals(self.signum).name if self.signum else None


@dataclass(frozen=True)
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def init_distributed() -> Runtime:
    """The process group torchrun describes in the environment, or a group of one when
    the trainer runs as a plain process."""
    cuda = torch.cuda.is_available()
    if cuda:  # fp32 matmuls outside autocast (optimizer-side) may use TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    backend = "nccl" if cuda else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        world_size = int(os.environ["WORLD_SIZE"])
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(
                backend, store=_worker_store(), rank=rank, world_size=world_size
            )
    else:
        rank, local_rank, world_size = 0, 0, 1
        device = torch.device("cuda", 0) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return Runtime(rank, local_rank, world_size, device)


def _worker_store() -> dist.Store:
    """The store torchrun points the workers at. When it is the agent's own store (shared
    across restarts), keys of the previous attempt would still be there and the restarted
    workers would connect to dead peers (pytorch/pytorch#135712): give each attempt its own
    key prefix. Multi-node jobs also set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (restart
    counts can differ between nodes), in which case the store is fresh every attempt."""
    store, _, _ = next(dist.rendezvous("env://"))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"llmcloud/attempt-{attempt}", store)
    return store


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to `min_lr_ratio` of it at the end.
    `step` counts finished optimizer steps (0 for the first)."""
    warmup = min(cfg.warmup_steps, cfg.steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def build_model(cfg: TrainConfig, rt: Runtime) -> tuple[torch.nn.Module, GPT]:
    """The model on its device, wrapped for data parallelism. Returns (wrapped, inner)."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    inner = GPT(cfg.shape).to(rt.device)
    if cfg.parallel == "fsdp":
        from workloads.training.parallel import apply_fsdp

        apply_fsdp(inner, compile_blocks=cfg.compile, bf16=_autocast_dtype(cfg, rt.device))
        return inner, inner
    if cfg.compile:
        inner.compile()
    if rt.world_size == 1:  # nothing to all-reduce: skip DDP's bucketed copies
        return inner, inner
    ids = [rt.local_rank] if rt.device.type == "cuda" else None
    return DDP(inner, device_ids=ids), inner


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW; no weight decay on norms (1-D parameters); fused kernel on GPU."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, **extra)


def log(msg: str, rank: int) -> None:
    if rank == 0:
        print(f"[trainer] {msg}", file=sys.stderr, flush=True)


def train(cfg: TrainConfig) -> RunResult:
    """Run (or resume) training to `cfg.steps`, or until SIGTERM/SIGINT."""
    stop = StopRequest().install()
    try:
        rt = init_distributed()
        try:
            return _train(cfg, rt, stop)
        finally:
            dist.destroy_process_group()
    finally:
        stop.uninstall()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int):
    """This run's schedule (its --lr, --steps, warmup) at `step` finished optimizer steps,
    through LambdaLR's public resume path: `initial_lr` per group and `last_epoch`. The step
    is the schedule's whole state, so a resume needs no scheduler state from the checkpoint."""
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg), last_epoch=step - 1
    )


def _train(cfg: TrainConfig, rt: Runtime, stop: StopRequest) -> RunResult:
    split: Batching = batching(cfg, rt.world_size, source="config")
    shape = cfg.shape
    source = token_source(cfg.data, cfg.data_dtype, shape.vocab_size, shape.seq_len, cfg.seed)
    model, inner = build_model(cfg, rt)
    optimizer = build_optimizer(model, cfg, rt.device)
    data = Batches(source, split, rt.rank, rt.device)

    n_params = inner.num_params()
    flops_token = metrics.flops_per_token(
        n_params, shape.n_layer, shape.n_head, shape.head_dim, shape.seq_len
    )
    peak = None
    if rt.device.type == "cuda":
        peak = metrics.gpu_peak_bf16_tflops(torch.cuda.get_device_name(rt.device))
    log(
        f"model {cfg.model}: {n_params / 1e6:.1f}M params, {cfg.parallel} on {rt.world_size} "
        f"rank(s), global batch {split.global_batch} x {shape.seq_len} tokens "
        f"({split.micro_batch} per rank x {split.accumulation} micro steps)",
        rt.rank,
    )
    writer = metrics.MetricsWriter(cfg.metrics_file, enabled=rt.rank == 0)

    ckpt = None
    step = 0
    saved_step: int | None = None
    if cfg.checkpoint_dir:
        ckpt = Checkpointer(
            cfg.checkpoint_dir,
            cfg.keep_checkpoints,
            rank=rt.rank,
            world_size=rt.world_size,
            async_save=cfg.async_checkpoint,
            upload_uri=cfg.checkpoint_upload,
        )
        ckpt.restore_from_mirror()
        latest = ckpt.latest()
        if latest is not None:
            restored = ckpt.load(latest, model, optimizer)
            step = saved_step = restored.step
            data.position = int(restored.trainer["data_position"])
            log(f"resumed from {latest} (step {step})", rt.rank)
            # steps after `step` logged by an earlier attempt are redone from here
            writer.write({"event": "resume", "from_step": step, "checkpoint": latest.name})
            if step >= cfg.steps:
                log(f"nothing to do: step {step} >= steps ({cfg.steps})", rt.rank)
    scheduler = build_scheduler(optimizer, cfg, step)

    autocast_dtype = _autocast_dtype(cfg, rt.device)
    autocast = (
        torch.autocast(rt.device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    )
    tokens_per_step = split.global_batch * shape.seq_len
    last_loss: float | None = None
    window_start, window_steps = time.perf_counter(), 0
    stall_s = 0.0
    longest_save_s = 0.0
    # The stop vote runs on the CPU (gloo) so that it never syncs the GPU stream each step.
    vote_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    stop_flag = torch.zeros(())
    stopped_by: int | None = None

    def save(at: int) -> None:
        nonlocal stall_s, window_start, longest_save_s, saved_step
        assert ckpt is not None
        saved_s = ckpt.save(at, model, optimizer, {"data_position": data.position})
        # time blocked in a save is reported on its own, not as step time
        stall_s += saved_s
        window_start += saved_s
        longest_save_s = max(longest_save_s, saved_s)
        saved_step = at

    model.train()
    while step < cfg.steps:
        lr = scheduler.get_last_lr()[0]
        loss_sum = torch.zeros((), device=rt.device)
        for micro in range(split.accumulation):
            last = micro == split.accumulation - 1
            x, y = data.micro_batch(micro)
            with _no_sync(model, cfg, last), autocast:
                loss = model(x, y) / split.accumulation
            loss.backward()
            loss_sum += loss.detach()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        data.advance()
        step += 1
        window_steps += 1

        if ckpt is not None:
            ckpt.poll()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)

        if step % cfg.log_every == 0 or step == cfg.steps:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
            last_loss = loss_sum.item() / rt.world_size  # waits for the device: timing is real
            elapsed = time.perf_counter() - window_start
            tps = tokens_per_step * window_steps / elapsed
            record: dict[str, Any] = {
                "step": step,
                "loss": round(last_loss, 6),
                "lr": lr,
                "tokens_per_second": round(tps, 1),
                "step_time_s": round(elapsed / window_steps, 6),
                "tokens": data.position * shape.seq_len,
                "time": round(time.time(), 3),
            }
            value = metrics.mfu(tps, flops_token, rt.world_size, peak)
            if value is not None:
                record["mfu"] = round(value, 4)
            if stall_s:
                record["checkpoint_stall_s"] = round(stall_s, 6)
            writer.write(record)
            window_start, window_steps, stall_s = time.perf_counter(), 0, 0.0

        fault_point("step", step, rt.rank)

        # Every rank stops after the same step: a signal seen by any rank stops them all.
        stop_flag.fill_(float(stop.signum or 0))
        dist.all_reduce(stop_flag, op=dist.ReduceOp.MAX, group=vote_group)
        if stop_flag.item() and step < cfg.steps:
            stopped_by = int(stop_flag.item())
            # Rank 0 decides whether the grace period still fits a save (the longest save
            # of this run, with a margin); a save cut short is never published, so trying
            # when nothing was measured yet loses nothing.
            decision = torch.tensor(float(stop.time_left_s() > 1.5 * longest_save_s))
            dist.broadcast(decision, src=0, group=vote_group)
            if ckpt is not None and saved_step != step and decision.item():
                save(step)
            break

    if ckpt is not None:
        ckpt.close()
    writer.close()
    newest = ckpt.latest() if ckpt is not None else None
    return RunResult(
        step=step,
        loss=last_loss,
        checkpoint=str(newest) if newest is not None else None,
        signum=stopped_by,
    )


def _no_sync(model: torch.nn.Module, cfg: TrainConfig, sync: bool):
    """Skip the gradient all-reduce on all but the last micro step."""
    if cfg.parallel == "fsdp":
        model.set_requires_gradient_sync(sync)
        return nullcontext()
    if sync or not isinstance(model, DDP):
        return nullcontext()
    return model.no_sync()
