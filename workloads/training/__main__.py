"""Entry point for `torchrun ... -m workloads.training`: parse and check the config (exit 2
on bad input, before torch is imported), then train."""

from __future__ import annotations

import os
import sys

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

    try:
        record(train)(invocation.config)
    except ConfigError as e:
        return config_error_exit(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
