"""runtime tensorrt: trtexec's log and exported files (verbatim fixtures, see
tests/devices/data/trtexec/README.md), the runner's trtexec command, and the path through the
on-device runner with a stand-in trtexec that replays recorded output (no GPU, no TensorRT
and no trtexec exist on this machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devices import DeviceError
from devices.local import LocalDevice
from devices.profiles import load_profile, validate_profile
from devices.runner import iqr_ratio, trtexec_args
from devices.runner_protocol import RUNNER_PATH, RunSettings, build_job
from devices.ssh import SshDevice
from devices.trtexec import (
    failure_reason,
    parse_compute_times,
    parse_log,
    parse_profile,
    parse_times,
    rejected_model,
    to_measurement,
)
from tests.devices.conftest import run_runner
from tests.support.sshd import Sshd

DATA = Path(__file__).with_name("data") / "trtexec"
BUILD_LOG = DATA / "hackathon_result-01.log"
TIMES = DATA / "mobilenet_qat_timing_first49.json"
PROFILE = DATA / "mobilenet_qat_profile.json"
PARSE_FAILURE = DATA / "a1111_issue54_parse_failure.txt"

# A stand-in for trtexec: it records its arguments, copies the recorded exported files to
# where it is told (when it is to succeed), prints a recorded log and exits with the status
# it is given.
STAND_IN = """#!{python}
import json, shutil, sys
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
for arg in args if {status} == 0 else []:
    if arg.startswith("--exportTimes="):
        shutil.copyfile({times!r}, arg.split("=", 1)[1])
    if arg.startswith("--exportProfile="):
        shutil.copyfile({profile!r}, arg.split("=", 1)[1])
sys.stdout.write(open({log!r}).read())
sys.exit({status})
"""

TRT = RunSettings(runtime="tensorrt", runs=49, precision="fp16", warmup_ms=200)


def _settings(trtexec: Path) -> RunSettings:
    return replace(TRT, trtexec=str(trtexec))


def _stand_in(folder: Path, *, log: Path = BUILD_LOG, status: int = 0) -> tuple[Path, Path]:
    """(the stand-in trtexec, the file of its calls, one JSON argument list per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    script, calls = folder / "trtexec", folder / "calls.jsonl"
    script.write_text(
        STAND_IN.format(
            python=sys.executable,
            calls=str(calls),
            times=str(TIMES),
            profile=str(PROFILE),
            log=str(log),
            status=status,
        )
    )
    script.chmod(0o755)
    return script, calls


def test_exported_times_are_the_per_query_latencies() -> None:
    text = TIMES.read_text()
    raw = json.loads(text)
    assert parse_times(text) == [e["latencyMs"] for e in raw]
    assert parse_compute_times(text) == [e["computeMs"] for e in raw]
    assert len(raw) == 49
    assert parse_times(text)[:2] == [0.459041, 0.442369]


def test_exported_profile_layers_in_order() -> None:
    count, layers = parse_profile(PROFILE.read_text())
    assert count == 4216
    assert len(layers) == 85
    assert layers[0].name == "QuantizeLinear_2"
    assert (layers[0].time_ms, layers[0].average_ms, layers[0].percentage) == (
        51.4526,
        0.0122041,
        1.88608,
    )
    assert sum(layer.percentage for layer in layers) == pytest.approx(100, abs=0.01)


def test_log_build_time_version_and_device() -> None:
    log = parse_log(BUILD_LOG.read_text())
    assert log.version == "10.16.1"
    assert log.device == "NVIDIA H100 PCIe"
    assert log.build_s == 8.09138
    assert log.deserialize_s == 0.00676279
    assert log.passed and log.errors == []


def test_measurement_has_edgenas_statistics_and_per_layer_times() -> None:
    m = to_measurement(
        "orin",
        "block.onnx",
        status=0,
        log=BUILD_LOG.read_text(),
        times=TIMES.read_text(),
        profile=PROFILE.read_text(),
    )
    latencies = parse_times(TIMES.read_text())
    assert m.n == 49
    assert m.median_ms == statistics.median(latencies)
    assert m.mean_ms == pytest.approx(statistics.fmean(latencies))
    assert m.min_ms == min(latencies)
    assert m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.init_ms == pytest.approx(8091.38)
    assert m.per_op_ms is not None and m.per_op_ms["QuantizeLinear_2"] == 0.0122041
    assert m.extra["tensorrt_version"] == "10.16.1"
    assert m.extra["gpu"] == "NVIDIA H100 PCIe"
    # Two queries near 0.9 ms among ~0.445 ms ones keep p90 low: not flagged.
    assert not m.flagged
    # spread_threshold is IQR over median, as for the runner's measurements: the 49 queries'
    # IQR/median is under 0.02, so a threshold between that and (p90 - p10)/median passes.
    assert iqr_ratio(latencies) < 0.02 < m.spread
    strict = to_measurement(
        "orin",
        "block.onnx",
        status=0,
        log=BUILD_LOG.read_text(),
        times=TIMES.read_text(),
        spread_threshold=(iqr_ratio(latencies) + m.spread) / 2,
    )
    assert not strict.flagged


def test_a_model_the_onnx_parser_rejects_is_one_line() -> None:
    log = parse_log(PARSE_FAILURE.read_text())
    assert rejected_model(log)
    assert failure_reason(log) == (
        "ModelImporter.cpp:732: ERROR: builtin_op_importers.cpp:5428 In function "
        'importFallbackPluginImporter: [8] Assertion failed: creator && "Plugin not found, '
        'are the plugin name, version, and namespace correct?"'
    )
    with pytest.raises(DeviceError) as info:
        to_measurement("orin", "net.onnx", status=1, log=PARSE_FAILURE.read_text(), times=None)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("device 'orin': TensorRT rejects net.onnx: ModelImporter.cpp:732")
    assert "runtime onnxruntime" in message


def test_malformed_exported_files_are_one_line() -> None:
    with pytest.raises(DeviceError, match="malformed"):
        to_measurement("orin", "m.onnx", status=0, log="", times='[{"computeMs": 1}]')


def test_runner_command_per_precision() -> None:
    settings = {"precision": "fp16", "warmup_ms": 200}
    assert trtexec_args("trtexec", "/m/a b.onnx", settings, runs=50, times="/t.json") == [
        "trtexec",
        "--onnx=/m/a b.onnx",
        "--fp16",
        "--warmUp=200",
        "--iterations=50",
        "--duration=0",
        "--avgRuns=1",
        "--exportTimes=/t.json",
    ]
    fp32 = trtexec_args("t", "m.onnx", {**settings, "precision": "fp32"}, runs=5, times="t")
    assert "--fp16" not in fp32 and "--int8" not in fp32
    int8 = trtexec_args(
        "t", "m.onnx", {**settings, "precision": "int8"}, runs=5, times="t", layers="p.json"
    )
    assert "--int8" in int8
    assert int8[-3:] == ["--separateProfileRun", "--dumpProfile", "--exportProfile=p.json"]


def test_profile_runtime_tensorrt_only_through_the_runner() -> None:
    profile = load_profile("jetson-orin-nano-trt")
    settings = profile.run_settings()
    assert (settings.runtime, settings.precision, settings.warmup_ms) == ("tensorrt", "fp16", 500)
    assert build_job(["a.onnx"], settings)["trtexec"] == {
        "path": "/usr/src/tensorrt/bin/trtexec",
        "precision": "fp16",
        "warmup_ms": 500,
    }
    with pytest.raises(DeviceError, match="kind ssh or local, not 'npu-sim'"):
        validate_profile({"name": "x", "kind": "npu-sim", "runtime": "tensorrt", "npu": {}})
    with pytest.raises(DeviceError, match="runtime tflite"):
        validate_profile(
            {"name": "x", "kind": "adb", "runtime": "tensorrt", "adb": {"benchmark_model": "b"}}
        )
    with pytest.raises(DeviceError, match="section 'tensorrt' is for runtime tensorrt"):
        validate_profile({"name": "x", "kind": "local", "tensorrt": {"precision": "fp32"}})


def test_local_device_runs_trtexec_through_the_runner(tmp_path: Path) -> None:
    trtexec, calls = _stand_in(tmp_path / "bin")
    model = tmp_path / "block 1.onnx"
    model.write_bytes(b"onnx")  # the stand-in never reads it
    device = LocalDevice("gpu", settings=_settings(trtexec))
    (m,) = device.measure([model], profile_ops=True)
    assert m.model == str(model)
    assert m.n == 49 and m.median_ms == statistics.median(parse_times(TIMES.read_text()))
    assert m.init_ms == pytest.approx(8091.38)
    assert m.per_op_ms is not None and len(m.per_op_ms) == 85
    fingerprint = device.fingerprint()
    assert (fingerprint.runtime, fingerprint.runtime_version) == ("tensorrt", "v101601")
    assert fingerprint.accelerator == "gpu fp16"
    args = [json.loads(line) for line in calls.read_text().splitlines()]
    run = next(a for a in args if a and a[0].startswith("--onnx="))
    assert run[0] == f"--onnx={model}"
    assert "--warmUp=200" in run and "--iterations=49" in run


def test_local_device_without_trtexec_names_the_package(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "none" / "trtexec")
    with pytest.raises(DeviceError) as info:
        LocalDevice("gpu", settings=settings).fingerprint()
    message = str(info.value)
    assert "\n" not in message
    assert "trtexec not found" in message and "libnvinfer-bin" in message
    assert "tensorrt.trtexec" in message


def test_runner_reports_a_rejected_model_raw_and_the_host_explains_it(tmp_path: Path) -> None:
    trtexec, _ = _stand_in(tmp_path / "bin", log=PARSE_FAILURE, status=1)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    job = build_job([str(model)], _settings(trtexec))
    run = run_runner(dict(job), tmp_path)
    assert run.returncode == 0  # the runner ran trtexec; the host reads what it said
    entry = run.payload["models"][0]["trtexec"]
    assert entry["status"] == 1 and entry["times"] is None
    assert "Failed to parse onnx file" in entry["log"]
    with pytest.raises(DeviceError, match=r"TensorRT rejects .*m\.onnx: ModelImporter"):
        LocalDevice("gpu", settings=_settings(trtexec)).measure([model])


def test_a_stopped_runner_stops_its_trtexec(tmp_path: Path) -> None:
    """The host's command timeout sends the runner SIGTERM: the engine build goes too."""
    trtexec = tmp_path / "trtexec"
    pid_file = tmp_path / "trtexec.pid"
    trtexec.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        "if '--help' in sys.argv: sys.exit(0)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    trtexec.chmod(0o755)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    shutil.copyfile(RUNNER_PATH, tmp_path / "runner.py")
    job = json.dumps(build_job([str(model)], _settings(trtexec)))
    runner = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), "--job", "-", "--out", "out.json"],
        stdin=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert runner.stdin is not None
    runner.stdin.write(job.encode())
    runner.stdin.close()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 130
    assert json.loads((tmp_path / "out.json").read_text())["error"]["kind"] == "interrupted"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_ssh_device_runs_trtexec_on_the_board(sshd: Sshd, tmp_path: Path) -> None:
    """The real SSH path (a real sshd on this machine) with the stand-in as the board's
    trtexec; the board's Python needs no numpy for runtime tensorrt."""
    trtexec, _ = _stand_in(tmp_path / "bin")
    model = tmp_path / "it's a model.onnx"
    model.write_bytes(b"onnx")
    remote = tmp_path / "remote"
    remote.mkdir()
    settings = _settings(trtexec)
    section = sshd.ssh_section(remote_tmpdir=str(remote))
    with SshDevice("orin", python=sys.executable, settings=settings, **section) as device:
        (m,) = device.measure([model])
        assert m.model == str(model) and m.n == 49
        assert m.per_op_ms is None  # no --exportProfile without profile_ops
    assert os.listdir(remote) == []
