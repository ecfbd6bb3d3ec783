"""Terminal output shared by the commands: progress and errors go to stderr."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a one-line error (markup-safe: ``[section]`` stays visible) and return the exit
    to raise, with code 2 for errors that are the user's to fix."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)
