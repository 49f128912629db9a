"""The `llmcloud` command line: plan, stage, audit, preflight, smoke.

Exit codes everywhere: 0 success, 1 the check found something (a mandatory policy violation,
a failed upload, a blocker), 2 bad config or usage, with one clear message on stderr.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from infra.ops.awsclient import EndpointUrlOption, RegionOption
from infra.plainparams import PlainParamsCommand, PlainParamsGroup

if TYPE_CHECKING:
    from rich.console import Console

# Start-up: what a user waits for is the whole command, so this module imports only typer and
# the option types; each command imports what it needs (the Pulumi SDK and the policy pack
# for plan, botocore for the AWS commands, httpx for smoke, rich when something is printed)
# inside its function. tests/test_startup.py checks each command's import graph.

app = typer.Typer(
    name="llmcloud",
    help="An AWS platform for training and serving LLMs, as one Pulumi program per environment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=PlainParamsGroup,  # its --help option skips pydantic (see infra/plainparams.py)
)


def console(**kwargs: Any) -> Console:
    """A rich Console (rich is imported on the first print, not at start-up)."""
    from rich.console import Console

    return Console(**kwargs)


@functools.cache
def _err() -> Console:
    """The stderr Console every message and progress display goes to."""
    return console(stderr=True)


EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


@app.callback()
def _root() -> None:
    """An AWS platform for training and serving LLMs, as one Pulumi program per environment."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one clear message on stderr and return the Exit to raise. The message is shown
    as is: brackets in it (patterns, YAML, values) are text, not rich markup."""
    from rich.markup import escape

    _err().print(f"[red bold]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def say(console: Console, text: str) -> None:
    """Print a line of plain text (paths, names, values), never read as rich markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def check_out(out: Path | None) -> None:
    """Refuse an unusable --out FILE before any work is done (exit 2, one line)."""
    if out is None:
        return
    if out.is_dir():
        raise fail(f"--out {str(out)!r} is a directory; give a file path, like {out / 'report'}")
    parent = out.parent
    if not parent.is_dir():
        raise fail(
            f"--out {str(out)!r}: the folder {str(parent)!r} does not exist; create it "
            f"(mkdir -p {parent}) or write somewhere else"
        )
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise fail(f"--out {str(out)!r}: not writable here; pick another path")


def write_out(out: Path, render: Callable[[TextIO], None]) -> None:
    """Write a report to --out FILE; a failure to write is a usage error (exit 2)."""
    try:
        with out.open("w") as fh:
            render(fh)
    except OSError as e:
        raise fail(f"--out {str(out)!r}: cannot write it: {e.strerror or e}") from None


StackOption = Annotated[
    str, typer.Option("--stack", "-s", help="Stack name: stacks/Pulumi.<NAME>.yaml.")
]
ProjectOption = Annotated[
    Path,
    typer.Option("--project", "-C", help="Pulumi project directory (Pulumi.yaml + __main__.py)."),
]


@app.command()
def plan(
    stack: StackOption = "dev",
    project: ProjectOption = Path("."),
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="table | json | markdown | sarif | terraform-plan"),
    ] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report to FILE.")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show Python tracebacks of program errors.")] = False,
    full: Annotated[bool, typer.Option("--full", help="List every resource name.")] = False,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare", help="A plan JSON to diff against (shown before the plan).", metavar="BASE"
        ),
    ] = None,
    policy_config: Annotated[
        Path | None,
        typer.Option(
            "--policy-config",
            help="Policy settings: the JSON `pulumi preview --policy-pack-config` takes.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Evaluate the Pulumi program for a stack offline: resources, policies, cost.

    No Pulumi CLI, no credentials, no network. Exit 0 clean, 1 on a mandatory policy
    violation, 2 on bad config or usage.
    """
    from infra.plan.engine import PlanError
    from infra.plan.report import FORMATS, render_json, render_markdown, render_sarif, render_table
    from infra.plan.run import run_plan

    if format not in FORMATS:
        raise fail(f"--format {format!r} is not a format; use one of: {', '.join(FORMATS)}")
    if not project.is_dir():
        raise fail(f"--project {str(project)!r} is not a directory")
    check_out(out)
    base = None
    if compare is not None:
        from infra.plan.diff import DiffError, load_plan

        if format in ("sarif", "terraform-plan"):
            raise fail("--compare shows a diff: use --format table, json or markdown")
        try:
            base = load_plan(compare)
        except DiffError as e:
            raise fail(f"--compare {e}") from None
    try:
        report = run_plan(project, stack, policy_config)
    except PlanError as e:
        program_traceback = getattr(e, "traceback", None)  # a ProgramError's
        if program_traceback and debug:
            sys.stderr.write(program_traceback)
        raise fail(
            str(e)
            + ("; rerun with --debug for the traceback" if program_traceback and not debug else "")
        ) from None
    except Exception as e:
        if debug:
            traceback.print_exc()
        frame = _last_program_frame(e, project)
        raise fail(
            f"the program raised {type(e).__name__}: {e}"
            + (f" (at {frame})" if frame else "")
            + ("" if debug else "; rerun with --debug for the traceback")
        ) from None

    if base is not None:
        from infra.plan.diff import compared

        render = compared(base, report, format, full=full)
        if out:
            write_out(out, render)
        else:
            render(sys.stdout)
        raise typer.Exit(report.exit_code)
    if format == "table":
        if out:
            write_out(
                out,
                lambda fh: render_table(
                    report, console(file=fh, width=140, no_color=True), full=full
                ),
            )
        else:
            render_table(report, console(), full=full)
    else:
        if format == "json":
            text = render_json(report)
        elif format == "markdown":
            text = render_markdown(report)
        elif format == "terraform-plan":
            from infra.plan.terraform import render_terraform_plan

            text = render_terraform_plan(report.plan)
        else:
            from infra.plan.policy_runner import rule_metadata

            text = render_sarif(report, rule_metadata())
        if out:
            write_out(out, lambda fh: fh.write(text))
        else:
            sys.stdout.write(text)
    raise typer.Exit(report.exit_code)


@app.command()
def diff(
    base: Annotated[Path, typer.Argument(metavar="BASE.json", help="The plan JSON before.")],
    head: Annotated[Path, typer.Argument(metavar="HEAD.json", help="The plan JSON after.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="table | markdown | json")
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the diff to FILE.")] = None,
) -> None:
    """What changes between two `llmcloud plan --format json` reports: resources added,
    removed, replaced and updated (property paths, old -> new, secrets masked), findings new
    and resolved, and the cost delta. Exit 0, or 2 on usage or an unreadable plan file.
    """
    from infra.plan.diff import FORMATS as DIFF_FORMATS
    from infra.plan.diff import DiffError, diff_plans, load_plan, render_json, render_markdown
    from infra.plan.diff import render_table as render_diff_table

    if format not in DIFF_FORMATS:
        raise fail(f"--format {format!r} is not a format; use one of: {', '.join(DIFF_FORMATS)}")
    check_out(out)
    try:
        changes = diff_plans(load_plan(base), load_plan(head))
    except DiffError as e:
        raise fail(str(e)) from None
    if format == "table":
        if out:
            write_out(
                out,
                lambda fh: render_diff_table(changes, console(file=fh, width=140, no_color=True)),
            )
        else:
            render_diff_table(changes, console())
    else:
        text = render_json(changes) if format == "json" else render_markdown(changes)
        if out:
            write_out(out, lambda fh: fh.write(text))
        else:
            sys.stdout.write(text)
    raise typer.Exit(EXIT_OK)


def _last_program_frame(error: BaseException, project: Path) -> str | None:
    root = str(project.resolve())
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(root)]
    if not frames:
        return None
    f = frames[-1]
    return f"{Path(f.filename).relative_to(root)}:{f.lineno}"


@app.command(cls=PlainParamsCommand)  # its str/int flags skip pydantic: ~80 ms a run
def stage(
    src: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="Local dataset directory (with --verify and no DEST: the s3:// URL).",
            show_default=False,
        ),
    ],
    dest: Annotated[
        str | None,
        typer.Argument(
            metavar="DEST", help="s3://BUCKET/PREFIX to stage into.", show_default=False
        ),
    ] = None,
    region: RegionOption = None,
    endpoint_url: EndpointUrlOption = None,
    kms_key: Annotated[
        str | None,
        typer.Option(
            "--kms-key",
            help="KMS key (ARN, id or alias) for SSE-KMS; default: the bucket's default KMS key.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Parallel requests (and files in flight).")] = 16,
    part_size_mib: Annotated[
        int, typer.Option(help="Multipart part size; files at least this big go multipart.")
    ] = 64,
    include: Annotated[
        list[str] | None,
        typer.Option(help="Only files whose relative path matches this glob (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Skip files whose relative path matches this glob (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Show what would be uploaded or skipped; write nothing.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            help="Re-check S3 against DEST's _manifest.json (and SRC against it, if given)."
        ),
    ] = False,
) -> None:
    """Upload a dataset directory to S3: parallel multipart, SSE-KMS, resumable, checksummed.

    Skips files already in S3 with the same SHA-256 checksum, writes _manifest.json last.
    Exit 0 ok, 1 an upload or --verify failed (files named), 2 bad input or AWS setup.
    """
    import botocore.exceptions as bce

    from infra.ops import stage as staging
    from infra.ops.awsclient import AwsUsageError, parse_s3_url, translate_error

    out = console()
    try:
        if dest is None:
            if not verify:
                raise AwsUsageError(
                    "stage needs SRC and DEST: llmcloud stage SRC s3://BUCKET/PREFIX"
                )
            local, url = None, parse_s3_url(src, "DEST")
        else:
            local, url = Path(src), parse_s3_url(dest, "DEST")
        if verify:
            checked = staging.verify(
                url,
                src=local,
                include=include or (),
                exclude=exclude or (),
                concurrency=concurrency,
                region=region,
                endpoint_url=endpoint_url,
                console=_err(),
            )
            if not checked.ok:
                raise fail(staging.verify_failure_message(checked), EXIT_FINDINGS)
            say(
                out,
                f"verified {checked.checked} objects against {checked.manifest_url}"
                + (f" and {local}" if local else ""),
            )
            raise typer.Exit(EXIT_OK)
        assert local is not None
        options = staging.StageOptions(
            src=local,
            dest=url,
            kms_key=kms_key,
            concurrency=concurrency,
            part_size_mib=part_size_mib,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            dry_run=dry_run,
        )
        result = staging.stage(options, region=region, endpoint_url=endpoint_url, console=_err())
    except AwsUsageError as e:
        raise fail(str(e)) from None
    except (bce.BotoCoreError, bce.ClientError) as e:
        usage = translate_error(e)  # credentials, region, permissions: AWS setup, exit 2
        if usage is not None:
            raise fail(str(usage)) from None
        raise fail(f"AWS error: {e}", EXIT_FINDINGS) from None
    except KeyboardInterrupt:
        _err().print(
            "interrupted: complete objects stay in S3 and in-progress multipart uploads were "
            "aborted; rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    if dry_run:
        for line in staging.dry_run_lines(result):
            say(out, line)
        raise typer.Exit(EXIT_OK)
    if not result.ok:
        raise fail(staging.failure_message(result), EXIT_FINDINGS)
    say(out, staging.summary_line(result))


StackRegionOption = Annotated[
    str | None,
    typer.Option(
        "--region",
        help="AWS region (default: the stack's aws:region, the only region it deploys to).",
        show_default=False,
    ),
]


def _stack_region(project: Path, stack: str, region: str | None):
    """The stack config and the region its AWS checks run in (the stack's aws:region)."""
    from infra.config import ConfigError, load_stack_config

    try:
        config = load_stack_config(project, stack)
    except ConfigError as e:
        raise fail(str(e)) from None
    if region and region != config.region:
        raise fail(
            f"--region {region} is not the region of stack {stack} ({config.region}); "
            "omit --region or pass the stack's region"
        )
    return config, config.region


@app.command()
def preflight(
    stack: StackOption = "dev",
    project: ProjectOption = Path("."),
    region: StackRegionOption = None,
    endpoint_url: EndpointUrlOption = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
) -> None:
    """Check GPU capacity before `pulumi up`: vCPU quotas, offerings per zone, reservations.

    Also the account: service-linked roles and the principals the key policies name.
    Read-only. Exit 0 the deploy can get its instances, 1 something blocks it (the table
    says how to fix it), 2 bad config, usage, credentials, permissions or a check that could
    not be made (reported as incomplete, with its name).
    """
    import json

    import botocore.exceptions as bce

    from infra.ops.awsclient import AwsUsageError
    from infra.ops.preflight import boto_api, render_table, run_preflight

    if format not in ("table", "json"):
        raise fail(f"--format {format!r} is not a format; use one of: table, json")
    config, region = _stack_region(project, stack, region)
    try:
        api = boto_api(region, endpoint_url)  # short bounded retries and timeouts
        report = run_preflight(config, api, region=region)
    except AwsUsageError as e:
        raise fail(str(e)) from None
    except (bce.BotoCoreError, bce.ClientError) as e:
        # a check that could not be made is exit 2 (ARCHITECTURE.md), not a blocker found
        raise fail(f"AWS error, preflight incomplete: {e}") from None
    if format == "json":
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        render_table(report, console())
    raise typer.Exit(report.exit_code)


@app.command()
def audit(
    stack: StackOption = "dev",
    project: ProjectOption = Path("."),
    region: StackRegionOption = None,
    endpoint_url: EndpointUrlOption = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table | json | sarif")] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report to FILE.")
    ] = None,
) -> None:
    """Check the deployed stack (found by its tags) against the policy rules: drift.

    Read-only: it never changes anything. Exit 0 clean, 1 drift found, 2 bad config, usage,
    credentials or permissions, or no deployed resource of the stack in the region.
    """
    import json

    import botocore.exceptions as bce

    from infra.ops import audit as auditing
    from infra.ops.awsclient import AwsUsageError

    if format not in ("table", "json", "sarif"):
        raise fail(f"--format {format!r} is not a format; use one of: table, json, sarif")
    check_out(out)
    config, region = _stack_region(project, stack, region)
    try:
        clients = auditing.AuditClients.create(region, endpoint_url)
        report = auditing.run_audit(config, clients, region=region)
    except AwsUsageError as e:
        raise fail(str(e)) from None
    except (bce.BotoCoreError, bce.ClientError) as e:
        # credentials or permissions: exit 2 (ARCHITECTURE.md); 1 means drift was found
        raise fail(f"AWS error, audit incomplete: {e}") from None
    if not report.resources:
        raise fail(
            f"no resources tagged llmcloud:stack={stack}, llmcloud:project={config.project} "
            f"in {region}: is the stack deployed in this account and region?"
        )
    if format == "table":
        if out:
            write_out(
                out,
                lambda fh: auditing.render_table(
                    report, console(file=fh, width=140, no_color=True)
                ),
            )
        else:
            auditing.render_table(report, console())
    else:
        if format == "json":
            text = json.dumps(report.to_json(), indent=2) + "\n"
        else:
            from infra.config import stack_file

            location = str(stack_file(project, stack).relative_to(project))
            text = auditing.render_sarif(report, auditing.rule_metadata(), location)
        if out:
            write_out(out, lambda fh: fh.write(text))
        else:
            sys.stdout.write(text)
    raise typer.Exit(report.exit_code)


@app.command()
def smoke(
    url: Annotated[str, typer.Option("--url", help="The endpoint, like http://host:8000.")],
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="LLMCLOUD_API_KEY", help="The endpoint's API key."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Served model name (default: the first).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 60.0,
    denied_model: Annotated[
        str | None,
        typer.Option("--denied-model", help="Gateway: a model the key's team may not call."),
    ] = None,
    limit_probe: Annotated[
        int,
        typer.Option(
            "--limit-probe", help="Gateway: send up to N one-token calls to reach a 429 (0: skip)."
        ),
    ] = 0,
    audit_log_group: Annotated[
        str | None,
        typer.Option("--audit-log-group", help="Gateway: find this call's audit record there."),
    ] = None,
    audit_wait: Annotated[
        float, typer.Option("--audit-wait", help="Seconds to wait for the audit record.")
    ] = 60.0,
    region: Annotated[str | None, typer.Option("--region", help="AWS region.")] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="AWS endpoint URL (moto, LocalStack).")
    ] = None,
) -> None:
    """Check a deployed OpenAI-compatible endpoint as a user would: the key is required, a
    completion succeeds, and a streamed completion's time to first token and tokens/s. Against
    the model gateway with a team key, also: a model the team may not call is refused, a 429
    with Retry-After past the limit, the call's audit record in CloudWatch Logs.

    Exit 0 every check passed, 1 a check failed (the table says which), 2 usage.
    """
    from infra.ops.smoke import GatewayChecks, SmokeUsageError, render, run_smoke

    gateway = None
    if denied_model or limit_probe or audit_log_group:
        gateway = GatewayChecks(
            denied_model=denied_model,
            limit_probe=limit_probe,
            audit_log_group=audit_log_group,
            audit_wait_s=audit_wait,
            region=region,
            endpoint_url=endpoint_url,
        )
    try:
        result = run_smoke(url, api_key, model=model, timeout_s=timeout, gateway=gateway)
    except SmokeUsageError as e:
        raise fail(str(e)) from None
    render(result, console())
    if not result.ok:
        failed = result.failed
        raise fail(
            f"smoke check failed: {failed.name}: {failed.detail}" if failed else "no check ran",
            EXIT_FINDINGS,
        )
    raise typer.Exit(EXIT_OK)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        _err().print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
