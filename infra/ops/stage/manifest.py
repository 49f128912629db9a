"""`_manifest.json`: what a complete run staged (one entry per object), written last.

Besides path, size and SHA-256, each entry records what S3 answered when the object was
completed (ETag, version id, ChecksumSHA256, SSE-KMS key): a re-run matches an entry to
the listing by key, size and ETag and so decides without a request per object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions as bce
from botocore.client import BaseClient

from infra.ops.awsclient import S3Url, aws_errors, error_code, user_agent
from infra.ops.stage.remote import Target

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "llmcloud.stage.manifest/v1"
METADATA_SHA256 = "sha256"  # x-amz-meta-sha256: the full file's SHA-256, hex
KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")
# Every entry has these; later keys (sse, kms_key_id) are additive and may be missing.
ENTRY_FIELDS = ("path", "key", "size", "sha256", "checksum_sha256")


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
    sse: str | None = None  # x-amz-server-side-encryption S3 reported for the object
    kms_key_id: str | None = None  # its SSEKMSKeyId (an ARN on AWS)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ManifestEntry:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in entry.items() if k in known}
        for name in ("etag", "staged_at"):
            values.setdefault(name, "")
        values.setdefault("version_id", None)
        return cls(**values)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def entry_from_response(
    path: str, key: str, size: int, sha256: str, checksum: str, response: dict[str, Any]
) -> ManifestEntry:
    """The entry of an object from what S3 said about it (PutObject, Complete..., HEAD)."""
    modified = response.get("LastModified")
    version = response.get("VersionId")
    return ManifestEntry(
        path=path,
        key=key,
        size=size,
        sha256=sha256,
        checksum_sha256=checksum,
        etag=str(response.get("ETag", "")),
        version_id=None if version in (None, "null") else str(version),
        staged_at=modified.astimezone(UTC).isoformat() if modified else now(),
        sse=response.get("ServerSideEncryption"),
        kms_key_id=response.get("SSEKMSKeyId"),
    )


def manifest_document(dest: S3Url, entries: Sequence[ManifestEntry]) -> dict[str, Any]:
    ordered = sorted(entries, key=lambda e: e.path)
    return {
        "format": MANIFEST_FORMAT,
        "tool": user_agent(),
        "bucket": dest.bucket,
        "prefix": dest.prefix,
        "staged_at": now(),
        "file_count": len(ordered),
        "total_bytes": sum(e.size for e in ordered),
        "files": [asdict(e) for e in ordered],
    }


def write_manifest(
    s3: BaseClient, dest: S3Url, target: Target, entries: Sequence[ManifestEntry]
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


MISSING = "missing"


def read_manifest(s3: BaseClient, dest: S3Url) -> dict[str, Any] | str:
    """The manifest document, or why it cannot be used (`MISSING...` when there is none)."""
    key = dest.key(MANIFEST_NAME)
    try:
        with aws_errors(f"read s3://{dest.bucket}/{key}"):
            body = s3.get_object(Bucket=dest.bucket, Key=key)["Body"].read()
    except bce.ClientError as e:
        if error_code(e) in ("NoSuchKey", "404"):
            return f"{MISSING} in s3://{dest.bucket}/{dest.prefix}: run `llmcloud stage SRC DEST` first"
        raise
    try:
        doc = json.loads(body)
        files = doc["files"]
        for entry in files:
            missing = [n for n in ENTRY_FIELDS if n not in entry]
            if missing:
                raise KeyError(f"an entry lacks {', '.join(missing)}")
    except (ValueError, KeyError, TypeError) as e:
        return f"not a stage manifest ({type(e).__name__}: {e})"
    if doc.get("format") != MANIFEST_FORMAT:
        return f"unknown manifest format {doc.get('format')!r}; expected {MANIFEST_FORMAT}"
    return doc


def previous_entries(s3: BaseClient, dest: S3Url) -> dict[str, ManifestEntry]:
    """Key -> entry of the destination's manifest; empty when there is none (or unusable)."""
    doc = read_manifest(s3, dest)
    if isinstance(doc, str):
        return {}
    entries: dict[str, ManifestEntry] = {}
    for raw in doc["files"]:
        try:
            entry = ManifestEntry.from_json(raw)
        except TypeError:
            continue
        entries[entry.key] = entry
    return entries
