"""Sending bytes to S3: one PUT per small file, multipart for large ones, memory bounded.

Every request carries the SHA-256 we already computed (ChecksumSHA256 of the object or
of the part), so S3 rejects bytes that differ (BadDigest) and botocore does not hash the
body again: with the checksum header set it skips its own request checksum
(botocore 1.44 httpchecksum.resolve_request_checksum_algorithm: `has_checksum_header`),
and SigV4 payload signing is off on the client. Parts are streamed from the file
(`FileRange`), never held in memory, so memory does not grow with part size; at most
`concurrency` requests are in flight (one semaphore for PUTs and parts). A multipart
upload that fails or is cancelled is aborted after its in-flight parts finished, so S3
never shows a partial object and nothing stays billed.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
from botocore.client import BaseClient

from infra.ops.stage.hashing import Digest
from infra.ops.stage.manifest import METADATA_SHA256
from infra.ops.stage.options import Cancelled
from infra.ops.stage.remote import Target

_POLL_S = 0.2  # how often a file waiting for its parts looks at the stop flag


# Parts shrink down to this size (never below a smaller --part-size-mib) when a run has too
# few parts to keep its requests busy: one 256 MiB file in 64 MiB parts is 4 requests in
# flight out of 16. 8 MiB is s3transfer's and the AWS CLI's multipart_chunksize.
MIN_ADAPTED_PART_BYTES = 8 * 1024 * 1024
# Parts wanted in the run per allowed request: enough that the last parts of one file
# overlap the first of the next. Measured against moto_server on 4 x 256 MiB (2 cores,
# 3 runs each): 64 MiB parts cost the server 10.2 s CPU, 16 MiB 7.3-8.7 s, 8 MiB 8.3-9.3 s,
# `aws s3 cp` (8 MiB) 8.3-9.8 s.
PARTS_PER_REQUEST_SLOT = 4


def adapted_part_size(
    size: int, threshold: int, concurrency: int, multipart_files: int
) -> int | None:
    """The part size for a file of `size` bytes; None: one PUT (below `threshold`).

    `threshold` (--part-size-mib) is also the largest part. A few huge files get many
    parts in flight (each file gets its share of PARTS_PER_REQUEST_SLOT x `concurrency`
    parts), many files keep the threshold as part size and fill the slots with files.
    """
    if size < threshold:
        return None
    share = max(1, -(-PARTS_PER_REQUEST_SLOT * concurrency // max(1, multipart_files)))
    wanted = -(-size // share)
    return max(min(threshold, MIN_ADAPTED_PART_BYTES), min(threshold, wanted))


class FileRange(io.RawIOBase):
    """`length` bytes of a file from `start`, read on demand: an UploadPart body.

    Seekable (botocore rewinds a body to retry); a rewind takes the bytes back from the
    progress bar.
    """

    def __init__(self, path: Path, start: int, length: int, on_bytes: Callable[[int], None] | None):
        super().__init__()
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._start, self._length, self._pos = start, length, 0
        self._on_bytes = on_bytes
        self._fh.seek(start)

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        pos = max(0, min(self._length, base + offset))
        if self._on_bytes and pos != self._pos:
            self._on_bytes(pos - self._pos)
        self._pos = pos
        self._fh.seek(self._start + pos)
        return pos

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = self._fh.read(n)
        self._pos += len(data)
        if self._on_bytes:
            self._on_bytes(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


class Uploader:
    """Uploads files for one run; thread-safe, shared by every file thread."""

    def __init__(
        self,
        s3: BaseClient,
        target: Target,
        concurrency: int,
        stop: threading.Event,
        on_bytes: Callable[[int], None],
    ):
        self.s3 = s3
        self.target = target
        self.stop = stop
        self.on_bytes = on_bytes
        self._slots = threading.BoundedSemaphore(concurrency)
        self._parts = ThreadPoolExecutor(concurrency, thread_name_prefix="llmcloud-stage-part")
        # Hoisted: the arguments every object is written with.
        self._sse: dict[str, Any] = {"ServerSideEncryption": "aws:kms"}
        if target.kms_key_id:
            self._sse["SSEKMSKeyId"] = target.kms_key_id

    def close(self) -> None:
        self._parts.shutdown(wait=True, cancel_futures=True)

    def upload(self, path: Path, key: str, size: int, digest: Digest) -> dict[str, Any]:
        """Write the object; S3's answer (ETag, VersionId, ChecksumSHA256, SSE)."""
        if digest.part_size is None:
            return self._put(path, key, size, digest)
        return self._multipart(path, key, size, digest)

    def _put(self, path: Path, key: str, size: int, digest: Digest) -> dict[str, Any]:
        with self._slots:
            if self.stop.is_set():
                raise Cancelled()
            body: Any = digest.body if digest.body is not None else FileRange(path, 0, size, None)
            try:
                response = self.s3.put_object(
                    Bucket=self.target.bucket,
                    Key=key,
                    Body=body,
                    ContentLength=size,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=digest.checksum_sha256,
                    Metadata={METADATA_SHA256: digest.sha256},
                    **self._sse,
                )
            finally:
                if isinstance(body, FileRange):
                    body.close()
        self.on_bytes(size)
        return response

    def _multipart(self, path: Path, key: str, size: int, digest: Digest) -> dict[str, Any]:
        assert digest.part_size is not None
        bucket = self.target.bucket
        if self.stop.is_set():
            raise Cancelled()
        upload_id = self.s3.create_multipart_upload(
            Bucket=bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata={METADATA_SHA256: digest.sha256},
            **self._sse,
        )["UploadId"]
        futures: list[Future[dict[str, Any]]] = []
        try:
            for number, checksum in enumerate(digest.part_checksums, start=1):
                start = (number - 1) * digest.part_size
                length = min(digest.part_size, size - start)
                futures.append(
                    self._parts.submit(
                        self._part, path, key, upload_id, number, start, length, checksum
                    )
                )
            pending: set[Future[dict[str, Any]]] = set(futures)
            while pending:
                done, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_EXCEPTION)
                for fut in done:
                    fut.result()  # the first failed part fails the file
                if self.stop.is_set():
                    raise Cancelled()
            parts = [
                {"PartNumber": n, "ETag": f.result()["ETag"], "ChecksumSHA256": c}
                for n, (f, c) in enumerate(zip(futures, digest.part_checksums, strict=True), 1)
            ]
            return self.s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            for fut in futures:
                fut.cancel()
            wait(futures)  # parts in flight finish first, or the abort could miss them
            # A failed abort leaves a stale upload that the next run (and the bucket's
            # lifecycle rule) removes; the error that stopped the upload is the one to raise.
            with contextlib.suppress(bce.BotoCoreError, bce.ClientError):
                self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def _part(
        self,
        path: Path,
        key: str,
        upload_id: str,
        number: int,
        start: int,
        length: int,
        checksum: str,
    ) -> dict[str, Any]:
        with self._slots:
            if self.stop.is_set():
                raise Cancelled()
            with FileRange(path, start, length, self.on_bytes) as body:
                return self.s3.upload_part(
                    Bucket=self.target.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentLength=length,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
