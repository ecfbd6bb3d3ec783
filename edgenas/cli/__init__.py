"""The `edgenas` command line: one thin module per command group over the stage functions in
``edgenas.stages`` and ``edgenas.pipeline``. Nothing imports this package."""

from __future__ import annotations

from edgenas.cli.app import app, main

__all__ = ["app", "main"]
