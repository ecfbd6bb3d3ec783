"""LocalDevice: the runner in a subprocess, measuring real ONNX models with onnxruntime."""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import pytest

from devices import DeviceError, LocalDevice, Measurement, RunSettings, create_device
from tests.devices.conftest import Models

QUICK = RunSettings(warmup=1, runs=6)


def _ordered(m: Measurement) -> bool:
    return 0 < m.min_ms <= m.p10_ms <= m.median_ms <= m.p90_ms and m.min_ms <= m.mean_ms


def _has_start_up_times(m: Measurement) -> None:
    """The runner's session/interpreter creation and first run are recorded (not timed)."""
    assert isinstance(m.init_ms, float) and m.init_ms >= 0
    assert isinstance(m.first_inference_ms, float) and m.first_inference_ms >= 0
    assert {"init_ms", "first_inference_ms"} <= set(m.to_dict())


def test_one_measurement_per_model_in_input_order(models: Models) -> None:
    device = LocalDevice(settings=QUICK)
    paths = [models.fc, models.conv, models.dw]
    results = device.measure(paths)
    assert [m.model for m in results] == [str(p) for p in paths]
    for m in results:
        assert m.n == 6
        assert _ordered(m), m
        assert m.std_ms >= 0
        assert m.per_op_ms is None  # not asked for
        assert m.peak_memory_bytes is not None and m.peak_memory_bytes >= 0
        assert m.extra["remeasured"] in (True, False)
        assert m.extra["iqr_ratio"] >= 0
        _has_start_up_times(m)
    assert device.measure([]) == []


def test_call_arguments_override_the_settings(models: Models) -> None:
    (m,) = LocalDevice(settings=QUICK).measure([models.fc], runs=3, warmup=0)
    assert m.n == 3


def test_per_op_times_belong_to_their_model(models: Models) -> None:
    """Each model's per-op times name its own nodes, whatever order the runner used."""
    paths = [models.dw, models.fc, models.conv]
    results = LocalDevice(settings=QUICK).measure(paths, profile_ops=True)
    for tag, m in zip(["dw", "fc", "conv"], results, strict=True):
        assert m.per_op_ms, m
        assert any(tag in node for node in m.per_op_ms), (tag, m.per_op_ms)
        others = {"dw", "fc", "conv"} - {tag}
        assert not any(o in node for o in others for node in m.per_op_ms), (tag, m.per_op_ms)
        assert all(t > 0 for t in m.per_op_ms.values())
        # Kernels run inside the profiled runs, so their times add up to at most a run.
        profile = m.extra["profile"]
        assert profile["runs"] == 6
        assert 0 < sum(m.per_op_ms.values()) <= profile["run_ms"]


def test_spread_above_the_threshold_is_remeasured_then_flagged(models: Models) -> None:
    strict = LocalDevice(settings=RunSettings(warmup=1, runs=5, spread_threshold=0.0))
    (m,) = strict.measure([models.fc])
    assert m.extra["remeasured"] and m.flagged
    assert m.n == 5  # the steadiest of the three measurements is kept, not pooled
    lenient = LocalDevice(settings=RunSettings(warmup=1, runs=5, spread_threshold=1e9))
    (m,) = lenient.measure([models.fc])
    assert not m.extra["remeasured"] and not m.flagged


def test_uint8_input_with_dynamic_batch(models: Models) -> None:
    (m,) = LocalDevice(settings=QUICK).measure([models.uint8_dynamic])
    assert m.n == 6 and _ordered(m)


def test_relative_paths_keep_their_label(models: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(models.fc.parent)
    (m,) = LocalDevice(settings=QUICK).measure([Path(models.fc.name)])
    assert m.model == models.fc.name


def test_fingerprint_is_this_host_and_cached() -> None:
    device = LocalDevice(settings=RunSettings(threads=1))
    fp = device.fingerprint()
    assert fp.host == socket.gethostname()
    assert fp.cores == os.cpu_count()
    assert fp.runtime == "onnxruntime"
    assert fp.runtime_version == version("onnxruntime")
    assert fp.threads == 1
    assert fp.cpu_model and fp.governor
    # The runner's CPU kind, which int8 ONNX exports pad their channels for.
    assert fp.machine == platform.machine() and fp.to_dict()["machine"] == fp.machine
    assert device.fingerprint() is fp


def test_bad_settings_come_back_from_the_runner(models: Models) -> None:
    with pytest.raises(DeviceError, match=r"device 'local': runs must be an integer >= 1, got 0"):
        LocalDevice(settings=QUICK).measure([models.fc], runs=0)


def test_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "broken 'model'.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe")
    with pytest.raises(DeviceError) as info:
        LocalDevice("bench", settings=QUICK).measure([bad])
    message = str(info.value)
    assert message.startswith("device 'bench': cannot load model ")
    assert "broken 'model'.onnx" in message and "onnxruntime" in message
    assert "\n" not in message


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"model file not found: .*nowhere\.onnx"):
        LocalDevice(settings=QUICK).measure([tmp_path / "nowhere.onnx"])


def test_missing_tflite_runtime_says_what_to_install(
    models: Models, python_without: Callable[[Sequence[str]], Path]
) -> None:
    python = python_without(["ai_edge_litert", "tflite_runtime", "tensorflow"])
    device = LocalDevice(python=python, settings=RunSettings(runtime="tflite", warmup=1, runs=2))
    with pytest.raises(DeviceError, match=r"no TFLite interpreter .*pip install ai-edge-litert"):
        device.measure([models.fc])
    with pytest.raises(DeviceError, match=r"pip install ai-edge-litert"):
        device.fingerprint()


def test_missing_onnxruntime_says_what_to_install(
    models: Models, python_without: Callable[[Sequence[str]], Path]
) -> None:
    device = LocalDevice(python=python_without(["onnxruntime"]), settings=QUICK)
    with pytest.raises(
        DeviceError, match=r"onnxruntime is not installed .*pip install onnxruntime"
    ):
        device.measure([models.fc])


def test_missing_numpy_says_what_to_install(
    models: Models, python_without: Callable[[Sequence[str]], Path]
) -> None:
    device = LocalDevice(python=python_without(["numpy"]), settings=QUICK)
    with pytest.raises(DeviceError, match=r"numpy is not installed .*pip install numpy"):
        device.measure([models.fc])


def test_python_that_does_not_exist(models: Models, tmp_path: Path) -> None:
    device = LocalDevice("dev", python=tmp_path / "no-python", settings=QUICK)
    with pytest.raises(DeviceError, match=r"device 'dev': cannot start Python .*local\.python"):
        device.measure([models.fc])


def test_a_relative_python_is_taken_from_where_edgenas_runs(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # local.python: .venv-openvino/bin/python (the bundled local-cpu-openvino): the runner
    # starts in a temporary folder, where the relative path named nothing.
    (tmp_path / "env").symlink_to(sys.prefix)  # this virtual environment, by another path
    monkeypatch.chdir(tmp_path)
    device = LocalDevice("dev", python=Path("env/bin/python"), settings=QUICK)
    assert device.python == os.path.join(os.getcwd(), "env", "bin", "python")  # links kept
    (m,) = device.measure([models.fc])
    assert m.n == 6
    assert LocalDevice(python="python3").python == "python3"  # a name: looked up on PATH
    assert LocalDevice(python=Path("python3")).python == os.path.join(os.getcwd(), "python3")
    home = LocalDevice(python="~/env/bin/python").python
    assert home == os.path.join(os.path.expanduser("~"), "env", "bin", "python")
    missing = LocalDevice("dev", python="nothing/bin/python", settings=QUICK)
    with pytest.raises(DeviceError) as info:
        missing.measure([models.fc])
    assert str(info.value) == (
        f"device 'dev': cannot start Python {os.path.join(os.getcwd(), 'nothing', 'bin', 'python')!r}"
        f": No such file or directory (a relative path, read from {os.getcwd()}, where edgenas "
        "runs: run edgenas from the folder it is relative to, or give an absolute path); set "
        "local.python in the device profile to a Python interpreter"
    )


def test_python_that_runs_nothing(models: Models) -> None:
    # exit status 0 and no results: "the runner's output is not JSON: ''" (input audit)
    device = LocalDevice("dev", python="/bin/true", settings=QUICK)
    with pytest.raises(DeviceError) as info:
        device.measure([models.fc])
    assert str(info.value) == (
        "device 'dev': '/bin/true' exited without running the runner (exit status 0, no "
        "results), so it is not a Python interpreter; set local.python in the device profile "
        "to one (python3, or a virtual environment's bin/python) that has the runtime"
    )


OLD_PYTHONS = Path.home() / ".pyenv" / "versions"  # this machine's image has 2.7 to 3.13


@pytest.mark.parametrize(
    ("version", "message"),
    [
        # read the file, then asked for numpy
        (
            "3.7",
            r"^device 'dev': Python 3\.7\.\d+ \(.*\) is older than the runner needs \(3\.8 or "
            r"newer\): set the device profile's python \(local\.python, or ssh\.python on a "
            r"board\) to a newer one$",
        ),
        # "the runner failed (exit status 1): SyntaxError: invalid syntax"
        (
            "2.7",
            r"^device 'dev': its Python cannot read the runner \(SyntaxError: invalid syntax\): "
            r"the runner needs Python 3\.8 or newer; set the device profile's python",
        ),
        ("3.6", r"cannot read the runner \(SyntaxError: future feature annotations"),
    ],
)
def test_a_python_too_old_for_the_runner_is_named(
    models: Models, version: str, message: str
) -> None:
    found = sorted(OLD_PYTHONS.glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {version} under {OLD_PYTHONS}")
    device = LocalDevice("dev", python=found[0], settings=QUICK)
    with pytest.raises(DeviceError, match=message):
        device.measure([models.fc])


def test_timeout(models: Models) -> None:
    device = LocalDevice(settings=QUICK, timeout_s=0.001)
    with pytest.raises(DeviceError, match=r"did not finish within 0\.001 s"):
        device.measure([models.fc])


def test_registered_as_kind_local(tmp_path: Path) -> None:
    device = create_device(
        "local",
        "mine",
        {
            "threads": 2,
            "runs": 7,
            "cores": [0],
            "spread_threshold": 0.2,
            "local": {"python": sys.executable, "timeout_s": 30},
        },
    )
    assert isinstance(device, LocalDevice)
    assert device.name == "mine" and device.python == sys.executable and device.timeout_s == 30
    assert device.settings == RunSettings(threads=2, runs=7, cores=(0,), spread_threshold=0.2)
    with pytest.raises(DeviceError, match=r"device profile 'mine': threads: "):
        create_device("local", "mine", {"threads": 0})


def test_tflite_models_with_litert(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    from devices.sanity_models import tflite_fully_connected, tflite_int8_add

    paths = [
        tflite_fully_connected(tmp_path / "fc 'q'.tflite", dynamic_batch=True),
        tflite_int8_add(tmp_path / "add int8.tflite"),
    ]
    device = LocalDevice(settings=RunSettings(runtime="tflite", warmup=1, runs=4))
    results = device.measure(paths, profile_ops=True)
    assert [m.model for m in results] == [str(p) for p in paths]
    for m in results:
        assert m.n == 4 and _ordered(m)
        assert m.per_op_ms is None
        assert any("per-op times are not available for tflite" in w for w in m.extra["warnings"])
        _has_start_up_times(m)
    fp = device.fingerprint()
    assert fp.runtime == "tflite" and fp.runtime_version.startswith("ai-edge-litert ")


def test_a_runner_warning_about_each_model_is_said_once(
    device_python: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # tflite-runtime 2.14's XNNPACK takes none of an int8 file's ops, and the runner says so
    # for each model: a table of 78 blocks printed 78 such lines (walk-through).
    from latency.blocks import enumerate_blocks
    from latency.model_cache import ModelCache
    from once_for_all import get_space

    specs = enumerate_blocks(get_space("mbv3-tiny"), resolutions=(28,))[:3]
    files = list(ModelCache(tmp_path).blocks(specs, "tflite", "int8", workers=1).values())
    settings = RunSettings(runtime="tflite", delegate="xnnpack", warmup=1, runs=3)
    device = LocalDevice("board", python=device_python, settings=settings)
    with caplog.at_level("WARNING", logger="devices.local"):
        device.measure(files[:2])
        device.measure(files[2:])
    said = [r.getMessage() for r in caplog.records if "took none of its" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"device 'board': model '{files[0]}': delegate xnnpack took none")
    assert said[0].endswith("ran on TFLite's builtin kernels (not repeated for other models)")
