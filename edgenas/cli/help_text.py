"""Command help as the terminal wraps it.

The commands' help comes from their docstrings, wrapped at the source's width. Typer's rich
help keeps those line breaks, so in a terminal of another width its lines broke mid-sentence
(``edgenas --help`` showed "then fit a calibrated" on a line of its own). Each paragraph is
made one line, and the terminal wraps it; blank lines still separate paragraphs.
"""

from __future__ import annotations

import inspect
from typing import Any


def unwrapped(text: str) -> str:
    """``text`` with the line breaks inside each paragraph made spaces."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def unwrap_help(command: Any) -> None:
    """Unwrap the help of ``command`` and of every command under it, in place. ``Any``:
    typer's vendored click command or group."""
    if command.help:
        command.help = unwrapped(command.help)
    for sub in getattr(command, "commands", {}).values():
        unwrap_help(sub)
