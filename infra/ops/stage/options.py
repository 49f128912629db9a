"""What a `stage` run was asked to do: the options, their limits and the usage errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.ops.awsclient import AwsUsageError, S3Url

MIB = 1024 * 1024
DEFAULT_CONCURRENCY = 16
DEFAULT_PART_SIZE_MIB = 64
MIN_PART_SIZE_MIB, MAX_PART_SIZE_MIB = 5, 5 * 1024  # S3's limits on a part
MAX_CONCURRENCY = 256


class StageUsageError(AwsUsageError):
    """Bad local input (source, flags, a prefix never staged): exit 2, like AWS usage errors."""


class Cancelled(Exception):
    """Raised inside worker threads once the run is being stopped (Ctrl-C, a fatal error)."""


@dataclass(frozen=True)
class StageOptions:
    """What `llmcloud stage` was asked to do (validated by `check_options`)."""

    src: Path
    dest: S3Url
    kms_key: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    part_size_mib: int = DEFAULT_PART_SIZE_MIB
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def part_size_bytes(self) -> int:
        """Files of at least this size go multipart, in parts of at most this size (see
        transfer.adapted_part_size)."""
        return self.part_size_mib * MIB


def check_options(options: StageOptions) -> None:
    """Raise StageUsageError for a source or flag that cannot work, before any AWS call."""
    if not options.src.exists():
        raise StageUsageError(f"SRC {str(options.src)!r} does not exist")
    if not options.src.is_dir():
        raise StageUsageError(
            f"SRC {str(options.src)!r} is not a directory; stage uploads a directory"
        )
    if not 1 <= options.concurrency <= MAX_CONCURRENCY:
        raise StageUsageError(
            f"--concurrency {options.concurrency} is out of range; use 1..{MAX_CONCURRENCY}"
        )
    if not MIN_PART_SIZE_MIB <= options.part_size_mib <= MAX_PART_SIZE_MIB:
        raise StageUsageError(
            f"--part-size-mib {options.part_size_mib} is out of range; S3 accepts parts of "
            f"{MIN_PART_SIZE_MIB}..{MAX_PART_SIZE_MIB} MiB"
        )
