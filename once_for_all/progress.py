"""The one progress protocol of long work, from the bottom layer up to the CLI's bars.

A step reports ``progress(stage, done, total)``: ``stage`` names what it is doing (``"export"``,
``"measure"``, ``"evaluate"``...), and a caller that runs several steps prefixes or renames the
stage before passing it on. A caller that needs more context (a fleet: which device) binds it
when it makes the callback, not as another argument.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Told how far a stage is: ``done`` of ``total`` (``total`` 0: not known, as while
    waiting). Reports come between units of work, so a callback may raise to stop the work
    there (a fleet's Ctrl-C does)."""

    def __call__(self, stage: str, done: int, total: int, /) -> None: ...
