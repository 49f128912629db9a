"""Hashing local files once: the SHA-256s S3 needs (full file, per part) and the hash cache.

S3's SHA-256 checksum of a single PUT is base64(sha256(file)); a multipart object's is
COMPOSITE, base64(sha256(sha256(part1) || sha256(part2) ...)) + "-<parts>", since S3 has
no full-object type for SHA-256 (full-object checksums are CRC-only: docs.aws.amazon.com/
AmazonS3/latest/userguide/checking-object-integrity-upload.html). One read of a file gives
the full SHA-256 (x-amz-meta-sha256, part-size independent) and each part's SHA-256 (sent
as the part's ChecksumSHA256, so botocore never hashes the body again).

The hash cache maps (path, size, mtime_ns, inode) -> those digests in a SQLite file under
the cache directory, so a re-run reads no unchanged file. A changed size, mtime or inode
(a rewrite, a `mv` over it) misses the cache and re-hashes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.ops.stage.local import LocalFile
from infra.ops.stage.options import MIB, Cancelled

READ_BUFFER_BYTES = 1 * MIB
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


def digest_file(
    path: Path,
    size: int,
    part_size: int | None,
    *,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    keep_body_up_to: int = 0,
) -> Digest:
    """SHA-256 of the file and the S3 checksum(s) of its upload, in one read.

    A file of at most `keep_body_up_to` bytes is read in one call and its bytes kept.
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
        parts: list[str] = []
        part = hashlib.sha256()
        in_part = 0
        read = 0
        buffer = bytearray(READ_BUFFER_BYTES)
        view = memoryview(buffer)
        while n := fh.readinto(buffer):
            chunk = view[:n]
            full.update(chunk)
            read += n
            if part_size:
                offset = 0
                while offset < n:
                    take = min(n - offset, part_size - in_part)
                    part.update(chunk[offset : offset + take])
                    in_part += take
                    offset += take
                    if in_part == part_size:
                        parts.append(base64.b64encode(part.digest()).decode())
                        part, in_part = hashlib.sha256(), 0
            if on_bytes:
                on_bytes(n)
            if stop is not None and stop.is_set():
                raise Cancelled()
    if read != size:
        raise OSError(f"file changed while staging ({size} bytes listed, {read} read)")
    sha = full.hexdigest()
    if not part_size:
        return Digest(sha, full_object_checksum(sha))
    if in_part:
        parts.append(base64.b64encode(part.digest()).decode())
    checksums = tuple(parts)
    return Digest(sha, composite_checksum(checksums), part_size, checksums)


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
