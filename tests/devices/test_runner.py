"""The standalone runner: run as a script in an empty folder, and its pieces on fake /sys trees."""

from __future__ import annotations

import ast
import glob
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

import devices.runner as runner
from devices.measurement import Measurement
from devices.runner_protocol import (
    JOB_FORMAT,
    RESULTS_FORMAT,
    RUNNER_PATH,
    RunSettings,
    build_job,
    parse_results,
)
from tests.devices.conftest import Models, run_runner

OUR_PACKAGES = ["devices", "once_for_all", "latency", "export", "edgenas", "tests"]
ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow"}


def test_formats_agree_with_the_protocol() -> None:
    assert (runner.JOB_FORMAT, runner.RESULTS_FORMAT) == (JOB_FORMAT, RESULTS_FORMAT)


def test_runner_parses_as_python_3_8() -> None:
    ast.parse(RUNNER_PATH.read_text(), feature_version=(3, 8))


def test_runner_imports_only_stdlib_numpy_and_runtimes() -> None:
    tree = ast.parse(RUNNER_PATH.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
        ):
            assert isinstance(node.args[0], ast.Constant | ast.Name)
    names.update(module for module, _ in runner.TFLITE_MODULES)
    tops = {name.split(".")[0] for name in names}
    outside = tops - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY - {"__future__"}
    assert not outside, f"runner.py imports {sorted(outside)}"


def _job(paths: list[Path], **overrides: object) -> dict[str, object]:
    job = build_job([str(p) for p in paths], RunSettings(warmup=1, runs=4))
    job.update(overrides)
    return job


def test_runs_from_an_empty_folder_without_our_packages(tmp_path: Path, models: Models) -> None:
    """Our packages are shadowed by stubs that fail to import: the runner must not notice."""
    stubs = tmp_path / "stubs"
    for name in OUR_PACKAGES:
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(
            "raise ImportError('edgenas is not on devices')\n"
        )
    folder = tmp_path / "empty"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(stubs)
    run = run_runner(_job([models.fc]), folder, env=env)
    assert run.returncode == 0, run.payload
    entry = run.payload["models"][0]
    assert entry["n"] == 4
    assert entry["init_ms"] >= 0 and entry["first_inference_ms"] >= 0
    assert sorted(p.name for p in folder.iterdir()) == ["runner.py"]  # nothing left behind


def _python_3_8() -> str | None:
    """A working Python 3.8 (pyenv's, or python3.8 on PATH), if this machine has one."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python")))
    candidates.append(shutil.which("python3.8") or "")
    for python in filter(None, candidates):
        check = [python, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"]
        if subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return python
    return None


PYTHON_3_8 = _python_3_8()


@pytest.mark.skipif(PYTHON_3_8 is None, reason="no Python 3.8 on this machine")
def test_runs_on_python_3_8(tmp_path: Path) -> None:
    """Python 3.8 reads and starts the runner; without numpy there it says what to install."""
    assert PYTHON_3_8 is not None
    run = run_runner(_job([]), tmp_path, python=PYTHON_3_8)
    assert "Traceback" not in run.stderr
    if "error" in run.payload:
        assert run.returncode == 3
        assert run.payload["error"]["kind"] == "environment"
        assert "pip install" in run.payload["error"]["message"]
    else:
        assert run.returncode == 0
        assert run.payload["fingerprint"]["python"].startswith("3.8")


def test_interleaved_order_maps_back_to_job_order(tmp_path: Path, models: Models) -> None:
    paths = models.all()
    run = run_runner(_job(paths, runs=8, rounds=4, seed=3, spread_threshold=1e9), tmp_path)
    assert run.returncode == 0, run.payload
    order = run.payload["order"]
    assert len(order) == 4  # no repeats: the threshold is out of reach
    assert all(sorted(visit) == [0, 1, 2] for visit in order)
    assert any(visit != [0, 1, 2] for visit in order), "rounds were not shuffled"
    entries = run.payload["models"]
    assert [e["index"] for e in entries] == [0, 1, 2]
    assert [e["path"] for e in entries] == [str(p) for p in paths]
    assert all(len(e["times_ms"]) == 8 for e in entries)
    again = run_runner(_job(paths, runs=8, rounds=4, seed=3, spread_threshold=1e9), tmp_path)
    assert again.payload["order"] == order  # the seed makes the order reproducible
    other = run_runner(_job(paths, runs=8, rounds=4, seed=4, spread_threshold=1e9), tmp_path)
    assert other.payload["order"] != order


def test_runner_statistics_are_measurement_statistics(tmp_path: Path, models: Models) -> None:
    run = run_runner(_job([models.conv, models.fc], runs=9), tmp_path)
    parsed = parse_results("t", run.payload, ["conv", "fc"])
    for entry, m in zip(run.payload["models"], parsed.measurements, strict=True):
        for key in ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "min_ms", "n"):
            assert entry[key] == pytest.approx(getattr(m, key), rel=1e-12), key


def test_pinning_to_a_core(tmp_path: Path, models: Models) -> None:
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity on this OS")
    core = sorted(os.sched_getaffinity(0))[-1]
    run = run_runner(_job([models.fc], cores=[core]), tmp_path)
    assert run.returncode == 0, run.payload
    assert run.payload["fingerprint"]["usable_cores"] == [core]
    assert run.payload["fingerprint"]["pinned"] is True
    bad = run_runner(_job([models.fc], cores=[4096]), tmp_path)
    assert bad.returncode == 2
    assert "cannot pin to cores [4096]" in bad.payload["error"]["message"]


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("{not json", "job is not valid JSON"),
        ('{"format": "edgenas.runner-job/0"}', "run the runner.py of the same edgenas version"),
        ('{"runs": 0}', "runs must be an integer >= 1, got 0"),
        ('{"runs": 2, "rounds": 3}', "rounds=3 exceeds runs=2"),
        ('{"runtime": "tvm"}', "runtime 'tvm': expected one of onnxruntime, tflite, openvino"),
        ('{"colour": 1}', "unknown job keys: colour"),
        ('{"cores": []}', "cores must be null or a non-empty list"),
        (
            '{"runtime": "tflite", "delegate": "gpu"}',
            "delegate 'gpu' needs an adb device (benchmark_model); this runner takes xnnpack, "
            "none or external:PATH",
        ),
        ('{"runtime": "tflite", "delegate": "hexagon"}', "delegate 'hexagon': expected one of"),
        ('{"delegate": "xnnpack"}', "delegate is for runtime tflite"),
        ('{"runtime": "tflite", "providers": ["CPUExecutionProvider"]}', "providers are for"),
        ('{"providers": []}', "providers must be a non-empty list of names"),
        (
            '{"providers": ["CPUExecutionProvider"], "provider_options": {"X": {}}}',
            "provider_options for providers not requested: X",
        ),
        (
            '{"runtime": "tflite", "delegate": "none", "delegate_options": {"a": "1"}}',
            "delegate_options are for delegate external:PATH only",
        ),
        ('{"openvino": {"device": "CPU"}}', "openvino is for runtime openvino"),
        (
            '{"runtime": "openvino", "openvino": {"device": "CPU", "cache": 1}}',
            "openvino must be an object with device, properties",
        ),
        ('{"runtime": "openvino", "openvino": {"device": ""}}', "openvino.device must be a"),
        ('{"runtime": "openvino", "openvino": []}', "openvino must be an object with device"),
        ('{"runtime": "tensorrt", "trtexec": 0}', "trtexec must be an object with path"),
        (
            '{"runtime": "openvino", "openvino": {"properties": {"A": [1]}}}',
            "openvino.properties must map names to strings or numbers",
        ),
        (
            '{"runtime": "openvino", "openvino": {"properties": {"INFERENCE_NUM_THREADS": 2}}}',
            "openvino.properties INFERENCE_NUM_THREADS: give the job's threads instead",
        ),
        (
            '{"runtime": "openvino", "openvino": {"device": "HETERO:GPU,CPU"}}',
            "openvino.device 'HETERO:GPU,CPU' is a virtual device",
        ),
    ],
)
def test_bad_jobs_are_json_errors(tmp_path: Path, job: str, message: str) -> None:
    run = run_runner(job, tmp_path)
    assert run.returncode == 2
    assert run.payload["format"] == RESULTS_FORMAT
    assert run.payload["error"]["kind"] == "bad-job"
    assert message in run.payload["error"]["message"]
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("runner: ")


def test_bad_arguments_are_json_errors(tmp_path: Path) -> None:
    shutil.copyfile(RUNNER_PATH, tmp_path / "runner.py")
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), "--jobb", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        "bad arguments: unrecognized arguments: --jobb x"
        in json.loads(proc.stdout)["error"]["message"]
    )


def test_missing_numpy_is_a_json_error(
    tmp_path: Path, python_without: Callable[[Sequence[str]], Path], models: Models
) -> None:
    python = python_without(["numpy"])
    run = run_runner(_job([models.fc]), tmp_path, python=python)
    assert run.returncode == 3
    assert run.payload["error"]["kind"] == "environment"
    assert "numpy is not installed" in run.payload["error"]["message"]
    assert "pip install numpy" in run.payload["error"]["message"]
    assert "Traceback" not in run.stderr


def test_an_import_a_stop_cut_short_is_the_stop_not_a_missing_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A runner stopped while numpy imported (edgenas killed: its parent-death SIGTERM) wrote
    # "numpy is not installed" (numpy's own ImportError about its source folder), in CI once.
    monkeypatch.setitem(sys.modules, "numpy", None)  # the import fails
    with pytest.raises(runner.RunnerError, match="numpy is not installed"):
        runner.import_numpy()
    monkeypatch.setattr(runner, "_stopping", True)  # as the signal handler sets it
    with pytest.raises(KeyboardInterrupt):
        runner.import_numpy()


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("cpuinfo", "tree", "expected"),
    [
        ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n", None, "AMD EPYC 7B13"),
        (
            "processor\t: 0\nBogoMIPS\t: 108.00\nHardware\t: BCM2835\n"
            "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
            None,
            "Raspberry Pi 4 Model B Rev 1.4",
        ),
        (
            "processor\t: 0\nHardware\t: Qualcomm Technologies, Inc SM8250\n",
            None,
            "Qualcomm Technologies, Inc SM8250",
        ),
        (
            "processor\t: 0\nBogoMIPS\t: 62.50\n",
            "NVIDIA Jetson Orin Nano Developer Kit\x00",
            "NVIDIA Jetson Orin Nano Developer Kit",
        ),
    ],
)
def test_cpu_model(tmp_path: Path, cpuinfo: str, tree: str | None, expected: str) -> None:
    _write(tmp_path, "proc/cpuinfo", cpuinfo)
    if tree is not None:
        _write(tmp_path, "sys/firmware/devicetree/base/model", tree)
    assert runner.cpu_model(str(tmp_path)) == expected


class _NamedBackend(runner.Backend):
    name = "onnxruntime"
    package = "onnxruntime"
    version = "0.0-test"


def test_governor_and_thread_warnings(tmp_path: Path) -> None:
    cores = runner.usable_cores()
    for core in cores:
        _write(tmp_path, f"sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor", "ondemand\n")
    job = runner.Job({"threads": len(cores) + 1})
    facts, warnings = runner.fingerprint(job, _NamedBackend(), np, str(tmp_path))
    assert facts["governor"] == "ondemand"
    assert any("governor is 'ondemand', not 'performance'" in w for w in warnings)
    assert any("threads will compete" in w for w in warnings)
    for core in cores:
        _write(
            tmp_path, f"sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor", "performance\n"
        )
    facts, warnings = runner.fingerprint(runner.Job({}), _NamedBackend(), np, str(tmp_path))
    assert facts["governor"] == "performance"
    assert warnings == []


def test_governor_unknown_without_cpufreq(tmp_path: Path) -> None:
    facts, warnings = runner.fingerprint(runner.Job({}), _NamedBackend(), np, str(tmp_path))
    assert facts["governor"] == "unknown"
    assert warnings == []


def test_thermal_zone_at_its_trip_point_warns(tmp_path: Path) -> None:
    zone = "sys/class/thermal/thermal_zone0"
    _write(tmp_path, f"{zone}/type", "cpu-thermal\n")
    _write(tmp_path, f"{zone}/trip_point_0_type", "passive\n")
    _write(tmp_path, f"{zone}/trip_point_0_temp", "80000\n")
    _write(tmp_path, f"{zone}/trip_point_1_type", "critical\n")
    _write(tmp_path, f"{zone}/trip_point_1_temp", "90000\n")
    _write(tmp_path, f"{zone}/temp", "79000\n")
    assert runner.thermal_warnings(str(tmp_path)) == []
    _write(tmp_path, f"{zone}/temp", "81500\n")
    (warning,) = runner.thermal_warnings(str(tmp_path))
    assert "thermal_zone0 (cpu-thermal) is at 81.5 C" in warning
    assert "trip point 80.0 C" in warning


def test_throttle_count_sums_cores(tmp_path: Path) -> None:
    assert runner.throttle_count(str(tmp_path)) is None
    _write(tmp_path, "sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count", "3\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu1/thermal_throttle/package_throttle_count", "4\n")
    assert runner.throttle_count(str(tmp_path)) == 7


def test_random_inputs() -> None:
    rng = np.random.default_rng(0)
    x = runner.random_input(np, rng, [None, 3, "height", 4], "float32", "x")
    assert x.shape == (1, 3, 1, 4) and x.dtype == np.float32
    q = runner.random_input(np, rng, [64, 64], "int8", "q")
    assert q.dtype == np.int8 and q.min() < -64 and q.max() > 64  # the full int8 range
    u = runner.random_input(np, rng, [8], "uint8", "u")
    assert u.dtype == np.uint8
    b = runner.random_input(np, rng, [8], "bool", "b")
    assert b.dtype == np.bool_
    with pytest.raises(runner.RunnerError, match="unsupported input type"):
        runner.random_input(np, rng, [1], "tensor(string)", "s")


def test_ort_profile_summary_skips_warmup_and_averages() -> None:
    def run(ts: int, dur: int) -> dict[str, object]:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name: str, ts: int, dur: int) -> dict[str, object]:
        return {
            "cat": "Node",
            "name": f"{name}_kernel_time",
            "ts": ts,
            "dur": dur,
            "args": {"op_name": "Conv"},
        }

    events = [
        run(0, 100),
        node("/a/Conv", 10, 90),  # warmup: ignored
        run(200, 50),
        node("/a/Conv", 210, 20),
        node("", 235, 10),
        run(300, 70),
        node("/a/Conv", 310, 40),
        node("", 355, 10),
    ]
    summary = runner.summarize_ort_profile(events, skip_runs=1)
    assert summary["runs"] == 2
    assert [(op["name"], op["op_type"]) for op in summary["ops"]] == [
        ("/a/Conv", "Conv"),
        ("Conv", "Conv"),
    ]
    assert [op["ms"] for op in summary["ops"]] == pytest.approx([0.030, 0.010])
    assert summary["run_ms"] == pytest.approx(0.060)


def test_stats_match_measurement_from_times() -> None:
    rng = random.Random(1)
    times = [rng.uniform(0.5, 2.0) for _ in range(17)]
    expected = Measurement.from_times("m", times)
    got = runner.stats(times)
    for key, value in got.items():
        assert value == pytest.approx(getattr(expected, key), rel=1e-12), key


def test_install_hints_name_termux_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Termux's pip cannot install the runtimes' wheels: the hints name its own packages."""
    packages = "pkg install python python-tflite-runtime python-onnxruntime openssh"
    assert runner._install("onnxruntime") == (
        f"pip install onnxruntime (in Termux on Android: {packages})"
    )
    monkeypatch.setattr(runner.sys, "prefix", "/data/data/com.termux/files/usr")
    assert runner._install("onnxruntime") == f"in Termux: {packages}"
