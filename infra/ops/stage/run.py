"""One `stage` run: the plan of work (each file skipped or uploaded, and why), carried out
in a thread pool, then the manifest. `stage()` is the entry point the CLI calls."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions as bce
from botocore.client import BaseClient
from rich.console import Console

from infra.ops.awsclient import S3Url, client, translate_error
from infra.ops.stage import hashing
from infra.ops.stage.hashing import Digest, HashCache, full_object_checksum, part_layout
from infra.ops.stage.local import LocalFile, list_local_files
from infra.ops.stage.manifest import (
    KMS_ALGORITHMS,
    MANIFEST_NAME,
    METADATA_SHA256,
    ManifestEntry,
    entry_from_response,
    previous_entries,
    write_manifest,
)
from infra.ops.stage.options import (
    MIB,
    Cancelled,
    StageOptions,
    StageUsageError,
    check_options,
)
from infra.ops.stage.progress import Display
from infra.ops.stage.remote import (
    RemoteObject,
    Target,
    abort_stale_uploads,
    check_key,
    head,
    list_remote,
    prepare_target,
    same_checksum,
)
from infra.ops.stage.transfer import Uploader, adapted_part_size

# Files up to this size are read in one call, hashed and sent from the same bytes.
SMALL_FILE_BODY_BYTES = 1 * MIB


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
    hash_cache_hits: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Outcome:
    file: LocalFile
    action: str  # "uploaded" | "skipped" | "would-upload" | "would-skip" | "failed"
    reason: str = ""
    entry: ManifestEntry | None = None


def _record_mismatch(
    record: ManifestEntry, file: LocalFile, digest: Digest, key_arn: str | None
) -> str | None:
    """Why the object a manifest entry describes is not this file (None: it is)."""
    if record.sha256 != digest.sha256:
        return "checksum differs"
    if record.sse not in KMS_ALGORITHMS:
        return "not encrypted with SSE-KMS"
    if key_arn and record.kms_key_id not in (None, key_arn):
        return f"encrypted with another KMS key ({record.kms_key_id})"
    return None


def _head_mismatch(
    found: dict[str, Any], size: int, digest: Digest, key_arn: str | None
) -> str | None:
    """Why the object HEAD describes is not this file (None: it is, skip it).

    The full-file SHA-256 in x-amz-meta-sha256 decides whatever part size wrote the object
    (and a FULL_OBJECT ChecksumSHA256 must agree with it). An object without the metadata
    (another tool's) is compared by its checksum, which then depends on the part layout.
    """
    if found["ContentLength"] != size:
        return f"size {found['ContentLength']} in S3, {size} here"
    remote = found.get("ChecksumSHA256")
    if remote is None:
        return "S3 holds no SHA-256 checksum for it"
    stored_sha = found.get("Metadata", {}).get(METADATA_SHA256)
    full = full_object_checksum(digest.sha256)
    if stored_sha is not None:
        if stored_sha != digest.sha256:
            return "checksum differs"
        if found.get("ChecksumType") == "FULL_OBJECT" and not same_checksum(remote, full):
            return "checksum differs"
    # Not written by stage: a single PUT's checksum is the full file's, a multipart one's
    # is COMPOSITE for its part layout (HeadObject may drop the "-<parts>" suffix).
    elif not (same_checksum(remote, full) or same_checksum(remote, digest.checksum_sha256)):
        return "checksum differs"
    if found.get("ServerSideEncryption") not in KMS_ALGORITHMS:
        return "not encrypted with SSE-KMS"
    if key_arn and found.get("SSEKMSKeyId") not in (None, key_arn):
        return f"encrypted with another KMS key ({found.get('SSEKMSKeyId')})"
    return None


class _Stager:
    """Decides each file from the listing, the previous manifest and the hash cache (a HEAD
    only where they cannot), uploads what differs, and collects the manifest entries."""

    def __init__(
        self,
        options: StageOptions,
        s3: BaseClient,
        target: Target,
        display: Display,
        cache: HashCache,
        remote: dict[str, RemoteObject],
        records: dict[str, ManifestEntry],
        before_work: Callable[[Target], Target] = lambda target: target,
    ):
        self.options = options
        self.s3 = s3
        self.target = target
        self.display = display
        self.cache = cache
        self.remote = remote
        self.records = records
        # Called once, before the first file that may need uploading is looked at (never on
        # a re-run the listing, manifest and hash cache decide alone): the KMS key check
        # and the stale-upload housekeeping; its usage error stops the run before a write.
        self.before_work = before_work
        self.stop = threading.Event()
        self._hash_lanes = threading.BoundedSemaphore(hashing.hash_lanes())
        self.multipart_files = 0  # set by `run`: how many files go multipart
        self.uploader: Uploader | None = None  # made by `run` once the target is checked

    def layout(self, size: int) -> int | None:
        """The part size a file is uploaded with (None: one PUT): --part-size-mib at most,
        smaller when few large files would leave requests idle, within S3's limits."""
        part = adapted_part_size(
            size, self.options.part_size_bytes, self.options.concurrency, self.multipart_files
        )
        return None if part is None else part_layout(size, part)

    # --- digests ------------------------------------------------------------------------

    def _hash(self, file: LocalFile, layout: int | None) -> Digest:
        # A file of multipart size waits for a hash lane: large files hash a few at a time
        # in file order, the first one's upload overlapping the next one's hashing.
        lane = self._hash_lanes if self.layout(file.size) is not None else None
        with lane or contextlib.nullcontext():
            if self.stop.is_set():
                raise Cancelled()
            digest = hashing.digest_file(
                file.path,
                file.size,
                layout,
                on_bytes=self.display.checked,
                stop=self.stop,
                keep_body_up_to=0 if self.options.dry_run else SMALL_FILE_BODY_BYTES,
            )
        self.cache.store(file, digest)
        return digest

    def _digest(self, file: LocalFile, layout: int | None, cached: Digest | None) -> Digest:
        """A digest valid for `layout`: derived from the cached one when possible."""
        derived = cached.for_layout(layout) if cached is not None else None
        return derived if derived is not None else self._hash(file, layout)

    # --- deciding -----------------------------------------------------------------------

    def _skip(self, file: LocalFile, entry: ManifestEntry) -> _Outcome:
        self.display.not_uploading(file.size)
        action = "would-skip" if self.options.dry_run else "skipped"
        return _Outcome(file, action, "same checksum", entry)

    def quick(self, file: LocalFile, cached: Digest | None) -> _Outcome | None:
        """The outcome when it needs no I/O at all (the cache, listing and manifest agree)."""
        if cached is None:
            return None
        key = self.options.dest.key(file.relative)
        remote, record = self.remote.get(key), self.records.get(key)
        if remote is None or record is None or not self._record_applies(record, remote, file):
            return None
        if _record_mismatch(record, file, cached, self.target.kms_key_arn):
            return None
        self.display.checked(file.size)
        return self._skip(file, dataclasses.replace(record, path=file.relative))

    @staticmethod
    def _record_applies(record: ManifestEntry, remote: RemoteObject, file: LocalFile) -> bool:
        """The manifest entry still describes the listed object (same size and ETag)."""
        return (
            record.sse is not None
            and record.etag == remote.etag
            and record.size == remote.size == file.size
        )

    def process(self, file: LocalFile, cached: Digest | None) -> _Outcome:
        """Hash (unless cached), compare with S3, upload if needed."""
        if self.stop.is_set():
            raise Cancelled()
        key = self.options.dest.key(file.relative)
        layout = self.layout(file.size)
        if cached is not None:
            self.display.checked(file.size)
        remote = self.remote.get(key)
        if remote is None:
            return self._upload(file, key, layout, cached, "new")
        if remote.size != file.size:
            return self._upload(
                file, key, layout, cached, f"size {remote.size} in S3, {file.size} here"
            )
        # Same size: decide by the full SHA-256 (part-size independent); hash with the
        # upload's layout only for a new-looking file, a full read otherwise.
        digest = cached or self._hash(file, None)
        record = self.records.get(key)
        if record is not None and self._record_applies(record, remote, file):
            reason = _record_mismatch(record, file, digest, self.target.kms_key_arn)
            if reason is None:
                return self._skip(file, dataclasses.replace(record, path=file.relative))
            return self._upload(file, key, layout, digest, reason)
        found = head(self.s3, self.target.bucket, key)
        if found is None:
            return self._upload(file, key, layout, digest, "new")
        if layout is not None and not found.get("Metadata", {}).get(METADATA_SHA256):
            # another tool's object: its checksum may be the composite of our layout
            digest = self._digest(file, layout, digest)
        reason = _head_mismatch(found, file.size, digest, self.target.kms_key_arn)
        if reason is None:
            remote_checksum = str(found.get("ChecksumSHA256"))
            checksum = (
                digest.checksum_sha256
                if same_checksum(remote_checksum, digest.checksum_sha256)
                else remote_checksum
            )
            entry = entry_from_response(
                file.relative, key, file.size, digest.sha256, checksum, found
            )
            return self._skip(file, entry)
        return self._upload(file, key, layout, digest, reason)

    # --- uploading ----------------------------------------------------------------------

    def _upload(
        self, file: LocalFile, key: str, layout: int | None, known: Digest | None, reason: str
    ) -> _Outcome:
        if self.options.dry_run:
            return _Outcome(file, "would-upload", reason)
        if self.stop.is_set():
            raise Cancelled()
        digest = self._digest(file, layout, known)
        assert self.uploader is not None
        response = self.uploader.upload(file.path, key, file.size, digest)
        checksum = response.get("ChecksumSHA256")
        if checksum is None or response.get("ServerSideEncryption") is None:
            # Some endpoints (moto) omit these from CompleteMultipartUpload: ask.
            found = head(self.s3, self.target.bucket, key)
            if found is None:
                return _Outcome(file, "failed", "uploaded but not visible in S3")
            response = {**found, **{k: v for k, v in response.items() if k == "VersionId"}}
            checksum = response.get("ChecksumSHA256")
        if not same_checksum(checksum, digest.checksum_sha256):
            return _Outcome(
                file, "failed", "S3's checksum differs from the file's (did it change?)"
            )
        # Ours, not the response's: HeadObject may drop the composite's "-<parts>" suffix.
        entry = entry_from_response(
            file.relative, key, file.size, digest.sha256, digest.checksum_sha256, response
        )
        return _Outcome(file, "uploaded", reason, entry)

    # --- the run ------------------------------------------------------------------------

    def run(self, files: list[LocalFile], result: StageResult) -> list[ManifestEntry]:
        entries: list[ManifestEntry] = []
        threshold = self.options.part_size_bytes
        self.multipart_files = sum(1 for f in files if f.size >= threshold)
        todo: list[tuple[LocalFile, Digest | None]] = []
        for file in files:
            cached = self.cache.lookup(file)
            outcome = self.quick(file, cached)
            if outcome is None:
                todo.append((file, cached))
            else:
                self._record(outcome, result, entries)
        if not todo:
            return entries
        self.target = self.before_work(self.target)
        if not self.options.dry_run:
            self.uploader = Uploader(
                self.s3, self.target, self.options.concurrency, self.stop, self.display.uploaded
            )
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="llmcloud-stage")
        # Futures report to a queue as they finish: waiting on the set of pending futures
        # instead costs O(pending) per wake-up, which dominated the CPU of 2 000 small files.
        finished: queue.SimpleQueue[tuple[Future[_Outcome], LocalFile]] = queue.SimpleQueue()
        try:
            try:
                for file, cached in todo:
                    fut = pool.submit(self.process, file, cached)
                    fut.add_done_callback(lambda f, file=file: finished.put((f, file)))
                for _ in range(len(todo)):
                    while True:
                        try:  # a timeout, so a Ctrl-C reaches the main thread promptly
                            fut, file = finished.get(timeout=0.5)
                            break
                        except queue.Empty:
                            continue
                    self._record(self._outcome(fut, file), result, entries)
            except BaseException:
                # Ctrl-C or a fatal error: threads stop at their next chunk or part, and
                # multipart uploads in flight are aborted before the pool is gone.
                self.stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        finally:
            pool.shutdown(wait=True)
            if self.uploader is not None:
                self.uploader.close()
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


def _manifest_unchanged(previous: dict[str, ManifestEntry], entries: list[ManifestEntry]) -> bool:
    return len(previous) == len(entries) and all(previous.get(e.key) == e for e in entries)


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def stage_client(
    concurrency: int, region: str | None = None, endpoint_url: str | None = None
) -> BaseClient:
    """The S3 client a run shares across all its threads.

    Pooled connections: one per request in flight (at most `concurrency`) plus the
    checking threads' HEADs and the main thread. Every body carries a ChecksumSHA256 we
    computed and S3 verifies, so SigV4 payload signing (botocore's default on plain-http
    endpoints) would hash every byte again for nothing, and botocore's own request
    checksum is only wanted where S3 requires one (we always send ours).
    """
    return client(
        "s3",
        region=region,
        endpoint_url=endpoint_url,
        max_pool_connections=2 * concurrency + 2,
        s3={"payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        # stage builds every request's parameters itself; validating them again costs
        # ~0.1 ms of CPU per request (measured with cProfile on 2 000 small files).
        parameter_validation=False,
    )


def _run(
    options: StageOptions,
    s3: BaseClient,
    target: Target,
    console: Console | None,
    cache: HashCache | None,
    files: list[LocalFile],
    remote: dict[str, RemoteObject],
    records: dict[str, ManifestEntry],
    result: StageResult,
    before_work: Callable[[Target], Target],
) -> tuple[list[ManifestEntry], Target]:
    """The files decided and uploaded, with the progress bars and the hash cache; the
    target as the run used it (its key checked if anything needed uploading)."""
    cache = cache or HashCache(options.src)
    if not options.include and not options.exclude:
        cache.keep_only(files)  # deleted files leave the cache with this run
    try:
        with Display(
            console, len(files), result.bytes_total, upload=not options.dry_run
        ) as display:
            stager = _Stager(options, s3, target, display, cache, remote, records, before_work)
            return stager.run(files, result), stager.target
    finally:
        cache.flush()  # what was hashed stays hashed, even after a Ctrl-C
        result.hash_cache_hits = cache.hits
        cache.close()


def stage(
    options: StageOptions,
    *,
    s3: BaseClient | None = None,
    kms: BaseClient | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    console: Console | None = None,
    cache: HashCache | None = None,
) -> StageResult:
    """Upload `options.src` to `options.dest`; see the package docstring.

    Raises AwsUsageError (StageUsageError) for usage problems before anything is written.
    `console` shows progress bars (None: silent). Clients are made from region and
    endpoint_url unless given (tests pass clients with injected failures); `cache` is the
    hash cache (default: the one in the cache directory).
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
    s3 = s3 or stage_client(options.concurrency, region, endpoint_url)
    result = StageResult(options.dest, len(files), sum(f.size for f in files))
    # The requests before the run go out together (one round trip, not three): the bucket
    # check (and its default KMS key), the previous manifest and the listing. A --kms-key
    # given as its ARN is checked (DescribeKey) only once a file may need uploading, with
    # stale uploads of a killed run aborted right after, before any upload of this run (S3's
    # clock need not agree with ours): nothing is written unless the bucket and key checks
    # pass, and a re-run that finds everything in place makes no KMS client and no request.
    keys = {options.dest.key(f.relative) for f in files}

    def before_work(unchecked: Target) -> Target:
        checked = check_key(unchecked, kms, endpoint_url)
        if not options.dry_run:
            result.aborted_uploads = abort_stale_uploads(s3, options.dest, keys, started_at)
        return checked

    before = ThreadPoolExecutor(3, thread_name_prefix="llmcloud-stage-pre")
    try:
        target_f = before.submit(
            prepare_target, s3, options.dest, options.kms_key, kms, endpoint_url,
            defer_key_check=True,
        )  # fmt: skip
        records_f = before.submit(previous_entries, s3, options.dest)
        remote_f = before.submit(list_remote, s3, options.dest, expected_keys=list(keys))
        target = target_f.result()
        records, remote = records_f.result(), remote_f.result()
    finally:
        before.shutdown(wait=True, cancel_futures=True)
    entries, target = _run(
        options, s3, target, console, cache, files, remote, records, result, before_work
    )

    if not options.dry_run and result.ok:
        if _manifest_unchanged(records, entries):
            # Nothing uploaded and every entry as the manifest in S3 has it: rewriting it
            # would only change its staged_at (and cost a PUT of the whole document).
            result.manifest_url = f"s3://{options.dest.bucket}/{options.dest.key(MANIFEST_NAME)}"
        else:
            target = check_key(target, kms, endpoint_url)  # already, if anything was uploaded
            result.manifest_url = write_manifest(s3, options.dest, target, entries)
    result.seconds = time.perf_counter() - t0
    return result
