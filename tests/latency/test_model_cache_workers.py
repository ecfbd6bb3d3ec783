"""The model cache's conversion workers end with their parent: a profile killed with SIGKILL
left its pool converting (and holding the parent's output open) until killed by hand."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from latency.model_cache import _quiet_worker

if __name__ == "__main__":
    pool = ProcessPoolExecutor(
        2, mp_context=get_context("spawn"), initializer=_quiet_worker, initargs=(os.getpid(),)
    )
    first = pool.submit(os.getpid).result()  # one worker up; the other may still be starting
    futures = [pool.submit(time.sleep, 600) for _ in range(3)]  # converting for a long time
    print(" ".join(str(pid) for pid in pool._processes), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a worker already ended but not yet reaped by init is a zombie: as good as gone
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ")[1][:1] != "Z"


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        workers = [int(p) for p in parent.stdout.readline().split()]
        # killed while the second worker may still be importing torch (it then read init's
        # pid as its parent's, and lived on)
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers)
    finally:
        parent.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


CONVERTING = """
import sys, time
from pathlib import Path
from latency.model_cache import ModelCache
from once_for_all.files import atomic_path


def slow(desc, path, conversion):  # a conversion that takes its time (int8 TFLite: 15-40 s)
    with atomic_path(path) as tmp:  # as the converters write their models
        tmp.write_bytes(b"half a model")
        time.sleep(600)


class Stopped(Exception):  # as a fleet's progress raises Cancelled once Ctrl-C set its stop
    pass


calls = []


def said(stage, done, total):
    if not calls:
        print("converting", flush=True)
    calls.append(done)
    if sys.argv[2] == "fleet" and len(calls) > 20:  # about 10 s of conversions in flight
        raise Stopped


if __name__ == "__main__":
    root = Path(sys.argv[1])
    jobs = [({"i": i}, root / f"m{i}.onnx") for i in range(8)]
    try:
        ModelCache(root)._run(jobs, slow, ("onnx", "fp32", "onnx", "none"), 2, said)
    except (KeyboardInterrupt, Stopped):
        print("stopped", flush=True)
"""


@pytest.mark.parametrize("stop", ["ctrl-c", "fleet"])
def test_a_stop_ends_the_conversions_in_flight(tmp_path: Path, stop: str) -> None:
    # Ctrl-C waited for the conversions under way to finish: 7-50 s of nothing before the
    # profile stopped (walk-through). A fleet's worker (edgenas run) sees Ctrl-C as its
    # progress raising, which a wait for a conversion never called.
    script = tmp_path / "converting.py"
    script.write_text(CONVERTING)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "cache"), stop],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "converting\n"
        if stop == "ctrl-c":
            time.sleep(10)  # the workers start (importing torch) and take their models
            parent.send_signal(signal.SIGINT)
        # within seconds, not the 600 s of the models in flight (TimeoutExpired)
        out, _ = parent.communicate(timeout=30)
        assert out == "stopped\n" and parent.returncode == 0
        # nor are the terminated workers' temporary files left in the cache (walk-through)
        assert sorted((tmp_path / "cache").iterdir()) == []
    finally:
        parent.kill()
