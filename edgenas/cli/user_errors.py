"""How the command line reports a user's error: one line on stderr and exit code 2; and
Ctrl-C: one line saying what was saved and how to continue, exit code 130.

The root command group catches ``EdgenasError`` and ``KeyboardInterrupt`` once, around every
command, so no command keeps its own list of errors. Any other exception is a bug and keeps
its traceback. ``edgenas.__main__`` installs the SIGINT handler that keeps a Ctrl-C from
being lost on its way there (``edgenas.ctrl_c``), before it imports the commands.
"""

from __future__ import annotations

import errno
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import typer
from rich.markup import escape
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup
from typer.exceptions import Abort

from edgenas.cli.help_text import unwrap_help
from edgenas.console import err_console
from edgenas.ctrl_c import (
    caused_by_ctrl_c,
    ctrl_c,
    interrupted_line,
)
from once_for_all.errors import EdgenasError, Interrupted

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by SIGINT (143: SIGTERM)


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


# Every seed option's range: search's samplers (numpy's) take 0 to 2^32 - 1, and the others,
# though Python's random took any int, keep to it, as recipe seeds do.
SEED_MAX = 2**32 - 1


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` came from the command line rather than its default. By the
    source's name: typer vendors click, so click's own ParameterSource is another class."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def option_flag(name: str) -> str:
    """An option's parameter name as the command line spells it: ``qat_epochs`` ->
    ``--qat-epochs``."""
    return "--" + name.replace("_", "-")


def given_flags(ctx: typer.Context, names: Iterable[str]) -> list[str]:
    """The options among ``names`` (parameter names) that came from the command line, as it
    spells them, in the order of ``names``: for refusing an option that the others leave with
    nothing to do."""
    return [option_flag(name) for name in names if given(ctx, name)]


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
    return typer.Exit(code=128 + ctrl_c.signum)


class UserErrorsGroup(TyperGroup):
    """The root group: an ``EdgenasError`` raised by any command becomes one line, exit 2;
    so does a disk that is full or read-only wherever a write was not already wrapped (an
    Optuna journal append, a plot): that is the machine's state, not a bug to trace. Ctrl-C
    becomes the command's one line of what was saved, exit 130 (typer ended it silently).
    Its commands' help is unwrapped for the terminal to wrap (``edgenas.cli.help_text``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unwrap_help(self)  # typer built the commands under it first

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
            raise fail(f"{exc.stage} failed: {exc}" if exc.stage else str(exc)) from None
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted):
                raise interrupted(str(exc)) from None
            raise interrupted(_interrupted_line(ctx)) from None
        except Exception as exc:
            if caused_by_ctrl_c(exc):
                raise interrupted(_interrupted_line(ctx)) from None
            if not isinstance(exc, OSError) or exc.errno not in _STORAGE_ERRNOS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(
                f"cannot write{where}: {exc.strerror}; free some space or choose another --out"
            ) from None
        if ctrl_c.pressed:  # a library swallowed it; the user still asked to stop
            raise interrupted(_interrupted_line(ctx))
        return result


def _interrupted_line(ctx: Any) -> str:
    """The interrupted command's line (known once the group has parsed its arguments)."""
    return interrupted_line(ctx.invoked_subcommand)


# A full disk or quota, a read-only file system.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
