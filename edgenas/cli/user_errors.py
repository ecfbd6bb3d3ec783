"""How the command line reports a user's error: one line on stderr and exit code 2; and
Ctrl-C: one line saying what was saved and how to continue, exit code 130.

The root command group catches ``EdgenasError`` and ``KeyboardInterrupt`` once, around every
command, so no command keeps its own list of errors. Any other exception is a bug and keeps
its traceback. ``main()`` installs the SIGINT handler that keeps a Ctrl-C from being lost on
its way there (``exit_130_on_ctrl_c``).
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import math
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import typer
from rich.markup import escape
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup
from typer.exceptions import Abort

from edgenas.console import err_console
from once_for_all.errors import EdgenasError, Interrupted

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by SIGINT (143: SIGTERM)

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


def finite_from(low: float, high: float = math.inf) -> Callable[[float], float]:
    """Option callback: a finite number in ``[low, high]``. In place of typer's ``min`` and
    ``max``, which answered NaN with "should be less than or equal to 1"."""

    def check(value: float) -> float:
        finite(value)
        if not low <= value <= high:
            within = f"at least {low:g}" if high == math.inf else f"within [{low:g}, {high:g}]"
            raise typer.BadParameter(f"{value:g} is not {within}")
        return value

    return check


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
    """Print Ctrl-C's one line and return the exit to raise: 130, or 143 for a SIGTERM, the
    codes a shell gives a process those signals end."""
    err_console.print(escape(message), highlight=False, soft_wrap=True)
    return typer.Exit(code=128 + _ctrl_c.signum)


class UserErrorsGroup(TyperGroup):
    """The root group: an ``EdgenasError`` raised by any command becomes one line, exit 2;
    so does a disk that is full or read-only wherever a write was not already wrapped (an
    Optuna journal append, a plot): that is the machine's state, not a bug to trace. Ctrl-C
    becomes the command's one line of what was saved, exit 130 (typer ended it silently)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Typer's main, but a wrong option or argument is one line too (typer drew a usage
        line, a hint and a boxed error: five or six lines)."""
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
        except NoArgsIsHelpError as exc:  # typer has printed the help already
            result = exc.exit_code
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "edgenas"
            message = exc.format_message().replace("Value error, ", "")  # pydantic's wording
            fail(f"{message} (see '{where} --help')")
            result = USER_ERROR_EXIT
        except ClickException as exc:
            exc.show()
            result = exc.exit_code
        except Abort:
            err_console.print("aborted", highlight=False)
            result = 1
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: Any) -> Any:  # Any: typer's own vendored click.Context
        try:
            result = super().invoke(ctx)
        except EdgenasError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted):
                raise interrupted(str(exc)) from None
            raise interrupted(_interrupted_line(ctx)) from None
        except Exception as exc:
            if _caused_by_ctrl_c(exc):
                raise interrupted(_interrupted_line(ctx)) from None
            if not isinstance(exc, OSError) or exc.errno not in _STORAGE_ERRNOS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(
                f"cannot write{where}: {exc.strerror}; free some space or choose another --out"
            ) from None
        if _ctrl_c.pressed:  # a library swallowed it; the user still asked to stop
            raise interrupted(_interrupted_line(ctx))
        return result


def _interrupted_line(ctx: Any) -> str:
    """The interrupted command's line (known once the group has parsed its arguments)."""
    return INTERRUPTED.get(ctx.invoked_subcommand or "", "interrupted; run the same command again")


def _caused_by_ctrl_c(exc: BaseException) -> bool:
    """Whether Ctrl-C is behind ``exc``: pybind11 turns one inside a module's initialisation
    into ``ImportError: initialization failed``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


class CtrlC(KeyboardInterrupt):
    """Ctrl-C as edgenas' own SIGINT handler raises it: a ``KeyboardInterrupt`` to every
    ``except``, but not the exact type CPython watches for (see ``exit_130_on_ctrl_c``)."""


_REDELIVER_S = 0.05  # how long a lost Ctrl-C waits to be delivered again


class _CtrlCHandler:
    """SIGINT's and SIGTERM's handler under ``main()``: raises ``CtrlC`` and remembers that it
    did, and which signal. SIGTERM (``kill``, ``timeout``, a CI job cancelled, systemd) stops
    a command as Ctrl-C does: its one line, and its clean-up, such as a device's temporary
    folder; Python's default ended the process at once and left them."""

    def __init__(self) -> None:
        self.pressed = False
        self.signum = int(signal.SIGINT)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        self.signum = signum
        raise CtrlC

    def unraisable(self, previous: Callable[[Any], object]) -> Callable[[Any], object]:
        """An ``sys.unraisablehook`` that delivers a ``CtrlC`` raised where Python can only
        print it ("Exception ignored in" a weak reference's callback) again, where the
        command is at work; other exceptions go to ``previous``."""

        def hook(unraisable: Any) -> None:  # Any: sys.UnraisableHookArgs
            if not isinstance(unraisable.exc_value, CtrlC):
                previous(unraisable)
                return
            # Delivered now, it would be raised inside this hook; a moment later the main
            # thread is past the callback (if not, it comes back here and waits again).
            again = threading.Timer(_REDELIVER_S, _thread.interrupt_main, args=(self.signum,))
            again.daemon = True
            with contextlib.suppress(RuntimeError):  # no new threads at interpreter exit
                again.start()

        return hook


_ctrl_c = _CtrlCHandler()


def exit_130_on_ctrl_c() -> None:
    """Make Ctrl-C raise ``CtrlC`` instead of ``KeyboardInterrupt`` itself, and let no
    library lose it (main thread only).

    CPython flags a plain ``KeyboardInterrupt`` that leaves code a library runs through
    ``PyRun_String`` (an import done from a string), keeps the flag after the root group
    handled the interrupt, and then ends a ``python -m edgenas`` process by SIGINT (-2)
    instead of exit code 130: about one Ctrl-C in thirty early in ``export``. Its check is
    on the exact type, so a subclass keeps the exit code. One in about sixty was lost
    instead: raised inside a weak reference's callback (only printed), or cleared by a
    library; the first is raised again, the second still ends the command with the line."""
    signal.signal(signal.SIGINT, _ctrl_c)
    signal.signal(signal.SIGTERM, _ctrl_c)
    sys.unraisablehook = _ctrl_c.unraisable(sys.unraisablehook)


# A full disk or quota, a read-only file system.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
