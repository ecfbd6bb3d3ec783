"""The `edgenas` command line: one thin module per command group over the stage functions in
``edgenas.stages`` and ``edgenas.pipeline``. Nothing imports this package but the entry point,
``edgenas.__main__``, which installs Ctrl-C handling before it does."""

from __future__ import annotations

from edgenas.__main__ import main  # for console scripts installed before it moved there
from edgenas.cli.app import app

__all__ = ["app", "main"]
