"""``python -m edgenas`` and the ``edgenas`` console script (pyproject's [project.scripts]).

Ctrl-C handling comes first, before the commands are imported (torch, about 2 s), so that a
Ctrl-C or SIGTERM at any moment ends with the command's one line and exit code 130 (143)."""

from __future__ import annotations

import sys

from edgenas.ctrl_c import (
    caused_by_ctrl_c,
    command_named,
    ctrl_c,
    exit_130_on_ctrl_c,
    interrupted_line,
)


def main() -> None:
    exit_130_on_ctrl_c()
    try:
        from edgenas.cli import app
    except BaseException as exc:
        if not caused_by_ctrl_c(exc):
            raise
        # No command has started, so none has saved anything; the command group that prints
        # the line is not there yet.
        sys.stderr.write(interrupted_line(command_named(sys.argv[1:])) + "\n")
        sys.exit(128 + ctrl_c.signum)
    app()


if __name__ == "__main__":
    main()
