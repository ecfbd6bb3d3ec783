"""The run report: one self-contained HTML page (``report.html``) of a run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgenas.report.collect import ReportError

REPORT_NAME = "report.html"

# Told of a part of the page that could not be drawn: a line, and the exception.
Warn = Callable[[str, BaseException], None]


def ignore_warning(line: str, exc: BaseException) -> None:
    """The default ``Warn``: the page says it."""


def build_report(run_dir: Path, out: Path | None = None, *, warn: Warn = ignore_warning) -> Path:
    """Write the report of ``run_dir`` (default ``run_dir/report.html``) and return its path.
    A part whose files hold what edgenas does not write (edited by hand) says so on the page
    and to ``warn`` (a line, and the exception that stopped the part); the rest is drawn."""
    from edgenas.report.collect import collect
    from edgenas.report.page import render
    from once_for_all.files import write_text

    path = out or run_dir / REPORT_NAME
    page = render(collect(run_dir), warn=warn)
    write_text(path, page)
    return path


__all__ = ["REPORT_NAME", "ReportError", "Warn", "build_report"]
