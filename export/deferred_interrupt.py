"""Ctrl-C (and SIGTERM, which edgenas's commands take as Ctrl-C) held back while a
converter's native code runs: interrupted inside, LiteRT's converter and quantizer crashed (a
segmentation fault once in four tries), so the export's own clean-up (its staging folder)
never ran. The interrupt is delivered when the step ends, and said at once: a conversion of a
large subnet takes tens of seconds, and a held Ctrl-C looked ignored."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from once_for_all.stop_signals import held_stop_signals

STOPPING = "interrupted: stopping when this conversion step ends (it cannot be cut short safely)"


@contextmanager
def interrupt_after_step() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block, then deliver the first that came as it would
    have been delivered (its handler, or its default action). Outside the main thread (where
    Python delivers signals) it does nothing."""

    def say() -> None:
        # os.write, not print: a handler that prints while the main thread is printing
        # raises "reentrant call"
        os.write(sys.stderr.fileno(), f"{STOPPING}\n".encode())

    with held_stop_signals(on_first=say):
        yield
