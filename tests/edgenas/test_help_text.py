"""Command help, as a terminal wider than the source shows it: each sentence on the line
the terminal gives it, not broken where the docstring was wrapped."""

from __future__ import annotations

from typing import Any

import typer.main

from edgenas.cli import app
from edgenas.cli.help_text import unwrapped
from tests.support.cli_here import edgenas_here


def test_unwrapped_joins_lines_and_keeps_paragraphs() -> None:
    text = """First line
        goes on.

        Second paragraph,
        two lines."""
    assert unwrapped(text) == "First line goes on.\n\nSecond paragraph, two lines."


def test_the_command_list_shows_each_summary_unbroken() -> None:
    out = edgenas_here("--help").stdout  # 200 columns
    # The docstring breaks after "calibrated"; the terminal has room for the whole sentence.
    assert "then fit a calibrated predictor on subnets measured end to end" in out
    assert "pick the best subnet under each budget. Several devices give a joint front" in out


def test_a_commands_later_paragraphs_are_unbroken_too() -> None:
    out = edgenas_here("profile", "--help").stdout
    assert "a device that fails is reported at the end (exit code 1) and the others finish" in out


def test_no_command_keeps_a_line_break_inside_a_paragraph() -> None:
    def helps(command: Any, path: str) -> list[tuple[str, str]]:
        out = [(path, command.help or "")]
        for name, sub in getattr(command, "commands", {}).items():
            out += helps(sub, f"{path} {name}")
        return out

    found = helps(typer.main.get_command(app), "edgenas")
    assert len(found) > 15  # every group and command, the nested ones too
    broken = [path for path, text in found if any("\n" in p for p in text.split("\n\n"))]
    assert not broken
