"""Terminal output shared by the commands: progress and errors go to stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from once_for_all.progress import Progress

err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a one-line error (markup-safe: ``[section]`` stays visible) and return the exit
    to raise, with code 2 for errors that are the user's to fix."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def stage_progress(label: str, *, quiet: bool) -> Iterator[Progress]:
    """A progress callback drawing one bar per stage, with ETA."""
    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                if total == 0:
                    return
                tasks[stage] = progress.add_task(f"{label}: {stage}", total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update
