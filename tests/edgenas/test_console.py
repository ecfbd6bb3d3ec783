"""Progress when stderr is not a terminal: plain lines, so long work in a log file or CI is
not silent for minutes (a cold accuracy evaluation printed nothing for 300 s)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from edgenas import console
from edgenas.console import LineProgress, stage_progress


def test_without_a_terminal_progress_is_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(console, "err_console", Console(file=out, width=200))
    clock = iter(float(t) for t in range(0, 10_000, 3))  # 3 s per report
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    with stage_progress("accuracy", quiet=False) as progress:
        assert isinstance(progress, LineProgress)
        for done in range(101):
            progress("evaluate", done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "accuracy: evaluate 0/100 (0%), 0:00 elapsed"
    assert lines[-1] == "accuracy: evaluate 100/100 (100%), 5:00 elapsed"
    # every tenth, but no more than one line per 10 s: 3 s per unit never holds one back
    assert len(lines) == 11
    with stage_progress("accuracy", quiet=True) as progress:
        progress("evaluate", 1, 2)
    assert len(out.getvalue().splitlines()) == 11  # quiet prints nothing


def test_a_fleet_without_a_terminal_reports_each_device_in_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its bars were never drawn in a log: an hour of profiling printed one line at the end.
    from edgenas.stages import profile
    from latency import fleet
    from latency.fleet import DeviceResult

    out = io.StringIO()
    plain = Console(file=out, width=200)
    monkeypatch.setattr(console, "err_console", plain)
    monkeypatch.setattr(profile, "err_console", plain)
    with profile._fleet_progress(["board", "npu", "pi"], quiet=False) as (bar, finished):
        bar("board")("measure", 0, 4)
        bar("npu")("measure", 4, 4)
        finished(DeviceResult("npu", "npu", Path("p")))
        finished(DeviceResult("board", "board", Path("q"), error="unreachable"))
        stopped = DeviceResult("pi", "pi", Path("r"), error=fleet._INTERRUPTED)
        finished(stopped)  # Ctrl-C: it said "failed" (walk-through)
    lines = [line.split(",")[0] for line in out.getvalue().splitlines()]
    assert lines == [
        "profile board: measure 0/4 (0%)",
        "profile npu: measure 4/4 (100%)",
        "profile npu: done",
        "profile board: failed",
        "profile pi: interrupted",
    ]
