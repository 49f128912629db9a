"""Mirror of published checkpoints to `s3://bucket/prefix/step-N/...` with boto3's
transfer manager (multipart, parallel), in a background thread of rank 0.

The `COMPLETE` marker is uploaded last, so the same rule holds in S3 as on disk: a prefix
without its marker is never restored. boto3 is imported only when a mirror is configured
(the GPU image needs only torch and numpy).
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from workloads.training.layout import COMPLETE, STEP_DIR


def parse_uri(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


class S3Mirror:
    """Uploads each published checkpoint, keeps the newest `keep` in S3, and restores the
    newest complete one into an empty checkpoint directory."""

    def __init__(self, uri: str, keep: int, enabled: bool = True, client: Any = None) -> None:
        self.bucket, self.prefix = parse_uri(uri)
        self.keep = keep
        self.enabled = enabled
        self._client = client
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-mirror")
        self._futures: list[Future] = []
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def upload(self, checkpoint: Path) -> Future | None:
        if not self.enabled:
            return None
        future = self._executor.submit(self._upload, checkpoint)
        self._futures.append(future)
        return future

    def _upload(self, checkpoint: Path) -> None:
        base = f"{self.prefix}{checkpoint.name}/"
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != COMPLETE)
        for path in files:
            self.client.upload_file(
                str(path), self.bucket, base + path.relative_to(checkpoint).as_posix()
            )
        self.client.upload_file(str(checkpoint / COMPLETE), self.bucket, base + COMPLETE)
        self._prune()

    def complete_steps(self) -> list[int]:
        """Steps whose prefix in S3 carries the marker, oldest first."""
        steps = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            for entry in page.get("CommonPrefixes", []):
                name = entry["Prefix"][len(self.prefix) :].rstrip("/")
                match = STEP_DIR.match(name)
                if not match:
                    continue
                marker = f"{self.prefix}{name}/{COMPLETE}"
                listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=marker, MaxKeys=1)
                if listed.get("KeyCount", 0):
                    steps.append(int(match.group(1)))
        return sorted(steps)

    def _prune(self) -> None:
        steps = self.complete_steps()
        for step in steps[: max(0, len(steps) - self.keep)]:
            base = f"{self.prefix}step-{step:08d}/"
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                # the marker goes first: a half-deleted prefix is never restored
                keys.sort(key=lambda k: not k["Key"].endswith(COMPLETE))
                for key in keys:
                    self.client.delete_object(Bucket=self.bucket, Key=key["Key"])

    def download_latest(self, root: Path) -> Path | None:
        """Fetch the newest complete checkpoint into `root` (through a temp directory and a
        rename, like a local save). Returns its path, or None if S3 has none."""
        steps = self.complete_steps()
        if not steps:
            return None
        name = f"step-{steps[-1]:08d}"
        base = f"{self.prefix}{name}/"
        tmp = root / f".tmp-{name}"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                target = tmp / obj["Key"][len(base) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, obj["Key"], str(target))
        final = root / name
        tmp.rename(final)
        print(f"[trainer] restored {final} from s3://{self.bucket}/{base}", file=sys.stderr)
        return final

    def close(self) -> None:
        """Wait for uploads in flight; a failed upload is reported, not fatal to training."""
        for future in self._futures:
            try:
                future.result()
            except Exception as e:
                print(f"[trainer] checkpoint upload failed: {e}", file=sys.stderr, flush=True)
        self._futures.clear()
        self._executor.shutdown(wait=True)
