"""Terminal output shared by the stages and the commands: progress goes to stderr."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
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


@contextmanager
def stage_progress(label: str, *, quiet: bool) -> Iterator[Progress]:
    """A progress callback drawing one bar per stage, with ETA; when stderr is not a terminal
    (a log file, CI, nohup), plain lines instead, or long work would print nothing for
    minutes (a bar is only drawn on a terminal)."""
    if not quiet and not err_console.is_terminal:
        yield LineProgress(label)
        return
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


class LineProgress:
    """Progress as plain lines on stderr (or ``console``): a stage's start, every tenth of it
    (at most one line per ``every_s`` seconds) and its end, with the time taken so far."""

    def __init__(
        self, label: str, *, every_s: float = 10.0, console: Console | None = None
    ) -> None:
        self.label, self.every_s = label, every_s
        self.console = console or err_console
        self._started: dict[str, float] = {}
        self._shown: dict[str, tuple[int, float]] = {}  # stage -> (tenths shown, when)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            return
        now = time.monotonic()
        started = self._started.setdefault(stage, now)
        tenths = done * 10 // total
        shown, when = self._shown.get(stage, (-1, -math.inf))
        finished = done >= total
        if tenths <= shown and not (finished and shown < 10):
            return
        if not finished and shown >= 0 and now - when < self.every_s:
            return
        self._shown[stage] = (10 if finished else tenths, now)
        elapsed = int(now - started)
        self.console.print(
            f"{self.label}: {stage} {done}/{total} ({done * 100 // total}%), "
            f"{elapsed // 60}:{elapsed % 60:02d} elapsed",
            highlight=False,
            soft_wrap=True,
        )
