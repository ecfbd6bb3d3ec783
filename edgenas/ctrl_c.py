"""Ctrl-C and SIGTERM under the ``edgenas`` command: what each command says it saved, and the
handler that makes the signal a ``KeyboardInterrupt`` no library loses.

Standard library only: the entry point installs the handler before it imports the commands
(torch, about 2 s), so that a Ctrl-C during those imports also ends with the command's one
line and exit code 130 instead of a traceback.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

# What each command has saved when Ctrl-C stops it, and how to continue. Printed with or
# without --quiet (which silences progress, not this); `edgenas run` names its stage instead.
INTERRUPTED = {
    "train": "interrupted: each finished epoch is saved in the --out folder's checkpoint.pt "
    "(before the first, nothing: a new --out folder is removed); run the same command with "
    "--resume to continue",
    "profile": "interrupted: what was measured is saved; run the same command again",
    "search": "interrupted: the finished trials (and subnet accuracies) are saved in the --out "
    "folder's study.log (and accuracy_cache.json); run "
    "the same command again to continue the study",
    "export": "interrupted: no partial model file is left; the files and measurements "
    "finished (and a finished fine-tuning) are kept in the --out folder; run the same command "
    "again to resume",
    "run": "interrupted: the finished stages are saved; run the same command again to resume",
    "eval": "interrupted: eval writes nothing",
    "devices": "interrupted: nothing was changed (trust: known_hosts is as it was); run the "
    "same command again",
}
INTERRUPTED_ELSEWHERE = "interrupted; run the same command again"


def interrupted_line(command: str | None) -> str:
    """The one line Ctrl-C prints for ``command`` (a subcommand's name)."""
    return INTERRUPTED.get(command or "", INTERRUPTED_ELSEWHERE)


def caused_by_ctrl_c(exc: BaseException) -> bool:
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


ctrl_c = _CtrlCHandler()


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
    signal.signal(signal.SIGINT, ctrl_c)
    signal.signal(signal.SIGTERM, ctrl_c)
    sys.unraisablehook = ctrl_c.unraisable(sys.unraisablehook)


def command_named(argv: list[str]) -> str | None:
    """The subcommand a command line names (its first word that is not an option), before
    the command group has parsed it."""
    return next((word for word in argv if not word.startswith("-")), None)
