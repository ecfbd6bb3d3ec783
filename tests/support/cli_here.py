"""Running an ``edgenas`` command in the test's own process.

A ``python -m edgenas`` process costs seconds of imports (torch) before it does anything.
Checks of what a command refuses before any work, or of quick commands, run in-process
instead; the result has a subprocess's shape (returncode, stdout, stderr), so assertions
read the same. Paths a test must see as a user does (a real process: signals, locks,
exit codes of the interpreter) keep ``subprocess``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner


def edgenas_here(
    *args: str | Path, stdin: str = "", env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    from edgenas.cli import app

    argv = [str(a) for a in args]
    result = CliRunner().invoke(app, argv, input=stdin, env={"COLUMNS": "200", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a failure here, as it would be in a process
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)
