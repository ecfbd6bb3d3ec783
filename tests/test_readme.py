"""Every command in the README parses as written: each `edgenas` line through the real
command-line parser (a renamed or removed option fails here, not in a user's terminal), each
benchmark line against the script's own --help. What the commands do is tested where the
command lives (tests/edgenas/, tests/latency/, ...)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from edgenas.cli import app

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    """The command lines of the README's bash blocks, continuation lines joined, comments cut."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _edgenas_args(words: list[str]) -> list[str] | None:
    """The arguments given to edgenas, wherever the line starts it (directly, or as
    ``python -m edgenas`` under torchrun)."""
    for i, word in enumerate(words):
        if word.endswith("bin/edgenas") or word == "edgenas":
            return words[i + 1 :]
        if word == "-m" and i + 1 < len(words) and words[i + 1] == "edgenas":
            return words[i + 2 :]
    return None


EDGENAS = [args for w in readme_commands() if (args := _edgenas_args(w)) is not None]


def _benchmark_module(words: list[str]) -> str | None:
    """The benchmark a line runs (``python -m benchmarks.NAME``), or None."""
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1].startswith("benchmarks."):
            return words[i + 1]
    return None


def _benchmark_file(words: list[str]) -> str | None:
    """The stand-alone benchmark a line runs as a file (``python benchmarks/NAME.py``)."""
    for i, word in enumerate(words[:-1]):
        if word.endswith("python") and re.fullmatch(r"benchmarks/\w+\.py", words[i + 1]):
            return words[i + 1]
    return None


BENCHMARKS = [w for w in readme_commands() if _benchmark_module(w) is not None]
BENCHMARK_FILES = [w for w in readme_commands() if _benchmark_file(w) is not None]


def test_the_readme_shows_the_main_commands() -> None:
    subcommands = {args[0] for args in EDGENAS}
    assert {"run", "report", "train", "profile", "search", "export"} <= subcommands
    assert ["make", "demo"] in readme_commands() and ["make", "test"] in readme_commands()
    assert BENCHMARKS, "no `python -m benchmarks.NAME` line in the README"
    assert BENCHMARK_FILES, "no `python benchmarks/NAME.py` line in the README"


@pytest.mark.parametrize("args", EDGENAS, ids=[" ".join(a)[:60] for a in EDGENAS])
def test_each_edgenas_command_parses(args: list[str]) -> None:
    command: click.Command = typer.main.get_command(app)
    name, rest = "edgenas", list(args)
    ctx = command.make_context(name, rest)
    while isinstance(command, click.Group):
        sub, found, rest = command.resolve_command(ctx, [*ctx.protected_args, *ctx.args])
        assert found is not None, f"unknown command {sub}"
        command, name = found, str(sub)
        ctx = command.make_context(name, rest, parent=ctx)


@pytest.mark.parametrize(
    "words",
    BENCHMARKS + BENCHMARK_FILES,
    ids=[" ".join(w)[:60] for w in BENCHMARKS + BENCHMARK_FILES],
)
def test_each_benchmark_command_uses_options_the_script_has(words: list[str]) -> None:
    module = _benchmark_module(words)
    script = module or _benchmark_file(words)
    assert script is not None
    proc = subprocess.run(
        [sys.executable, *(["-m", script] if module else [script]), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", proc.stdout), f"{script} has no {option}"
