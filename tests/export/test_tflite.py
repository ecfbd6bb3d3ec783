"""TFLite export and full-integer quantization, checked in the real LiteRT interpreter
against PyTorch. Each conversion takes seconds, so the module checks the files of the export
that tests/export/conftest.py shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export import ExportError, export_tflite, quantize_tflite_int8, tflite_io_quantization
from export.verify import correlation, relative_error, run_tflite, tflite_interpreter
from tests.export.conftest import Exported, TinyModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tflite_files(wide_export: Exported) -> dict[str, Path]:
    """The TFLite files export_subnet wrote for the ``wide`` subnet (shared, not written to)."""
    return {
        "fp32": wide_export.folder / "model.tflite",
        "int8": wide_export.folder / "model_int8.tflite",
    }


def test_fp32_takes_nhwc_and_matches_torch(wide: TinyModel, tflite_files: dict[str, Path]) -> None:
    io = tflite_io_quantization(tflite_files["fp32"])
    n, c, h, w = wide.input_shape
    assert [t["shape"] for t in io["inputs"]] == [[n, h, w, c]]
    assert [(t["dtype"], t["scale"]) for t in io["inputs"] + io["outputs"]] == [
        ("float32", None)
    ] * 2
    noise = np.random.default_rng(0).standard_normal((4, c, h, w), dtype=np.float32)
    for x in (wide.inputs, noise):
        assert np.abs(run_tflite(tflite_files["fp32"], x) - wide.reference(x)).max() <= 1e-4


def test_int8_is_integer_only_with_int8_io(tflite_files: dict[str, Path]) -> None:
    dtypes = Counter(
        np.dtype(d["dtype"]).name
        for d in tflite_interpreter(tflite_files["int8"]).get_tensor_details()
    )
    # int8 activations and weights, int32 biases, and no float tensor anywhere.
    assert dtypes["int8"] > 50
    assert set(dtypes) == {"int8", "int32"}
    io = tflite_io_quantization(tflite_files["int8"])
    for tensor in io["inputs"] + io["outputs"]:
        assert tensor["dtype"] == "int8"
        assert tensor["scale"] is not None and tensor["scale"] > 0
        assert tensor["zero_point"] is not None and -128 <= tensor["zero_point"] <= 127


def test_int8_is_close_to_fp32(wide: TinyModel, tflite_files: dict[str, Path]) -> None:
    expected = wide.reference(wide.inputs)
    actual = run_tflite(tflite_files["int8"], wide.inputs)
    assert relative_error(actual, expected) < 0.05
    assert correlation(actual, expected) > 0.9


def test_nchw_calibration_for_an_nhwc_model_says_how_to_fix_it(
    wide: TinyModel, tflite_files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=r"NHWC: transpose with x\.transpose\(0, 2, 3, 1\)"):
        quantize_tflite_int8(
            tflite_files["fp32"], tmp_path / "q.tflite", calibration=wide.calibration
        )
    assert list(tmp_path.iterdir()) == []


def test_quantizing_an_int8_model_again_is_refused(
    wide: TinyModel, tflite_files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="not float32: quantize the fp32 model"):
        quantize_tflite_int8(
            tflite_files["int8"],
            tmp_path / "q.tflite",
            calibration=wide.calibration.transpose(0, 2, 3, 1),
        )


class Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this layer cannot be traced")


def test_failed_conversion_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")
    with pytest.raises(ExportError, match="this layer cannot be traced"):
        export_tflite(Broken(), path, input_shape=(1, 1, 8, 8))
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_unwritable_folder_is_an_export_error(
    wide: TinyModel, tflite_files: dict[str, Path], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(
        ExportError, match=r"cannot write .*not-a-folder is a file, not a folder; choose"
    ):
        quantize_tflite_int8(
            tflite_files["fp32"],
            blocker / "q.tflite",
            calibration=wide.calibration.transpose(0, 2, 3, 1),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]
