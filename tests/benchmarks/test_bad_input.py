"""Every benchmark script refuses bad input before any work, as ``python -m benchmarks.X``
runs it: exit code 2, nothing on stdout, one line on stderr, ``error: ...``, naming the
option (or variable) at fault, and no traceback. The scripts run in this process through
``runpy``, as ``-m`` runs them (torch is imported once for all); a few also run as real
processes, and benchmarks/command_line.py's other half, SIGTERM, is tested with
benchmarks.scale_search in test_scale_search.py."""

from __future__ import annotations

import runpy
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# (script, arguments, what the line must name). In the arguments {tmp} is a fresh folder,
# {file} a file there that is nothing the scripts read, {supernet} a finished checkpoint,
# {acc} and {lat} an accuracy and a latency predictor.
CASES: list[tuple[str, list[str], str]] = [
    ("adversarial", ["--jobs", "0"], "--jobs"),
    ("adversarial", ["--run", "{tmp}/nope"], "--run"),
    ("contention", ["--steps", "0"], "--steps"),
    ("contention", ["--repeats", "0"], "--repeats"),
    ("contention", ["--threads", "0"], "--threads"),
    ("data", ["--images", "64"], "--images"),
    ("data", ["--images", "0"], "--images"),
    ("data", ["--sample", "0", "--part", "decoders"], "--sample"),
    ("data", ["--work", "{file}"], "--work"),
    ("data", ["--loader-images", "64"], "--loader-images"),
    ("data", ["--loader-images", "0"], "--loader-images"),
    ("devices", ["--repeats", "0"], "--repeats"),
    ("devices", ["--repeat-measurements", "0"], "--repeat-measurements"),
    ("export", ["--supernet", "{tmp}/nope.pt"], "--supernet"),
    ("export", ["--supernet", "{file}"], "--supernet"),
    ("export", ["--supernet", "{supernet}", "--subnet", "{tmp}/nope.json"], "--subnet"),
    ("export", ["--supernet", "{supernet}", "--device", "no-such-device"], "--device"),
    ("export", ["--speed", "--demo-subnet", "{file}"], "--demo-subnet"),
    ("export", ["--speed", "--resolutions", "33"], "--resolutions"),
    ("export", ["--speed", "--resolutions", "0"], "--resolutions"),
    ("export", ["--refuse-amx"], "--refuse-amx"),
    ("int8_kernels", ["--space", "bogus"], "--space"),
    ("int8_kernels", ["--subnet", "{tmp}/nope.json"], "--subnet"),
    ("int8_kernels", ["--subnet", "{file}#3"], "--subnet"),
    ("int8_sensitivity", ["--supernet", "{file}"], "--supernet"),
    ("int8_sensitivity", ["--supernet", "{supernet}", "--subnet", "{tmp}/no.json"], "--subnet"),
    ("int8_sensitivity", ["--supernet", "{supernet}", "--images", "0"], "--images"),
    ("int8_sensitivity", ["--supernet", "{supernet}", "--images", "-3"], "--images"),
    ("latency", ["--calibrate", "0"], "--calibrate"),
    ("latency", ["--calibrate", "5"], "--calibrate"),
    ("latency", ["--passes", "0"], "--passes"),
    ("latency", ["--load", "-1"], "--load"),
    ("search", ["--accuracy-predictor", "{tmp}/no.pt", "--latency-predictor", "{lat}"], "--acc"),
    ("search", ["--accuracy-predictor", "{acc}", "--latency-predictor", "{tmp}/no.json"], "--lat"),
    ("search", ["--accuracy-predictor", "{acc}", "--latency-predictor", "{file}"], "--lat"),
    ("search", ["--accuracy-predictor", "{acc}", "--latency-predictor", "{lat}", "--samplers", "x"], "--samplers"),
    ("search", ["--accuracy-predictor", "{acc}", "--latency-predictor", "{lat}", "--trials", "0"], "--trials"),
    ("search", ["--accuracy-predictor", "{acc}", "--latency-predictor", "{lat}", "--seeds", "0"], "--seeds"),
    ("ofa_search", ["--budgets", "abc"], "--budgets"),
    ("ofa_search", ["--sampler", "bogus"], "--sampler"),
    ("ofa_search", ["--ofa-files", "{tmp}/nope"], "--ofa-files"),
    ("ofa_search", ["--ofa-files", "{tmp}"], "--ofa-files"),
    ("ofa_search", ["--trials", "0"], "--trials"),
    ("scale", ["--part", "training", "--steps", "0"], "--steps"),
    ("scale", ["--accuracy-predictor", "{tmp}/no.pt"], "--accuracy-predictor"),
    ("scale", ["--storage", "bogus"], "--storage"),
    ("scale_search", ["--storage", "bogus"], "--storage"),
    ("scale_search", ["--trials", "0"], "--trials"),
    ("scale_search", ["--accuracy-predictor", "{tmp}/no.pt"], "--accuracy-predictor"),
    ("scale_search", ["--accuracy-predictor", "{acc}", "--latency-predictor", "{file}"], "--lat"),
    ("scale_training", ["--batch-size", "0"], "--batch-size"),
    ("scale_training", ["--batch-size", "65"], "--batch-size"),
    ("scale_training", ["--processes", "1", "3"], "--batch-size"),
    ("scale_training", ["--steps", "0"], "--steps"),
    ("scalesim_crosscheck", ["--scalesim-python", "{tmp}/no-python"], "--scalesim-python"),
    ("scalesim_crosscheck", ["--scalesim-python", sys.executable, "--out", "{file}"], "--out"),
    ("supernet", ["--subnets", "max,bogus"], "--subnets"),
    ("supernet", ["--repeats", "0"], "--repeats"),
    ("supernet", ["--part", "accuracy", "--checkpoint", "{file}"], "--checkpoint"),
    ("supernet", ["--part", "accuracy", "--checkpoint", "{supernet}", "--scratch-cache", "{file}/x/s.json"], "--scratch-cache"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def same_torch_threads() -> Iterator[None]:
    """Scripts set torch's threads; the rest of the suite runs with conftest's one."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_script(
    name: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[object, str, str]:
    """``python -m benchmarks.NAME ARGS`` in this process: (exit code, stdout, stderr). Any
    exception but SystemExit propagates (a traceback)."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exited, warnings.catch_warnings():
        # runpy warns that the module is imported already (by an earlier case): harmless.
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module(f"benchmarks.{name}", run_name="__main__", alter_sys=True)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def assert_one_line(code: object, out: str, err: str, names: str) -> None:
    assert "Traceback" not in err, err
    assert (code, out) == (2, ""), (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0], err


@pytest.mark.parametrize(
    ("script", "args", "names"),
    CASES,
    ids=[f"{script} {' '.join(args)}"[:70] for script, args, _ in CASES],
)
def test_bad_input_is_one_line_and_exit_2(
    script: str,
    args: list[str],
    names: str,
    tmp_path: Path,
    tiny_supernet: Path,
    predictors: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("not what any script reads\n")
    values = {
        "tmp": str(tmp_path),
        "file": str(junk),
        "supernet": str(tiny_supernet),
        "acc": str(predictors[0]),
        "lat": str(predictors[1]),
    }
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_script(script, [a.format(**values) for a in args], monkeypatch, capsys)
    assert_one_line(code, out, err, names)
    assert sorted(tmp_path.rglob("*")) == before  # refused before writing anything


def test_a_device_python_that_is_not_there_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGENAS_DEVICE_PYTHON", "/nonexistent/python")
    code, out, err = run_script("devices", ["--part", "repeatability"], monkeypatch, capsys)
    assert_one_line(code, out, err, "EDGENAS_DEVICE_PYTHON=/nonexistent/python")


@pytest.mark.parametrize(
    "args",
    [
        ["benchmarks.contention", "--steps", "0"],
        ["benchmarks.scale_search"],  # the default predictor is not there
        ["benchmarks.adversarial_scenarios", "--help"],  # a library module, not a script
    ],
    ids=lambda args: " ".join(args),
)
def test_as_a_process_too(args: list[str], tmp_path: Path) -> None:
    """The ``__main__`` blocks call the shared runner (run from a folder without runs/)."""
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert_one_line(proc.returncode, proc.stdout, proc.stderr, "")
    assert "--" in proc.stderr  # the option, or the command to run instead


def test_help_shows_each_default_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_script("supernet", ["--help"], monkeypatch, capsys)
    assert code == 0
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default: 2)" in out  # --threads
    text = " ".join(out.split())
    assert "every baseline is trained)" in text and "baseline is trained) (default" not in text


def test_latency_asks_for_as_many_calibration_subnets_as_profile() -> None:
    from benchmarks.latency import MIN_CALIBRATION
    from edgenas.recipe import MIN_CALIBRATION as PROFILES
    from latency.predictors import MIN_CALIBRATION as FITTED

    assert MIN_CALIBRATION == PROFILES == FITTED


def test_a_scratch_cache_in_a_new_folder_is_written(tmp_path: Path) -> None:
    from benchmarks.supernet import ScratchCache

    path = tmp_path / "new" / "folder" / "scratch.json"
    ScratchCache(path).put("key", {"scratch_test_acc": 0.5})
    assert ScratchCache(path).get("key") == {"scratch_test_acc": 0.5}
