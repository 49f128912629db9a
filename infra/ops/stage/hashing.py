"""Hashing local files once: the SHA-256s S3 needs (full file, per part) and the hash cache.

S3's SHA-256 checksum of a single PUT is base64(sha256(file)); a multipart object's is
COMPOSITE, base64(sha256(sha256(part1) || sha256(part2) ...)) + "-<parts>", since S3 has
no full-object type for SHA-256 (full-object checksums are CRC-only: docs.aws.amazon.com/
AmazonS3/latest/userguide/checking-object-integrity-upload.html). One read of a file gives
the full SHA-256 (x-amz-meta-sha256, part-size independent) and each part's SHA-256 (sent
as the part's ChecksumSHA256, so botocore never hashes the body again); the part hashes
run in a thread beside the full one. Large files are hashed a few at a time (`hash_lanes`),
in order, so the first upload starts after one file's digest, not after all of them.

The hash cache maps (path, size, mtime_ns, inode) -> those digests in a SQLite file under
the cache directory, so a re-run reads no unchanged file. A changed size, mtime or inode
(a rewrite, a `mv` over it) misses the cache and re-hashes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.ops.stage.local import LocalFile
from infra.ops.stage.options import MIB, Cancelled

READ_BUFFER_BYTES = 1 * MIB
# Read buffers in flight between the reading thread and the part hasher beside it.
PARTS_BESIDE_BUFFERS = 4
CACHE_DIR_ENV = "LLMCLOUD_CACHE_DIR"
CACHE_FILE_NAME = "stage-hashes.sqlite3"
# A file modified this recently may be modified again within the same mtime tick without
# its mtime changing (git calls this "racily clean"): its digest is not cached.
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class Digest:
    """The file's SHA-256 (hex), the S3 checksum its upload produces for `part_size`, and
    the parts' checksums (base64, multipart only). `body`: the bytes, kept for small files
    so they are read once."""

    sha256: str
    checksum_sha256: str
    part_size: int | None = None
    part_checksums: tuple[str, ...] = ()
    body: bytes | None = field(default=None, repr=False, compare=False)

    def for_layout(self, part_size: int | None) -> Digest | None:
        """This digest for another part layout, when it can be derived without reading."""
        if part_size is None:
            return Digest(self.sha256, full_object_checksum(self.sha256), None, (), self.body)
        if part_size == self.part_size and self.part_checksums:
            return self
        return None


def full_object_checksum(sha256_hex: str) -> str:
    """S3's ChecksumSHA256 of a single-PUT object with this SHA-256."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def composite_checksum(part_checksums: tuple[str, ...]) -> str:
    """S3's COMPOSITE ChecksumSHA256 of a multipart object from its parts' checksums."""
    joined = b"".join(base64.b64decode(c) for c in part_checksums)
    return f"{base64.b64encode(hashlib.sha256(joined).digest()).decode()}-{len(part_checksums)}"


def part_layout(size: int, part_size: int) -> int | None:
    """The part size a file of `size` bytes is uploaded with; None: one PUT.

    Multipart when size >= threshold (= part size here), the part size raised to S3's
    limits (at most 10,000 parts of 5 MiB..5 GiB) as s3transfer's ChunksizeAdjuster does.
    """
    if size < part_size:
        return None
    from s3transfer.utils import ChunksizeAdjuster  # only for multipart files: start-up

    return ChunksizeAdjuster().adjust_chunksize(part_size, size)


class _PartHasher:
    """The SHA-256 (base64) of each `part_size` slice of a byte stream fed in order."""

    def __init__(self, part_size: int):
        self.part_size = part_size
        self.checksums: list[str] = []
        self._part = hashlib.sha256()
        self._in_part = 0

    def update(self, chunk: memoryview) -> None:
        offset, n = 0, len(chunk)
        while offset < n:
            take = min(n - offset, self.part_size - self._in_part)
            self._part.update(chunk[offset : offset + take])
            self._in_part += take
            offset += take
            if self._in_part == self.part_size:
                self.checksums.append(base64.b64encode(self._part.digest()).decode())
                self._part, self._in_part = hashlib.sha256(), 0

    def finish(self) -> tuple[str, ...]:
        if self._in_part:
            self.checksums.append(base64.b64encode(self._part.digest()).decode())
            self._in_part = 0
        return tuple(self.checksums)


class _PartsBeside:
    """A _PartHasher in a thread of its own, fed the buffers the reading thread has put
    through the full-file hash: the two SHA-256 passes of a multipart file run at once
    (hashlib releases the GIL on large buffers), so its digest costs about one pass of
    wall time. At most PARTS_BESIDE_BUFFERS read buffers exist, so memory stays bounded."""

    def __init__(self, parts: _PartHasher):
        self._parts = parts
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(PARTS_BESIDE_BUFFERS):
            self._free.put(bytearray(READ_BUFFER_BYTES))
        self._filled: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="llmcloud-stage-parts")
        self._thread.start()

    def _work(self) -> None:
        while (item := self._filled.get()) is not None:
            buffer, n = item
            try:
                if self._error is None:
                    self._parts.update(memoryview(buffer)[:n])
            except BaseException as e:  # handed to the reading thread by `finish`
                self._error = e
            self._free.put(buffer)

    def buffer(self) -> bytearray:
        """A buffer to read into (waits while the part hasher is behind)."""
        return self._free.get()

    def hand(self, buffer: bytearray, n: int) -> None:
        """The first `n` bytes of `buffer` go to the part hasher; the buffer comes back."""
        self._filled.put((buffer, n))

    def stop(self) -> None:
        """Wait for the thread to take everything handed to it and end."""
        if self._thread.is_alive():
            self._filled.put(None)
            self._thread.join()

    def finish(self) -> tuple[str, ...]:
        self.stop()
        if self._error is not None:
            raise self._error
        return self._parts.finish()


def digest_file(
    path: Path,
    size: int,
    part_size: int | None,
    *,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    keep_body_up_to: int = 0,
    parts_beside: bool = True,
) -> Digest:
    """SHA-256 of the file and the S3 checksum(s) of its upload, in one read.

    A file of at most `keep_body_up_to` bytes is read in one call and its bytes kept. With
    a part layout the per-part hashes run in a second thread beside the full-file hash
    (`parts_beside`; False: both in this thread, the same digests).
    """
    with open(path, "rb", buffering=0) as fh:
        if size <= keep_body_up_to and part_size is None:
            data = fh.read(size + 1)
            if len(data) != size:
                raise OSError(f"file changed while staging ({size} bytes listed, {len(data)} read)")
            sha = hashlib.sha256(data).hexdigest()
            if on_bytes:
                on_bytes(size)
            return Digest(sha, full_object_checksum(sha), None, (), data)
        full = hashlib.sha256()
        parts = _PartHasher(part_size) if part_size else None
        beside = _PartsBeside(parts) if parts is not None and parts_beside else None
        read = 0
        try:
            buffer = bytearray(READ_BUFFER_BYTES) if beside is None else beside.buffer()
            while n := fh.readinto(buffer):
                chunk = memoryview(buffer)[:n]
                full.update(chunk)
                read += n
                if beside is not None:
                    beside.hand(buffer, n)
                    buffer = beside.buffer()
                elif parts is not None:
                    parts.update(chunk)
                if on_bytes:
                    on_bytes(n)
                if stop is not None and stop.is_set():
                    raise Cancelled()
            checksums = beside.finish() if beside is not None else parts.finish() if parts else ()
        finally:
            if beside is not None:
                beside.stop()  # a failed read or a cancel leaves no thread behind
    if read != size:
        raise OSError(f"file changed while staging ({size} bytes listed, {read} read)")
    sha = full.hexdigest()
    if not part_size:
        return Digest(sha, full_object_checksum(sha))
    return Digest(sha, composite_checksum(checksums), part_size, checksums)


def hash_lanes() -> int:
    """How many large files are hashed at once: one per two CPUs this process may run on
    (a multipart file's digest keeps two busy), at least one. On 2 CPUs, 4 x 256 MiB
    hashed all at once sent nothing for ~1 s while the server idled; one at a time in
    order, the first file's parts go out after ~0.2 s and the rest hash while they do."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def cache_dir() -> Path:
    """$LLMCLOUD_CACHE_DIR, else $XDG_CACHE_HOME/llmcloud, else ~/.cache/llmcloud."""
    if explicit := os.environ.get(CACHE_DIR_ENV):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmcloud"


_Row = tuple[int, int, int, str, int | None, str]  # size, mtime_ns, inode, sha256, part, parts


class HashCache:
    """(absolute path, size, mtime_ns, inode) -> Digest, persisted in SQLite.

    Loaded once per run for the source directory (one query), read by worker threads,
    written in one transaction by `flush`. A cache that cannot be opened or written
    (read-only home, a corrupt file) is no cache: staging never fails because of it.
    """

    def __init__(self, root: Path, path: Path | None = None):
        self.root = str(root.resolve())
        self.path = path or cache_dir() / CACHE_FILE_NAME
        self._rows: dict[str, _Row] = {}
        self._pending: list[tuple[str, _Row]] = []
        self._forget: list[str] = []
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, inode INTEGER, sha256 TEXT, part_size INTEGER, parts TEXT)"
            )
            low, high = f"{self.root}/", f"{self.root}0"  # '0' sorts right after '/'
            for path, *row in self._db.execute(
                "SELECT path, size, mtime_ns, inode, sha256, part_size, parts FROM files "
                "WHERE path >= ? AND path < ?",
                (low, high),
            ):
                self._rows[path] = tuple(row)  # type: ignore[assignment]
        except (sqlite3.Error, OSError):
            self.close()

    def _key(self, file: LocalFile) -> str:
        return f"{self.root}/{file.relative}"

    def lookup(self, file: LocalFile) -> Digest | None:
        """The cached digest of `file`, if its size, mtime and inode are unchanged."""
        row = self._rows.get(self._key(file))
        if row is None or row[:3] != (file.size, file.mtime_ns, file.inode):
            return None
        self.hits += 1
        sha, part_size, parts = row[3], row[4], row[5]
        if part_size:
            checksums = tuple(parts.split(","))
            return Digest(sha, composite_checksum(checksums), part_size, checksums)
        return Digest(sha, full_object_checksum(sha))

    def store(self, file: LocalFile, digest: Digest) -> None:
        """Remember `digest` for `file` (thread-safe; written by `flush`)."""
        if self._db is None or time.time_ns() - file.mtime_ns < RACY_WINDOW_NS:
            return
        row: _Row = (
            file.size,
            file.mtime_ns,
            file.inode,
            digest.sha256,
            digest.part_size,
            ",".join(digest.part_checksums),
        )
        with self._lock:
            self._pending.append((self._key(file), row))

    def keep_only(self, files: list[LocalFile]) -> None:
        """Forget, at the next `flush`, the files under the root that are no longer there
        (call only when `files` is the whole tree, not a --include/--exclude selection)."""
        present = {self._key(f) for f in files}
        self._forget = [path for path in self._rows if path not in present]

    def flush(self) -> None:
        """Write what `store` collected (called from the thread that opened the cache)."""
        with self._lock:
            pending, self._pending = self._pending, []
        forget, self._forget = self._forget, []
        for path in forget:
            self._rows.pop(path, None)
        self._rows.update(pending)
        if self._db is None or not (pending or forget):
            return
        try:
            with self._db:
                self._db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in forget])
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(path, *row) for path, row in pending],
                )
        except sqlite3.Error:
            self.close()

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None
