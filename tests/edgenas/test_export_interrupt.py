"""Ctrl-C during a TFLite conversion ends the export after that step, cleanly: it crashed
inside LiteRT's native code (a segmentation fault once in four tries) and left its staging
folder behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from export.deferred_interrupt import STOPPING, interrupt_after_step
from tests.edgenas.conftest import REPO


def test_an_interrupt_inside_the_step_is_raised_when_it_ends(
    capfd: pytest.CaptureFixture[str],
) -> None:
    finished = False
    with pytest.raises(KeyboardInterrupt), interrupt_after_step():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        finished = True  # the step was not cut short
    assert finished
    assert capfd.readouterr().err == STOPPING + "\n"  # said at once, and once
    with interrupt_after_step():
        pass  # no interrupt: nothing raised
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_during_the_tflite_conversion_exits_cleanly(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgenas",
            "export",
            "--supernet",
            str(trained / "run" / "supernet.pt"),
            "--subnet",
            "min",  # the smallest: the conversion to interrupt takes seconds all the same
            "--format",
            "tflite",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "tflite fp32" in line:  # the conversion starts now
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=300)[1]
    assert proc.returncode > 0, "".join(seen) + rest  # an exit, not a death by signal
    assert "Traceback" not in rest
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".partial-")]
