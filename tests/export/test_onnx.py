"""ONNX export and int8 quantization, checked in a real onnxruntime against PyTorch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from export import ExportError, export_onnx, quantize_onnx_int8, read_onnx_metadata
from export.verify import correlation, relative_error, run_onnx
from tests.export.conftest import TinyModel

METADATA = {"edgenas.subnet": '{"ks": [3], "e": [3], "d": [2], "r": 28}', "edgenas.format": "x/1"}


@pytest.fixture(scope="module")
def onnx_files(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(
        tiny.model,
        folder / "model.onnx",
        input_shape=tiny.input_shape,
        dynamic_batch=True,
        metadata=METADATA,
    )
    int8 = quantize_onnx_int8(fp32, folder / "model_int8.onnx", calibration=tiny.calibration)
    return {"fp32": fp32, "int8": int8}


def test_fp32_matches_torch(tiny: TinyModel, onnx_files: dict[str, Path]) -> None:
    noise = np.random.default_rng(0).standard_normal((4, *tiny.input_shape[1:]), dtype=np.float32)
    for x in (tiny.inputs, noise):
        assert np.abs(run_onnx(onnx_files["fp32"], x) - tiny.reference(x)).max() <= 1e-4


def test_dynamic_batch_runs_a_batch_of_three(tiny: TinyModel, onnx_files: dict[str, Path]) -> None:
    x = tiny.inputs[:6]
    out = run_onnx(onnx_files["fp32"], x, batch=3)
    assert out.shape == (6, 10)
    assert np.abs(out - tiny.reference(x)).max() <= 1e-4


def test_static_batch_is_fixed(tiny: TinyModel, tmp_path: Path) -> None:
    path = export_onnx(tiny.model, tmp_path / "static.onnx", input_shape=tiny.input_shape)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == list(tiny.input_shape)


def test_metadata_round_trips_and_survives_quantization(onnx_files: dict[str, Path]) -> None:
    assert read_onnx_metadata(onnx_files["fp32"]) == METADATA
    assert read_onnx_metadata(onnx_files["int8"]) == METADATA


def test_int8_is_qdq_and_close_to_fp32(tiny: TinyModel, onnx_files: dict[str, Path]) -> None:
    proto = onnx.load(str(onnx_files["int8"]))
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    conv_weights = [
        i
        for i in proto.graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4
    ]
    assert conv_weights, "conv weights should be stored as int8"

    expected = tiny.reference(tiny.inputs)
    actual = run_onnx(onnx_files["int8"], tiny.inputs)
    # A random-weight network's logits are close together, so top-1 agreement says little;
    # the error against the fp32 output range and the correlation do.
    assert relative_error(actual, expected) < 0.05
    assert correlation(actual, expected) > 0.9


def test_export_leaves_the_models_mode_alone(tiny: TinyModel, tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    model.train()
    model[1].eval()
    export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 1, 8, 8))
    assert [m.training for m in model.modules()] == [True, True, False, True]


class Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this layer cannot be traced")


def test_failed_export_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous model")
    with pytest.raises(ExportError, match=r"ONNX export to .*model\.onnx failed \(this layer"):
        export_onnx(Broken(), path, input_shape=(1, 1, 8, 8))
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_unwritable_folder_is_an_export_error(tiny: TinyModel, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(
        ExportError, match=r"cannot write .*not-a-folder is a file, not a folder; choose"
    ):
        export_onnx(tiny.model, blocker / "model.onnx", input_shape=tiny.input_shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (1, 0, 28, 28)}, "is not a shape"),
        ({"input_shape": (1, 1, 28, 28), "metadata": {"epoch": 3}}, "'epoch' is not str -> str"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    tiny: TinyModel, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ExportError, match=match) as info:
        export_onnx(tiny.model, tmp_path / "m.onnx", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_calibration_of_the_wrong_shape_is_refused(
    tiny: TinyModel, onnx_files: dict[str, Path], tmp_path: Path
) -> None:
    nhwc = tiny.calibration.transpose(0, 2, 3, 1)
    with pytest.raises(ExportError, match=r"NCHW: transpose with x\.transpose\(0, 3, 1, 2\)"):
        quantize_onnx_int8(onnx_files["fp32"], tmp_path / "q.onnx", calibration=nhwc)
    # Images of another size: what is wrong, and what to do.
    larger = np.pad(tiny.calibration, ((0, 0), (0, 0), (1, 1), (1, 1)))
    with pytest.raises(ExportError) as info:
        quantize_onnx_int8(onnx_files["fp32"], tmp_path / "q.onnx", calibration=larger)
    assert str(info.value) == (
        f"calibration samples have shape (1, 30, 30) but ONNX model {onnx_files['fp32']} takes "
        "(1, 28, 28); preprocess the images to that shape (size and channels) as for inference"
    )
    assert list(tmp_path.iterdir()) == []


def test_reading_metadata_of_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        read_onnx_metadata(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not protobuf\xff" * 10)
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        read_onnx_metadata(junk)
