"""The OpenVINO Runtime itself, for real: the bundled local-cpu-openvino-runtime profile runs
the runner in .venv-openvino (the openvino package, made by `make setup`), which compiles each
model with OpenVINO's ONNX reader and CPU plugin, with no onnxruntime in between."""

from __future__ import annotations

import glob
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

from devices import DeviceError, LocalDevice, RunSettings, open_device
from devices.runner_protocol import RUNNER_PATH
from tests.devices.conftest import Models
from tests.support.amx import AMX, X86_64_LINUX
from tests.support.openvino import OPENVINO_PYTHON, REPO, pinned_version, require_openvino

DEVICE = "local-cpu-openvino-runtime"
VERSION = pinned_version("openvino")


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled profile names .venv-openvino/bin/python, taken from where edgenas runs."""
    require_openvino()
    monkeypatch.chdir(REPO)


class _Batches(CalibrationDataReader):
    def __init__(self, name: str = "conv_in", shape: tuple[int, ...] = (1, 3, 16, 16)) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter(
            [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@pytest.fixture(scope="module")
def int8_conv(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conv test model as a QDQ int8 file, as onnxruntime's quantizer writes them."""
    path = tmp_path_factory.mktemp("int8") / "conv_int8.onnx"
    quantize_static(
        str(models.conv),
        str(path),
        _Batches(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return path


@pytest.mark.usefixtures("in_repo")
def test_the_bundled_profile_runs_fp32_in_fp32_and_int8_on_int8_kernels(
    models: Models, int8_conv: Path
) -> None:
    with open_device(DEVICE) as device:
        fingerprint = device.fingerprint()
        results = device.measure([*models.all(), int8_conv], runs=5, warmup=1)
    assert (fingerprint.runtime, fingerprint.accelerator) == ("openvino", "CPU")
    assert fingerprint.runtime_version == VERSION and fingerprint.threads == 1
    *fp32, int8 = results
    for m in results:
        assert m.n == 5 and m.median_ms > 0
        placement = m.placement or {}
        assert (placement["device"], placement["inference_precision"]) == ("CPU", "f32")
        assert placement["nodes"] == {"CPU": sum(placement["kernel_precisions"].values())}
        assert placement["fallback"] == {}
    for m in fp32:
        assert set((m.placement or {})["kernel_precisions"]) == {"f32"}
    # The quantized conv runs on an int8 kernel (u8 activations in, as quantized).
    kernels = (int8.placement or {})["kernel_precisions"]
    assert kernels.get("u8", 0) + kernels.get("i8", 0) >= 1


# Run in the OpenVINO environment: the conv model compiled as the runner compiles it and with
# OpenVINO's defaults, against onnxruntime's CPU provider.
COMPARE = """
import importlib.util, json, sys
import numpy as np, onnxruntime as ort, openvino as ov
spec = importlib.util.spec_from_file_location("runner", sys.argv[2])
runner = importlib.util.module_from_spec(spec); spec.loader.exec_module(runner)
backend = runner.OpenVinoBackend(np, runner.Job({"runtime": "openvino"}))
x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
want = session.run(None, {session.get_inputs()[0].name: x})[0]
out = {"scale": float(np.abs(want).max())}
for name, properties in [("runner", backend.properties), ("default", {})]:
    compiled = ov.Core().compile_model(sys.argv[1], "CPU", properties)
    got = compiled.create_infer_request().infer([x])[compiled.outputs[0]]
    out[name] = {"max_abs_diff": float(np.abs(got - want).max()),
                 "precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()}
print(json.dumps(out))
"""


def _cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def test_the_runner_makes_openvino_compute_fp32_files_in_fp32(models: Models) -> None:
    # OpenVINO's CPU plugin runs fp32 models in bf16 by default on CPUs with AMX or
    # AVX512-BF16 (about 1e-2 off): an "fp32" latency would be bf16's.
    python = require_openvino()
    proc = subprocess.run(
        [str(python), "-c", COMPARE, str(models.conv), str(RUNNER_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    scale = result["scale"]
    assert scale > 0.1
    assert result["runner"]["precision"] == "f32"
    assert result["runner"]["max_abs_diff"] < 1e-5 * scale + 1e-6
    if _cpu_has_bf16():  # why the runner sets the precision: the default is not fp32 here
        assert result["default"]["precision"] == "bf16"
        assert result["default"]["max_abs_diff"] > 1e-4 * scale


@pytest.mark.usefixtures("in_repo")
def test_properties_reach_openvino(models: Models) -> None:
    settings = RunSettings(
        runtime="openvino",
        openvino_properties=(("INFERENCE_PRECISION_HINT", "bf16"),),
        warmup=1,
        runs=3,
    )
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    if not _cpu_has_bf16():
        # OpenVINO would run f32 instead, under bf16's name in the table: refused.
        with pytest.raises(DeviceError) as info:
            device.measure([models.conv])
        assert "not the INFERENCE_PRECISION_HINT bf16 asked for" in str(info.value)
        return
    (m,) = device.measure([models.conv])
    # Asked for on purpose, bf16 is used, and the placement says so.
    placement = m.placement or {}
    assert placement["inference_precision"] == "bf16"
    assert "bf16" in placement["kernel_precisions"]


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize("spelling", ["FP32", " f32 "])
def test_precisions_are_taken_as_openvino_spells_them(models: Models, spelling: str) -> None:
    # OpenVINO takes "FP32" and compiles at "f32": the same precision, not a refused one.
    settings = RunSettings(
        runtime="openvino",
        openvino_properties=(("INFERENCE_PRECISION_HINT", spelling),),
        warmup=1,
        runs=3,
    )
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    (m,) = device.measure([models.conv])
    assert (m.placement or {})["inference_precision"] == "f32"


@pytest.mark.usefixtures("in_repo")
def test_a_property_openvino_refuses_is_one_line_with_openvinos_reason(models: Models) -> None:
    settings = RunSettings(
        runtime="openvino", openvino_properties=(("NUM_STREAMS", "many"),), warmup=1, runs=3
    )
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    # OpenVINO's message starts with the source lines it passed; its reason is the last.
    assert str(info.value) == (
        f"device 'ov': cannot load model {str(models.conv)!r} with OpenVINO {VERSION} on CPU: "
        "Could not read number of streams from str: many; stoi"
    )


# Run in the OpenVINO environment: load a model as the runner does with 2 threads (and the
# given ENABLE_CPU_PINNING, if any), then print each thread's allowed cores.
PINNING = """
import glob, importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("runner", sys.argv[2])
runner = importlib.util.module_from_spec(spec); spec.loader.exec_module(runner)
properties = json.loads(sys.argv[3])
job = runner.Job({"runtime": "openvino", "threads": 2, "openvino": {"properties": properties}})
backend = runner.OpenVinoBackend(np, job)
model = backend.load(sys.argv[1])
for _ in range(20):
    model.run()
allowed = set()
for status in glob.glob("/proc/self/task/*/status"):
    allowed.add(open(status).read().split("Cpus_allowed_list:")[1].split()[0])
print(json.dumps(sorted(allowed)))
"""


@pytest.fixture(scope="module")
def four_convs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 32-channel 3x3 convs at 64x64: work enough for OpenVINO to use a second thread
    (it runs the test models on one)."""
    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((32, 32, 3, 3)).astype(np.float32), "w"
    )
    names = ["x", "y0", "y1", "y2", "y3"]
    nodes = [
        helper.make_node("Conv", [a, "w"], [b], pads=[1, 1, 1, 1])
        for a, b in itertools.pairwise(names)
    ]
    shape = [1, 32, 64, 64]
    graph = helper.make_graph(
        nodes,
        "four_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y3", TensorProto.FLOAT, shape)],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("pinning") / "four_convs.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def int8_pointwise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-channel 1x1 conv at 20x20 as a QDQ int8 file: on a CPU with AMX, OpenVINO's oneDNN
    runs it on its AMX kernel (brgconv_avx512_amx_1x1_I8)."""
    shape = [1, 64, 20, 20]
    weight = numpy_helper.from_array(
        0.1 * np.random.default_rng(1).standard_normal((64, 64, 1, 1)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "pointwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [weight],
    )
    folder = tmp_path_factory.mktemp("pointwise")
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "f.onnx"
    )
    quantize_static(
        str(folder / "f.onnx"),
        str(folder / "int8.onnx"),
        _Batches("x", tuple(shape)),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return folder / "int8.onnx"


@pytest.mark.usefixtures("in_repo")
@pytest.mark.skipif(not X86_64_LINUX, reason="refusing AMX is for x86-64 Linux")
def test_the_no_amx_device_keeps_openvinos_int8_convs_off_amx(int8_pointwise: Path) -> None:
    """local-cpu-openvino-runtime-no-amx refuses the runner AMX's tiles before OpenVINO loads:
    its oneDNN runs the int8 conv on an AVX512 kernel, where the plain device, on a CPU with
    AMX, takes its AMX one. The kernels are read from OpenVINO's per-op counters."""
    kernels, amx = {}, {}
    for name in (DEVICE, f"{DEVICE}-no-amx"):
        with open_device(name) as device:
            amx[name] = device.fingerprint().x86_amx
            (m,) = device.measure([int8_pointwise], runs=5, warmup=1, profile_ops=True)
        kernels[name] = {op.op_type for op in m.ops or ()}
    refused = kernels[f"{DEVICE}-no-amx"]
    assert any(k.startswith("Convolution (") and k.endswith("_I8)") for k in refused), refused
    assert not any("amx" in k for k in refused), refused
    if AMX:
        assert any("amx" in k for k in kernels[DEVICE]), kernels[DEVICE]
        assert amx == {DEVICE: "available", f"{DEVICE}-no-amx": "refused"}
    else:
        assert amx == {DEVICE: "", f"{DEVICE}-no-amx": ""}


def _threads_allowed(model: Path, properties: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        [str(OPENVINO_PYTHON), "-c", PINNING, str(model), str(RUNNER_PATH), json.dumps(properties)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    allowed: list[str] = json.loads(proc.stdout)
    return allowed


def test_the_runner_leaves_pinning_to_the_job(four_convs: Path) -> None:
    # OpenVINO's latency hint pins its worker threads to cores by itself; the runner turns
    # that off, so that a profile without cores measures unpinned, as on every other runtime.
    require_openvino()
    mine = Path("/proc/self/status").read_text().split("Cpus_allowed_list:")[1].split()[0]
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: nothing to pin to")
    # What OpenVINO does by itself here (2 cores, 2026-12-06: a worker pinned to core 1).
    if _threads_allowed(four_convs, {"ENABLE_CPU_PINNING": "true"}) == [mine]:
        pytest.skip("OpenVINO pins no thread here even when asked to")
    assert _threads_allowed(four_convs, {}) == [mine]


@pytest.mark.usefixtures("in_repo")
@pytest.mark.skipif(bool(glob.glob("/dev/dri/renderD*")), reason="this machine has a GPU")
def test_a_device_openvino_lacks_is_refused_not_run_on_the_cpu(models: Models) -> None:
    settings = RunSettings(runtime="openvino", openvino_device="GPU", warmup=1, runs=3)
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    message = str(info.value)
    assert message.startswith(f"device 'ov': OpenVINO {VERSION} on this device has no GPU ")
    assert message.endswith(
        "install its driver (GPU: Intel's compute runtime, NPU: Intel's NPU driver), or name "
        "one of those (openvino.device in a profile)"
    )
    assert "CPU" in message.split("(available: ")[1] and "\n" not in message


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # The CPU is listed as "CPU": CPU.1 is a device this machine does not have.
        ("CPU.1", f"OpenVINO {VERSION} on this device has no CPU.1 device (available: "),
        # The profile refuses it too; a job written by hand reaches the runner.
        ("AUTO", "openvino.device 'AUTO' is a virtual device"),
    ],
)
def test_a_device_the_runner_cannot_time_is_refused_before_any_model(
    models: Models, name: str, expected: str
) -> None:
    settings = RunSettings(runtime="openvino", openvino_device=name, warmup=1, runs=3)
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    assert expected in str(info.value)


def test_a_python_without_openvino_names_the_package(models: Models) -> None:
    # This Python (.venv) has onnxruntime and no openvino.
    settings = RunSettings(runtime="openvino", warmup=1, runs=3)
    device = LocalDevice("ov", python=sys.executable, settings=settings)
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    message = str(info.value)
    assert "OpenVINO is not installed for " in message and "pip install openvino" in message
    assert "\n" not in message


def test_per_op_times_are_openvinos_counters_of_the_timed_runs(four_convs: Path) -> None:
    # Convs of about a millisecond each, where OpenVINO's whole-microsecond counters are
    # precise: the four convs' times add up to nearly a profiled run, which the first run
    # after compiling, included in the counters' means, would exceed.
    require_openvino()
    settings = RunSettings(runtime="openvino", warmup=2, runs=20)
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    (m,) = device.measure([four_convs], profile_ops=True)
    ops = m.ops or ()
    convs = [op for op in ops if op.op_type.startswith("Convolution (")]
    assert len(convs) == 4, ops
    assert {op.where for op in ops} == {"CPU"}
    assert all(op.ms > 0 and op.op_type.endswith("_f32)") for op in convs), convs
    run_ms = m.extra["profile"]["run_ms"]
    total = sum(op.ms for op in ops)
    assert 0.8 * run_ms < total <= run_ms, (total, run_ms)
    assert not any("per-op" in w for w in m.extra.get("warnings", ()))


@pytest.mark.usefixtures("in_repo")
def test_openvino_classifies_with_its_own_kernels(models: Models, int8_conv: Path) -> None:
    """The fp32 file gives onnxruntime's classes (fp32 in both); the int8 file is classified
    by OpenVINO's int8 kernels, which agree with onnxruntime's on most images, not all."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    images = np.random.default_rng(3).standard_normal((24, 3, 16, 16)).astype(np.float32)
    with open_device(DEVICE) as device:
        assert device.classifies
        fp32, int8 = device.classify([models.conv, int8_conv], images)

    def onnxruntime_top1(path: Path) -> list[int]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [int(np.argmax(session.run(None, {"conv_in": x[None]})[0])) for x in images]

    assert fp32 == onnxruntime_top1(models.conv)
    same = np.mean(np.array(int8) == np.array(onnxruntime_top1(int8_conv)))
    assert same >= 0.75, (int8, onnxruntime_top1(int8_conv))


@pytest.mark.usefixtures("in_repo")
def test_openvino_refuses_to_classify_with_a_model_of_raw_bytes(tmp_path: Path) -> None:
    from tests.devices.test_classify import _uint8_images_model

    model = _uint8_images_model(tmp_path / "uint8.onnx")
    images = np.zeros((2, 3, 16, 16), np.float32)
    with open_device(DEVICE) as device, pytest.raises(DeviceError) as info:
        device.classify([model], images)
    message = str(info.value)
    assert "takes OpenVINO u8 inputs: only a model with a float input classifies images" in message
    assert "\n" not in message
