"""benchmarks/scale_search.py's workers: one that stops ends the benchmark at once in one line
(the parent waited 600 s at a barrier, then failed with BrokenBarrierError), and SIGTERM
ends it with one line, its workers and its temporary folder gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A worker given a predictor that is not there (the script itself refuses that before any
# worker starts: this calls search_throughput directly, as benchmarks.scale would without
# its check), under the scripts' shared runner.
DYING_WORKERS = """
import sys
from pathlib import Path
from benchmarks.command_line import run_main
from benchmarks.scale_search import search_throughput
run_main(lambda argv: search_throughput(
    2, "journal", trials=10, accuracy_predictor=Path(sys.argv[1]),
    latency_predictor=Path(sys.argv[2]),
))
"""


def exits_at_once(code: int, go: object, messages: object) -> None:
    """A worker that ends before it is ready, as a crash would."""
    sys.exit(code)


def waits(seconds: float, go: object, messages: object) -> None:
    """A worker that is still running when the test stops it."""
    time.sleep(seconds)


def test_an_interrupt_while_the_workers_start_waits_for_the_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Interrupted inside start(), a spawned child read half its start-up data and printed
    # "Ran out of input" with a traceback (seen once in CI, SIGTERM as the workers started).
    import multiprocessing.context

    from benchmarks.scale_search import start_workers

    started: list[object] = []
    start = multiprocessing.context.SpawnProcess.start

    def interrupted_start(self: multiprocessing.context.SpawnProcess) -> None:
        if not started:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C as the first worker starts
        start(self)
        started.append(self)

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        start_workers(waits, [(60,), (60,)])
    assert len(started) == 2  # every start finished before the interrupt was delivered
    assert not any(p.is_alive() for p in started)  # type: ignore[attr-defined]  # and ended


def test_a_worker_that_exits_before_it_is_ready_is_one_line() -> None:
    from benchmarks.scale_search import WorkerStopped, collect, start_workers, stop_workers

    procs, messages, _ = start_workers(exits_at_once, [(3,)])
    try:
        with pytest.raises(WorkerStopped, match=r"^search worker 0 exited with code 3 before"):
            collect(procs, messages, "ready", timeout_s=120)
    finally:
        stop_workers(procs)


def test_a_worker_that_refuses_its_input_ends_the_benchmark_in_one_line(
    tmp_path: Path, predictors: tuple[Path, Path]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", DYING_WORKERS, str(tmp_path / "missing.pt"), str(predictors[1])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,  # it waited 600 s
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: search worker ") and "--accuracy-predictor" in line


def test_sigterm_ends_it_in_one_line_and_leaves_nothing(
    tmp_path: Path, predictors: tuple[Path, Path]
) -> None:
    accuracy, latency = predictors
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.scale_search",
            "--accuracy-predictor",
            str(accuracy),
            "--latency-predictor",
            str(latency),
            "--storage",
            "journal",
            "--trials",
            "100000000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        start_new_session=True,  # its workers share its process group: checked below
    )
    try:
        # The journal's temporary folder exists from before the workers start until the end.
        for _ in range(1200):
            if any(tmp_path.glob("edgenas-bench-scale-*")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and out == ""
    assert err.splitlines()[-1] == "interrupted; run the same command again"
    assert not any(tmp_path.glob("edgenas-bench-*"))
    assert group_ends(proc.pid), "a process of the benchmark's group is still running"


def group_ends(pgid: int, *, within_s: float = 30.0) -> bool:
    """Whether every process of the group ends within ``within_s`` (multiprocessing's
    resource tracker ends once it sees its parent gone)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
