"""`python -m workloads.training.launch [torchrun flags] -m workloads.training ...`: torchrun,
ending with the workers' one-line summary instead of torchrun's own traceback when a stop
signal (SIGTERM, Ctrl-C) reaches it. Everything else is torchrun's (`torch.distributed.run`)."""

from __future__ import annotations

import sys

from workloads.training.stopping import exit_code


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(sys.argv[1:] if argv is None else argv)
    except SignalException as e:
        # The workers have already stopped (with a checkpoint when the grace allowed) and
        # said where; the agent's own stack trace adds nothing.
        return exit_code(int(e.sigval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
