"""Entry point for `torchrun ... -m workloads.training`: parse and check the config (exit 2
on bad input, before torch is imported), then train."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from workloads.training.config import ConfigError, help_text, parse_args


def config_error_exit(e: ConfigError) -> int:
    """One message (from rank 0 only, not once per rank) and exit code 2."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"workloads.training: {e}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        print(help_text())
        return 0
    try:
        invocation = parse_args(args)
    except ConfigError as e:
        return config_error_exit(e)
    if invocation.check_only:
        print(f"workloads.training: config ok ({invocation.config})")
        return 0
    from torch.distributed.elastic.multiprocessing.errors import record

    from workloads.training.loop import train
    from workloads.training.stopping import exit_code

    cfg = invocation.config
    try:
        result = record(train)(cfg)
    except ConfigError as e:
        return config_error_exit(e)
    except KeyboardInterrupt:
        say(f"aborted (second signal); {resume_hint(cfg, None)}")
        return exit_code(signal.SIGINT)
    if result.signum is not None:
        saved = Path(result.checkpoint).name if result.checkpoint else None
        say(f"stopped by {result.stopped_by} at step {result.step}; {resume_hint(cfg, saved)}")
        return exit_code(result.signum)
    return 0


def say(message: str) -> None:
    """One line on stderr, from rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"workloads.training: {message}", file=sys.stderr, flush=True)


def resume_hint(cfg, checkpoint: str | None) -> str:
    if not cfg.checkpoint_dir:
        return "no --checkpoint-dir, so a rerun starts from step 0"
    if checkpoint is None:
        from workloads.training.layout import complete_checkpoints

        found = complete_checkpoints(Path(cfg.checkpoint_dir))
        checkpoint = found[-1][1].name if found else None
    if checkpoint is None:
        return f"no complete checkpoint in {cfg.checkpoint_dir} yet: a rerun starts from step 0"
    return (
        f"last checkpoint {checkpoint} in {cfg.checkpoint_dir}; "
        "resume by running the same command again"
    )


def exit_now(code: int) -> None:
    """Exit without interpreter finalization, once everything is flushed and the process
    group destroyed: Gloo's worker threads can still hold work objects whose tensors need the
    GIL while the interpreter is torn down, and the process then aborts with SIGABRT after a
    successful run (pytorch/pytorch#179291)."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
