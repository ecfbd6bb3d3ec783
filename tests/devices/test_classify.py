"""Devices classify images with model files (``Device.classify``, the runner's classify
jobs): the top-1 classes are the runtime's own, on real onnxruntime and LiteRT files, and bad
input is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest

from devices.base import DeviceError
from devices.local import LocalDevice
from devices.runner_protocol import RunSettings, build_job
from devices.trtexec import JETPACK_TRTEXEC
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
    assert "takes inputs of shape [1, 8, 16, 16], the images have shape [3, 16, 16] (NCHW)" in (
        message
    )
    assert "export the model for the images' resolution" in message and "\n" not in message


def test_a_model_that_takes_no_images_is_one_line(models: Models) -> None:
    with pytest.raises(DeviceError) as info:
        LocalDevice("cpu").classify([models.uint8_dynamic], _images(2, (1, 1, 4)))
    assert "takes inputs of shape [1, 4]" in str(info.value)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 3, 16), np.float32), "are float32 of shape [2, 3, 16]"),
        (np.zeros((2, 3, 16, 16), np.int64), "are int64 of shape [2, 3, 16, 16]"),
        (np.zeros((0, 3, 16, 16), np.float32), "are float32 of shape [0, 3, 16, 16]"),
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
    assert "classify takes float images of shape N x C x H x W" in run.payload["error"]["message"]


def test_images_that_are_no_npy_file_are_a_json_error(tmp_path: Path, models: Models) -> None:
    (tmp_path / "images.npy").write_bytes(b"\x80\x04pickle, not numpy")
    job = build_job([str(models.conv)], RunSettings(), classify="images.npy")
    run = run_runner(dict(job), tmp_path)
    assert run.returncode == 2
    assert "cannot read the images 'images.npy'" in run.payload["error"]["message"]


def test_tensorrt_cannot_classify(tmp_path: Path, models: Models) -> None:
    settings = RunSettings(runtime="tensorrt", trtexec=JETPACK_TRTEXEC)
    run = run_runner(dict(build_job([str(models.conv)], settings, classify="x.npy")), tmp_path)
    assert run.returncode == 2
    assert (
        "runtime tensorrt cannot classify images: trtexec returns no outputs"
        in (run.payload["error"]["message"])
    )
    assert not LocalDevice("gpu", settings=settings).classifies


def test_a_device_that_times_only_says_so(tmp_path: Path) -> None:
    from devices import open_device

    with open_device("npu-32x32-ws") as device:
        assert not device.classifies
        with pytest.raises(DeviceError, match="cannot classify images: it returns latency only"):
            device.classify([tmp_path / "m.onnx"], _images(1, (3, 8, 8)))
