"""Ctrl-C held back while a converter's native code runs: interrupted inside, LiteRT's
converter and quantizer crashed (a segmentation fault once in four tries), so the export's
own clean-up (its staging folder) never ran. The interrupt is delivered when the step ends."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def interrupt_after_step() -> Iterator[None]:
    """Hold SIGINT for the block, then raise ``KeyboardInterrupt`` if one came. Outside the
    main thread (where Python delivers signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt
