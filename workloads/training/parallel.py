"""FSDP2: shard each transformer block, then the root (embeddings, final norm, tied head),
with bf16 compute and fp32 gradient reduction on GPU. Public API since torch 2.6."""

from __future__ import annotations

import torch

from workloads.training.config import ConfigError
from workloads.training.model import GPT


def _fsdp_api():
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6 kept FSDP2 under _composable
        raise ConfigError(
            f"parallel = 'fsdp': needs torch >= 2.6 (torch.distributed.fsdp.fully_shard); "
            f"this is torch {torch.__version__}; allowed here: ddp"
        ) from None
    return fully_shard, MixedPrecisionPolicy


def apply_fsdp(model: GPT, *, compile_blocks: bool, bf16: torch.dtype | None) -> None:
    fully_shard, MixedPrecisionPolicy = _fsdp_api()
    policy = MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": policy} if policy is not None else {}
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        if compile_blocks:
            block.compile()
        # the last block's parameters are needed again at once by backward: keep them
        fully_shard(block, reshard_after_forward=i < last, **kwargs)
    fully_shard(model, **kwargs)
