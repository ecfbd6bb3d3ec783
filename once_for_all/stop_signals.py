"""The signals that stop a command, for code that holds them back over a step that must not be
cut (a converter's native code, a journal lock's acquire and release): Ctrl-C's SIGINT, and
SIGTERM, which edgenas's commands take as Ctrl-C (``kill``, ``timeout``, a cancelled CI job)."""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def deliver(signum: int, handler: Any) -> None:
    """Deliver a held ``signum`` as it would have been delivered: to ``handler``, its handler
    when it came (Python's SIGINT handler raises ``KeyboardInterrupt``, edgenas's commands'
    raise their own), or by its default action (SIGTERM's ends the process); an ignored one
    is dropped. ``handler`` must be installed again first."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)
