"""Devices classify images with model files (``Device.classify``, the runner's classify
jobs): the top-1 classes are the runtime's own, on real onnxruntime and LiteRT files, and bad
input is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
from onnx import TensorProto, helper

from devices.base import DeviceError
from devices.local import LocalDevice
from devices.runner_protocol import RunSettings, build_job
from tests.devices.conftest import Models, run_runner


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _onnxruntime_top1(path: Path, images: np.ndarray) -> list[int]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [int(np.argmax(session.run(None, {name: x[None]})[0])) for x in images]


def test_onnxruntime_files_classify_as_onnxruntime_runs_them(models: Models) -> None:
    images = _images(16, (3, 16, 16))
    device = LocalDevice("cpu")
    assert device.classifies
    (top1,) = device.classify([models.conv], images)
    assert top1 == _onnxruntime_top1(models.conv, images)
    assert len(set(top1)) > 1  # random images: not one class for all


def test_an_int8_tflite_file_is_fed_quantized_nhwc_images(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from export.verify import run_tflite
    from tests.devices.tflite_models import int8_cnn

    model = int8_cnn(tmp_path / "int8 cnn.tflite")  # int8 [1, 16, 16, 3] in, int8 out
    images = _images(16, (3, 16, 16), seed=1)
    device = LocalDevice("cpu", settings=RunSettings(runtime="tflite"))
    (top1,) = device.classify([model], images)
    expected = run_tflite(model, images).argmax(axis=1).tolist()
    assert top1 == expected and len(set(expected)) > 1


def test_a_model_for_other_images_is_one_line(models: Models) -> None:
    device = LocalDevice("cpu")
    with pytest.raises(DeviceError) as info:
        device.classify([models.conv, models.dw], _images(2, (3, 16, 16)))
    message = str(info.value)
    assert (
        "takes inputs of shape [1, 8, 16, 16], and classifying feeds it one image of "
        "[3, 16, 16] (NCHW) at a time: export the model for batch 1 at the images' resolution"
    ) in message
    assert "\n" not in message


def _uint8_images_model(path: Path, *, dynamic: bool = False) -> Path:
    """A classifier of raw uint8 NCHW images (or, ``dynamic``, float ones of any size)."""
    dims: list[int | str] = ["n", 3, "h", "w"] if dynamic else [1, 3, 16, 16]
    kind = TensorProto.FLOAT if dynamic else TensorProto.UINT8
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["xf"], ["y"], axes=[2, 3], keepdims=0),
        ],
        "images",
        [helper.make_tensor_value_info("x", kind, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_model_that_takes_no_float_images_is_one_line(tmp_path: Path) -> None:
    model = _uint8_images_model(tmp_path / "uint8.onnx")
    with pytest.raises(DeviceError) as info:
        LocalDevice("cpu").classify([model], _images(2, (3, 16, 16)))
    message = str(info.value)
    assert "takes uint8 inputs: only a model with a float input classifies images here" in message
    assert "\n" not in message


def test_dynamic_dimensions_take_the_images_size(tmp_path: Path) -> None:
    model = _uint8_images_model(tmp_path / "any size.onnx", dynamic=True)
    images = _images(6, (3, 9, 7), seed=4)
    (top1,) = LocalDevice("cpu").classify([model], images)
    assert top1 == images.mean(axis=(2, 3)).argmax(axis=1).tolist()


@pytest.mark.parametrize("channels", [3, -1], ids=["hw", "hwc"])
def test_a_tflite_file_of_any_image_size_takes_the_images_size(
    tmp_path: Path, channels: int
) -> None:
    """A TFLite input whose height and width are dynamic (-1 in its signature): the
    interpreter is resized to the images (load sized it to 1 x 1). With its channels dynamic
    too, the images are still fed as TFLite lays them out (NHWC)."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from tests.devices.tflite_models import float_mean

    model = float_mean(tmp_path / "any size.tflite", channels=channels)
    images = _images(6, (3, 9, 7), seed=5)
    (top1,) = LocalDevice("cpu", settings=RunSettings(runtime="tflite")).classify([model], images)
    assert top1 == images.mean(axis=(2, 3)).argmax(axis=1).tolist()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 3, 16), np.float32), "are float32 of shape [2, 3, 16]"),
        (np.zeros((2, 3, 16, 16), np.int64), "are int64 of shape [2, 3, 16, 16]"),
        (np.zeros((0, 3, 16, 16), np.float32), "are float32 of shape [0, 3, 16, 16]"),
        # an object array would need unpickling: refused as such, never loaded
        (np.array([{"a": 1}], dtype=object), "cannot read the images 'images.npy'"),
    ],
)
def test_bad_images_are_a_json_error(
    tmp_path: Path, models: Models, images: np.ndarray, message: str
) -> None:
    np.save(tmp_path / "images.npy", images)
    job = build_job([str(models.conv)], RunSettings(), classify="images.npy")
    run = run_runner(dict(job), tmp_path)
    assert run.returncode == 2 and run.payload["error"]["kind"] == "bad-job"
    assert message in run.payload["error"]["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x04pickle, not numpy", "cannot read the images 'images.npy'"),
        (b"", "cannot read the images 'images.npy'"),
        (None, "the images 'images.npy' are an .npz archive"),
    ],
)
def test_images_that_are_no_npy_array_are_a_json_error(
    tmp_path: Path, models: Models, content: bytes | None, message: str
) -> None:
    if content is None:
        with (tmp_path / "images.npy").open("wb") as f:
            np.savez(f, x=_images(1, (3, 16, 16)))
    else:
        (tmp_path / "images.npy").write_bytes(content)
    job = build_job([str(models.conv)], RunSettings(), classify="images.npy")
    run = run_runner(dict(job), tmp_path)
    assert (run.returncode, run.payload["error"]["kind"]) == (2, "bad-job"), run.stderr
    assert message in run.payload["error"]["message"]


def test_a_device_that_times_only_says_so(tmp_path: Path) -> None:
    from devices import open_device

    with open_device("npu-32x32-ws") as device:
        assert not device.classifies
        with pytest.raises(DeviceError, match="cannot classify images: it returns latency only"):
            device.classify([tmp_path / "m.onnx"], _images(1, (3, 8, 8)))


def test_the_profiles_that_classify_are_the_devices_that_do(tmp_path: Path) -> None:
    """export refuses --min-int8-agreement before opening devices, by their profiles
    (``DeviceProfile.classify_refusal``): each bundled device that opens agrees, and so does a
    TensorRT int8 one (random calibration: no check, and the card says why)."""
    from devices.profiles import list_profiles, load_profile, open_device

    int8 = tmp_path / "orin-int8.yaml"
    int8.write_text(
        "name: orin-int8\nkind: local\nruntime: tensorrt\ntensorrt:\n  precision: int8\n"
    )
    kinds = set()
    for name in [*list_profiles(), str(int8)]:
        profile = load_profile(name)
        refusal = profile.classify_refusal
        kinds.add((profile.kind, refusal is None))
        if profile.kind == "published":  # tables only: nothing opens
            assert refusal == "it is published latency tables: nothing runs there"
            continue
        with open_device(name) as device:
            assert device.classify_refusal == refusal, name
            assert device.classifies == (refusal is None)
        if refusal is not None:
            assert refusal.startswith(
                "its TensorRT int8 engine is calibrated on random data"
                if name == str(int8)
                else "it returns latency only"
            )
    assert kinds == {
        ("local", True),
        ("local", False),
        ("ssh", True),
        ("adb", True),
        ("npu-sim", False),
        ("vela", False),
        ("published", False),
    }


def test_a_check_that_fails_on_the_device_is_on_the_card_not_a_lost_export(
    tmp_path: Path, models: Models
) -> None:
    """The export's check on a device that fails (here: images of another resolution than
    the file's) records why on the card's entry and leaves the timed files alone."""
    from edgenas.stages.export import _check_on_device, _test_subset
    from export.subnet_export import TestImages

    entry: dict[str, Any] = {"fingerprint": {}, "files": {models.conv.name: {"measured": {}}}}
    images = _images(3, (3, 8, 8))
    test = TestImages(images, np.zeros(3, np.int64), np.zeros(3, np.int64))
    said: list[str] = []
    _check_on_device(LocalDevice("cpu"), entry, models.conv.parent, test, said.append)
    assert entry["not_checked"].startswith("classifying the test images failed: device 'cpu': ")
    assert "takes inputs of shape [1, 3, 16, 16]" in entry["not_checked"]
    assert "on_device" not in entry["files"][models.conv.name]
    assert said[-1].startswith("not checked on cpu: ")
    # what the card says when no images are checked at all
    assert _test_subset(None, 1000) == "the export was not verified (--no-verify)"
    assert _test_subset(test, 0) == (
        "no test images asked (--device-check-images 0, export.device_check_images: 0)"
    )
    subset = _test_subset(test, 2)
    assert isinstance(subset, TestImages) and len(subset.x) == len(subset.labels) == 2
