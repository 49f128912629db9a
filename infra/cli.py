"""The `llmcloud` command line: plan, stage, audit, preflight, smoke.

Exit codes everywhere: 0 success, 1 the check found something (a mandatory policy violation,
a failed upload, a blocker), 2 bad config or usage, with one clear message on stderr.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="llmcloud",
    help="An AWS platform for training and serving LLMs, as one Pulumi program per environment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


@app.callback()
def _root() -> None:
    """An AWS platform for training and serving LLMs, as one Pulumi program per environment."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one clear message on stderr and return the Exit to raise."""
    err.print(f"[red bold]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


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
        str, typer.Option("--format", "-f", help="table | json | markdown | sarif")
    ] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report to FILE.")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show Python tracebacks of program errors.")] = False,
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
    try:
        report = run_plan(project, stack)
    except PlanError as e:
        raise fail(str(e)) from None
    except Exception as e:
        if debug:
            traceback.print_exc()
        frame = _last_program_frame(e, project)
        raise fail(
            f"the program raised {type(e).__name__}: {e}"
            + (f" (at {frame})" if frame else "")
            + ("" if debug else "; rerun with --debug for the traceback")
        ) from None

    if format == "table":
        if out:
            with out.open("w") as fh:
                render_table(report, Console(file=fh, width=140, no_color=True))
        else:
            render_table(report, Console())
    else:
        if format == "json":
            text = render_json(report)
        elif format == "markdown":
            text = render_markdown(report)
        else:
            from infra.plan.policy_runner import rule_metadata

            text = render_sarif(report, rule_metadata())
        if out:
            out.write_text(text)
        else:
            sys.stdout.write(text)
    raise typer.Exit(report.exit_code)


def _last_program_frame(error: BaseException, project: Path) -> str | None:
    root = str(project.resolve())
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(root)]
    if not frames:
        return None
    f = frames[-1]
    return f"{Path(f.filename).relative_to(root)}:{f.lineno}"


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
