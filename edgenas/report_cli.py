"""`edgenas report RUN_DIR`: the run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgenas.console import err_console, fail


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by edgenas run")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default: RUN_DIR/report.html)")
    ] = None,
) -> None:
    """Write one self-contained HTML page (no network needed to view it): training curves,
    Pareto fronts with budgets, latency-predictor validation, per-block latency heatmaps and
    the model cards. `edgenas run` writes it at the end of every run."""
    from edgenas.report import ReportError, build_report
    from latency.table import TableError
    from once_for_all.files import WriteError

    try:
        path = build_report(run_dir, out)
    except (ReportError, TableError, WriteError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the report: {exc}") from None
    typer.echo(str(path))
    err_console.print(f"report: {path}", highlight=False, style="dim")
