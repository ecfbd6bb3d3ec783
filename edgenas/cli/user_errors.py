"""How the command line reports a user's error: one line on stderr and exit code 2.

The root command group catches ``EdgenasError`` once, around every command, so no command
keeps its own list of errors. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import math
from typing import Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

from edgenas.console import err_console
from once_for_all.errors import EdgenasError

USER_ERROR_EXIT = 2


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


class UserErrorsGroup(TyperGroup):
    """The root group: an ``EdgenasError`` raised by any command becomes one line, exit 2;
    so does a disk that is full or read-only wherever a write was not already wrapped (an
    Optuna journal append, a plot): that is the machine's state, not a bug to trace."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's own vendored click.Context
        try:
            return super().invoke(ctx)
        except EdgenasError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            if exc.errno not in _STORAGE_ERRNOS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(
                f"cannot write{where}: {exc.strerror}; free some space or choose another --out"
            ) from None


# A full disk or quota, a read-only file system.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
