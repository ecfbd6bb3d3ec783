"""OpenVINO through onnxruntime's execution provider, for real: the bundled
local-cpu-openvino profile runs the runner in .venv-openvino (onnxruntime-openvino, made by
`make setup`), whose OpenVINO CPU plugin compiles each model into one graph."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devices import DeviceError, LocalDevice, RunSettings, open_device
from tests.devices.conftest import Models

REPO = Path(__file__).resolve().parents[2]
OPENVINO_PYTHON = REPO / ".venv-openvino" / "bin" / "python"
OPENVINO = "OpenVINOExecutionProvider"


def _pinned_version() -> str:
    lines = (REPO / "requirements-openvino.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith("onnxruntime-openvino=="))


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled profile names .venv-openvino/bin/python, taken from where edgenas runs."""
    if not OPENVINO_PYTHON.exists():
        pytest.skip(f"no {OPENVINO_PYTHON}: run 'make setup' to create .venv-openvino")
    monkeypatch.chdir(REPO)


@pytest.mark.usefixtures("in_repo")
def test_the_bundled_profile_runs_each_model_as_one_openvino_graph(models: Models) -> None:
    with open_device("local-cpu-openvino") as device:
        fingerprint = device.fingerprint()
        results = device.measure(models.all(), runs=5, warmup=1)
    assert (fingerprint.runtime, fingerprint.accelerator) == ("onnxruntime", OPENVINO)
    assert fingerprint.runtime_version == _pinned_version() and fingerprint.threads == 1
    for m in results:
        assert m.n == 5 and m.median_ms > 0
        assert m.placement == {"providers": [OPENVINO], "nodes": {OPENVINO: 1}, "fallback": {}}


@pytest.mark.usefixtures("in_repo")
def test_provider_options_reach_openvino(models: Models) -> None:
    # device_type GPU on a machine without an Intel GPU: OpenVINO cannot start, and
    # onnxruntime would run the model on its CPU provider instead, which is refused.
    settings = RunSettings(
        providers=(OPENVINO,),
        provider_options=((OPENVINO, (("device_type", "GPU"),)),),
        warmup=1,
        runs=3,
    )
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    assert str(info.value) == (
        f"device 'ov': onnxruntime {_pinned_version()} could not start {OPENVINO} for model "
        f"{str(models.conv)!r} (the session has CPUExecutionProvider); available: {OPENVINO}, "
        "CPUExecutionProvider"
    )


def test_openvino_without_onnxruntime_openvino_names_the_package(models: Models) -> None:
    # This Python's onnxruntime is the CPU build: asked for OpenVINO, it is refused, not run
    # on the CPU provider under OpenVINO's name.
    settings = RunSettings(providers=(OPENVINO,), warmup=1, runs=3)
    device = LocalDevice("ov", python=sys.executable, settings=settings)
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    message = str(info.value)
    assert f"has no {OPENVINO} (available: " in message
    assert "onnxruntime-openvino for OpenVINO" in message and "\n" not in message
