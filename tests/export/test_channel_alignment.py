"""Int8 ONNX channel counts padded to what onnxruntime's symmetric conv kernels take: every
integer the same, padded where the padding stays apart from the real channels, left alone
where a tensor meets an op that mixes or reshapes channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export import export_onnx, quantize_onnx_int8
from export.runtime_graph import onnx_float_nodes
from export.verify import run_onnx


class Block(nn.Module):
    """A stem on 3 channels, a 12-channel depthwise conv with squeeze-excite, and a project
    conv whose 8 channels meet a Concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.reduce = nn.Conv2d(12, 8, 1)
        self.expand = nn.Conv2d(8, 12, 1)
        self.project = nn.Conv2d(12, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.stem(x))
        y = F.relu(self.depthwise(x))
        pooled = y.mean((2, 3), keepdim=True)
        y = y * F.hardsigmoid(self.expand(F.relu(self.reduce(pooled))))
        z = self.project(y)
        return torch.cat([z, z + 1], dim=1)


SHAPE = (1, 3, 12, 12)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The block's int8 file with its channels aligned for x86 (the default) and for Arm64,
    and without."""
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("alignment")
    fp32 = export_onnx(Block().eval(), work / "block.onnx", input_shape=SHAPE)
    calibration = np.random.default_rng(0).standard_normal((8, *SHAPE[1:]), dtype=np.float32)
    aligned = quantize_onnx_int8(fp32, work / "aligned.onnx", calibration=calibration)
    arm64 = quantize_onnx_int8(
        fp32, work / "arm64.onnx", calibration=calibration, align_channels="arm64"
    )
    plain = quantize_onnx_int8(
        fp32, work / "plain.onnx", calibration=calibration, align_channels="none"
    )
    return {"aligned": aligned, "arm64": arm64, "plain": plain}


def conv_weights(path: Path) -> dict[str, tuple[list[int], int]]:
    """Each Conv's name → (its int8 weight's shape, its group count)."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    weights = {}
    for node in graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            weight = constants[producer[node.input[1]].input[0]]
            weights[node.name.split("/")[-2]] = (list(weight.dims), group)
    return weights


def test_aligned_channels_change_no_integer(quantized: dict[str, Path]) -> None:
    x = np.random.default_rng(1).standard_normal((16, *SHAPE[1:]), dtype=np.float32) * 2
    plain = run_onnx(quantized["plain"], x)
    for name in ("aligned", "arm64"):
        assert np.array_equal(run_onnx(quantized[name], x), plain), name
        assert onnx_float_nodes(quantized[name]) == {}


def test_channels_pad_where_the_padding_stays_apart(quantized: dict[str, Path]) -> None:
    assert conv_weights(quantized["plain"]) == {
        "stem": ([12, 3, 3, 3], 1),
        "depthwise": ([12, 1, 3, 3], 12),
        "reduce": ([8, 12, 1, 1], 1),
        "expand": ([12, 8, 1, 1], 1),
        "project": ([8, 12, 1, 1], 1),
    }
    assert conv_weights(quantized["aligned"]) == {
        # The input's integers padded to 4 channels; the depthwise channels (which the stem
        # writes and squeeze-excite multiplies) to 16; squeeze-excite's 8 to 16.
        "stem": ([16, 4, 3, 3], 1),
        "depthwise": ([16, 1, 3, 3], 16),
        "reduce": ([16, 16, 1, 1], 1),
        "expand": ([16, 16, 1, 1], 1),
        # Its 8 output channels meet the Concat: left as they are.
        "project": ([8, 16, 1, 1], 1),
    }
    pads = [n for n in onnx.load(str(quantized["aligned"])).graph.node if n.op_type == "Pad"]
    assert [n.input[0] for n in pads] == ["input_QuantizeLinear_Output"]


def test_arm64_pads_only_depthwise_channels_to_eights(quantized: dict[str, Path]) -> None:
    # onnxruntime on Arm64 takes depthwise convs in eights and runs no 1x1 conv, nor one on
    # fewer than 64 input channels, on its symmetric kernels: the 12 depthwise channels
    # (written by the stem and by squeeze-excite's expand) become 16; the input, the stem's
    # 3 input channels and squeeze-excite's 8 stay as they are.
    assert conv_weights(quantized["arm64"]) == {
        "stem": ([16, 3, 3, 3], 1),
        "depthwise": ([16, 1, 3, 3], 16),
        "reduce": ([8, 16, 1, 1], 1),
        "expand": ([16, 8, 1, 1], 1),
        "project": ([8, 16, 1, 1], 1),
    }
    graph = onnx.load(str(quantized["arm64"])).graph
    assert not [n for n in graph.node if n.op_type == "Pad"]


class SplitStem(nn.Module):
    """A stem split in two groups of channels (10 and 6), each with its own depthwise conv,
    concatenated for a projection, as export.stem_split writes it; ``residual``: the first
    block adds the concatenated stem to its projection, as in OFA's spaces."""

    def __init__(self, *, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.stems = nn.ModuleList(nn.Conv2d(3, n, 3, stride=2, padding=1) for n in (10, 6))
        self.depthwise = nn.ModuleList(nn.Conv2d(n, n, 3, padding=1, groups=n) for n in (10, 6))
        self.project = nn.Conv2d(16, 16 if residual else 8, 1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stems = [F.hardswish(stem(x)) for stem in self.stems]
        parts = [F.relu(dw(s)) for dw, s in zip(self.depthwise, stems, strict=True)]
        y = self.project(torch.cat(parts, 1))
        return self.head(y + torch.cat(stems, 1)) if self.residual else y


def quantized_pair(model: nn.Module, work: Path) -> tuple[Path, Path]:
    """``model``'s int8 file with its channels aligned, and without; both compute the same."""
    torch.manual_seed(0)
    fp32 = export_onnx(model.eval(), work / "fp32.onnx", input_shape=SHAPE)
    calibration = np.random.default_rng(0).standard_normal((8, *SHAPE[1:]), dtype=np.float32)
    aligned = quantize_onnx_int8(fp32, work / "aligned.onnx", calibration=calibration)
    plain = quantize_onnx_int8(
        fp32, work / "plain.onnx", calibration=calibration, align_channels="none"
    )
    x = np.random.default_rng(1).standard_normal((16, *SHAPE[1:]), dtype=np.float32) * 2
    assert np.array_equal(run_onnx(aligned, x), run_onnx(plain, x))
    assert onnx_float_nodes(aligned) == {}
    return aligned, plain


def test_a_split_stem_pads_each_group_and_the_projection_skips_the_padding(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    aligned, plain = quantized_pair(SplitStem(), tmp_path)
    weights = conv_weights(aligned)
    # Each group's 10 or 6 channels padded to 16 (depthwise), the concatenation then 32.
    assert {name: weights[name] for name in ("stems.0", "stems.1")} == {
        "stems.0": ([16, 4, 3, 3], 1),
        "stems.1": ([16, 4, 3, 3], 1),
    }
    assert weights["depthwise.0"] == weights["depthwise.1"] == ([16, 1, 3, 3], 16)
    assert weights["project"] == ([8, 32, 1, 1], 1)
    # The projection's real input weights stay in place, with zeros where padding comes.
    real = [*range(10), *range(16, 22)]
    padded, unpadded = (conv_weight(path, "project") for path in (aligned, plain))
    assert np.array_equal(padded[:, real], unpadded)
    assert not padded[:, [c for c in range(32) if c not in real]].any()


def conv_weight(path: Path, name: str) -> np.ndarray:
    """The int8 weight of the Conv of module ``name``."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    (conv,) = [n for n in graph.node if n.op_type == "Conv" and n.name.split("/")[-2] == name]
    return onnx.numpy_helper.to_array(constants[producer[conv.input[1]].input[0]])


def test_a_split_stem_added_to_its_projection_pads_the_sum_alike(tmp_path: Path) -> None:
    # OFA's residual first block: the groups are concatenated twice, for the projection and
    # for the sum with its output. Both concatenations get the padding after each group, so
    # the projection writes zero channels at those places and the head reads zeros there.
    aligned, plain = quantized_pair(SplitStem(residual=True), tmp_path)
    weights = conv_weights(aligned)
    assert weights["stems.0"] == weights["stems.1"] == ([16, 4, 3, 3], 1)
    assert weights["depthwise.0"] == weights["depthwise.1"] == ([16, 1, 3, 3], 16)
    assert weights["project"] == ([32, 32, 1, 1], 1) and weights["head"] == ([8, 32, 1, 1], 1)
    real = [*range(10), *range(16, 22)]
    others = [c for c in range(32) if c not in real]
    project, head = (conv_weight(aligned, name) for name in ("project", "head"))
    assert np.array_equal(project[np.ix_(real, real)], conv_weight(plain, "project"))
    assert not project[others].any() and not project[:, others].any()
    assert np.array_equal(head[:, real], conv_weight(plain, "head"))
    assert not head[:, others].any()
