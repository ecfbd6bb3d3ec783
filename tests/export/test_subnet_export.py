"""export_subnet: every format and precision of an mbv3-tiny subnet, and a random
mbv3-imagenet subnet in both formats, checked in their own runtimes on real Fashion-MNIST
images."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from export import ExportError, read_onnx_metadata
from export.formats import ONNX_OPSETS
from export.subnet_export import ExportOptions, export_subnet, model_images
from export.verify import agreement, run_onnx, run_tflite, top1
from once_for_all import build_from_config, get_space, recalibrate_bn
from once_for_all.data import DataBundle, DataSpec, ImageSplit
from once_for_all.data.splits import eval_head
from once_for_all.evaluation import bn_batches
from once_for_all.network_config import network_config
from tests.export.conftest import Exported, TinyModel


def _subnet_model(  # type: ignore[no-untyped-def]
    space_name: str,
    data: DataBundle,
    seed: int,
    r: int | None = None,
    d: int | None = None,
    bn_images: int = 256,
):
    space = get_space(space_name)
    subnet = space.sample(
        random.Random(seed), r=(r,) if r else space.resolutions, d=(d,) if d else None
    )
    torch.manual_seed(seed)
    model = build_from_config(network_config(space, subnet))
    recalibrate_bn(model, bn_batches(data, subnet.r, images=bn_images))
    return model.eval()


def _rgb(data: DataBundle) -> DataBundle:
    """The same real images as 3-channel data, for the 3-channel mbv3-imagenet space."""
    spec = data.spec

    def split(s: ImageSplit, n: int) -> ImageSplit:
        return ImageSplit(s.images[:n].repeat(1, 3, 1, 1), s.labels[:n])

    rgb = DataSpec(
        name=f"{spec.name}-rgb",
        channels=3,
        image_size=spec.image_size,
        num_classes=spec.num_classes,
        class_names=spec.class_names,
        mean=spec.mean * 3,
        std=spec.std * 3,
    )
    return DataBundle(rgb, split(data.train, 512), split(data.val, 64), split(data.test, 64))


def test_tiny_subnet_in_every_format_and_precision(
    wide: TinyModel, wide_export: Exported, fmnist_small: DataBundle
) -> None:
    # The 7×7-kernel subnet that test_int8_structure also checks: one export serves both.
    model, folder, result = wide.model, wide_export.folder, wide_export.result
    names = [f.name for f in result.files]
    assert names == ["model.onnx", "model_int8.onnx", "model.tflite", "model_int8.tflite"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    n = wide_export.test_images
    x = model_images(fmnist_small.test, fmnist_small, model.resolution, n)
    y = eval_head(fmnist_small.test, n).labels.numpy()
    reference = wide.reference(x)
    for f in result.files:
        assert f.bytes == (folder / f.name).stat().st_size and len(f.sha256) == 64
        outputs = (run_onnx if f.format == "onnx" else run_tflite)(folder / f.name, x)
        if f.precision == "fp32":
            assert f.checks["max_abs_diff"] <= 1e-4
            assert np.abs(outputs - reference).max() <= 1e-4
        else:  # the reported figures are what the file really does
            assert f.checks["top1_agreement"] == pytest.approx(agreement(outputs, reference))
            assert f.checks["accuracy"] == pytest.approx(top1(outputs, y))
    assert result.accuracy_fp32 == pytest.approx(top1(reference, y))
    metadata = read_onnx_metadata(folder / "model_int8.onnx")
    assert metadata["edgenas.subnet"] == "s"
    assert json.loads(metadata["edgenas.accuracy"])["fp32"] == pytest.approx(result.accuracy_fp32)
    # The int8 file carries its own figures too (it held fp32's alone), and the card's hash
    # is of the file as it was left.
    q8 = next(f for f in result.files if f.name == "model_int8.onnx")
    assert json.loads(metadata["edgenas.accuracy"]) == {
        "split": "test",
        "images": len(y),
        "fp32": pytest.approx(result.accuracy_fp32),
        "int8": pytest.approx(q8.checks["accuracy"]),
        "top1_agreement": pytest.approx(q8.checks["top1_agreement"]),
    }
    assert q8.sha256 == hashlib.sha256((folder / "model_int8.onnx").read_bytes()).hexdigest()
    assert "int8" not in json.loads(read_onnx_metadata(folder / "model.onnx")["edgenas.accuracy"])
    q = result.inputs["model_int8.tflite"]
    assert q["dtype"] == "int8" and q["layout"] == "NHWC" and q["quantization"]["scale"] > 0
    assert result.inputs["model.onnx"]["shape"] == [1, 1, model.resolution, model.resolution]


def test_channel_alignment_is_on_the_card_and_can_be_turned_off(
    tiny: TinyModel, wide_export: Exported, fmnist_small: DataBundle, tmp_path: Path
) -> None:
    # Padded for onnxruntime's x86 int8 convs by default; as the model is (for runtimes with kernels of their own)
    # with --align-channels none: the grey input read by the stem directly, no Pad.
    (aligned,) = [f for f in wide_export.result.files if f.name == "model_int8.onnx"]
    assert aligned.execution["channels_aligned"] == "x86"
    options = ExportOptions(
        formats=("onnx",), int8=True, test_images=16, stem_groups=1, align_channels="none"
    )
    result = export_subnet(tiny.model, fmnist_small, tmp_path, options=options)
    (plain,) = [f for f in result.files if f.name == "model_int8.onnx"]
    assert "channels_aligned" not in plain.execution and plain.execution["float_nodes"] == {}
    graph = onnx.load(str(tmp_path / "model_int8.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "Pad"]
    inputs = {init.name: list(init.dims) for init in graph.initializer}
    stem = next(n for n in graph.node if n.op_type == "Conv")
    weight = next(n for n in graph.node if n.output[0] == stem.input[1]).input[0]
    assert inputs[weight][1] == 1  # the stem reads the one grey channel


def test_the_quantizable_model_is_written_beside_the_file(
    tiny: TinyModel, fmnist_small: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It went to /tmp, where a kill during the int8 conversion left it for good; beside the
    # file, export's next run clears it with its staging folder.
    import export.subnet_export as module

    real, seen = module.quantize_tflite_int8, []

    def recorded(source: Path, path: Path, **kwargs: Any) -> Any:
        seen.append(Path(source))
        return real(source, path, **kwargs)

    monkeypatch.setattr(module, "quantize_tflite_int8", recorded)
    options = ExportOptions(formats=("tflite",), int8=True, test_images=16, stem_groups=1)
    export_subnet(tiny.model, fmnist_small, tmp_path, options=options)
    (source,) = seen
    assert source.parent.parent == tmp_path and source.parent.name.startswith(".int8-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite", "model_int8.tflite"]


def test_the_stem_split_tried_says_whether_it_was_kept(
    wide: TinyModel, fmnist_small: DataBundle, tmp_path: Path
) -> None:
    # It said it was trying the split, and never what came of it (walk-through).
    said: list[str] = []
    options = ExportOptions(
        formats=("onnx",), int8=True, test_images=64, stem_groups="auto", min_int8_agreement=1.01
    )
    (_, q) = export_subnet(
        wide.model, fmnist_small, tmp_path, options=options, log=said.append
    ).files
    assert any(line.startswith("onnx int8 agrees ") for line in said)
    (outcome,) = [line for line in said if "with the stem in 2 groups agrees" in line]
    kept = outcome.endswith(": kept")
    assert kept or outcome.endswith(": not kept, the whole stem's file stays")
    assert ("stem_groups" in q.execution) == kept


def test_imagenet_subnet_matches_torch_in_both_formats(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    data = _rgb(fmnist_small)
    # Random kernels (3×3, 5×5 and 7×7 among them) and expand ratios at the smallest depth:
    # every block costs seconds of conversion at this size, and 10 show the parity as 15 do.
    # BN statistics from 64 images: realistic activations are all the parity check needs.
    model = _subnet_model("mbv3-imagenet", data, seed=1, r=128, d=2, bn_images=64)
    result = export_subnet(
        model, data, tmp_path, options=ExportOptions(test_images=16, parity_images=8)
    )
    assert [f.name for f in result.files] == ["model.onnx", "model.tflite"]
    assert all(f.checks["max_abs_diff"] <= 1e-4 for f in result.files)
    assert result.inputs["model.tflite"]["shape"] == [1, 128, 128, 3]


def test_a_file_that_differs_from_torch_is_refused(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    model = _subnet_model("mbv3-tiny", fmnist_small, seed=0)
    with pytest.raises(
        ExportError, match=r"model.onnx differs from PyTorch by up to .* \(tolerance 0[ )]"
    ):
        export_subnet(
            model,
            fmnist_small,
            tmp_path,
            options=ExportOptions(formats=("onnx",), tolerance=0.0, test_images=10),
        )


def test_parity_is_weighed_against_the_size_of_the_logits(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    # Float32 rounds relative to a number's size: logits in the thousands differed by 3e-3,
    # refused as a wrong conversion to "report" (walk-through).
    model = _subnet_model("mbv3-tiny", fmnist_small, seed=0)
    with torch.no_grad():
        model.classifier.weight.mul_(1000.0)
        model.classifier.bias.mul_(1000.0)
    options = ExportOptions(formats=("onnx",), test_images=10)
    (onnx_file,) = export_subnet(model, fmnist_small, tmp_path, options=options).files
    scale, diff = onnx_file.checks["logit_scale"], onnx_file.checks["max_abs_diff"]
    assert scale > 100 and 1e-4 < diff <= 1e-4 * scale  # refused before, taken now
    with pytest.raises(ExportError, match=r"\(tolerance 1e-09 x the largest logit [0-9.e+]+\)"):
        export_subnet(model, fmnist_small, tmp_path, options=replace(options, tolerance=1e-9))


def test_an_unknown_format_is_refused(fmnist_small: DataBundle, tmp_path: Path) -> None:
    model = _subnet_model("mbv3-tiny", fmnist_small, seed=0)
    with pytest.raises(ExportError, match="format 'coreml'"):
        export_subnet(
            model,
            fmnist_small,
            tmp_path,
            options=ExportOptions(formats=("coreml",)),  # type: ignore[arg-type]
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("opset", "int8", "message"),
    [
        (999, False, "--opset 999: torch's ONNX exporter writes opsets 7 to 20"),
        (6, False, "--opset 6: torch's ONNX exporter writes opsets 7 to 20"),
        (11, True, "--opset 11: int8 ONNX files need opset 13 or later"),
    ],
)
def test_an_opset_the_exporter_cannot_write_is_refused_first(
    fmnist_small: DataBundle, tmp_path: Path, opset: int, int8: bool, message: str
) -> None:
    # --opset 999 failed after the work with a 321-line graph dump (issue 24).
    model = _subnet_model("mbv3-tiny", fmnist_small, seed=0)
    options = ExportOptions(formats=("onnx",), opset=opset, int8=int8)
    with pytest.raises(ExportError, match=f"^{re.escape(message)}"):
        export_subnet(model, fmnist_small, tmp_path, options=options)
    assert list(tmp_path.iterdir()) == []


def test_the_opset_range_is_torchs() -> None:
    from torch.onnx import _constants

    assert ONNX_OPSETS == (
        _constants.ONNX_MIN_OPSET,
        _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET,
    )
