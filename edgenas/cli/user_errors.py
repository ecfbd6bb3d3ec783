"""How the command line reports a user's error: one line on stderr and exit code 2; and
Ctrl-C: one line saying what was saved and how to continue, exit code 130.

The root command group catches ``EdgenasError`` and ``KeyboardInterrupt`` once, around every
command, so no command keeps its own list of errors. Any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import math
from typing import Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

from edgenas.console import err_console
from once_for_all.errors import EdgenasError, Interrupted

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by SIGINT

# What each command has saved when Ctrl-C stops it, and how to continue. Printed with or
# without --quiet (which silences progress, not this); `edgenas run` names its stage instead.
INTERRUPTED = {
    "train": "interrupted: each finished epoch is saved in the --out folder's checkpoint.pt; "
    "run the same command with --resume to continue",
    "profile": "interrupted: what was measured is saved; run the same command again",
    "search": "interrupted: the finished trials are saved in the --out folder's study.log; run "
    "the same command again to continue the study",
    "export": "interrupted: no partial files are left (a finished fine-tuning is kept); run "
    "the same command again",
    "run": "interrupted: the finished stages are saved; run the same command again to resume",
    "eval": "interrupted: eval writes nothing",
}


def fail(message: str) -> typer.Exit:
    """Print a one-line error (markup-safe: ``[section]`` stays visible) and return the exit
    to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=USER_ERROR_EXIT)


Number = TypeVar("Number", float, list[float], None)


def finite(value: Number) -> Number:
    """Option callback: refuse NaN and infinities (``1e400`` parses as inf), which would run
    a whole search or fine-tuning and then crash or write NaN."""
    values: list[float] = value if isinstance(value, list) else [] if value is None else [value]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise typer.BadParameter(f"{bad[0]} is not a finite number")
    return value


def budget_lists(values: list[str] | None) -> list[float | tuple[float, ...]] | None:
    """Option callback for ``--budget-ms``: one budget per device, or several for one device
    as ``15,18,23`` (finite and positive, in ms)."""
    if values is None:
        return None
    out: list[float | tuple[float, ...]] = []
    for text in values:
        try:
            levels = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise typer.BadParameter(
                f"{text!r} is not a budget in ms: give a number, or several as 15,18,23"
            ) from None
        for v in levels:
            if not math.isfinite(v):
                raise typer.BadParameter(f"{v} is not a finite number")
            if v <= 0:
                raise typer.BadParameter(f"{v} is not a positive budget in ms")
        out.append(levels[0] if len(levels) == 1 else levels)
    return out


def interrupted(message: str) -> typer.Exit:
    """Print Ctrl-C's one line and return the exit to raise."""
    err_console.print(escape(message), highlight=False, soft_wrap=True)
    return typer.Exit(code=INTERRUPTED_EXIT)


class UserErrorsGroup(TyperGroup):
    """The root group: an ``EdgenasError`` raised by any command becomes one line, exit 2;
    so does a disk that is full or read-only wherever a write was not already wrapped (an
    Optuna journal append, a plot): that is the machine's state, not a bug to trace. Ctrl-C
    becomes the command's one line of what was saved, exit 130 (typer ended it silently)."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's own vendored click.Context
        try:
            return super().invoke(ctx)
        except EdgenasError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted):
                raise interrupted(str(exc)) from None
            command = ctx.invoked_subcommand or ""
            raise interrupted(
                INTERRUPTED.get(command, "interrupted; run the same command again")
            ) from None
        except OSError as exc:
            if exc.errno not in _STORAGE_ERRNOS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(
                f"cannot write{where}: {exc.strerror}; free some space or choose another --out"
            ) from None


# A full disk or quota, a read-only file system.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
