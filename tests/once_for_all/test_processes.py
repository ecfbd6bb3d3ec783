"""Whether a process runs, as locks, run folders and the local runner ask it."""

from __future__ import annotations

import os
import shutil
import time

from devices import runner
from once_for_all.processes import alive


def test_an_ended_process_not_reaped_yet_does_not_run() -> None:
    # A SIGKILLed edgenas that its caller had not waited for yet still answered kill(pid, 0):
    # its local runner, started in those milliseconds, measured its whole batch.
    true = shutil.which("true")
    assert true is not None
    pid = os.posix_spawn(true, [true], dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while _state(pid) != "Z":  # ended; nothing waits for it
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.01)
        assert not alive(pid)
        assert not runner._running(pid)
    finally:
        os.waitpid(pid, 0)
    assert not alive(pid) and not runner._running(pid)  # reaped: gone
    assert alive(os.getpid()) and runner._running(os.getpid())


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
