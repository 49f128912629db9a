"""What a run shows: the progress bars and the one-line summaries, in binary units (MiB/s)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from infra.ops.stage.run import StageResult
    from infra.ops.stage.verify import VerifyResult


def format_bytes(n: float) -> str:
    """`4.0 MiB`: binary units, for sizes and (with "/s") speeds everywhere in stage."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_speed(bytes_per_s: float) -> str:
    """`12.3 MiB/s`: the progress bar and the summary line both call this."""
    return f"{format_bytes(bytes_per_s)}/s"


class BinarySpeedColumn(ProgressColumn):
    """Transfer speed in MiB/s (rich's TransferSpeedColumn shows decimal MB/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(format_speed(speed), style="progress.data.speed")


class Display:
    """The rich progress bars: bytes checked (hashing), bytes uploaded with speed and ETA,
    and files done. Thread-safe (rich Progress locks)."""

    def __init__(self, console: Console | None, files_total: int, bytes_total: int, upload: bool):
        self.enabled = console is not None
        self.files_total = files_total
        self.files_done = 0
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            BinarySpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[files]}"),
            console=console,
            disable=console is None,
        )
        self.check = self.progress.add_task("checking", total=bytes_total, files="")
        self.upload: TaskID | None = (
            self.progress.add_task("uploading", total=bytes_total, files=self._files())
            if upload
            else None
        )

    def _files(self) -> str:
        return f"{self.files_done}/{self.files_total} files"

    def checked(self, n: int) -> None:
        if self.enabled:
            self.progress.advance(self.check, n)

    def uploaded(self, n: int) -> None:
        if self.enabled and self.upload is not None:
            self.progress.advance(self.upload, n)

    def not_uploading(self, size: int) -> None:
        """A skipped file leaves the upload total (so speed and ETA stay honest)."""
        if self.enabled and self.upload is not None:
            with self._lock:
                total = self.progress.tasks[self.upload].total or 0
                self.progress.update(self.upload, total=max(0, total - size))

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            if self.enabled and self.upload is not None:
                self.progress.update(self.upload, files=self._files())

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


@contextlib.contextmanager
def maybe_status(console: Console | None, text: str) -> Iterator[None]:
    if console is None:
        yield
    else:
        with console.status(text):
            yield


def dry_run_lines(result: StageResult) -> list[str]:
    """What a `--dry-run` would do: one line per file to upload, a summary of the rest."""
    uploads = [a for a in result.dry_run_actions if a[0] == "upload"]
    upload_bytes = sum(a[2] for a in uploads)
    lines = [
        f"dry run: would upload {len(uploads)} of {result.files_total} files "
        f"({format_bytes(upload_bytes)}) to {result.dest}; "
        f"{len(result.skipped)} already there with the same checksum; nothing written"
    ]
    lines += [
        f"upload  {path}  {format_bytes(size)}  ({reason})"
        for _, path, size, reason in sorted(uploads, key=lambda a: a[1])
    ]
    return lines


def summary_line(result: StageResult) -> str:
    """One line after a successful run: counts, bytes, speed, manifest."""
    rate = result.bytes_uploaded / result.seconds if result.seconds > 0 else 0.0
    return (
        f"staged {result.files_total} files ({format_bytes(result.bytes_total)}) to "
        f"{result.dest}: {len(result.uploaded)} uploaded ({format_bytes(result.bytes_uploaded)}, "
        f"{format_speed(rate)}), {len(result.skipped)} already there; "
        f"{result.seconds:.1f} s; manifest {result.manifest_url}"
    )


def failure_message(result: StageResult, limit: int = 10) -> str:
    """The exit-1 message: which files failed and why (first `limit`), and how to resume."""
    items = sorted(result.failed.items())
    shown = "; ".join(f"{path}: {reason}" for path, reason in items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return (
        f"{len(items)} of {result.files_total} files failed to upload ({shown}{more}); "
        f"{len(result.uploaded) + len(result.skipped)} are in S3 and no manifest was written: "
        "rerun the same command to resume"
    )


def verify_failure_message(result: VerifyResult, limit: int = 10) -> str:
    """The exit-1 message of `--verify`: the files that do not match, and why."""
    items = sorted(result.problems.items())
    shown = "; ".join(f"{path}: {reason}" for path, reason in items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return f"verify failed against {result.manifest_url}: {len(items)} problem(s): {shown}{more}"
