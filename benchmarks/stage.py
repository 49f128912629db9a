"""`llmcloud stage` against the AWS CLI (`aws s3 sync`, `aws s3 cp`) on the same data.

Against a local moto_server on 127.0.0.1 that this script starts (its own process, like a
real endpoint), with SSE-KMS under the same key for every tool, on three data sets:
  small   2 000 files x 64 KiB     (many small files: per-request CPU)
  medium    200 files x 4 MiB
  large       4 files x 256 MiB    (multipart: part size, parts in flight, memory)
Each tool runs as the user runs it, a command in its own process:
  sync    `aws s3 sync SRC s3://...`, first upload, then the re-run (everything there)
  cp      `aws s3 cp SRC s3://... --recursive`, first upload (re-sends everything on a re-run)
  stage   `llmcloud stage SRC s3://...`, first upload (cold hash cache), then the re-run
With `--before REV`, `stage` also runs from a copy of the tree at REV (`git archive`, same
venv) as `stage-before`, in the same rounds, and the ratios now / REV are reported too (both
trees then run as `python -m infra` from their root, not the console script).
Runs are interleaved (the order rotates each round) and each writes to a fresh prefix,
deleted afterwards so the server's memory stays flat. Reported: the median wall time and
client CPU (user + system of the command, from wait4) of each, the ratios stage / AWS CLI
(<= 1.0 means stage is at least as fast), the server's CPU and stage's peak RSS.

The AWS CLI is installed from PyPI into the benchmark's own venv (AWSCLI_VENV, gitignored),
never into the project's; `--awscli PATH` uses another `aws` executable instead.

    python benchmarks/stage.py [--sets small,medium,large] [--repeat 3] [--reruns 3]
                               [--before REV] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.ops.awsclient import client  # noqa: E402
from infra.ops.stage import MIB  # noqa: E402

REGION = "us-east-1"
BUCKET = "llm-bench-datasets"
KIB = 1024
# The AWS CLI baseline: awscli from PyPI (1.46.3, the release pip resolved on 2026-12-01;
# it pins botocore 1.43.62), in a venv of its own under a gitignored path (.venv-*/).
AWSCLI_REQUIREMENT = "awscli==1.46.3"
AWSCLI_VENV = ROOT / ".venv-bench-awscli"
LLMCLOUD = ROOT / ".venv" / "bin" / "llmcloud"
PYTHON = ROOT / ".venv" / "bin" / "python"

DATA_SETS: dict[str, tuple[int, int]] = {  # name -> (files, bytes per file)
    "small": (2000, 64 * KIB),
    "medium": (200, 4 * MIB),
    "large": (4, 256 * MIB),
}


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


def server_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) the server process has used, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """A moto_server process on 127.0.0.1: (URL, pid)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
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


def ensure_awscli(explicit: str | None) -> Path:
    """The `aws` executable: --awscli, else the benchmark venv's (created on first use)."""
    if explicit:
        return Path(explicit)
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.exists():
        print(f"installing {AWSCLI_REQUIREMENT} into {AWSCLI_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True)
        subprocess.run(
            [str(AWSCLI_VENV / "bin" / "pip"), "install", "-q", AWSCLI_REQUIREMENT], check=True
        )
    return aws


WRITE_CHUNK_BYTES = 8 * MIB


def make_dataset(root: Path, files: int, size_bytes: int) -> Path:
    """Distinct files (a different first 8 bytes each), mtimes a minute in the past.

    Written in chunks: this process stays small, since a child's peak RSS (wait4's
    ru_maxrss) counts what it inherited from this process before exec.
    """
    root.mkdir(parents=True)
    chunk = os.urandom(min(size_bytes, WRITE_CHUNK_BYTES))
    past = time.time() - 60
    for i in range(files):
        path = root / f"shard-{i:05d}.bin"
        with path.open("wb") as fh:
            fh.write(i.to_bytes(8, "little"))
            left = size_bytes - 8
            while left > 0:
                n = min(left, len(chunk))
                fh.write(chunk[:n] if n < len(chunk) else chunk)
                left -= n
        os.utime(path, (past, past))
    return root


@dataclass
class Measured:
    wall_s: list[float] = field(default_factory=list)
    client_cpu_s: list[float] = field(default_factory=list)
    server_cpu_s: list[float] = field(default_factory=list)
    peak_rss_mib: list[float] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        def med(values: list[float]) -> float | None:
            return round(statistics.median(values), 2) if values else None

        return {
            "wall_s": med(self.wall_s),
            "client_cpu_s": med(self.client_cpu_s),
            "server_cpu_s": med(self.server_cpu_s),
            "peak_rss_mib": med(self.peak_rss_mib),
        }


def waited(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, Any, bytes]:
    """Run `argv` to its end: (wall seconds, its resource usage from wait4, its stderr). An
    exit code outside `ok` is an error naming the command and the end of its stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        where = f" (in {cwd})" if cwd is not None else ""
        raise RuntimeError(f"{' '.join(argv)}{where} exited {code}: {stderr[-2000:]!r}")
    return wall, usage, stderr


def run_command(
    argv: list[str], env: dict[str, str], server_pid: int, into: Measured, cwd: Path | None = None
) -> None:
    """Run `argv`, recording wall time, its CPU and peak RSS (wait4), and the server's CPU."""
    server_before = server_cpu_seconds(server_pid)
    wall, usage, _ = waited(argv, env, cwd)
    server_after = server_cpu_seconds(server_pid)
    into.wall_s.append(wall)
    into.client_cpu_s.append(usage.ru_utime + usage.ru_stime)
    into.peak_rss_mib.append(usage.ru_maxrss / 1024)  # KiB on Linux
    if server_before is not None and server_after is not None:
        into.server_cpu_s.append(server_after - server_before)


def delete_prefix(s3: Any, prefix: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


def bench_set(
    name: str,
    src: Path,
    repeat: int,
    aws: Path,
    endpoint: str,
    pid: int,
    key_arn: str,
    s3: Any,
    reruns: int = 1,
    before: Path | None = None,
) -> dict[str, Measured]:
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
    aws_flags = ["--endpoint-url", endpoint, "--sse", "aws:kms", "--sse-kms-key-id", key_arn]
    aws_flags += ["--only-show-errors", "--no-progress"]
    stage_flags = ["--endpoint-url", endpoint, "--region", REGION, "--kms-key", key_arn]
    tools = ["sync", "cp", "stage"] + (["stage-before"] if before is not None else [])
    results = {k: Measured() for t in tools for k in (t, f"{t}-rerun") if k != "cp-rerun"}
    for run in range(repeat):
        turn = run % len(tools)
        order = tools[turn:] + tools[:turn]  # rotate: nobody always goes first
        for tool in order:
            prefix = f"{name}-{tool}-{run}"
            url = f"s3://{BUCKET}/{prefix}"
            if tool == "sync":
                argv = [str(aws), "s3", "sync", str(src), url, *aws_flags]
                run_command(argv, env, pid, results["sync"])
                for _ in range(reruns):
                    run_command(argv, env, pid, results["sync-rerun"])
            elif tool == "cp":
                argv = [str(aws), "s3", "cp", str(src), url, "--recursive", *aws_flags]
                run_command(argv, env, pid, results["cp"])
            else:
                with tempfile.TemporaryDirectory() as cache:  # first upload: a cold cache
                    stage_env = {**env, "LLMCLOUD_CACHE_DIR": cache}
                    argv = [str(LLMCLOUD), "stage", str(src), url, *stage_flags]
                    cwd = None
                    if before is not None:
                        # both trees started alike: `python -m` from the tree's root, which
                        # puts that tree first on sys.path
                        cwd = before if tool == "stage-before" else ROOT
                        argv = [str(PYTHON), "-m", "infra", *argv[1:]]
                    run_command(argv, stage_env, pid, results[tool], cwd)
                    for _ in range(reruns):
                        run_command(argv, stage_env, pid, results[f"{tool}-rerun"], cwd)
            delete_prefix(s3, prefix)
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def summarize(name: str, results: dict[str, Measured]) -> dict[str, Any]:
    m = {k: v.medians() for k, v in results.items()}
    files, size = DATA_SETS[name]
    summary: dict[str, Any] = {
        "files": files,
        "bytes_per_file": size,
        "median": m,
        "ratios_stage_over_awscli": {
            "rerun_wall_vs_sync": _ratio(m["stage-rerun"]["wall_s"], m["sync-rerun"]["wall_s"]),
            "first_wall_vs_sync": _ratio(m["stage"]["wall_s"], m["sync"]["wall_s"]),
            "first_wall_vs_cp": _ratio(m["stage"]["wall_s"], m["cp"]["wall_s"]),
            "first_client_cpu_vs_cp": _ratio(m["stage"]["client_cpu_s"], m["cp"]["client_cpu_s"]),
            "first_client_cpu_vs_sync": _ratio(
                m["stage"]["client_cpu_s"], m["sync"]["client_cpu_s"]
            ),
            "first_server_cpu_vs_sync": _ratio(
                m["stage"]["server_cpu_s"], m["sync"]["server_cpu_s"]
            ),
        },
        "raw": {k: vars(v) for k, v in results.items()},
    }
    if "stage-before" in m:
        now, before = m["stage"], m["stage-before"]
        summary["ratios_stage_over_before"] = {
            "rerun_wall": _ratio(m["stage-rerun"]["wall_s"], m["stage-before-rerun"]["wall_s"]),
            **{
                f"first_{key.removesuffix('_s')}": _ratio(now[key], before[key])
                for key in ("wall_s", "client_cpu_s", "server_cpu_s")
            },
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="small,medium,large", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--reruns", type=int, default=1, help="re-runs per tool and round (a re-run is short)"
    )
    parser.add_argument("--awscli", help="an `aws` executable (default: the benchmark venv)")
    parser.add_argument("--before", help="also run stage from the tree at this git revision")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    names = [n for n in args.sets.split(",") if n]
    unknown = [n for n in names if n not in DATA_SETS]
    if unknown:
        parser.error(f"--sets {','.join(unknown)}: unknown; use {', '.join(DATA_SETS)}")

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    aws = ensure_awscli(args.awscli)
    version = (
        subprocess.run(
            [str(aws), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        or "unknown"
    )
    report: dict[str, Any] = {
        "awscli": version,
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "repeat": args.repeat,
        "reruns": args.reruns,
        "before": args.before,
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as tmp, moto_server() as (endpoint, pid):
        before = None
        if args.before:
            from startup import export_tree  # benchmarks/startup.py: `git archive` of REV

            before = export_tree(args.before, Path(tmp) / "before")
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
        for name in names:
            files, size = DATA_SETS[name]
            src = make_dataset(Path(tmp) / name, files, size)
            results = bench_set(
                name, src, args.repeat, aws, endpoint, pid, key_arn, s3, args.reruns, before
            )
            report["sets"][name] = summarize(name, results)
            shutil.rmtree(src)
            if not args.json:
                _print_set(name, report["sets"][name])
    report["load_avg_at_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(report))


def _print_set(name: str, summary: dict[str, Any]) -> None:
    files, size = summary["files"], summary["bytes_per_file"]
    print(f"{name}: {files} x {size / MIB:g} MiB, median of the rounds")
    for tool, m in summary["median"].items():
        rss = f", peak RSS {m['peak_rss_mib']:.0f} MiB" if m["peak_rss_mib"] else ""
        print(
            f"  {tool:<12} wall {m['wall_s']:7.2f} s   client cpu {m['client_cpu_s']:6.2f} s   "
            f"server cpu {m['server_cpu_s'] or 0:6.2f} s{rss}"
        )
    for ratio, value in summary["ratios_stage_over_awscli"].items():
        print(f"  stage / aws  {ratio:<26} {value}")
    for ratio, value in summary.get("ratios_stage_over_before", {}).items():
        print(f"  now / before {ratio:<26} {value}")


if __name__ == "__main__":
    main()
