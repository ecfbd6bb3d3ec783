"""The project's one base for errors a user can fix, and the one-line text of any exception.

Every layer subclasses ``EdgenasError`` (``SubnetError``, ``DeviceError``, ``TableError``,
``ExportError``, ``RecipeError``...). The CLI catches ``EdgenasError`` once, at its entry:
it prints the message as one line and exits with code 2. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations


class EdgenasError(Exception):
    """A problem the user can fix. The message is one line that names the thing, the value
    and what to do."""

    # The stage of ``edgenas run`` it failed (set as it leaves the stage), which the command
    # line names before the message.
    stage: str | None = None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying the one line the command line prints for it: what was saved and how
    to continue (``edgenas run`` names the stage it stopped)."""


def one_line(exc: BaseException, *, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut to
    ``limit`` characters: short enough to quote inside another error's message."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def yaml_problem(exc: BaseException) -> str:
    """A YAML parse error as ``" at line L, column C: problem"`` (or ``": problem"`` without a
    position), to follow "is not valid YAML": PyYAML's own message spans several lines, and
    its marks count from 0."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {getattr(exc, 'problem', None) or one_line(exc)}"
