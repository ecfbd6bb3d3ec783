"""OpenVINO through onnxruntime's execution provider, for real: the bundled
local-cpu-openvino profile runs the runner in .venv-openvino (onnxruntime-openvino, made by
`make setup`), whose OpenVINO CPU plugin compiles each model into one graph."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest

from devices import DeviceError, LocalDevice, RunSettings, open_device
from tests.devices.conftest import Models
from tests.support.amx import AMX, X86_64_LINUX
from tests.support.openvino import OPENVINO, OPENVINO_PYTHON, REPO, pinned_version, require_openvino


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled profile names .venv-openvino/bin/python, taken from where edgenas runs."""
    require_openvino()
    monkeypatch.chdir(REPO)


@pytest.mark.usefixtures("in_repo")
def test_the_bundled_profile_runs_each_model_as_one_openvino_graph(models: Models) -> None:
    with open_device("local-cpu-openvino") as device:
        fingerprint = device.fingerprint()
        results = device.measure(models.all(), runs=5, warmup=1)
    assert (fingerprint.runtime, fingerprint.accelerator) == ("onnxruntime", OPENVINO)
    assert fingerprint.runtime_version == pinned_version() and fingerprint.threads == 1
    for m in results:
        assert m.n == 5 and m.median_ms > 0
        assert m.placement == {"providers": [OPENVINO], "nodes": {OPENVINO: 1}, "fallback": {}}


@pytest.mark.usefixtures("in_repo")
@pytest.mark.skipif(not X86_64_LINUX, reason="refusing AMX is for x86-64 Linux")
def test_the_no_amx_device_runs_openvino_with_amx_refused(models: Models) -> None:
    # onnxruntime loads OpenVINO inside the runner, after the refusal. Which kernels its CPU
    # plugin then picks is not visible through the EP (one node); test_openvino_runtime reads
    # them from the OpenVINO Runtime's counters, and the README's timings show the EP's gain.
    with open_device("local-cpu-openvino-no-amx") as device:
        fingerprint = device.fingerprint()
        (m,) = device.measure([models.conv], runs=5, warmup=1)
    assert fingerprint.x86_amx == ("refused" if AMX else "")
    assert m.n == 5 and m.placement == {
        "providers": [OPENVINO],
        "nodes": {OPENVINO: 1},
        "fallback": {},
    }


@pytest.mark.usefixtures("in_repo")
@pytest.mark.skipif(bool(glob.glob("/dev/dri/renderD*")), reason="this machine has a GPU")
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
        f"device 'ov': onnxruntime {pinned_version()} could not start {OPENVINO} for model "
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


# Run in the OpenVINO environment: the same model on OpenVINO's CPU device and on
# onnxruntime's CPU provider, the largest difference of their outputs.
COMPARE = """
import json, sys
import numpy as np, onnxruntime as ort
path = sys.argv[1]
x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
out = {}
for name, providers in [("cpu", ["CPUExecutionProvider"]),
                        ("openvino", [("OpenVINOExecutionProvider", {"device_type": "CPU"})])]:
    session = ort.InferenceSession(path, providers=providers)
    out[name] = session.run(None, {session.get_inputs()[0].name: x})[0]
print(json.dumps({"max_abs_diff": float(np.abs(out["cpu"] - out["openvino"]).max()),
                  "scale": float(np.abs(out["cpu"]).max())}))
"""


def test_fp32_files_run_in_fp32_on_openvinos_cpu(models: Models) -> None:
    # On CPUs with AMX or AVX512-BF16, OpenVINO may run fp32 models in bf16 (its CPU plugin's
    # inference precision hint), about 1e-2 off: an "fp32" latency would then be bf16's.
    python = require_openvino()
    proc = subprocess.run(
        [str(python), "-c", COMPARE, str(models.conv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["scale"] > 0.1 and result["max_abs_diff"] < 1e-5 * result["scale"] + 1e-6
