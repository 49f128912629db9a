"""`llmcloud stage`: upload a local dataset directory to S3, resumably and checksummed.

Why it looks like this:
- boto3's transfer manager does the uploads (parallel multipart, retries, aborting a
  multipart upload that fails or is cancelled), so a partial object is never visible:
  S3 shows a multipart object only when CompleteMultipartUpload succeeds.
- Every object is written with SSE-KMS (the data key) and an S3 additional checksum
  (SHA-256, composite `<b64>-<parts>` for multipart objects) that S3 computes from the
  bytes it received; its full-file SHA-256 also goes into metadata (`x-amz-meta-sha256`).
- Resuming is comparing, not remembering: a file is skipped when S3 already holds an
  object of the same size whose S3 checksum equals the one computed locally for the same
  part layout, encrypted with the same key. A Ctrl-C or a failed run leaves only complete
  objects, and the same command picks up from there.
- `_manifest.json` (path, size, sha256, S3 checksum, etag, version id, staged_at) is
  written last, only when every file is in S3; `--verify` re-checks S3 against it. The
  etag, version id and checksum come from S3's answer to the request that completed each
  object (PutObject / CompleteMultipartUpload), so a small file costs one request.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.client import BaseClient
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster

from infra.ops.awsclient import (
    AwsUsageError,
    S3Url,
    aws_errors,
    client,
    error_code,
    translate_error,
    user_agent,
)

MIB = 1024 * 1024
MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "llmcloud.stage.manifest/v1"
METADATA_SHA256 = "sha256"  # x-amz-meta-sha256: the full file's SHA-256, hex
DEFAULT_CONCURRENCY = 16
DEFAULT_PART_SIZE_MIB = 64
MIN_PART_SIZE_MIB, MAX_PART_SIZE_MIB = 5, 5 * 1024  # S3's limits on a part
MAX_CONCURRENCY = 256
_READ_BUFFER_BYTES = 1 * MIB


class StageUsageError(AwsUsageError):
    """Bad local input (source, flags): exit 2, like the AWS usage errors."""


class _Cancelled(Exception):
    """Raised inside worker threads once the run is being stopped."""


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
        """Files of at least this size go multipart, in parts of this size."""
        return self.part_size_mib * MIB


@dataclass(frozen=True)
class LocalFile:
    path: Path
    relative: str  # POSIX path relative to the source directory: the key suffix
    size: int


@dataclass(frozen=True)
class Digest:
    """The file's SHA-256 (hex) and the S3 SHA-256 checksum its upload must produce."""

    sha256: str
    checksum_sha256: str


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    key: str
    size: int
    sha256: str
    checksum_sha256: str
    etag: str
    version_id: str | None
    staged_at: str


@dataclass
class StageResult:
    """What a run did; `failed` maps a relative path to the reason."""

    dest: S3Url
    files_total: int = 0
    bytes_total: int = 0
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_uploaded: int = 0
    aborted_uploads: int = 0
    seconds: float = 0.0
    manifest_url: str | None = None
    dry_run_actions: list[tuple[str, str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class VerifyResult:
    """`problems` maps a relative path (or the manifest's name) to what is wrong."""

    manifest_url: str
    checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- local files ---------------------------------------------------------------------------


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


def _selected(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(relative, g) for g in include):
        return False
    return not any(fnmatch.fnmatchcase(relative, g) for g in exclude)


def list_local_files(
    src: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[LocalFile]:
    """Regular files under `src` (symlinked files followed), sorted, filtered by globs.

    Globs match the POSIX path relative to `src` (`*` also matches `/`).
    """
    files: list[LocalFile] = []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            relative = path.relative_to(src).as_posix()
            if not path.is_file() or not _selected(relative, include, exclude):
                continue
            files.append(LocalFile(path, relative, path.stat().st_size))
    return files


def part_layout(size: int, part_size: int) -> int | None:
    """The part size the transfer manager uses for a file of `size` bytes; None: one PUT.

    Mirrors s3transfer: multipart when size >= threshold (= part size here), with the
    part size adjusted to S3's limits (at most 10,000 parts of 5 MiB..5 GiB).
    """
    if size < part_size:
        return None
    return ChunksizeAdjuster().adjust_chunksize(part_size, size)


def digest_file(
    path: Path,
    size: int,
    part_size: int | None,
    *,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> Digest:
    """SHA-256 of the file and the S3 checksum of its upload, in one read.

    A single PUT's checksum is base64(sha256(file)); a multipart (COMPOSITE) checksum is
    base64(sha256(sha256(part1) || sha256(part2) ...)) + "-<number of parts>".
    """
    full = hashlib.sha256()
    part_digests: list[bytes] = []
    part = hashlib.sha256()
    in_part = 0
    read = 0
    buffer = bytearray(_READ_BUFFER_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
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
                        part_digests.append(part.digest())
                        part, in_part = hashlib.sha256(), 0
            if on_bytes:
                on_bytes(n)
            if stop is not None and stop.is_set():
                raise _Cancelled()
    if read != size:
        raise OSError(f"file changed while staging ({size} bytes listed, {read} read)")
    if part_size:
        if in_part:
            part_digests.append(part.digest())
        composite = hashlib.sha256(b"".join(part_digests)).digest()
        checksum = f"{base64.b64encode(composite).decode()}-{len(part_digests)}"
    else:
        checksum = base64.b64encode(full.digest()).decode()
    return Digest(full.hexdigest(), checksum)


# --- S3 side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """The bucket as checked: its region and the KMS key objects get (ARN when known)."""

    bucket: str
    region: str
    kms_key_id: str | None  # what we send as SSEKMSKeyId; None = bucket default KMS key
    kms_key_arn: str | None  # to compare with existing objects' SSEKMSKeyId


def _check_bucket(s3: BaseClient, bucket: str) -> str:
    """The bucket's region; AwsUsageError when it does not exist or is not accessible."""
    try:
        with aws_errors(f"read bucket {bucket}"):
            response = s3.head_bucket(Bucket=bucket)
    except bce.ClientError as e:
        code = error_code(e)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise AwsUsageError(
                f"bucket {bucket!r} does not exist (or is in another account/endpoint); "
                "create it with `pulumi up` or check the s3:// URL"
            ) from None
        raise
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(
        response.get("BucketRegion") or headers.get("x-amz-bucket-region") or s3.meta.region_name
    )


def _resolve_kms_key(kms: BaseClient | None, key: str) -> str | None:
    """The ARN of `key` (ARN, alias or id); None when DescribeKey is not allowed."""
    if kms is None:
        return key if key.startswith("arn:") and ":key/" in key else None
    try:
        meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    except bce.ClientError as e:
        code = error_code(e)
        if code in ("NotFoundException", "InvalidArnException", "ValidationException"):
            raise AwsUsageError(
                f"KMS key {key!r} not found in {kms.meta.region_name}: pass --kms-key with the "
                "data key's ARN, id or alias (for example alias/llm-prod-data)"
            ) from None
        usage = translate_error(e)
        if usage is not None and code in ("AccessDenied", "AccessDeniedException"):
            return key if key.startswith("arn:") and ":key/" in key else None
        raise usage or e from None
    if meta.get("KeyState") != "Enabled":
        raise AwsUsageError(
            f"KMS key {key!r} is {meta.get('KeyState')}, not Enabled: pass an enabled --kms-key"
        )
    if meta.get("KeyUsage") not in (None, "ENCRYPT_DECRYPT") or meta.get("KeySpec") not in (
        None,
        "SYMMETRIC_DEFAULT",
    ):
        raise AwsUsageError(
            f"KMS key {key!r} is not a symmetric encryption key; S3 needs SYMMETRIC_DEFAULT"
        )
    return str(meta["Arn"])


def _bucket_default_kms_key(s3: BaseClient, bucket: str) -> str | None:
    """The bucket's default KMS key id (None = the AWS managed aws/s3 key)."""
    try:
        with aws_errors(f"read the default encryption of bucket {bucket}"):
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
                "Rules"
            ]
    except AwsUsageError as e:
        raise AwsUsageError(f"{e}; or pass --kms-key to choose the key yourself") from None
    except bce.ClientError as e:
        if error_code(e) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse"):
            return default.get("KMSMasterKeyID")
    algorithm = next(
        (
            r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
            for r in rules
            if r.get("ApplyServerSideEncryptionByDefault")
        ),
        "none",
    )
    raise AwsUsageError(
        f"bucket {bucket!r} has no KMS default encryption (default: {algorithm}); pass "
        "--kms-key with the data key (for example alias/llm-prod-data)"
    )


def _list_remote(s3: BaseClient, dest: S3Url) -> dict[str, int]:
    """Key -> size of every object under the destination prefix."""
    sizes: dict[str, int] = {}
    prefix = f"{dest.prefix}/" if dest.prefix else ""
    with aws_errors(f"list s3://{dest.bucket}/{prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=dest.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                sizes[obj["Key"]] = obj["Size"]
    return sizes


def _abort_stale_uploads(s3: BaseClient, dest: S3Url, keys: set[str], before: datetime) -> int:
    """Abort incomplete multipart uploads of our keys left by a killed run (kill -9).

    Only keys this run is about to write, and only uploads started before it: a stale
    upload is invisible but billed until the bucket's lifecycle rule removes it.
    """
    prefix = f"{dest.prefix}/" if dest.prefix else ""
    aborted = 0
    try:
        with aws_errors(f"list multipart uploads of s3://{dest.bucket}/{prefix}"):
            for page in s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=dest.bucket, Prefix=prefix
            ):
                for upload in page.get("Uploads", []):
                    if upload["Key"] in keys and upload["Initiated"] < before:
                        s3.abort_multipart_upload(
                            Bucket=dest.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
    except AwsUsageError:
        # Housekeeping only: without s3:ListBucketMultipartUploads/AbortMultipartUpload the
        # bucket's lifecycle rule still removes stale uploads.
        pass
    return aborted


def _head(s3: BaseClient, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except bce.ClientError as e:
        if error_code(e) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def same_checksum(remote: str | None, expected: str) -> bool:
    """Whether S3's SHA-256 checksum equals the expected one.

    A composite checksum reads `<b64>-<parts>` from GetObject but some endpoints return only
    `<b64>` from HeadObject; the base64 part alone already commits to every part's digest
    and to the part count (base64 has no '-'), so the bases are compared.
    """
    return remote is not None and remote.split("-", 1)[0] == expected.split("-", 1)[0]


def _mismatch(head: dict[str, Any], size: int, digest: Digest, key_arn: str | None) -> str | None:
    """Why the existing object is not this file (None: it is, skip it)."""
    if head["ContentLength"] != size:
        return f"size {head['ContentLength']} in S3, {size} here"
    remote = head.get("ChecksumSHA256")
    if remote is None:
        return "S3 holds no SHA-256 checksum for it"
    if not same_checksum(remote, digest.checksum_sha256):
        return "checksum differs"
    if head.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse"):
        return "not encrypted with SSE-KMS"
    if key_arn and head.get("SSEKMSKeyId") not in (None, key_arn):
        return f"encrypted with another KMS key ({head.get('SSEKMSKeyId')})"
    return None


def _entry(file: LocalFile, key: str, digest: Digest, head: dict[str, Any]) -> ManifestEntry:
    modified = head.get("LastModified")
    staged_at = modified.astimezone(UTC).isoformat() if modified else _now()
    version = head.get("VersionId")
    return ManifestEntry(
        path=file.relative,
        key=key,
        size=file.size,
        sha256=digest.sha256,
        checksum_sha256=digest.checksum_sha256,
        etag=str(head.get("ETag", "")),
        version_id=None if version in (None, "null") else str(version),
        staged_at=staged_at,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the run ---------------------------------------------------------------------------------


class _Progress(BaseSubscriber):
    """s3transfer subscriber that advances the rich progress bar (negative on retries)."""

    def __init__(self, advance: Callable[[int], None]):
        self._advance = advance

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._advance(bytes_transferred)


@dataclass
class _Outcome:
    file: LocalFile
    action: str  # "uploaded" | "skipped" | "would-upload" | "would-skip" | "failed"
    reason: str = ""
    entry: ManifestEntry | None = None


class _Display:
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
            TransferSpeedColumn(),
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
        self.progress.advance(self.check, n)

    def uploaded(self, n: int) -> None:
        if self.upload is not None:
            self.progress.advance(self.upload, n)

    def not_uploading(self, size: int) -> None:
        """A skipped file leaves the upload total (so speed and ETA stay honest)."""
        if self.upload is not None:
            with self._lock:
                total = self.progress.tasks[self.upload].total or 0
                self.progress.update(self.upload, total=max(0, total - size))

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            if self.upload is not None:
                self.progress.update(self.upload, files=self._files())

    def __enter__(self) -> _Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


class _Stager:
    """One `stage` run: checks each file (hash, compare) in a thread pool and hands the
    ones to upload to the transfer manager; collects manifest entries."""

    def __init__(self, options: StageOptions, s3: BaseClient, target: _Target, display: _Display):
        self.options = options
        self.s3 = s3
        self.target = target
        self.display = display
        self.stop = threading.Event()
        self.remote_sizes: dict[str, int] = {}
        self._responses: dict[str, dict[str, Any]] = {}
        self._responses_lock = threading.Lock()
        self.transfer = (
            None
            if options.dry_run
            else create_transfer_manager(
                s3,
                TransferConfig(
                    multipart_threshold=options.part_size_bytes,
                    multipart_chunksize=options.part_size_bytes,
                    max_concurrency=options.concurrency,
                    use_threads=True,
                    preferred_transfer_client="classic",
                ),
            )
        )

    def extra_args(self, digest: Digest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "ServerSideEncryption": "aws:kms",
            "ChecksumAlgorithm": "SHA256",
            "Metadata": {METADATA_SHA256: digest.sha256},
        }
        if "-" not in digest.checksum_sha256:
            # One PUT: send the checksum of the bytes we hashed. S3 rejects the upload
            # (BadDigest) if what arrives differs, and botocore skips hashing it again.
            args["ChecksumSHA256"] = digest.checksum_sha256
        if self.target.kms_key_id:
            args["SSEKMSKeyId"] = self.target.kms_key_id
        return args

    def process(self, file: LocalFile) -> _Outcome:
        """Hash, compare with S3, upload if needed, and read back what S3 stored."""
        if self.stop.is_set():
            raise _Cancelled()
        key = self.options.dest.key(file.relative)
        digest = digest_file(
            file.path,
            file.size,
            part_layout(file.size, self.options.part_size_bytes),
            on_bytes=self.display.checked,
            stop=self.stop,
        )
        reason = "new"
        if self.remote_sizes.get(key) == file.size:
            head = _head(self.s3, self.target.bucket, key)
            if head is not None:
                mismatch = _mismatch(head, file.size, digest, self.target.kms_key_arn)
                if mismatch is None:
                    self.display.not_uploading(file.size)
                    action = "would-skip" if self.options.dry_run else "skipped"
                    return _Outcome(file, action, "same checksum", _entry(file, key, digest, head))
                reason = mismatch
        elif key in self.remote_sizes:
            reason = f"size {self.remote_sizes[key]} in S3, {file.size} here"
        if self.options.dry_run:
            return _Outcome(file, "would-upload", reason)
        if self.stop.is_set():
            raise _Cancelled()
        assert self.transfer is not None
        future = self.transfer.upload(
            str(file.path),
            self.target.bucket,
            key,
            extra_args=self.extra_args(digest),
            subscribers=[_Progress(self.display.uploaded)],
        )
        future.result()
        with self._responses_lock:
            stored = self._responses.pop(key, None)
        if stored is None or stored.get("ChecksumSHA256") is None:
            # Some endpoints (moto) omit the checksum from CompleteMultipartUpload: ask.
            stored = _head(self.s3, self.target.bucket, key)
            if stored is None:
                return _Outcome(file, "failed", "uploaded but not visible in S3")
        if not same_checksum(stored.get("ChecksumSHA256"), digest.checksum_sha256):
            return _Outcome(
                file, "failed", "S3's checksum differs from the file's (did it change?)"
            )
        return _Outcome(file, "uploaded", reason, _entry(file, key, digest, stored))

    # What S3 answered to the request that made each object visible (PutObject or
    # CompleteMultipartUpload): its ETag, version id and checksum go into the manifest
    # without another request. s3transfer does not hand responses back, so botocore's
    # events carry the key from the request to the response.
    _COMPLETING = ("PutObject", "CompleteMultipartUpload")

    def _remember_key(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") == self.target.bucket:
            context["llmcloud_stage_key"] = params.get("Key")

    def _keep_response(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        key = context.get("llmcloud_stage_key")
        if key and http_response.status_code < 300 and "Error" not in parsed:
            with self._responses_lock:
                self._responses[key] = parsed

    @contextlib.contextmanager
    def _capturing_responses(self) -> Iterator[None]:
        events = self.s3.meta.events
        for op in self._COMPLETING:
            events.register(f"before-parameter-build.s3.{op}", self._remember_key)
            events.register(f"after-call.s3.{op}", self._keep_response)
        try:
            yield
        finally:
            for op in self._COMPLETING:
                events.unregister(f"before-parameter-build.s3.{op}", self._remember_key)
                events.unregister(f"after-call.s3.{op}", self._keep_response)

    def run(self, files: list[LocalFile], result: StageResult) -> list[ManifestEntry]:
        entries: list[ManifestEntry] = []
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="llmcloud-stage")
        try:
            # Leaving the TransferManager's context on an exception (Ctrl-C included)
            # cancels its in-flight transfers, which aborts their multipart uploads.
            with self._capturing_responses(), self.transfer or contextlib.nullcontext():
                try:
                    by_future = {pool.submit(self.process, file): file for file in files}
                    pending: set[Future[_Outcome]] = set(by_future)
                    while pending:
                        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                        for fut in done:
                            self._record(self._outcome(fut, by_future[fut]), result, entries)
                except BaseException:
                    self.stop.set()  # checking threads stop at their next chunk
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        finally:
            pool.shutdown(wait=True)
        return entries

    def _outcome(self, fut: Future[_Outcome], file: LocalFile) -> _Outcome:
        """The file's outcome; a credentials/permission error stops the whole run (every
        other file would hit it too), anything else fails this file and the run goes on."""
        try:
            return fut.result()
        except (bce.BotoCoreError, bce.ClientError) as e:
            usage = None if isinstance(e, bce.ConnectionError) else translate_error(e, self._doing)
            if usage is not None:
                raise usage from None
            return _Outcome(file, "failed", _describe(e))
        except Exception as e:  # an unreadable file, a cancelled or failed transfer
            return _Outcome(file, "failed", _describe(e))

    @property
    def _doing(self) -> str:
        return f"stage into s3://{self.target.bucket}"

    def _record(self, outcome: _Outcome, result: StageResult, entries: list[ManifestEntry]) -> None:
        file = outcome.file
        if outcome.action in ("would-upload", "would-skip"):
            verb = "upload" if outcome.action == "would-upload" else "skip"
            result.dry_run_actions.append((verb, file.relative, file.size, outcome.reason))
            (result.uploaded if verb == "upload" else result.skipped).append(file.relative)
        elif outcome.action == "failed":
            result.failed[file.relative] = outcome.reason
        else:
            assert outcome.entry is not None
            entries.append(outcome.entry)
            if outcome.action == "uploaded":
                result.uploaded.append(file.relative)
                result.bytes_uploaded += file.size
            else:
                result.skipped.append(file.relative)
        self.display.file_done()


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def prepare_target(
    s3: BaseClient,
    dest: S3Url,
    kms_key: str | None,
    kms: BaseClient | None = None,
    endpoint_url: str | None = None,
) -> _Target:
    """Check the bucket and choose the KMS key: --kms-key, else the bucket's default.

    The key is resolved to its ARN with DescribeKey (in the bucket's region) so objects
    name the exact key and a missing or disabled key is a usage error before any upload.
    """
    region = _check_bucket(s3, dest.bucket)
    key = kms_key if kms_key is not None else _bucket_default_kms_key(s3, dest.bucket)
    if key is None:  # the bucket defaults to the AWS managed key aws/s3
        return _Target(dest.bucket, region, None, None)
    if kms is None:
        with contextlib.suppress(AwsUsageError):
            kms = client("kms", region=region, endpoint_url=endpoint_url)
    arn = _resolve_kms_key(kms, key)
    return _Target(dest.bucket, region, arn or key, arn)


def stage(
    options: StageOptions,
    *,
    s3: BaseClient | None = None,
    kms: BaseClient | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    console: Console | None = None,
) -> StageResult:
    """Upload `options.src` to `options.dest`; see the module docstring.

    Raises AwsUsageError (StageUsageError) for usage problems before anything is written.
    `console` shows progress bars (None: silent). Clients are made from region and
    endpoint_url unless given (tests pass clients with injected failures).
    """
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    check_options(options)
    files = list_local_files(options.src, options.include, options.exclude)
    if any(f.relative == MANIFEST_NAME for f in files):
        files = [f for f in files if f.relative != MANIFEST_NAME]
        if console is not None:
            console.print(f"note: skipping {MANIFEST_NAME} of SRC: stage writes its own")
    if not files:
        filters = " after --include/--exclude" if options.include or options.exclude else ""
        raise StageUsageError(f"SRC {str(options.src)!r} has no files to stage{filters}")
    # One connection per transfer thread and per checking thread (HEADs), plus the main one.
    connections = 2 * options.concurrency + 2
    s3 = s3 or client(
        "s3",
        region=region,
        endpoint_url=endpoint_url,
        max_pool_connections=connections,
        # Every body stage sends carries a signed x-amz-checksum-sha256 that S3 verifies,
        # so SigV4 payload signing (botocore's default on plain-http endpoints; off on
        # https with checksums already) would hash every byte a second time for nothing.
        s3={"payload_signing_enabled": False},
    )
    target = prepare_target(s3, options.dest, options.kms_key, kms, endpoint_url)

    result = StageResult(options.dest, len(files), sum(f.size for f in files))
    stager_display = _Display(console, len(files), result.bytes_total, upload=not options.dry_run)
    with stager_display as display:
        stager = _Stager(options, s3, target, display)
        stager.remote_sizes = _list_remote(s3, options.dest)
        if not options.dry_run:
            keys = {options.dest.key(f.relative) for f in files}
            result.aborted_uploads = _abort_stale_uploads(s3, options.dest, keys, started_at)
        entries = stager.run(files, result)

    if not options.dry_run and result.ok:
        result.manifest_url = write_manifest(s3, options.dest, target, entries)
    result.seconds = time.perf_counter() - t0
    return result


def manifest_document(dest: S3Url, entries: Sequence[ManifestEntry]) -> dict[str, Any]:
    ordered = sorted(entries, key=lambda e: e.path)
    return {
        "format": MANIFEST_FORMAT,
        "tool": user_agent(),
        "bucket": dest.bucket,
        "prefix": dest.prefix,
        "staged_at": _now(),
        "file_count": len(ordered),
        "total_bytes": sum(e.size for e in ordered),
        "files": [asdict(e) for e in ordered],
    }


def write_manifest(
    s3: BaseClient, dest: S3Url, target: _Target, entries: Sequence[ManifestEntry]
) -> str:
    """Upload `_manifest.json` (SSE-KMS, SHA-256 checksum): the last object a run writes."""
    body = json.dumps(manifest_document(dest, entries), indent=1).encode()
    args: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "ChecksumAlgorithm": "SHA256"}
    if target.kms_key_id:
        args["SSEKMSKeyId"] = target.kms_key_id
    key = dest.key(MANIFEST_NAME)
    with aws_errors(f"write s3://{dest.bucket}/{key}"):
        s3.put_object(
            Bucket=dest.bucket, Key=key, Body=body, ContentType="application/json", **args
        )
    return f"s3://{dest.bucket}/{key}"


# --- verify ----------------------------------------------------------------------------------


_ENTRY_FIELDS = ("path", "key", "size", "sha256", "checksum_sha256")


def _read_manifest(s3: BaseClient, dest: S3Url) -> dict[str, Any] | str:
    """The manifest, or why it cannot be used."""
    key = dest.key(MANIFEST_NAME)
    try:
        with aws_errors(f"read s3://{dest.bucket}/{key}"):
            body = s3.get_object(Bucket=dest.bucket, Key=key)["Body"].read()
    except bce.ClientError as e:
        if error_code(e) in ("NoSuchKey", "404"):
            return "missing: run `llmcloud stage SRC DEST` first"
        raise
    try:
        doc = json.loads(body)
        files = doc["files"]
        for entry in files:
            missing = [n for n in _ENTRY_FIELDS if n not in entry]
            if missing:
                raise KeyError(f"an entry lacks {', '.join(missing)}")
    except (ValueError, KeyError, TypeError) as e:
        return f"not a stage manifest ({type(e).__name__}: {e})"
    if doc.get("format") != MANIFEST_FORMAT:
        return f"unknown manifest format {doc.get('format')!r}; expected {MANIFEST_FORMAT}"
    return doc


def _verify_entry(s3: BaseClient, bucket: str, entry: dict[str, Any]) -> str | None:
    head = _head(s3, bucket, entry["key"])
    if head is None:
        return "missing in S3"
    if head["ContentLength"] != entry["size"]:
        return f"size {head['ContentLength']} in S3, {entry['size']} in the manifest"
    remote = head.get("ChecksumSHA256")
    if remote is None:
        return "S3 holds no SHA-256 checksum (replaced outside llmcloud stage?)"
    if not same_checksum(remote, entry["checksum_sha256"]):
        return f"SHA-256 checksum {remote} in S3, {entry['checksum_sha256']} in the manifest"
    metadata_sha = head.get("Metadata", {}).get(METADATA_SHA256)
    if metadata_sha not in (None, entry["sha256"]):
        return "x-amz-meta-sha256 differs from the manifest"
    if head.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse"):
        return "not encrypted with SSE-KMS"
    return None


def verify(
    dest: S3Url,
    *,
    src: Path | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    s3: BaseClient | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    console: Console | None = None,
) -> VerifyResult:
    """Re-check every manifest entry against S3 (exists, size, SHA-256 checksum, SSE-KMS);
    with `src`, also check the local files match the manifest (same paths, sizes, SHA-256)."""
    if src is not None and not src.is_dir():
        raise StageUsageError(f"SRC {str(src)!r} is not a directory")
    s3 = s3 or client(
        "s3", region=region, endpoint_url=endpoint_url, max_pool_connections=concurrency + 4
    )
    _check_bucket(s3, dest.bucket)
    result = VerifyResult(f"s3://{dest.bucket}/{dest.key(MANIFEST_NAME)}")
    doc = _read_manifest(s3, dest)
    if isinstance(doc, str):
        result.problems[MANIFEST_NAME] = doc
        return result
    entries: list[dict[str, Any]] = doc["files"]
    with (
        _maybe_status(console, f"verifying {len(entries)} objects"),
        ThreadPoolExecutor(concurrency) as pool,
    ):
        try:
            for entry, problem in zip(
                entries,
                pool.map(lambda e: _verify_entry(s3, dest.bucket, e), entries),
                strict=True,
            ):
                result.checked += 1
                if problem:
                    result.problems[entry["path"]] = problem
        except (bce.BotoCoreError, bce.ClientError) as e:
            raise translate_error(e, f"read s3://{dest.bucket}") or e from None
        if src is not None:
            _verify_local(src, include, exclude, entries, result, pool)
    return result


def _verify_local(
    src: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    entries: list[dict[str, Any]],
    result: VerifyResult,
    pool: ThreadPoolExecutor,
) -> None:
    local = {
        f.relative: f
        for f in list_local_files(src, include, exclude)
        if f.relative != MANIFEST_NAME
    }
    listed = {e["path"]: e for e in entries}
    for path in sorted(local.keys() - listed.keys()):
        result.problems[path] = "in SRC but not in the manifest"
    for path in sorted(listed.keys() - local.keys()):
        result.problems.setdefault(path, "in the manifest but not in SRC")
    both = sorted(local.keys() & listed.keys())

    def local_problem(path: str) -> str | None:
        file, entry = local[path], listed[path]
        if file.size != entry["size"]:
            return f"size {file.size} in SRC, {entry['size']} in the manifest"
        if digest_file(file.path, file.size, None).sha256 != entry["sha256"]:
            return "SHA-256 of the SRC file differs from the manifest"
        return None

    for path, problem in zip(both, pool.map(local_problem, both), strict=True):
        if problem:
            result.problems.setdefault(path, problem)


@contextlib.contextmanager
def _maybe_status(console: Console | None, text: str) -> Iterator[None]:
    if console is None:
        yield
    else:
        with console.status(text):
            yield


# --- output ----------------------------------------------------------------------------------


def format_bytes(n: int) -> str:
    """`4.0 MiB`: binary units, like the progress bar."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


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
        f"{format_bytes(int(rate))}/s), {len(result.skipped)} already there; "
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
