"""`llmcloud stage`: upload a local dataset directory to S3, resumably and checksummed.

Modules, one concern each: `options` (what was asked), `local` (files under SRC),
`hashing` (SHA-256s and the hash cache), `remote` (bucket, KMS key, the listing),
`manifest` (`_manifest.json`), `transfer` (PUT and multipart), `run` (the plan of work and
`stage()`), `verify` (`--verify`), `progress` (bars and summaries).

Why it looks like this:
- Every object is written with SSE-KMS (the data key), an S3 SHA-256 checksum of the bytes
  we hashed (COMPOSITE `<b64>-<parts>` for multipart objects: S3 has no full-object SHA-256
  for those) that S3 verifies on arrival, and the full file's SHA-256 in metadata
  (`x-amz-meta-sha256`). A partial object is never visible: a multipart object appears only
  when CompleteMultipartUpload succeeds, and a failed or cancelled one is aborted.
- Resuming is comparing, not remembering: one listing of the destination prefix, matched
  with the previous manifest by key, size and ETag, and the local hash cache decide a
  re-run without a request per object or a read of unchanged files; an object the
  manifest does not describe is HEADed and decided by its x-amz-meta-sha256, whatever part
  size wrote it. A Ctrl-C or a failed run leaves only complete objects, and the same
  command picks up from there.
- `_manifest.json` is written last, only when every file is in S3; `--verify` re-checks S3
  (a HEAD per object) and, with SRC, re-hashes the local files against it.
"""

from __future__ import annotations

from infra.ops.stage import hashing
from infra.ops.stage.hashing import Digest, HashCache, cache_dir, part_layout
from infra.ops.stage.local import LocalFile, list_local_files
from infra.ops.stage.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    METADATA_SHA256,
    ManifestEntry,
    manifest_document,
    write_manifest,
)
from infra.ops.stage.options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE_MIB,
    MAX_CONCURRENCY,
    MAX_PART_SIZE_MIB,
    MIB,
    MIN_PART_SIZE_MIB,
    StageOptions,
    StageUsageError,
    check_options,
)
from infra.ops.stage.progress import (
    dry_run_lines,
    failure_message,
    format_bytes,
    format_speed,
    summary_line,
    verify_failure_message,
)
from infra.ops.stage.remote import prepare_target, same_checksum
from infra.ops.stage.run import StageResult, stage, stage_client
from infra.ops.stage.verify import VerifyResult, verify

digest_file = hashing.digest_file

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PART_SIZE_MIB",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MAX_CONCURRENCY",
    "MAX_PART_SIZE_MIB",
    "METADATA_SHA256",
    "MIB",
    "MIN_PART_SIZE_MIB",
    "Digest",
    "HashCache",
    "LocalFile",
    "ManifestEntry",
    "StageOptions",
    "StageResult",
    "StageUsageError",
    "VerifyResult",
    "cache_dir",
    "check_options",
    "digest_file",
    "dry_run_lines",
    "failure_message",
    "format_bytes",
    "format_speed",
    "hashing",
    "list_local_files",
    "manifest_document",
    "part_layout",
    "prepare_target",
    "same_checksum",
    "stage",
    "stage_client",
    "summary_line",
    "verify",
    "verify_failure_message",
    "write_manifest",
]
