"""Ctrl-C during a TFLite conversion ends the export after that step, cleanly: it crashed
inside LiteRT's native code (a segmentation fault once in four tries) and left its staging
folder behind."""

from __future__ import annotations

import json
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


def _ctrl_c_at(args: list[str], said: str) -> str:
    """Run ``args``, Ctrl-C it at its first line holding ``said``; what it said after."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if said in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=300)[1]
    assert proc.returncode > 0, "".join(seen) + rest  # an exit, not a death by signal
    assert "Traceback" not in rest
    return rest


def _export_args(trained: Path, *args: str | Path) -> list[str]:
    supernet = trained / "run" / "supernet.pt"
    return [sys.executable, "-m", "edgenas", "export", "--supernet", str(supernet), *map(str, args)]


def test_ctrl_c_during_the_tflite_conversion_exits_cleanly(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    # the smallest subnet: the conversion to interrupt takes seconds all the same
    args = _export_args(trained, "--subnet", "min", "--format", "tflite", "--out", out)
    _ctrl_c_at(args, "tflite fp32")  # the conversion starts now
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".partial-")]


def test_an_interrupted_export_resumes_with_what_it_finished(trained: Path, tmp_path: Path) -> None:
    # A walk-through's export, interrupted in its last step, wrote and measured every file
    # again when rerun.
    for name in ("first", "second"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\nwarmup: 1\nruns: 3\n"
        )
    out = tmp_path / "export"
    devices = ["--device", tmp_path / "first.yaml", "--device", tmp_path / "second.yaml"]
    args = _export_args(trained, "--subnet", "min", "--format", "onnx,tflite", *devices)
    args += ["--out", str(out)]
    # at second-cpu: the files are checked, first-cpu has measured them
    rest = _ctrl_c_at(args, "on second-cpu")
    assert "run the same command again to resume" in rest
    (staging,) = [p for p in out.iterdir() if p.name.startswith(".partial-")]
    assert not (out / "card.json").exists()
    progress = json.loads((staging / ".progress.json").read_text())
    assert set(progress["files"]) == {"model.onnx", "model.tflite"}
    assert set(progress["devices"]) == {"first-cpu"}
    written = {name: (staging / name).read_bytes() for name in progress["files"]}

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    again = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "onnx fp32: kept from the interrupted export" in again.stderr
    assert "tflite fp32: kept from the interrupted export" in again.stderr
    assert "measured on first-cpu by the interrupted export: kept" in again.stderr
    assert "measuring 1 file(s) on second-cpu" in again.stderr
    assert "measuring 1 file(s) on first-cpu" not in again.stderr
    card = json.loads((out / "card.json").read_text())
    assert {name: (out / name).read_bytes() for name in written} == written
    first = progress["devices"]["first-cpu"]["latency"]["files"]["model.onnx"]["measured"]
    assert card["latency"]["first-cpu"]["files"]["model.onnx"]["measured"] == first
    assert set(card["latency"]) == {"first-cpu", "second-cpu"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing left behind

    # Other inputs do not take the files over: an interrupted export of another subnet's
    # folder is removed.
    (out / ".partial-0123456789abcdef").mkdir()
    other = subprocess.run(
        [*args[:7], "max", *args[8:]], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert other.returncode == 0, other.stderr
    assert "kept from the interrupted export" not in other.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
