"""`edgenas report RUN_DIR`: the run's self-contained HTML report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgenas.cli.user_errors import fail
from edgenas.console import err_console


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by edgenas run")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default: RUN_DIR/report.html)")
    ] = None,
) -> None:
    """Write one self-contained HTML page (no network needed to view it): training curves,
    Pareto fronts with budgets, latency-predictor validation, per-block latency heatmaps and
    the model cards. `edgenas run` writes it at the end of every run."""
    from edgenas.report import build_report

    if out is not None and out.exists() and not _is_report(out):
        raise fail(
            f"--out {out} exists and is not an edgenas report: give a new file, or remove it "
            "first (a report never overwrites other files)"
        )
    try:
        with _not_at_work(run_dir):
            path = build_report(run_dir, out, warn=_warn)
    except OSError as exc:
        raise fail(f"cannot write the report: {exc}") from None
    typer.echo(str(path))
    err_console.print(f"report: {path}", highlight=False, style="dim")


@contextmanager
def _not_at_work(run_dir: Path) -> Iterator[None]:
    """Hold the run folder while its report is drawn: a command at work there (edgenas run,
    train) would have the stage under way drawn as failed, and the page would outlive it
    as the run's."""
    from once_for_all.folder_lock import FolderBusyError, folder_lock

    if not run_dir.is_dir():  # not a run folder: the report says so
        yield
        return
    try:
        with folder_lock(run_dir):
            yield
    except FolderBusyError:
        raise fail(
            f"{run_dir} is in use: an edgenas command is working in it, whose stage under way "
            "the report would show as failed; wait for it to finish (edgenas run writes the "
            "report at its end)"
        ) from None


def _warn(line: str, exc: BaseException) -> None:
    # The line quotes the damaged file: not markup.
    err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a page ``edgenas report`` wrote (its generator tag, or the line
    reports of earlier versions carry)."""
    from edgenas.report.page import GENERATOR

    if not path.is_file():
        return False
    try:
        with path.open(errors="replace") as f:
            text = f.read(1 << 20)  # the marks are in the head; the file may be anything
    except OSError:
        return False
    return text.startswith("<!DOCTYPE html>") and (
        f"content='{GENERATOR}'" in text or "; report written " in text
    )
