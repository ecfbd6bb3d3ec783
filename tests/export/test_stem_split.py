"""The stem in groups of channels (export.stem_split): exact in float, one int8 scale per group
in both runtimes' files, which is what wins back the small channels' accuracy, and a clear
error for what cannot be split."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from export import ExportError, export_onnx, export_tflite, quantize_onnx_int8, quantize_tflite_int8
from export.card import execution_text
from export.stem_split import SplitStem, split_stem
from export.subnet_export import ExportOptions, ExportResult, export_subnet
from export.verify import run_onnx, run_tflite
from export.xnnpack_form import xnnpack_form
from once_for_all import build_from_config, get_space, recalibrate_bn
from once_for_all.data import DataBundle
from once_for_all.network_config import network_config
from once_for_all.quant_aware import StemGroupsError, stem_groups
from once_for_all.static_net import MobileNetV3
from tests.export.conftest import TinyModel

# The fmnist supernet's stem reaches 0.2 to 55 across its eight channels after hard-swish.
CHANNEL_SCALES = torch.tensor([0.03, 0.06, 0.1, 0.2, 2.0, 4.0, 6.0, 10.0])


@pytest.fixture(scope="module")
def uneven(tiny: TinyModel) -> MobileNetV3:
    """The ``tiny`` subnet with its stem's channels scaled 0.03× to 10× (the first block's
    depthwise convolution reads them back at their old size)."""
    model = copy.deepcopy(tiny.model)
    assert isinstance(model, MobileNetV3)
    with torch.no_grad():
        model.stem.bn.weight.mul_(CHANNEL_SCALES)
        model.stem.bn.bias.mul_(CHANNEL_SCALES)
        model.blocks[0].depthwise.conv.weight.div_(CHANNEL_SCALES.view(-1, 1, 1, 1))
    return model.eval()


def test_groups_are_channels_by_range_smallest_first(uneven: MobileNetV3, tiny: TinyModel) -> None:
    images = torch.from_numpy(tiny.calibration)
    assert stem_groups(uneven, images, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert stem_groups(uneven, images, 1) == [list(range(8))]
    four = stem_groups(uneven, images, 4)
    assert (
        sorted(c for g in four for c in g) == list(range(8)) and [len(g) for g in four] == [2] * 4
    )
    assert four[0] == [0, 1] and four[-1] == [6, 7]
    with pytest.raises(StemGroupsError, match="the stem has 8 channels; give 1 to 8"):
        stem_groups(uneven, images, 9)
    with pytest.raises(StemGroupsError, match="give 1 or more"):
        stem_groups(uneven, images, 0)


@pytest.mark.parametrize("space_name", ["mbv3-tiny", "mbv3-imagenet"])
def test_split_computes_what_the_model_does(space_name: str) -> None:
    # mbv3-imagenet's first block is residual: the sum stays in group order down to the
    # first block that is not, which the reordered readers must follow.
    space = get_space(space_name)
    subnet = space.min_subnet(r=min(space.resolutions))
    torch.manual_seed(0)
    model = build_from_config(network_config(space, subnet))
    images = torch.rand(16, *model.input_shape[1:])
    recalibrate_bn(model, [torch.rand(32, *model.input_shape[1:]) for _ in range(2)])
    model.eval()
    groups = (
        [[1, 4, 6, 7], [0, 2, 3, 5]] if space_name == "mbv3-tiny" else stem_groups(model, images, 3)
    )
    with torch.no_grad():
        reference = model(images)
        split = split_stem(model, groups)
        assert isinstance(split, SplitStem) and len(split.layers.stems) == len(groups)
        assert torch.allclose(split(images), reference, atol=1e-5, rtol=1e-4)
        # After the int8 rewrites of the xnnpack form (hard-swish's 1/6 moved into readers).
        banded = split_stem(xnnpack_form(model, int8=True), groups)
        assert torch.allclose(banded(images), reference, atol=1e-5, rtol=1e-4)
        assert torch.equal(model(images), reference)  # the model itself is left alone
    assert split_stem(model, [list(range(model.stem.conv.out_channels))]) is model


def test_each_group_gets_its_own_int8_scale_and_its_accuracy_back(
    uneven: MobileNetV3, tiny: TinyModel, tmp_path: Path
) -> None:
    calibration = tiny.calibration
    images = tiny.inputs
    with torch.no_grad():
        reference = uneven(torch.from_numpy(images)).numpy()
    groups = stem_groups(uneven, torch.from_numpy(calibration), 2)
    errors: dict[str, float] = {}
    for name, model, tflite_groups in [
        ("whole", uneven, []),
        ("split", split_stem(uneven, groups), groups),
    ]:
        onnx_path = export_onnx(model, tmp_path / f"{name}.onnx", input_shape=tiny.input_shape)
        q = quantize_onnx_int8(onnx_path, tmp_path / f"{name}_int8.onnx", calibration=calibration)
        tflite = export_tflite(
            uneven,
            tmp_path / f"{name}.tflite",
            input_shape=tiny.input_shape,
            for_int8=True,
            stem_groups=tflite_groups,
        )
        tq = quantize_tflite_int8(
            tflite, tmp_path / f"{name}_int8.tflite", calibration=calibration.transpose(0, 2, 3, 1)
        )
        errors[f"onnx {name}"] = float(np.abs(run_onnx(q, images) - reference).mean())
        errors[f"tflite {name}"] = float(np.abs(run_tflite(tq, images) - reference).mean())
        if name == "split":
            scales = _stem_output_scales(q)
            assert len(scales) == 2
            # One scale for each group, in proportion to its channels' sizes (0.03-0.2 and 2-10).
            assert scales[1] / scales[0] > 10
    # Measured: 0.18x (ONNX) and 0.17x (TFLite) the whole stem's mean logit error.
    assert errors["onnx split"] < 0.5 * errors["onnx whole"], errors
    assert errors["tflite split"] < 0.5 * errors["tflite whole"], errors


def test_auto_splits_the_stem_only_for_a_file_that_misses_the_target(
    uneven: MobileNetV3, fmnist_small: DataBundle, tmp_path: Path
) -> None:
    def export(folder: Path, min_int8_agreement: float) -> ExportResult:
        return export_subnet(
            uneven,
            fmnist_small,
            folder,
            options=ExportOptions(
                int8=True,
                calibration_images=64,
                test_images=300,
                min_int8_agreement=min_int8_agreement,
            ),
        )

    # One scale for the stem agrees 30-40% with fp32 here: the split is tried and kept.
    result = export(tmp_path / "split", 0.98)
    assert len(_stem_output_scales(tmp_path / "split" / "model_int8.onnx")) == 2
    fp32 = onnx.load(str(tmp_path / "split" / "model.onnx"))
    assert sum(node.input[0] == "input" for node in fp32.graph.node) == 1
    for exported in result.files:
        groups = exported.execution.get("stem_groups")
        if exported.precision == "fp32":
            assert groups is None
            continue
        assert groups == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert execution_text(exported.execution).endswith("stem in 2 int8 groups of channels")
        # An untrained subnet's logits are close together. Measured: 0.84 here; with one
        # scale 0.31 (on 500 validation images).
        assert exported.checks["top1_agreement"] > 0.7
        assert exported.bytes == (tmp_path / "split" / exported.name).stat().st_size
    # The candidate is not left behind.
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == sorted(
        f.name for f in result.files
    )
    # A target the whole stem meets: whole.
    whole = export(tmp_path / "whole", 0.0)
    assert all("stem_groups" not in f.execution for f in whole.files)
    assert len(_stem_output_scales(tmp_path / "whole" / "model_int8.onnx")) == 1


def test_what_cannot_be_split_is_one_line(uneven: MobileNetV3) -> None:
    with pytest.raises(ExportError, match=r"do not split the stem's 8 channels"):
        split_stem(uneven, [[0, 1, 2], [4, 5, 6, 7]])
    with pytest.raises(ExportError, match=r"do not split the stem's 8 channels"):
        split_stem(uneven, [[0, 1, 2, 3, 4], [4, 5, 6, 7]])
    with pytest.raises(
        ExportError, match=r"cannot split the stem of a Sequential.*--stem-groups 1"
    ):
        split_stem(nn.Sequential(nn.Conv2d(1, 8, 3)), [[0, 1, 2, 3], [4, 5, 6, 7]])
    expanding = copy.deepcopy(uneven)
    expanding.blocks[0].expand = nn.Identity()  # type: ignore[assignment]
    with pytest.raises(ExportError, match=r"does not read it with a plain depthwise"):
        split_stem(expanding, [[0, 1, 2, 3], [4, 5, 6, 7]])


def _stem_output_scales(path: Path) -> list[float]:
    """The int8 scales of the outputs of the convolutions that read a QDQ file's input."""
    graph = onnx.load(str(path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    quantized_input = readers["input"][0].output[0]  # input -> QuantizeLinear
    after = readers[quantized_input][0]
    if after.op_type == "Pad":  # the input's channels aligned (export.onnx_channel_alignment)
        after = readers[after.output[0]][0]
    dequantized = after.output[0]  # -> DequantizeLinear
    convs = [n for n in readers[dequantized] if n.op_type == "Conv"]
    assert convs and all(producers[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    scales = []
    for conv in convs:
        q = next(n for n in readers[conv.output[0]] if n.op_type == "QuantizeLinear")
        scales.append(float(constants[q.input[1]]))
    return sorted(scales)
