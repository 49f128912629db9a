"""How much faster `llmcloud stage` uploads a dataset than a plain boto3 loop.

Against a local moto_server on 127.0.0.1 that this script starts (a separate process by
default, like a real endpoint; `--server thread` runs it inside this process), on the
same generated files (default: 200 files of 4 MiB), same bucket, same SSE-KMS key:
  baseline  a single-threaded loop of `s3.upload_file(...)` (use_threads=False)
  stage     `infra.ops.stage.stage()`: hashing, listing, parallel uploads with SHA-256
            checksums, a HEAD per object, the manifest (everything the command does)
  resume    `stage()` again on the same prefix: every file checked and skipped
Each measured run writes to a fresh prefix; objects are deleted between runs so the
server's memory stays flat. Reports the times, MiB/s and baseline / stage (target >= 2).

    python benchmarks/stage.py [--files 200] [--size-mib 4] [--concurrency 16]
                               [--repeat 3] [--server process|thread] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.ops.awsclient import client, parse_s3_url  # noqa: E402
from infra.ops.stage import MIB, StageOptions, stage  # noqa: E402

REGION = "us-east-1"
BUCKET = "llm-bench-datasets"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start at {url}") from None
            time.sleep(0.1)


def server_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) the server process has used, from /proc (Linux)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def moto_server(kind: str) -> Iterator[tuple[str, int | None]]:
    """A moto_server on 127.0.0.1 (URL, pid): its own process, or a thread of this one."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if kind == "thread":
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield url, None
        finally:
            server.stop()
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(url)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def make_dataset(root: Path, files: int, size_bytes: int) -> Path:
    src = root / "tokens"
    src.mkdir(parents=True)
    block = os.urandom(size_bytes)
    for i in range(files):
        # distinct content per file (a different first 8 bytes) without generating N blocks
        (src / f"shard-{i:05d}.bin").write_bytes(i.to_bytes(8, "little") + block[8:])
    return src


def baseline(s3: Any, src: Path, prefix: str, key_arn: str) -> float:
    """The plain loop a user would write: one file after another, one thread."""
    config = TransferConfig(use_threads=False)
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_arn}
    started = time.perf_counter()
    for path in sorted(src.iterdir()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.name}", ExtraArgs=extra, Config=config)
    return time.perf_counter() - started


def staged(src: Path, prefix: str, endpoint: str, concurrency: int, part_size_mib: int) -> float:
    options = StageOptions(
        src,
        parse_s3_url(f"s3://{BUCKET}/{prefix}"),
        concurrency=concurrency,
        part_size_mib=part_size_mib,
    )
    started = time.perf_counter()
    result = stage(options, region=REGION, endpoint_url=endpoint)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"stage failed: {result.failed}")
    return elapsed


def delete_prefix(s3: Any, prefix: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size-mib", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--part-size-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median counts")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    size_bytes = int(args.size_mib * MIB)
    total_mib = args.files * size_bytes / MIB
    times: dict[str, list[float]] = {"baseline": [], "stage": [], "resume": []}

    cpu: dict[str, list[tuple[float, float | None]]] = {name: [] for name in times}

    with tempfile.TemporaryDirectory() as tmp, moto_server(args.server) as (endpoint, pid):

        def measure(name: str, run: Any) -> None:
            client_cpu, server_cpu = time.process_time(), server_cpu_seconds(pid)
            times[name].append(run())
            after = server_cpu_seconds(pid)
            cpu[name].append(
                (
                    time.process_time() - client_cpu,
                    None if after is None or server_cpu is None else after - server_cpu,
                )
            )

        src = make_dataset(Path(tmp), args.files, size_bytes)
        s3 = client("s3", region=REGION, endpoint_url=endpoint)
        kms = client("kms", region=REGION, endpoint_url=endpoint)
        key_arn = kms.create_key(Description="bench data key")["KeyMetadata"]["Arn"]
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_encryption(
            Bucket=BUCKET,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key_arn,
                        }
                    }
                ]
            },
        )
        # Warm-up (imports, connection pools, server code paths), not measured.
        warm = make_dataset(Path(tmp) / "warm", 4, 64 * 1024)
        baseline(s3, warm, "warm-b", key_arn)
        staged(warm, "warm-s", endpoint, args.concurrency, args.part_size_mib)

        for run in range(args.repeat):
            # Alternate the order so neither side always runs on a warmer server.
            order = ("baseline", "stage") if run % 2 == 0 else ("stage", "baseline")
            for which in order:
                prefix = f"{which}-{run}"
                if which == "baseline":
                    measure("baseline", lambda p=prefix: baseline(s3, src, p, key_arn))
                else:
                    for name in ("stage", "resume"):
                        measure(
                            name,
                            lambda p=prefix: staged(
                                src, p, endpoint, args.concurrency, args.part_size_mib
                            ),
                        )
                delete_prefix(s3, prefix)

    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["baseline"] / median["stage"]
    report = {
        "files": args.files,
        "size_mib": args.size_mib,
        "total_mib": round(total_mib, 1),
        "concurrency": args.concurrency,
        "server": args.server,
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "seconds": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
        "median_seconds": {k: round(v, 3) for k, v in median.items()},
        "mib_per_s": {k: round(total_mib / v, 1) for k, v in median.items()},
        "median_cpu_seconds": {
            k: {
                "client": round(statistics.median(c for c, _ in v), 2),
                "server": _median_or_none([s for _, s in v]),
            }
            for k, v in cpu.items()
        },
        "ratio_baseline_over_stage": round(ratio, 2),
        "target_ratio": 2.0,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.files} files x {args.size_mib:g} MiB = {total_mib:.0f} MiB, moto_server "
        f"({args.server}) on 127.0.0.1, {os.cpu_count()} CPUs, median of {args.repeat}"
    )
    labels = {
        "baseline": "baseline  boto3 upload_file loop, 1 thread",
        "stage": f"stage     --concurrency {args.concurrency}",
        "resume": "resume    stage rerun, all skipped",
    }
    for name, label in labels.items():
        cpus = report["median_cpu_seconds"][name]
        server = "n/a" if cpus["server"] is None else f"{cpus['server']:.1f}"
        print(
            f"  {label:<44} {median[name]:7.2f} s  {total_mib / median[name]:7.1f} MiB/s"
            f"   cpu s: client {cpus['client']:.1f}, server {server}"
        )
    print(f"  ratio baseline / stage: {ratio:.2f}x (target >= 2.0x)")


if __name__ == "__main__":
    main()
