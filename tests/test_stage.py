"""`llmcloud stage` against moto: SSE-KMS with the data key, manifest + --verify, resume
after an interruption, composite multipart checksums, no partial objects, usage errors."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from infra.cli import app
from infra.ops import stage as staging
from infra.ops.awsclient import AwsUsageError, client, parse_s3_url
from infra.ops.stage import MANIFEST_NAME, StageOptions, stage, verify

REGION = "us-east-1"
MIB = 1024 * 1024
_buckets = itertools.count()


@dataclass
class Aws:
    s3: Any
    kms: Any
    key_arn: str
    alias: str
    bucket: str


def _set_aws_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Fake credentials and a region; no ~/.aws files, no endpoint overrides."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))


def _data_key(kms: Any, name: str) -> tuple[str, str]:
    key = kms.create_key(Description=name)["KeyMetadata"]
    alias = f"alias/{name}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return key["Arn"], alias


def _make_bucket(s3: Any, bucket: str, default_key: str | None) -> None:
    """A versioned bucket whose default encryption is `default_key` (None: AES256)."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    default = (
        {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": default_key}
        if default_key
        else {"SSEAlgorithm": "AES256"}
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}]
        },
    )


@pytest.fixture(autouse=True)
def _hash_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own hash cache (never the user's ~/.cache)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(staging.hashing.CACHE_DIR_ENV, str(cache))
    return cache


@pytest.fixture(scope="module")
def moto_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, str, str]]:
    """In-process moto for the module, with one KMS data key (moto makes an RSA key per
    KMS key, which is slow, so tests share it and get a fresh bucket each)."""
    with pytest.MonkeyPatch.context() as mp:
        _set_aws_env(mp, tmp_path_factory.mktemp("aws-home"))
        with mock_aws():
            s3, kms = client("s3", region=REGION), client("kms", region=REGION)
            arn, alias = _data_key(kms, "llm-test-data")
            yield s3, kms, arn, alias


@pytest.fixture
def aws(moto_world: tuple[Any, Any, str, str]) -> Aws:
    """A fresh versioned bucket whose default encryption is the KMS data key."""
    s3, kms, arn, alias = moto_world
    bucket = f"llm-test-datasets-{next(_buckets)}"
    _make_bucket(s3, bucket, alias)
    return Aws(s3, kms, arn, alias, bucket)


def _dataset(root: Path, count: int = 6, size: int = 48 * 1024) -> Path:
    src = root / "tokens"
    (src / "val").mkdir(parents=True)
    for i in range(count):
        sub = "val" if i % 3 == 2 else ""
        (src / sub / f"shard-{i:05d}.bin").write_bytes(os.urandom(size + i))
    return src


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return _dataset(tmp_path)


def _files(src: Path) -> dict[str, Path]:
    return {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keys(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    response = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for o in response.get("Contents", [])}


def _manifest(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
    return json.loads(body)


def _uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _record_calls(s3: Any, operation: str) -> list[str]:
    """The URL path of every `operation` call the client makes, in order."""
    seen: list[str] = []
    s3.meta.events.register(
        f"before-call.s3.{operation}", lambda params, **_: seen.append(params["url_path"])
    )
    return seen


def _fail_after(s3: Any, operation: str, allowed: int, *, interrupt: bool = False) -> None:
    """Let `allowed` calls of `operation` through, then fail every later one (the network
    died) or, with `interrupt`, send SIGINT to the main thread once (a Ctrl-C)."""
    lock = threading.Lock()
    calls = [0]

    def hook(**_: Any) -> None:
        with lock:
            calls[0] += 1
            n = calls[0]
        if n <= allowed:
            return
        if interrupt:
            if n == allowed + 1:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                time.sleep(0.5)  # the run must still be going when the signal lands
            return
        raise bce.ClientError(
            {"Error": {"Code": "InternalError", "Message": "injected failure"}}, operation
        )

    s3.meta.events.register(f"before-call.s3.{operation}", hook)


def _client() -> Any:
    """A new S3 client (its own event hooks) on the module's moto."""
    return client("s3", region=REGION)


def _put_lookalike(aws: Aws, key: str, size: int) -> None:
    """Overwrite `key` with other bytes of the same size, SSE-KMS and a SHA-256 checksum:
    only the content differs."""
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key=key,
        Body=os.urandom(size),
        ChecksumAlgorithm="SHA256",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=aws.key_arn,
    )


runner = CliRunner()


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["stage", *args])


# --- checksums of the local files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "part_size", "parts"),
    [(0, None, 0), (1000, None, 0), (1000, 1000, 1), (1001, 1000, 2), (2500, 1000, 3)],
)
def test_digest_matches_s3s_checksum_for_single_and_multipart_layouts(
    tmp_path: Path, size: int, part_size: int | None, parts: int
):
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    digest = staging.digest_file(path, size, part_size)

    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    if part_size is None:
        assert digest.checksum_sha256 == base64.b64encode(hashlib.sha256(data).digest()).decode()
    else:
        chunks = [data[i : i + part_size] for i in range(0, size, part_size)]
        joined = b"".join(hashlib.sha256(c).digest() for c in chunks)
        expected = f"{base64.b64encode(hashlib.sha256(joined).digest()).decode()}-{parts}"
        assert digest.checksum_sha256 == expected


@pytest.mark.parametrize(
    ("size", "part_size"),
    [(1, 1000), (999, 1000), (1000, 1000), (5000, 1000), (7777, 1234), (12_345, 5000)],
)
def test_part_hashes_beside_the_full_hash_give_the_one_thread_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, part_size: int
):
    # A read buffer of 333 bytes: many buffers go through the part thread, and part
    # boundaries fall inside them.
    monkeypatch.setattr(staging.hashing, "READ_BUFFER_BYTES", 333)
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    chunks = [data[i : i + part_size] for i in range(0, size, part_size)]
    expected_parts = tuple(base64.b64encode(hashlib.sha256(c).digest()).decode() for c in chunks)

    beside = staging.digest_file(path, size, part_size, parts_beside=True)
    inline = staging.digest_file(path, size, part_size, parts_beside=False)

    assert beside == inline
    assert beside.sha256 == hashlib.sha256(data).hexdigest()
    assert beside.part_checksums == expected_parts
    assert not [t for t in threading.enumerate() if t.name == "llmcloud-stage-parts"]


def test_a_cancel_while_hashing_raises_and_leaves_no_hashing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(staging.hashing, "READ_BUFFER_BYTES", 1000)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(10_000))
    stop = threading.Event()
    seen: list[int] = []

    def progress(n: int) -> None:
        seen.append(n)
        stop.set()  # Ctrl-C after the first chunk

    with pytest.raises(staging.hashing.Cancelled):
        staging.digest_file(path, 10_000, 3000, on_bytes=progress, stop=stop)

    assert seen == [1000]  # stopped at the next chunk, not at the end of the file
    assert not [t for t in threading.enumerate() if t.name == "llmcloud-stage-parts"]


def test_hash_lanes_are_one_per_two_usable_cpus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)
    assert staging.hashing.hash_lanes() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert staging.hashing.hash_lanes() == 1


def test_large_files_are_hashed_one_lane_at_a_time(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src = tmp_path / "big"
    src.mkdir()
    for i in range(4):
        (src / f"shard-{i}.bin").write_bytes(os.urandom(6 * MIB))  # multipart at 5 MiB
    (src / "small.bin").write_bytes(os.urandom(1000))
    monkeypatch.setattr(staging.hashing, "hash_lanes", lambda: 1)
    real = staging.hashing.digest_file
    lock = threading.Lock()
    hashing_now: list[str] = []
    most_at_once: list[int] = []

    def watched(path: Path, *args: Any, **kwargs: Any) -> Any:
        with lock:
            hashing_now.append(path.name)
            most_at_once.append(sum(1 for n in hashing_now if n != "small.bin"))
        try:
            time.sleep(0.02)  # long enough for another thread to get in, were it allowed
            return real(path, *args, **kwargs)
        finally:
            with lock:
                hashing_now.remove(path.name)

    monkeypatch.setattr(staging.hashing, "digest_file", watched)
    dest = parse_s3_url(f"s3://{aws.bucket}/big")

    result = stage(StageOptions(src, dest, concurrency=8, part_size_mib=5), s3=_client())

    assert result.ok and len(result.uploaded) == 5
    assert max(most_at_once) == 1
    assert verify(dest, src=src, s3=_client()).ok


def test_a_ctrl_c_while_hashing_leaves_nothing_partial_and_a_rerun_finishes(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src = tmp_path / "big"
    src.mkdir()
    for i in range(3):
        (src / f"shard-{i}.bin").write_bytes(os.urandom(6 * MIB))
    _age(src)
    real = staging.hashing.digest_file
    interrupted = threading.Event()
    stopped_mid_hash: list[bool] = []

    def ctrl_c_mid_hash(path: Path, *args: Any, **kwargs: Any) -> Any:
        stop, report = kwargs["stop"], kwargs["on_bytes"]

        def progress(n: int) -> None:
            report(n)
            if not interrupted.is_set():
                interrupted.set()
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                # the run sets it on the Ctrl-C: this file stops mid-hash
                stopped_mid_hash.append(stop.wait(5))

        return real(path, *args, **{**kwargs, "on_bytes": progress})

    monkeypatch.setattr(staging.hashing, "digest_file", ctrl_c_mid_hash)
    dest = parse_s3_url(f"s3://{aws.bucket}/big")
    options = StageOptions(src, dest, concurrency=2, part_size_mib=5)

    with pytest.raises(KeyboardInterrupt):
        stage(options, s3=_client())

    assert stopped_mid_hash == [True]
    assert _uploads(aws.s3, aws.bucket) == []
    for key in _keys(aws.s3, aws.bucket):  # whatever is visible is complete
        assert aws.s3.head_object(Bucket=aws.bucket, Key=key)["ContentLength"] == 6 * MIB
    assert f"big/{MANIFEST_NAME}" not in _keys(aws.s3, aws.bucket)
    assert not [t for t in threading.enumerate() if t.name.startswith("llmcloud-stage")]
    cache = staging.HashCache(src)  # what the cache kept is the files' true digest
    for file in staging.list_local_files(src, (), ()):
        cached = cache.lookup(file)
        assert cached is None or cached.sha256 == _sha256(file.path)
    cache.close()

    monkeypatch.setattr(staging.hashing, "digest_file", real)
    again = stage(options, s3=_client())
    assert again.ok and len(again.uploaded) + len(again.skipped) == 3
    assert verify(dest, src=src, s3=_client()).ok


def test_part_layout_mirrors_the_transfer_manager():
    assert staging.part_layout(5 * MIB - 1, 5 * MIB) is None  # below threshold: one PUT
    assert staging.part_layout(5 * MIB, 5 * MIB) == 5 * MIB
    # more than 10,000 parts: s3transfer doubles the part size until it fits
    assert staging.part_layout(100_000 * MIB, 5 * MIB) == 10 * MIB
    assert staging.part_layout(100_001 * MIB, 5 * MIB) == 20 * MIB


def test_a_file_that_changes_size_while_hashing_is_reported(tmp_path: Path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"12345")

    with pytest.raises(OSError, match="file changed while staging"):
        staging.digest_file(path, 4, None)


# --- uploads, encryption, manifest ---------------------------------------------------------


def test_stage_uploads_every_file_with_sse_kms_and_the_given_key(aws: Aws, dataset: Path):
    result = _cli(str(dataset), f"s3://{aws.bucket}/ds/v1", "--kms-key", aws.alias)

    assert result.exit_code == 0, result.output
    assert "6 uploaded" in result.stdout
    files = _files(dataset)
    expected = {f"ds/v1/{p}" for p in files} | {f"ds/v1/{MANIFEST_NAME}"}
    assert _keys(aws.s3, aws.bucket) == expected
    for relative, path in files.items():
        head = aws.s3.head_object(
            Bucket=aws.bucket, Key=f"ds/v1/{relative}", ChecksumMode="ENABLED"
        )
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == aws.key_arn
        assert head["Metadata"]["sha256"] == _sha256(path)
        full = base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
        assert head["ChecksumSHA256"] == full


def test_stage_without_kms_key_uses_the_buckets_default_kms_key(aws: Aws, dataset: Path):
    result = _cli(str(dataset), f"s3://{aws.bucket}/ds")

    assert result.exit_code == 0, result.output
    head = aws.s3.head_object(Bucket=aws.bucket, Key="ds/shard-00000.bin")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", aws.key_arn)


def test_manifest_lists_every_file_and_verify_accepts_it(aws: Aws, dataset: Path):
    assert _cli(str(dataset), f"s3://{aws.bucket}/ds").exit_code == 0

    manifest = _manifest(aws.s3, aws.bucket, "ds")
    files = _files(dataset)
    assert [e["path"] for e in manifest["files"]] == sorted(files)
    assert manifest["file_count"] == len(files)
    for entry in manifest["files"]:
        path = files[entry["path"]]
        head = aws.s3.head_object(Bucket=aws.bucket, Key=entry["key"])
        assert entry["size"] == path.stat().st_size
        assert entry["sha256"] == _sha256(path)
        assert entry["etag"] == head["ETag"]
        assert entry["version_id"] == head["VersionId"]  # the bucket is versioned
        assert entry["staged_at"]
    head = aws.s3.head_object(Bucket=aws.bucket, Key=f"ds/{MANIFEST_NAME}")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", aws.key_arn)

    checked = _cli("--verify", f"s3://{aws.bucket}/ds")
    assert checked.exit_code == 0, checked.output
    assert f"verified {len(files)} objects" in checked.stdout
    with_src = _cli(str(dataset), f"s3://{aws.bucket}/ds", "--verify")
    assert with_src.exit_code == 0, with_src.output


def test_manifest_is_the_last_object_written(aws: Aws, dataset: Path):
    s3 = _client()
    puts = _record_calls(s3, "PutObject")
    heads = _record_calls(s3, "HeadObject")

    result = stage(StageOptions(dataset, parse_s3_url(f"s3://{aws.bucket}/ds")), s3=s3)

    assert result.ok and result.manifest_url == f"s3://{aws.bucket}/ds/{MANIFEST_NAME}"
    assert len(puts) == 7 and puts[-1].endswith(MANIFEST_NAME)
    assert heads == []  # new files: one PUT each, the manifest data comes from its response


# --- resume --------------------------------------------------------------------------------


def test_rerun_after_a_failed_run_uploads_only_the_missing_files(aws: Aws, tmp_path: Path):
    src = _dataset(tmp_path, count=12)
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    broken = _client()
    _fail_after(broken, "PutObject", allowed=5)

    first = stage(StageOptions(src, dest, concurrency=4), s3=broken)

    assert len(first.uploaded) == 5 and len(first.failed) == 7
    assert first.manifest_url is None
    assert len(_keys(aws.s3, aws.bucket)) == 5  # no manifest, nothing partial

    s3 = _client()
    puts = _record_calls(s3, "PutObject")
    second = stage(StageOptions(src, dest, concurrency=4), s3=s3)

    assert second.ok
    assert sorted(second.skipped) == sorted(first.uploaded)
    assert sorted(second.uploaded) == sorted(first.failed)
    assert len(puts) == 7 + 1  # the 7 missing files, then the manifest
    assert verify(dest, src=src, s3=_client()).ok


def test_ctrl_c_aborts_multipart_uploads_and_a_rerun_finishes(aws: Aws, tmp_path: Path):
    src = tmp_path / "big"
    src.mkdir()
    for i in range(3):
        (src / f"shard-{i}.bin").write_bytes(os.urandom(6 * MIB))  # 2 parts of 5 MiB
    dest = parse_s3_url(f"s3://{aws.bucket}/big")
    options = StageOptions(src, dest, concurrency=2, part_size_mib=5)
    interrupted = _client()
    _fail_after(interrupted, "UploadPart", allowed=1, interrupt=True)

    with pytest.raises(KeyboardInterrupt):
        stage(options, s3=interrupted)

    assert _uploads(aws.s3, aws.bucket) == []  # aborted: nothing billed, nothing half-made
    left = _keys(aws.s3, aws.bucket)
    assert f"big/{MANIFEST_NAME}" not in left
    for key in left:  # whatever is visible is complete
        assert aws.s3.head_object(Bucket=aws.bucket, Key=key)["ContentLength"] == 6 * MIB

    again = stage(options, s3=_client())
    assert again.ok and len(again.uploaded) == 3 - len(left) and len(again.skipped) == len(left)
    assert verify(dest, src=src, s3=_client()).ok


def test_rerun_replaces_a_remote_object_whose_checksum_differs(aws: Aws, dataset: Path):
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    assert stage(StageOptions(dataset, dest), s3=_client()).ok
    _put_lookalike(aws, "ds/shard-00001.bin", (dataset / "shard-00001.bin").stat().st_size)

    again = stage(StageOptions(dataset, dest), s3=_client())

    assert again.uploaded == ["shard-00001.bin"] and len(again.skipped) == 5
    assert verify(dest, src=dataset, s3=_client()).ok


def test_stale_multipart_upload_of_a_killed_run_is_aborted(aws: Aws, dataset: Path):
    stale = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key="ds/shard-00000.bin")
    other = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key="elsewhere/file.bin")
    time.sleep(0.01)

    result = stage(StageOptions(dataset, parse_s3_url(f"s3://{aws.bucket}/ds")), s3=_client())

    assert result.ok and result.aborted_uploads == 1
    remaining = {u["UploadId"] for u in _uploads(aws.s3, aws.bucket)}
    assert stale["UploadId"] not in remaining and other["UploadId"] in remaining


# --- multipart -----------------------------------------------------------------------------


def test_multipart_upload_stores_a_composite_checksum_that_verify_accepts(aws: Aws, tmp_path: Path):
    src = tmp_path / "mp"
    src.mkdir()
    data = os.urandom(11 * MIB)
    (src / "big.bin").write_bytes(data)
    dest = parse_s3_url(f"s3://{aws.bucket}/mp")

    result = stage(StageOptions(src, dest, part_size_mib=5), s3=_client())

    assert result.ok
    got = aws.s3.get_object(Bucket=aws.bucket, Key="mp/big.bin", ChecksumMode="ENABLED")
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    expected = f"{base64.b64encode(composite).decode()}-3"
    assert got["ETag"].endswith('-3"')
    assert got["ChecksumSHA256"] == expected
    entry = _manifest(aws.s3, aws.bucket, "mp")["files"][0]
    assert entry["checksum_sha256"] == expected
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert verify(dest, src=src, s3=_client()).ok
    rerun = stage(StageOptions(src, dest, part_size_mib=5), s3=_client())
    assert rerun.skipped == ["big.bin"] and rerun.uploaded == []


def test_failed_multipart_upload_is_aborted_and_leaves_no_object(aws: Aws, tmp_path: Path):
    src = tmp_path / "mp"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(11 * MIB))
    broken = _client()
    _fail_after(broken, "UploadPart", allowed=1)

    result = stage(
        StageOptions(src, parse_s3_url(f"s3://{aws.bucket}/mp"), part_size_mib=5), s3=broken
    )

    assert list(result.failed) == ["big.bin"] and result.manifest_url is None
    assert _keys(aws.s3, aws.bucket) == set()
    assert _uploads(aws.s3, aws.bucket) == []


def test_failed_run_through_the_cli_exits_1_and_names_the_files(
    aws: Aws, dataset: Path, monkeypatch: pytest.MonkeyPatch
):
    real_digest = staging.hashing.digest_file

    def unreadable(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name == "shard-00003.bin":
            raise PermissionError(13, "Permission denied", str(path))
        return real_digest(path, *args, **kwargs)

    monkeypatch.setattr(staging.hashing, "digest_file", unreadable)

    result = _cli(str(dataset), f"s3://{aws.bucket}/ds")

    assert result.exit_code == 1
    assert "1 of 6 files failed to upload (shard-00003.bin: [Errno 13] Permission denied" in (
        result.stderr
    )
    assert "5 are in S3 and no manifest was written: rerun the same command" in result.stderr
    assert f"ds/{MANIFEST_NAME}" not in _keys(aws.s3, aws.bucket)


# --- verify --------------------------------------------------------------------------------


def test_verify_detects_a_corrupted_object_and_names_it(aws: Aws, dataset: Path):
    assert _cli(str(dataset), f"s3://{aws.bucket}/ds").exit_code == 0
    _put_lookalike(aws, "ds/val/shard-00002.bin", (dataset / "val/shard-00002.bin").stat().st_size)
    aws.s3.delete_object(Bucket=aws.bucket, Key="ds/shard-00004.bin")

    result = _cli("--verify", f"s3://{aws.bucket}/ds")

    assert result.exit_code == 1
    assert "val/shard-00002.bin: SHA-256 checksum" in result.stderr
    assert "shard-00004.bin: missing in S3" in result.stderr
    assert "2 problem(s)" in result.stderr
    assert "Traceback" not in result.output


def test_verify_with_src_detects_a_local_file_that_changed(aws: Aws, dataset: Path):
    assert _cli(str(dataset), f"s3://{aws.bucket}/ds").exit_code == 0
    path = dataset / "shard-00000.bin"
    path.write_bytes(os.urandom(path.stat().st_size))
    (dataset / "new.bin").write_bytes(b"late")

    result = _cli(str(dataset), f"s3://{aws.bucket}/ds", "--verify")

    assert result.exit_code == 1
    assert "shard-00000.bin: SHA-256 of the SRC file differs" in result.stderr
    assert "new.bin: in SRC but not in the manifest" in result.stderr


def test_verify_without_a_manifest_is_a_usage_error(aws: Aws):
    result = _cli("--verify", f"s3://{aws.bucket}/never-staged")

    assert result.exit_code == 2  # nothing to verify: the URL is wrong, not the data
    assert f"{MANIFEST_NAME}: missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- dry run, filters ----------------------------------------------------------------------


def test_dry_run_lists_uploads_and_writes_nothing(aws: Aws, dataset: Path):
    result = _cli(str(dataset), f"s3://{aws.bucket}/ds", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "would upload 6 of 6 files" in result.stdout
    assert "upload  val/shard-00002.bin" in result.stdout
    assert _keys(aws.s3, aws.bucket) == set()

    assert _cli(str(dataset), f"s3://{aws.bucket}/ds").exit_code == 0
    (dataset / "shard-00001.bin").write_bytes(b"changed")
    again = _cli(str(dataset), f"s3://{aws.bucket}/ds", "--dry-run")
    assert "would upload 1 of 6 files" in again.stdout
    assert "upload  shard-00001.bin  7 B  (size" in again.stdout
    assert "5 already there" in again.stdout


def test_include_and_exclude_globs_select_files(aws: Aws, dataset: Path):
    result = _cli(
        str(dataset), f"s3://{aws.bucket}/ds", "--include", "val/*",
        "--include", "shard-0000[01].bin", "--exclude", "*00005.bin",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert _keys(aws.s3, aws.bucket) == {
        "ds/shard-00000.bin",
        "ds/shard-00001.bin",
        "ds/val/shard-00002.bin",
        f"ds/{MANIFEST_NAME}",
    }


# --- usage errors: exit 2, one clear message -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "s3://{bucket}/ds"], "does not exist"),
        (["{src}", "{bucket}/ds"], "is not an s3:// URL; use s3://BUCKET/PREFIX"),
        (["{src}", "s3://no-such-bucket/ds"], "bucket 'no-such-bucket' does not exist"),
        (["{src}", "s3://{bucket}/ds", "--kms-key", "alias/nope"], "KMS key 'alias/nope' not found"),
        (["{src}", "s3://{bucket}/ds", "--concurrency", "0"], "--concurrency 0 is out of range"),
        (["{src}", "s3://{bucket}/ds", "--part-size-mib", "1"], "--part-size-mib 1 is out of range"),
        (["{src}", "s3://{bucket}/ds", "--include", "*.nothing"], "has no files to stage after"),
        (["{src}"], "stage needs SRC and DEST"),
        (["{src}", "s3://{bucket}/ds", "--endpoint-url", "localhost:5000"], "--endpoint-url 'localhost:5000' is not a URL"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_clear_message(
    aws: Aws, dataset: Path, tmp_path: Path, args: list[str], message: str
):
    argv = [a.format(src=dataset, missing=tmp_path / "missing", bucket=aws.bucket) for a in args]

    result = _cli(*argv)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert _keys(aws.s3, aws.bucket) == set()


def test_bucket_without_kms_default_encryption_needs_kms_key(aws: Aws, dataset: Path):
    bucket = f"{aws.bucket}-sse-s3"
    _make_bucket(aws.s3, bucket, default_key=None)

    refused = _cli(str(dataset), f"s3://{bucket}/ds")
    accepted = _cli(str(dataset), f"s3://{bucket}/ds", "--kms-key", aws.key_arn)

    assert refused.exit_code == 2
    assert "no KMS default encryption (default: AES256); pass --kms-key" in refused.stderr
    assert accepted.exit_code == 0, accepted.output
    head = aws.s3.head_object(Bucket=bucket, Key="ds/shard-00000.bin")
    assert head["SSEKMSKeyId"] == aws.key_arn


def test_disabled_kms_key_is_a_usage_error(aws: Aws, dataset: Path):
    arn, alias = _data_key(aws.kms, "llm-test-disabled")
    aws.kms.disable_key(KeyId=arn.rsplit("/", 1)[1])

    result = _cli(str(dataset), f"s3://{aws.bucket}/ds", "--kms-key", alias)

    assert result.exit_code == 2
    assert f"KMS key '{alias}' is Disabled, not Enabled" in result.stderr


def test_kms_key_arn_is_checked_only_when_a_file_may_need_uploading(aws: Aws, dataset: Path):
    """A re-run that finds everything in S3 makes no DescribeKey (and no KMS client); with
    a changed file the same bad key is still a usage error before any write."""
    arn, _ = _data_key(aws.kms, "llm-test-rerun")
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    _age(dataset)  # cacheable: the re-run reads nothing
    assert stage(StageOptions(dataset, dest, kms_key=arn), s3=_client()).ok
    aws.kms.disable_key(KeyId=arn.rsplit("/", 1)[1])
    kms = client("kms", region=REGION)
    described: list[str] = []
    kms.meta.events.register("before-call.kms.DescribeKey", lambda **_: described.append("x"))

    again = stage(StageOptions(dataset, dest, kms_key=arn), s3=_client(), kms=kms)

    assert again.ok and again.uploaded == [] and len(again.skipped) == 6 and described == []
    changed = dataset / "shard-00000.bin"
    changed.write_bytes(os.urandom(changed.stat().st_size + 1))
    before = aws.s3.head_object(Bucket=aws.bucket, Key="ds/shard-00000.bin")["ETag"]
    s3 = _client()
    writes = _record_calls(s3, "PutObject") + _record_calls(s3, "CreateMultipartUpload")
    with pytest.raises(AwsUsageError, match=f"KMS key '{arn}' is Disabled, not Enabled"):
        stage(StageOptions(dataset, dest, kms_key=arn), s3=s3, kms=kms)
    assert described == ["x"] and writes == []
    assert aws.s3.head_object(Bucket=aws.bucket, Key="ds/shard-00000.bin")["ETag"] == before
    refused = _cli(str(dataset), f"s3://{aws.bucket}/ds", "--kms-key", arn)
    assert refused.exit_code == 2 and "is Disabled, not Enabled" in refused.stderr


def test_access_denied_on_the_bucket_is_a_usage_error(aws: Aws, dataset: Path):
    s3 = _client()

    def deny(**_: Any) -> None:
        raise bce.ClientError(
            {
                "Error": {"Code": "403", "Message": "Forbidden"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "HeadBucket",
        )

    s3.meta.events.register("before-call.s3.HeadBucket", deny)

    with pytest.raises(AwsUsageError, match=f"access denied to read bucket {aws.bucket}"):
        stage(StageOptions(dataset, parse_s3_url(f"s3://{aws.bucket}/ds")), s3=s3)


# --- the real HTTP path: moto_server on 127.0.0.1 and --endpoint-url ----------------------


@pytest.fixture
def moto_server(moto_world: Any) -> Iterator[str]:
    """moto's HTTP server in a thread (requests to it bypass the in-process mock)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_cli_stages_and_verifies_over_http_with_endpoint_url(moto_server: str, tmp_path: Path):
    s3 = client("s3", region=REGION, endpoint_url=moto_server)
    kms = client("kms", region=REGION, endpoint_url=moto_server)
    arn, alias = _data_key(kms, "llm-http-data")
    bucket = "llm-http-datasets"
    _make_bucket(s3, bucket, alias)
    src = _dataset(tmp_path, count=4)
    (src / "big.bin").write_bytes(os.urandom(6 * MIB))
    flags = ["--endpoint-url", moto_server, "--region", REGION, "--part-size-mib", "5"]

    staged = _cli(str(src), f"s3://{bucket}/ds", *flags)
    rerun = _cli(str(src), f"s3://{bucket}/ds", *flags)
    checked = _cli("--verify", f"s3://{bucket}/ds", *flags)

    assert staged.exit_code == 0, staged.output
    assert "5 uploaded" in staged.stdout
    assert rerun.exit_code == 0, rerun.output
    assert "0 uploaded" in rerun.stdout and "5 already there" in rerun.stdout
    assert checked.exit_code == 0, checked.output
    head = s3.head_object(Bucket=bucket, Key="ds/big.bin")
    assert head["SSEKMSKeyId"] == arn and head["ETag"].endswith('-2"')
    assert _manifest(s3, bucket, "ds")["file_count"] == 5


# --- re-runs: one listing, the manifest and the hash cache decide --------------------------


def _age(src: Path, seconds: float = 60.0) -> None:
    """Backdate every file's mtime: a file modified in the last two seconds is not cached
    (it could change again within the same mtime tick)."""
    past = time.time() - seconds
    for path in src.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every file stage hashes (reads), in order."""
    read: list[str] = []
    real = staging.hashing.digest_file

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        read.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(staging.hashing, "digest_file", counting)
    return read


def test_rerun_decides_from_one_listing_without_a_head_per_object(aws: Aws, tmp_path: Path):
    src = _dataset(tmp_path, count=12)
    _age(src)
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    assert stage(StageOptions(src, dest), s3=_client()).ok

    s3 = _client()
    heads, lists = _record_calls(s3, "HeadObject"), _record_calls(s3, "ListObjectsV2")
    puts, gets = _record_calls(s3, "PutObject"), _record_calls(s3, "GetObject")
    again = stage(StageOptions(src, dest), s3=s3)

    assert again.ok and len(again.skipped) == 12 and again.uploaded == []
    assert heads == []
    assert 1 <= len(lists) <= 3  # the prefix (and its val/ sub-prefix), not one per object
    assert gets == [f"/ds/{MANIFEST_NAME}"]  # the previous manifest, once
    assert puts == []  # nothing changed: not even the manifest is rewritten
    assert again.manifest_url == f"s3://{aws.bucket}/ds/{MANIFEST_NAME}"
    assert verify(dest, src=src, s3=_client()).ok


def test_rerun_still_resends_a_deleted_object_and_a_replaced_one(aws: Aws, tmp_path: Path):
    src = _dataset(tmp_path, count=6)
    _age(src)
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    assert stage(StageOptions(src, dest), s3=_client()).ok
    aws.s3.delete_object(Bucket=aws.bucket, Key="ds/shard-00000.bin")
    _put_lookalike(aws, "ds/shard-00001.bin", (src / "shard-00001.bin").stat().st_size)

    again = stage(StageOptions(src, dest), s3=_client())

    assert sorted(again.uploaded) == ["shard-00000.bin", "shard-00001.bin"]
    assert verify(dest, src=src, s3=_client()).ok


def test_unchanged_files_are_not_read_again_on_a_rerun(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src = _dataset(tmp_path, count=6)
    _age(src)
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    read = _count_reads(monkeypatch)
    assert stage(StageOptions(src, dest), s3=_client()).ok
    assert len(read) == 6

    read.clear()
    again = stage(StageOptions(src, dest), s3=_client())

    assert again.ok and len(again.skipped) == 6
    assert read == [] and again.hash_cache_hits == 6


@pytest.mark.parametrize(
    "change",
    ["mtime", "size", "inode"],
)
def test_a_changed_mtime_size_or_inode_re_hashes_the_file(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
):
    src = _dataset(tmp_path, count=4)
    _age(src)
    dest = parse_s3_url(f"s3://{aws.bucket}/ds")
    assert stage(StageOptions(src, dest), s3=_client()).ok
    path = src / "shard-00001.bin"
    size = path.stat().st_size
    if change == "mtime":  # same size, new bytes, a new mtime (written a minute later)
        path.write_bytes(os.urandom(size))
        os.utime(path, (time.time() - 30, time.time() - 30))
    elif change == "size":
        path.write_bytes(os.urandom(size + 1))
    else:  # replaced by `mv` with a file of the same size and mtime: another inode
        stat = path.stat()
        other = tmp_path / "replacement.bin"
        other.write_bytes(os.urandom(size))
        os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        other.replace(path)
    read = _count_reads(monkeypatch)

    again = stage(StageOptions(src, dest), s3=_client())

    assert read == ["shard-00001.bin"]
    assert again.uploaded == ["shard-00001.bin"] and len(again.skipped) == 3
    assert verify(dest, src=src, s3=_client()).ok


def test_hash_cache_lookup_matches_size_mtime_and_inode(tmp_path: Path):
    src = _dataset(tmp_path, count=1)
    _age(src)
    (file,) = staging.list_local_files(src)
    cache = staging.HashCache(src, tmp_path / "cache.sqlite3")
    digest = staging.digest_file(file.path, file.size, None)
    cache.store(file, digest)
    cache.flush()
    cache.close()

    reopened = staging.HashCache(src, tmp_path / "cache.sqlite3")

    assert reopened.lookup(file) == digest
    assert reopened.lookup(dataclasses.replace(file, mtime_ns=file.mtime_ns + 1)) is None
    assert reopened.lookup(dataclasses.replace(file, size=file.size + 1)) is None
    assert reopened.lookup(dataclasses.replace(file, inode=file.inode + 1)) is None


def test_hash_cache_forgets_files_no_longer_in_the_tree(tmp_path: Path):
    src = _dataset(tmp_path, count=2)
    _age(src)
    first, second = staging.list_local_files(src)
    cache = staging.HashCache(src, tmp_path / "cache.sqlite3")
    for file in (first, second):
        cache.store(file, staging.digest_file(file.path, file.size, None))
    cache.flush()
    cache.keep_only([second])  # the first file was deleted from SRC
    cache.flush()

    reopened = staging.HashCache(src, tmp_path / "cache.sqlite3")

    assert reopened.lookup(first) is None and reopened.lookup(second) is not None


def test_a_file_modified_just_now_is_not_cached(tmp_path: Path):
    src = _dataset(tmp_path, count=1)  # written a moment ago: racily clean
    (file,) = staging.list_local_files(src)
    cache = staging.HashCache(src, tmp_path / "cache.sqlite3")
    cache.store(file, staging.digest_file(file.path, file.size, None))
    cache.flush()

    assert staging.HashCache(src, tmp_path / "cache.sqlite3").lookup(file) is None


def test_an_unwritable_cache_directory_does_not_stop_staging(
    aws: Aws, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(staging.hashing.CACHE_DIR_ENV, str(blocker / "cache"))

    result = stage(StageOptions(dataset, parse_s3_url(f"s3://{aws.bucket}/ds")), s3=_client())

    assert result.ok and len(result.uploaded) == 6


def test_wide_prefix_is_listed_per_sub_prefix(aws: Aws, tmp_path: Path):
    src = tmp_path / "wide"
    for shard in range(5):
        (src / f"part-{shard}").mkdir(parents=True)
        (src / f"part-{shard}" / "x.bin").write_bytes(os.urandom(100 + shard))
    dest = parse_s3_url(f"s3://{aws.bucket}/wide")
    assert stage(StageOptions(src, dest), s3=_client()).ok
    s3 = _client()
    prefixes: list[tuple[str, str | None]] = []
    s3.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: prefixes.append((params["Prefix"], params.get("Delimiter"))),
    )

    listed = staging.remote.list_remote(s3, dest)

    assert set(listed) == {f"wide/part-{i}/x.bin" for i in range(5)} | {f"wide/{MANIFEST_NAME}"}
    assert prefixes[0] == ("wide/", "/")
    assert sorted(prefixes[1:]) == [(f"wide/part-{i}/", None) for i in range(5)]


def test_many_expected_keys_are_listed_in_parallel_ranges_that_miss_no_object(aws: Aws):
    """The key space split at every 4th expected key: every object under the prefix is
    listed once, those between or after the expected keys (not staged from here) too."""
    expected = [f"many/k-{i:03d}" for i in range(0, 40, 2)]  # 20 keys: k-000, k-002, ...
    others = [f"many/k-{i:03d}" for i in range(1, 40, 6)] + ["many/z-last", "many/a/nested"]
    for key in expected + others:
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=key.encode())
    aws.s3.put_object(Bucket=aws.bucket, Key="many-not-under-the-prefix", Body=b"x")
    s3 = _client()
    starts: list[str | None] = []
    s3.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: starts.append(params.get("StartAfter")),
    )
    dest = parse_s3_url(f"s3://{aws.bucket}/many")

    listed = staging.remote.list_remote(
        s3, dest, threads=4, expected_keys=list(reversed(expected)), range_keys=4
    )

    assert listed == staging.remote.list_remote(_client(), dest)  # the one-by-one listing
    assert set(listed) == set(expected) | set(others)
    assert listed["many/z-last"].size == len(b"many/z-last")
    assert sorted(starts, key=str) == sorted([None, *expected[3:-1:4]], key=str)


def test_each_listed_range_returns_about_its_own_keys_not_a_full_page(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
):
    """A re-run's ranges each come back in one request holding their keys and at most the
    slack more, not S3's 1 000 keys, most of them the next range's."""
    monkeypatch.setattr(staging.remote, "LIST_RANGE_SLACK_KEYS", 1)
    expected = [f"many/k-{i:03d}" for i in range(20)]
    for key in expected:
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"x")
    s3 = _client()
    returned: list[int] = []
    s3.meta.events.register(
        "after-call.s3.ListObjectsV2",
        lambda parsed, **_: returned.append(len(parsed.get("Contents", []))),
    )
    dest = parse_s3_url(f"s3://{aws.bucket}/many")

    listed = staging.remote.list_remote(s3, dest, threads=4, expected_keys=expected, range_keys=4)

    assert set(listed) == set(expected)
    assert len(returned) == 5  # 20 keys in ranges of 4: one request each
    assert sum(returned) <= len(expected) + 5 * 1


# --- part size, checksums on the wire --------------------------------------------------------


@pytest.mark.parametrize("manifest", [True, False])
def test_another_part_size_does_not_re_upload(aws: Aws, tmp_path: Path, manifest: bool):
    src = tmp_path / "mp"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(11 * MIB))
    dest = parse_s3_url(f"s3://{aws.bucket}/mp")
    assert stage(StageOptions(src, dest, part_size_mib=5), s3=_client()).ok
    if not manifest:  # a teammate's partial run: decided by x-amz-meta-sha256 via HEAD
        aws.s3.delete_object(Bucket=aws.bucket, Key=f"mp/{MANIFEST_NAME}")
    s3 = _client()
    puts, parts = _record_calls(s3, "PutObject"), _record_calls(s3, "UploadPart")

    again = stage(StageOptions(src, dest, part_size_mib=6), s3=s3)

    assert again.skipped == ["big.bin"] and again.uploaded == []
    assert parts == [] and len(puts) == (0 if manifest else 1)  # the manifest, if gone
    assert verify(dest, src=src, s3=_client()).ok


def test_every_upload_request_carries_our_sha256_and_sse_kms(aws: Aws, tmp_path: Path):
    src = tmp_path / "mixed"
    src.mkdir()
    (src / "small.bin").write_bytes(os.urandom(1000))
    (src / "big.bin").write_bytes(os.urandom(11 * MIB))
    s3 = _client()
    sent: list[tuple[str, dict[str, str]]] = []

    def keep(request: Any, **_: Any) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((request.url, headers))

    s3.meta.events.register("before-send.s3", keep)

    result = stage(StageOptions(src, parse_s3_url(f"s3://{aws.bucket}/m"), part_size_mib=5), s3=s3)

    assert result.ok
    bodies = [(url, h) for url, h in sent if "uploadId=" in url and "partNumber=" in url]
    bodies += [(url, h) for url, h in sent if url.endswith("/m/small.bin")]
    assert len(bodies) == 3 + 1  # 3 parts, 1 PUT
    small = base64.b64encode(hashlib.sha256((src / "small.bin").read_bytes()).digest()).decode()
    assert bodies[-1][1]["x-amz-checksum-sha256"] == small
    for _, headers in bodies:
        assert headers.get("x-amz-checksum-sha256")
        # no checksum botocore computed on its own, no SigV4 hash of the body either
        assert "x-amz-checksum-crc32" not in {k.lower() for k in headers}
    created = [h for url, h in sent if url.endswith("?uploads")]
    assert created and created[0]["x-amz-server-side-encryption"] == "aws:kms"
    assert created[0]["x-amz-meta-sha256"] == _sha256(src / "big.bin")


def test_file_range_streams_only_its_bytes_and_rewinds_progress(tmp_path: Path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 4)
    seen: list[int] = []

    with staging.transfer.FileRange(path, 100, 50, seen.append) as body:
        first = body.read(30)
        body.seek(0)  # botocore rewinds a body to retry it
        whole = body.read()

    assert first == (bytes(range(256)) * 4)[100:130]
    assert whole == (bytes(range(256)) * 4)[100:150]
    assert sum(seen) == 50  # the rewind took the first 30 bytes back


# --- output units ----------------------------------------------------------------------------


def test_progress_bar_and_summary_show_speed_in_the_same_binary_unit():
    from rich.progress import Progress

    progress = Progress()
    task = progress.add_task("uploading", total=100)
    progress.tasks[task].finished_speed = 3 * MIB
    result = staging.StageResult(
        parse_s3_url("s3://bkt/ds"), files_total=1, bytes_total=6 * MIB, uploaded=["x"],
        bytes_uploaded=6 * MIB, seconds=2.0, manifest_url="s3://bkt/ds/_manifest.json",
    )  # fmt: skip

    bar = staging.progress.BinarySpeedColumn().render(progress.tasks[task]).plain

    assert bar == "3.0 MiB/s"
    assert "3.0 MiB/s" in staging.summary_line(result)


@pytest.mark.parametrize(
    ("size_mib", "threshold_mib", "concurrency", "files", "part_mib"),
    [
        (1, 64, 16, 1, None),  # below the threshold: one PUT
        (256, 64, 16, 4, 16),  # 4 files x 16 parts: 4 parts per request slot
        (256, 64, 16, 1, 8),  # one file: parts of 8 MiB, never smaller
        (64, 64, 16, 1, 8),
        (1024, 64, 16, 100, 64),  # many large files fill the slots with files
        (11, 5, 16, 1, 5),  # nor below a smaller --part-size-mib
        (10_000, 64, 16, 1, 64),  # a huge file has parts enough already
    ],
)
def test_part_size_adapts_to_file_size_and_count(
    size_mib: int, threshold_mib: int, concurrency: int, files: int, part_mib: int | None
):
    part = staging.transfer.adapted_part_size(
        size_mib * MIB, threshold_mib * MIB, concurrency, files
    )

    assert part == (None if part_mib is None else part_mib * MIB)


def test_a_single_large_file_goes_up_in_more_parts(aws: Aws, tmp_path: Path):
    src = tmp_path / "one"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(16 * MIB))

    result = stage(
        StageOptions(src, parse_s3_url(f"s3://{aws.bucket}/one"), part_size_mib=16, concurrency=4),
        s3=_client(),
    )

    assert result.ok
    assert aws.s3.head_object(Bucket=aws.bucket, Key="one/big.bin")["ETag"].endswith('-2"')


# --- the command line: typer's conversions, without pydantic ------------------------------


def _converted(runtime: Any, value: Any, descriptor: Any) -> tuple[str, Any]:
    """("ok", value and its type) or ("error", typer's message)."""
    import typer

    param = type("Param", (), {"type_descriptor": descriptor})()
    try:
        out = runtime._coerce_value(value, param=param, ctx=None)
    except typer.BadParameter as e:
        return "error", e.message
    return "ok", (out, type(out))


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (str, "s3://b/p"), (str, ""), (int, "16"), (int, "-3"), (int, "007"), (int, 16),
        (int, "abc"), (int, "1_0"), (int, "16.0"), (int, " 16"), (int, "١٦"), (int, 1.5),
        (bool, True), (bool, False), (list[str], ("*.bin", "val/*")), (list[str], []),
        (list[str], (1, "a")),
    ],
)  # fmt: skip
def test_plain_parameter_conversion_gives_typers_own_result_or_error(annotation: Any, value: Any):
    from typer._coercion import build_runtime_param, resolve_type_descriptor
    from typer.models import OptionInfo

    from infra.plainparams import plain_runtime_param

    descriptor = resolve_type_descriptor(annotation, OptionInfo())
    plain = plain_runtime_param(descriptor)

    assert plain is not None
    typers = _converted(build_runtime_param(descriptor), value, descriptor)
    assert _converted(plain, value, descriptor) == typers


def test_stage_command_line_imports_no_pydantic(tmp_path: Path):
    """typer 0.29 converts parameters through pydantic (~80 ms); stage's plain flags do not."""
    probe = (
        "import sys\nfrom infra.cli import app\n"
        "try:\n    app(sys.argv[1:], prog_name='llmcloud')\nexcept SystemExit as e:\n"
        "    print('code', e.code)\nprint('pydantic' in sys.modules, 'botocore' in sys.modules)"
    )
    argv = ["stage", str(tmp_path), "s3://Not_A_Bucket/x", "--concurrency", "4", "--include", "*"]
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split()[-4:] == ["code", "2", "False", "True"], done.stdout + done.stderr
