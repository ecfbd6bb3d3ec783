"""benchmarks/latency.py's --runtime and --precision reach the devices and the models they
measure: the device runs the runtime given, and the settings its table, calibration and
validation subnets share are that runtime's format at that precision. Structure only: the
figures are the benchmark's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.latency import RUNTIMES, open_target
from export.formats import PRECISIONS
from latency import settings_for
from tests.support.sshd import sshd_missing

FORMAT = {"onnxruntime": "onnx", "tflite": "tflite"}


@pytest.mark.parametrize("kind", ["local", "ssh"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_device_runs_the_runtime_given(kind: str, runtime: str, tmp_path: Path) -> None:
    if kind == "ssh" and (reason := sshd_missing()):
        pytest.skip(reason)
    with open_target(kind, tmp_path, runtime) as device:
        fingerprint = device.fingerprint()
    assert fingerprint.runtime == runtime
    for precision in PRECISIONS:
        settings = settings_for(fingerprint, device.name, precision=precision)
        assert (settings.model_format, settings.precision) == (FORMAT[runtime], precision)
