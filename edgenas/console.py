"""Terminal output shared by the stages and the commands: progress goes to stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
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
