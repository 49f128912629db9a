"""The S3 side of the plan of work: the bucket and KMS key checked, one listing of the
destination prefix (ListObjectsV2, in parallel per key range when there are many files or
per sub-prefix when the tree is wide), a HEAD only where the listing and the manifest cannot
decide, stale multipart uploads."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import botocore.exceptions as bce
from botocore.client import BaseClient

from infra.ops.awsclient import (
    AwsUsageError,
    S3Url,
    aws_errors,
    client,
    error_code,
    translate_error,
)

# Listing in parallel pays off once the prefix has at least this many sub-prefixes.
MIN_SUBPREFIXES_FOR_PARALLEL_LISTING = 2
MAX_LISTING_THREADS = 8
# More expected keys than this: the key space is split at every this-many-th expected key
# and the ranges (StartAfter ... up to the next split key) are listed in parallel, each
# about one page (ListObjectsV2 returns up to 1 000 keys), instead of one page after the
# other (a page's continuation token is only known once the page before has arrived).
LIST_RANGE_KEYS = 900
MAX_KEYS_PER_PAGE = 1000  # ListObjectsV2's MaxKeys limit
# A range's pages ask for its expected keys and this many more (objects not in SRC), so
# a range that holds exactly its expected keys is one request returning only them.
LIST_RANGE_SLACK_KEYS = 10


@dataclass(frozen=True)
class Target:
    """The bucket as checked: its region and the KMS key objects get (ARN when known)."""

    bucket: str
    region: str
    kms_key_id: str | None  # what we send as SSEKMSKeyId; None = bucket default KMS key
    kms_key_arn: str | None  # to compare with existing objects' SSEKMSKeyId
    # DescribeKey done (or nothing to check: the AWS managed aws/s3 key). False only for a
    # key given as its ARN, whose check waits until something is to be written.
    key_checked: bool = True


@dataclass(frozen=True)
class RemoteObject:
    """What ListObjectsV2 says about an object: enough to match it with a manifest entry."""

    size: int
    etag: str


def check_bucket(s3: BaseClient, bucket: str) -> str:
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


def _key_arn(key: str) -> str | None:
    """`key` when it is a key ARN (arn:...:key/ID), else None (an alias or a bare id)."""
    return key if key.startswith("arn:") and ":key/" in key else None


def _resolve_kms_key(kms: BaseClient | None, key: str) -> str | None:
    """The ARN of `key` (ARN, alias or id); None when DescribeKey is not allowed."""
    if kms is None:
        return _key_arn(key)
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
            return _key_arn(key)
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


def prepare_target(
    s3: BaseClient,
    dest: S3Url,
    kms_key: str | None,
    kms: BaseClient | None = None,
    endpoint_url: str | None = None,
    *,
    defer_key_check: bool = False,
) -> Target:
    """Check the bucket and choose the KMS key: --kms-key, else the bucket's default.

    The key is resolved to its ARN with DescribeKey (in the bucket's region) so objects
    name the exact key and a missing or disabled key is a usage error before any upload.
    With `defer_key_check`, a key already given as its ARN is not checked here: the caller
    calls `check_key` before it writes anything (a re-run with nothing to upload then
    needs no KMS client and no DescribeKey). An alias or bare id is always resolved here,
    since deciding what is already in S3 compares the objects' key ARN.
    """
    region = check_bucket(s3, dest.bucket)
    key = kms_key if kms_key is not None else _bucket_default_kms_key(s3, dest.bucket)
    if key is None:  # the bucket defaults to the AWS managed key aws/s3
        return Target(dest.bucket, region, None, None)
    unchecked = Target(dest.bucket, region, key, _key_arn(key), key_checked=False)
    if defer_key_check and unchecked.kms_key_arn is not None:
        return unchecked
    return check_key(unchecked, kms, endpoint_url)


def check_key(
    target: Target, kms: BaseClient | None = None, endpoint_url: str | None = None
) -> Target:
    """`target` with its KMS key checked by DescribeKey (AwsUsageError: missing, disabled or
    not a symmetric encryption key); unchanged when already checked."""
    if target.key_checked or target.kms_key_id is None:
        return target
    key = target.kms_key_id
    if kms is None:
        with contextlib.suppress(AwsUsageError):
            kms = client("kms", region=target.region, endpoint_url=endpoint_url)
    arn = _resolve_kms_key(kms, key)
    return Target(target.bucket, target.region, arn or key, arn)


def _prefix(dest: S3Url) -> str:
    return f"{dest.prefix}/" if dest.prefix else ""


def _list_under(s3: BaseClient, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    found: dict[str, RemoteObject] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = RemoteObject(obj["Size"], obj.get("ETag", ""))
    return found


def _list_range(
    s3: BaseClient, bucket: str, prefix: str, after: str | None, last: str | None, expected: int
) -> dict[str, RemoteObject]:
    """Objects under `prefix` with after < key <= last (None: unbounded), where `expected`
    local keys lie: pages of that many keys and a few more (not S3's 1 000, most of which
    would belong to the next range and cost the server and the parser for nothing)."""
    found: dict[str, RemoteObject] = {}
    args: dict[str, Any] = {
        "Bucket": bucket,
        "Prefix": prefix,
        "MaxKeys": min(MAX_KEYS_PER_PAGE, expected + LIST_RANGE_SLACK_KEYS),
    }
    if after is not None:
        args["StartAfter"] = after
    for page in s3.get_paginator("list_objects_v2").paginate(**args):
        contents = page.get("Contents", [])
        for obj in contents:
            if last is not None and obj["Key"] > last:
                return found
            found[obj["Key"]] = RemoteObject(obj["Size"], obj.get("ETag", ""))
        if last is not None and contents and contents[-1]["Key"] >= last:
            return found
    return found


def _list_ranges(
    s3: BaseClient, dest: S3Url, keys: Sequence[str], threads: int, range_keys: int
) -> dict[str, RemoteObject]:
    # S3 lists keys in UTF-8 byte order, which is the code point order Python sorts by.
    ordered = sorted(keys)
    splits = [ordered[i] for i in range(range_keys - 1, len(ordered) - 1, range_keys)]
    ranges = list(zip([None, *splits], [*splits, None], strict=True))
    last_range = len(ordered) - range_keys * (len(ranges) - 1)
    counts = [range_keys] * (len(ranges) - 1) + [last_range]
    prefix = _prefix(dest)
    found: dict[str, RemoteObject] = {}
    with (
        aws_errors(f"list s3://{dest.bucket}/{prefix}"),
        ThreadPoolExecutor(min(threads, len(ranges))) as pool,
    ):
        for part in pool.map(
            lambda r, n: _list_range(s3, dest.bucket, prefix, *r, n), ranges, counts
        ):
            found.update(part)
    return found


def list_remote(
    s3: BaseClient,
    dest: S3Url,
    threads: int = MAX_LISTING_THREADS,
    expected_keys: Sequence[str] = (),
    range_keys: int = LIST_RANGE_KEYS,
) -> dict[str, RemoteObject]:
    """Key -> size and ETag of every object under the destination prefix.

    With more `expected_keys` (the local files' keys) than `range_keys` (under the 1 000 keys
    of a page), the key space is split at every `range_keys`-th of them and the ranges are listed in parallel (every key
    under the prefix is in exactly one range, expected or not). Otherwise the first listing
    uses Delimiter='/' so a wide tree (train/, val/, shard-dirs/...) is then listed one
    sub-prefix per thread; a flat prefix costs one paginated listing.
    """
    if len(expected_keys) > range_keys and threads > 1:
        return _list_ranges(s3, dest, expected_keys, threads, range_keys)
    prefix = _prefix(dest)
    found: dict[str, RemoteObject] = {}
    subprefixes: list[str] = []
    with aws_errors(f"list s3://{dest.bucket}/{prefix}"):
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=dest.bucket, Prefix=prefix, Delimiter="/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                found[obj["Key"]] = RemoteObject(obj["Size"], obj.get("ETag", ""))
            subprefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if len(subprefixes) >= MIN_SUBPREFIXES_FOR_PARALLEL_LISTING and threads > 1:
            with ThreadPoolExecutor(min(threads, len(subprefixes))) as pool:
                for part in pool.map(lambda p: _list_under(s3, dest.bucket, p), subprefixes):
                    found.update(part)
        else:
            for sub in subprefixes:
                found.update(_list_under(s3, dest.bucket, sub))
    return found


def abort_stale_uploads(s3: BaseClient, dest: S3Url, keys: set[str], before: datetime) -> int:
    """Abort incomplete multipart uploads of our keys left by a killed run (kill -9).

    Only keys this run is about to write, and only uploads started before it: a stale
    upload is invisible but billed until the bucket's lifecycle rule removes it.
    """
    prefix = _prefix(dest)
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


def head(s3: BaseClient, bucket: str, key: str) -> dict[str, Any] | None:
    """HeadObject with its checksum; None when the object does not exist."""
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
