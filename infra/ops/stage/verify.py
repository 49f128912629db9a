"""`llmcloud stage --verify`: re-check S3 (and optionally SRC) against the manifest, a HEAD
per object and a fresh hash per local file (no cache: this is the strong check)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
from botocore.client import BaseClient
from rich.console import Console

from infra.ops.awsclient import S3Url, client, translate_error
from infra.ops.stage import hashing
from infra.ops.stage.local import list_local_files
from infra.ops.stage.manifest import (
    KMS_ALGORITHMS,
    MANIFEST_NAME,
    METADATA_SHA256,
    MISSING,
    read_manifest,
)
from infra.ops.stage.options import DEFAULT_CONCURRENCY, StageUsageError
from infra.ops.stage.progress import maybe_status
from infra.ops.stage.remote import check_bucket, head, same_checksum


@dataclass
class VerifyResult:
    """`problems` maps a relative path (or the manifest's name) to what is wrong."""

    manifest_url: str
    checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_entry(s3: BaseClient, bucket: str, entry: dict[str, Any]) -> str | None:
    found = head(s3, bucket, entry["key"])
    if found is None:
        return "missing in S3"
    if found["ContentLength"] != entry["size"]:
        return f"size {found['ContentLength']} in S3, {entry['size']} in the manifest"
    remote = found.get("ChecksumSHA256")
    if remote is None:
        return "S3 holds no SHA-256 checksum (replaced outside llmcloud stage?)"
    if not same_checksum(remote, entry["checksum_sha256"]):
        return f"SHA-256 checksum {remote} in S3, {entry['checksum_sha256']} in the manifest"
    metadata_sha = found.get("Metadata", {}).get(METADATA_SHA256)
    if metadata_sha not in (None, entry["sha256"]):
        return "x-amz-meta-sha256 differs from the manifest"
    if found.get("ServerSideEncryption") not in KMS_ALGORITHMS:
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
    with `src`, also check the local files match the manifest (same paths, sizes, SHA-256).

    A prefix with no manifest is a usage error (StageUsageError: exit 2), not a finding.
    """
    if src is not None and not src.is_dir():
        raise StageUsageError(f"SRC {str(src)!r} is not a directory")
    s3 = s3 or client(
        "s3", region=region, endpoint_url=endpoint_url, max_pool_connections=concurrency + 4
    )
    check_bucket(s3, dest.bucket)
    result = VerifyResult(f"s3://{dest.bucket}/{dest.key(MANIFEST_NAME)}")
    doc = read_manifest(s3, dest)
    if isinstance(doc, str) and doc.startswith(MISSING):
        raise StageUsageError(f"--verify: {MANIFEST_NAME}: {doc}")
    if isinstance(doc, str):
        result.problems[MANIFEST_NAME] = doc
        return result
    entries: list[dict[str, Any]] = doc["files"]
    with (
        maybe_status(console, f"verifying {len(entries)} objects"),
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
        if hashing.digest_file(file.path, file.size, None).sha256 != entry["sha256"]:
            return "SHA-256 of the SRC file differs from the manifest"
        return None

    for path, problem in zip(both, pool.map(local_problem, both), strict=True):
        if problem:
            result.problems.setdefault(path, problem)
