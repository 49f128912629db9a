"""Whole-command times of `llmcloud`: what a user waits for, start-up included.

Each case runs as a user runs it, a command in a fresh process (`python -m infra ...`, the
`llmcloud` console script's code), and is timed by wall clock and CPU (wait4):
  help         `llmcloud --help` and `llmcloud <command> --help` for every command
  plan         `plan --stack prod --format json --out FILE` (beside it: the evaluation alone,
               `run_plan` timed inside a process that has already imported the CLI)
  diff         `diff prod.json prod.json`
  stage        `stage SRC s3://...` re-run with everything already uploaded (a local
               moto_server started here, SSE-KMS), beside `aws s3 sync` re-run on the same data
               when the AWS CLI of benchmarks/stage.py is installed
  audit        `audit --stack dev` against the moto_server (no deployed resources: exit 2)
  preflight    `preflight --stack dev` against the moto_server
  smoke        `smoke --url` an endpoint that refuses connections (a failed check: exit 1)
  python       `python -c pass`: the interpreter's own start, the floor of every command
After one untimed warm-up run of every case (bytecode caches written, as in a user's
install), runs are interleaved (the order rotates each round); medians are reported. With
`--before REV` the same cases also run from a copy of the tree at REV (`git archive`, same
venv) in the same rounds, and the ratio now / REV is printed. One extra run of each case
under `python -X importtime` gives the share of its wall time spent importing modules.

    python benchmarks/startup.py [--repeat 5] [--before REV] [--only stage,diff] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from stage import AWSCLI_VENV, BUCKET, REGION, moto_server, waited  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"
COMMANDS = ("plan", "diff", "stage", "audit", "preflight", "smoke")
PLAN_PROD = [
    "plan",
    "--stack",
    "prod",
    "--format",
    "json",
]  # the timed plan, and the file diff reads
STAGE_FILES, STAGE_FILE_BYTES = 200, 4096


@dataclass
class Case:
    name: str
    argv: list[str]  # after `python -m infra`; empty for the interpreter floor
    ok_codes: tuple[int, ...] = (0,)
    python_only: bool = False  # `python -c pass`


@dataclass
class Timings:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def median(self) -> dict[str, float | None]:
        def med(values: list[float]) -> float | None:
            return round(statistics.median(values), 3) if values else None

        return {"wall_s": med(self.wall_s), "cpu_s": med(self.cpu_s)}


def timed(
    argv: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...]
) -> tuple[float, float, bytes]:
    """(wall seconds, CPU seconds of the process, stderr) of one command."""
    wall, usage, stderr = waited(argv, env, cwd, ok)
    return wall, usage.ru_utime + usage.ru_stime, stderr


def command_argv(case: Case, importtime: bool = False) -> list[str]:
    if case.python_only:
        return [str(PYTHON), "-c", "pass"]
    flags = ["-X", "importtime"] if importtime else []
    return [str(PYTHON), *flags, "-m", "infra", *case.argv]


def import_share(case: Case, tree: Path, env: dict[str, str]) -> float | None:
    """Share of one run's wall time spent importing (top-level `-X importtime` entries)."""
    if case.python_only:
        return None
    wall, _, stderr = timed(command_argv(case, importtime=True), tree, env, case.ok_codes)
    total_us = 0
    for line in stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith("  "):  # a top-level import: its cumulative includes children
            total_us += int(cumulative)
    return round(total_us / 1e6 / wall, 2)


def evaluation_s(tree: Path, env: dict[str, str], stack: str) -> float:
    """`run_plan` alone, in a process that has already imported the CLI and the engine."""
    probe = (
        "import time, pathlib, infra.cli; from infra.plan.run import run_plan; "
        f"t = time.perf_counter(); run_plan(pathlib.Path('.'), {stack!r}, None); "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        [str(PYTHON), "-c", probe], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def export_tree(rev: str, into: Path) -> Path:
    """The tree at `rev`, written by `git archive` (no worktree, nothing in .git changes)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def prepare_s3(endpoint: str, src: Path) -> tuple[str, str]:
    """A bucket with SSE-KMS by default and SRC staged once: (s3:// URL, key ARN)."""
    from infra.ops.awsclient import client

    s3 = client("s3", region=REGION, endpoint_url=endpoint)
    kms = client("kms", region=REGION, endpoint_url=endpoint)
    key_arn = kms.create_key(Description="startup bench key")["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket=BUCKET)
    src.mkdir(parents=True)
    past = time.time() - 60
    for i in range(STAGE_FILES):
        path = src / f"shard-{i:05d}.bin"
        path.write_bytes(i.to_bytes(8, "little") + os.urandom(STAGE_FILE_BYTES - 8))
        os.utime(path, (past, past))
    return f"s3://{BUCKET}/startup", key_arn


def build_cases(
    only: set[str], plan_json: Path, src: Path, url: str, endpoint: str, key_arn: str
) -> list[Case]:
    cases = [Case("python -c pass", [], python_only=True), Case("--help", ["--help"])]
    for command in COMMANDS:
        if command in only:
            cases.append(Case(f"{command} --help", [command, "--help"]))
    aws = ["--endpoint-url", endpoint]
    runs = {
        "plan": Case(
            "plan prod (json)",
            [*PLAN_PROD, "--out", str(plan_json.with_suffix(".out"))],
            ok_codes=(0, 1),
        ),
        "diff": Case("diff prod prod", ["diff", str(plan_json), str(plan_json)]),
        "stage": Case(
            f"stage re-run ({STAGE_FILES} files)",
            ["stage", str(src), url, "--region", REGION, "--kms-key", key_arn, *aws],
        ),
        "audit": Case("audit dev (moto)", ["audit", "--stack", "dev", *aws], ok_codes=(2,)),
        "preflight": Case(
            "preflight dev (moto)", ["preflight", "--stack", "dev", *aws], ok_codes=(0, 1, 2)
        ),
        "smoke": Case(
            "smoke (refused)",
            ["smoke", "--url", "http://127.0.0.1:9", "--api-key", "k", "--timeout", "2"],
            ok_codes=(1,),
        ),
    }
    return cases + [case for command, case in runs.items() if command in only]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--before", help="also run the tree at this git revision (ratio now / REV)")
    parser.add_argument("--only", default=",".join(COMMANDS), help="comma-separated commands")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    only = {c for c in args.only.split(",") if c}
    unknown = only - set(COMMANDS)
    if unknown:
        parser.error(f"--only {','.join(sorted(unknown))}: unknown; use {', '.join(COMMANDS)}")

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    env.update({"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION})
    # PYTHONDONTWRITEBYTECODE off: a user's install has its bytecode cached, so no run here
    # compiles sources (a warm-up run of every case writes __pycache__ first)
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
    ):
        env.pop(name, None)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "repeat": args.repeat,
        "before": args.before,
    }
    with tempfile.TemporaryDirectory() as tmp_name, moto_server() as (endpoint, _pid):
        tmp = Path(tmp_name)
        trees = {"now": ROOT}
        if args.before:
            trees["before"] = export_tree(args.before, tmp / "before")
        env["LLMCLOUD_CACHE_DIR"] = str(tmp / "cache")
        plan_json = tmp / "prod.json"
        subprocess.run(
            [str(PYTHON), "-m", "infra", *PLAN_PROD, "--out", str(plan_json)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        url, key_arn = prepare_s3(endpoint, tmp / "src")
        cases = build_cases(only, plan_json, tmp / "src", url, endpoint, key_arn)
        sync: list[str] | None = None
        aws = AWSCLI_VENV / "bin" / "aws"
        if "stage" in only and aws.exists():
            sync = [
                str(aws),
                "s3",
                "sync",
                str(tmp / "src"),
                f"{url}-sync",
                "--endpoint-url",
                endpoint,
            ]
            sync += [
                "--sse",
                "aws:kms",
                "--sse-kms-key-id",
                key_arn,
                "--only-show-errors",
                "--no-progress",
            ]
            timed(sync, ROOT, env, (0,))  # first upload: the rounds time the re-run
        rerun = next((c for c in cases if c.name.startswith("stage re-run")), None)
        if rerun is not None:
            timed(command_argv(rerun), ROOT, env, (0,))  # first upload: the rounds re-run
        for case in cases:  # warm-up, untimed: bytecode caches, the moto_server's paths
            for tree in trees.values():
                timed(command_argv(case), tree, env, case.ok_codes)
        results = {(c.name, t): Timings() for c in cases for t in trees}
        sync_timings = Timings()
        evaluation = {t: [] for t in trees} if "plan" in only else {}
        jobs: list[tuple[Case | None, str]] = [(c, t) for c in cases for t in trees]
        if sync:
            jobs.append((None, "now"))
        for run in range(args.repeat):
            shift = run % len(jobs)
            for case, tree in jobs[shift:] + jobs[:shift]:  # rotate: nobody always goes first
                if case is None:
                    wall, cpu, _ = timed(sync, ROOT, env, (0,))
                    sync_timings.wall_s.append(wall)
                    sync_timings.cpu_s.append(cpu)
                    continue
                wall, cpu, _ = timed(command_argv(case), trees[tree], env, case.ok_codes)
                results[(case.name, tree)].wall_s.append(wall)
                results[(case.name, tree)].cpu_s.append(cpu)
            for tree in evaluation:
                evaluation[tree].append(evaluation_s(trees[tree], env, "prod"))
        shares = {(c.name, t): import_share(c, trees[t], env) for c in cases for t in trees}
    report["load_avg_at_end"] = os.getloadavg()
    report["cases"] = {
        case.name: {
            tree: {**results[(case.name, tree)].median(), "import_share": shares[(case.name, tree)]}
            for tree in trees
        }
        for case in cases
    }
    if evaluation:
        report["plan_evaluation_s"] = {
            t: round(statistics.median(v), 3) for t, v in evaluation.items()
        }
    if sync:
        report["aws_s3_sync_rerun"] = sync_timings.median()
    _print(report, trees)
    if args.json:
        print(json.dumps(report))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _print(report: dict[str, Any], trees: dict[str, Path]) -> None:
    out = sys.stderr if "--json" in sys.argv else sys.stdout
    print(f"medians of {report['repeat']} rounds, wall (cpu) seconds, import share", file=out)
    for name, per_tree in report["cases"].items():
        cells = []
        for tree in trees:
            m = per_tree[tree]
            share = f" {m['import_share']:.0%} imports" if m["import_share"] is not None else ""
            cells.append(f"{tree} {m['wall_s']:.3f} ({m['cpu_s']:.3f}){share}")
        ratio = ""
        if "before" in per_tree:
            ratio = (
                f"   now/before {_ratio(per_tree['now']['wall_s'], per_tree['before']['wall_s'])}"
            )
        print(f"  {name:<28} " + "   ".join(cells) + ratio, file=out)
    if "plan_evaluation_s" in report:
        print(f"  plan prod evaluation alone  {report['plan_evaluation_s']}", file=out)
    if "aws_s3_sync_rerun" in report:
        sync = report["aws_s3_sync_rerun"]["wall_s"]
        stage = next(v for k, v in report["cases"].items() if k.startswith("stage re-run"))
        print(
            f"  aws s3 sync re-run          {sync:.3f}; stage re-run / sync "
            f"{_ratio(stage['now']['wall_s'], sync)}",
            file=out,
        )


if __name__ == "__main__":
    main()
