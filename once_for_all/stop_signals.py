"""The signals that stop a command, for code that holds them back over a step that must not be
cut (a converter's native code, a journal lock's acquire and release): Ctrl-C's SIGINT, and
SIGTERM, which edgenas's commands take as Ctrl-C (``kill``, ``timeout``, a cancelled CI job)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
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


@contextmanager
def held_stop_signals(on_first: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block (``on_first`` runs when the first comes), then
    deliver the first that came as it would have been delivered. Outside the main thread
    (where Python delivers signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if not pending:
            on_first()
        pending.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        deliver(pending[0], previous[signal.Signals(pending[0])])
