"""How every benchmark script meets its command line, as the ``edgenas`` command does: bad
input is refused in one line on stderr (``error: ...``, naming the option, the value and the
fix) with exit code 2, before any work; an ``EdgenasError`` raised on the way is printed the
same way; Ctrl-C and SIGTERM (``timeout``, a cancelled CI job) end the script with one line and
exit code 130 or 143 after its ``finally`` blocks ran, so temporary folders are removed.

    def main(argv: Sequence[str] | None = None) -> int | None:
        parser = ArgumentParser(prog="python -m benchmarks.x", description=...)
        parser.add_argument("--steps", type=at_least(1), default=12, help="...")
        args = parser.parse_args(argv)
        with blamed("--subnet"):  # a library's EdgenasError, prefixed with the option
            subnet = choose_subnet(args.subnet, space)

    if __name__ == "__main__":
        run_main(main)

Any other exception is a bug and keeps its traceback. Standard library and
``once_for_all.errors`` only: ``edgenas.ctrl_c`` would import the ``edgenas`` package, which
sets ``OMP_WAIT_POLICY`` before torch loads, and benchmarks that record or vary the policy
(data, contention, supernet) must see the one the user gave.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from once_for_all.errors import EdgenasError, one_line

USER_ERROR_EXIT = 2
INTERRUPTED_LINE = "interrupted; run the same command again"
Main = Callable[[Sequence[str] | None], int | None]


class Refused(EdgenasError):
    """Bad input to a benchmark: printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the script is, as Ctrl-C is: its ``finally`` blocks and context
    managers run (Python's default ended the process at once and left them undone)."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def run_main(main: Main, argv: Sequence[str] | None = None) -> NoReturn:
    """Run a script's ``main(argv)`` and exit: with its return value (None: 0), 2 after one
    ``error:`` line for an ``EdgenasError`` (``Refused`` included), 130 or 143 after one line
    for Ctrl-C or SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main(argv)
    except EdgenasError as exc:
        # The library's messages are one line by contract; cut only what is not.
        print(f"error: {one_line(exc, limit=2000)}", file=sys.stderr, flush=True)
        code = USER_ERROR_EXIT
    except KeyboardInterrupt as exc:
        print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
        code = 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a wrong option or value raises ``Refused`` (one line under ``run``)
    instead of printing the usage and the error on two lines."""

    def error(self, message: str) -> NoReturn:
        raise Refused(f"{message} (see '{self.prog} --help')")


@contextlib.contextmanager
def blamed(option: str) -> Iterator[None]:
    """An ``EdgenasError`` raised inside becomes ``Refused`` naming ``option``: the library
    says what is wrong with a file or value, this says which option gave it."""
    try:
        yield
    except EdgenasError as exc:
        raise Refused(f"{option}: {one_line(exc, limit=2000)}") from None


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def at_least(low: int, *, why: str = "") -> Callable[[str], int]:
    """argparse ``type=``: a whole number >= ``low``; ``why`` ends the message (", the
    predictor needs 10")."""

    def parse(text: str) -> int:
        value = _whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: give {low} or more{why}")
        return value

    return parse


def number_list(*, low: float = 0.0) -> Callable[[str], tuple[float, ...]]:
    """argparse ``type=``: comma-separated finite numbers, each above ``low`` (``15,18,23``)."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a list of numbers: give them as 15,18,23"
            ) from None
        for value in values:
            if not low < value < float("inf"):
                raise argparse.ArgumentTypeError(f"{value:g} is not a finite number above {low:g}")
        return values

    return parse


def names_from(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """argparse ``type=``: one or more of ``choices``, comma-separated (``journal,postgresql``)."""

    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown[0]!r}: give one or more of {','.join(choices)}, comma-separated"
            )
        return names

    return parse


def require_file(option: str, path: Path, fix: str) -> None:
    """Refuse ``path`` unless it is a file; ``fix`` says where one comes from."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise Refused(f"{option} {path}: {what}; {fix}")


def require_folder(option: str, path: Path) -> None:
    """Refuse ``path`` if it or a folder above it exists and is not a folder (a new folder
    is made there later)."""
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "is a file" if place == path else f"lies under the file {place}"
                raise Refused(f"{option} {path}: {where}; give a folder or a new path")
            return


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends with each option's default where it has one: not "(default: None)" or
    a flag's False, nor a second default after a help text that gives its own."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
