"""Terminal output shared by the commands: progress and errors go to stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a one-line error (markup-safe: ``[section]`` stays visible) and return the exit
    to raise, with code 2 for errors that are the user's to fix."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


ProgressFn = Callable[[str, int, int], None]


@contextmanager
def stage_progress(label: str, *, quiet: bool) -> Iterator[ProgressFn]:
    """A progress callback ``(stage, done, total)`` drawing one bar per stage, with ETA."""
    with Progress(
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
