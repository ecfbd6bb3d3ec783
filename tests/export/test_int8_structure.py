"""How the runtimes run the exported files, checked on the files themselves (no timing): the
TFLite files in one XNNPACK partition with no depthwise kernel over 25 taps, the int8 ONNX
file on onnxruntime's quantized kernels only, and the inspectors that say so catching the
forms that break both."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export import (
    ExportError,
    export_onnx,
    export_tflite,
    onnx_int8_form,
    quantize_onnx_int8,
    quantize_tflite_int8,
)
from export.onnx_int8_form import fold_rescales, int8_form
from export.runtime_graph import onnx_float_nodes, tflite_delegation
from export.subnet_export import calibration_images
from export.verify import (
    correlation,
    relative_error,
    run_onnx,
    run_tflite,
    tflite_interpreter,
)
from export.xnnpack_form import MAX_TAPS, ScaledHardswish, SplitHardswish, xnnpack_form
from once_for_all import build_from_config, get_space, recalibrate_bn
from once_for_all.data import DataBundle
from once_for_all.layers import ConvBNAct, SqueezeExcite
from once_for_all.network_config import network_config
from tests.export.conftest import Exported, TinyModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(
    wide: TinyModel,
    wide_export: Exported,
    fmnist_small: DataBundle,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """export_subnet's files of the 7×7-kernel ``wide`` subnet (shared with
    test_subnet_export), and its fp32 TFLite file quantized as it is, as export did before."""
    exported = wide_export.folder
    out = {
        "tflite": exported / "model.tflite",
        "onnx": exported / "model.onnx",
        "tflite_int8": exported / "model_int8.tflite",
        "onnx_int8": exported / "model_int8.onnx",
    }
    # What export did before: the fp32 file quantized as it is, hard-swish and all, on the
    # images export calibrated its int8 files on.
    calibration = calibration_images(
        fmnist_small, wide.input_shape[-1], wide_export.calibration_images
    )
    out["tflite_int8_hardswish"] = quantize_tflite_int8(
        out["tflite"],
        tmp_path_factory.mktemp("structure") / "hardswish_int8.tflite",
        calibration=calibration.transpose(0, 2, 3, 1),
    )
    return out


def test_tflite_files_run_in_one_xnnpack_partition(files: dict[str, Path]) -> None:
    for name in ("tflite", "tflite_int8"):
        assert tflite_delegation(files[name]) == {
            "delegate": "XNNPACK",
            "partitions": 1,
            "not_delegated": {},
        }, name


def test_int8_hard_swish_is_caught_outside_the_delegate(files: dict[str, Path]) -> None:
    # XNNPACK runs HARD_SWISH in float only: each int8 one ends a partition.
    delegation = tflite_delegation(files["tflite_int8_hardswish"])
    assert delegation["partitions"] > 1
    assert set(delegation["not_delegated"]) == {"HARD_SWISH int8"}
    ops = Counter(
        op["op_name"] for op in tflite_interpreter(files["tflite_int8"])._get_ops_details()
    )
    assert "HARD_SWISH" not in ops


def test_no_depthwise_kernel_has_more_taps_than_xnnpack_takes_in_one_pass(
    files: dict[str, Path],
) -> None:
    for name in ("tflite", "tflite_int8"):
        interpreter = tflite_interpreter(files[name])
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        kernels = [
            tuple(tensors[int(op["inputs"][1])]["shape"][1:3])
            for op in interpreter._get_ops_details()
            if op["op_name"] == "DEPTHWISE_CONV_2D"
        ]
        assert kernels and all(h * w <= MAX_TAPS for h, w in kernels), (name, kernels)
        assert (3, 7) in kernels  # the 7×7 kernels were banded, not dropped


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(type(m) is kind for m in model.modules())


def test_int8_tflite_has_one_element_wise_mul_per_activation(
    wide: TinyModel, files: dict[str, Path]
) -> None:
    # hard-swish is x·relu6(x+3) with its 1/6 in the next weights, squeeze-excite's gate a
    # RELU6 fused into its conv: one MUL per hard-swish and one per squeeze-excite product.
    # (The stem is whole: the export keeps it so, see conftest.)
    ops = Counter(
        op["op_name"] for op in tflite_interpreter(files["tflite_int8"])._get_ops_details()
    )
    hardswish, se = _count(wide.model, nn.Hardswish), _count(wide.model, SqueezeExcite)
    assert hardswish and se
    assert ops["MUL"] == hardswish + se


def _mbv3(space: str, resolution: int) -> nn.Module:
    """A max mbv3 subnet with random weights and BN statistics (residual first block in
    mbv3-imagenet, none in mbv3-tiny)."""
    search_space = get_space(space)
    torch.manual_seed(0)
    model = build_from_config(network_config(search_space, search_space.max_subnet(r=resolution)))
    shape = (8, *model.input_shape[1:])
    recalibrate_bn(model, (torch.randn(shape) for _ in range(2)))
    return model.eval()


@pytest.mark.parametrize(("space", "resolution"), [("mbv3-tiny", 28), ("mbv3-imagenet", 128)])
def test_sixths_fold_into_weights_exactly(space: str, resolution: int) -> None:
    model = _mbv3(space, resolution)
    form = xnnpack_form(model, int8=True)
    # Every hard-swish and hard-sigmoid is folded, the stem's too (through residual blocks).
    assert _count(form, ScaledHardswish) == _count(model, nn.Hardswish)
    assert _count(form, SplitHardswish) == _count(form, nn.Hardsigmoid) == 0
    x = torch.randn(4, *model.input_shape[1:])
    with torch.no_grad():
        expected, got = model(x), form(x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_banded_files_compute_what_pytorch_does(wide: TinyModel, files: dict[str, Path]) -> None:
    held_out = wide.inputs
    expected = wide.reference(held_out)
    assert np.abs(run_tflite(files["tflite"], held_out) - expected).max() <= 1e-4
    # The int8 bands are as faithful as the unbanded int8 file that export wrote before.
    banded = run_tflite(files["tflite_int8"], held_out)
    unbanded = run_tflite(files["tflite_int8_hardswish"], held_out)
    assert relative_error(banded, expected) < 0.05
    assert correlation(banded, expected) > 0.9
    assert relative_error(banded, expected) < 1.5 * relative_error(unbanded, expected)


def test_int8_onnx_runs_on_quantized_kernels_only(files: dict[str, Path]) -> None:
    assert onnx_float_nodes(files["onnx_int8"]) == {}
    ops = Counter(n.op_type for n in onnx.load(str(files["onnx_int8"])).graph.node)
    assert ops["GlobalAveragePool"] > 0 and ops["HardSigmoid"] == ops["ReduceMean"] == 0


def test_int8_onnx_channels_line_up_with_the_symmetric_kernels(files: dict[str, Path]) -> None:
    # onnxruntime's fused int8 conv kernels on x86 (export.onnx_channel_alignment): depthwise
    # channels in sixteens, other convs' inputs in fours and outputs in eights, 16 or more.
    graph = onnx.load(str(files["onnx_int8"])).graph
    constants = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for conv in convs:
        out, per_group, *_ = constants[producer[conv.input[1]].input[0]].dims
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if group > 1:
            assert per_group == 1 and out == group and out % 16 == 0, conv.name
        else:
            assert per_group % 4 == 0 and out % 8 == 0 and out >= 16, conv.name
    # The 1-channel input's integers are padded to 4 for the stem.
    (pad,) = [n for n in graph.node if n.op_type == "Pad"]
    assert producer[pad.input[0]].input[0] == graph.input[0].name


def test_float_islands_are_reported(files: dict[str, Path]) -> None:
    # The fp32 graph has no quantized kernel at all: every compute op is a float one.
    floats = onnx_float_nodes(files["onnx"])
    assert floats["Conv"] > 10 and floats["ReduceMean"] > 0


def test_int8_form_is_exact(files: dict[str, Path], tmp_path: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(files["onnx"]), str(prepared))
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(int8_form(onnx.load(str(prepared))), str(rewritten))
    onnx.checker.check_model(str(rewritten))
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32) * 3
    before, after = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for p in (prepared, rewritten)
    )
    assert np.abs(before - after).max() <= 1e-5


def test_rescales_fold_away_without_changing_an_integer(
    wide: TinyModel, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same quantization without the fold, on the same calibration images.
    calibration = wide.calibration
    folded = quantize_onnx_int8(files["onnx"], tmp_path / "folded.onnx", calibration=calibration)
    monkeypatch.setattr(onnx_int8_form, "fold_rescales", lambda model: model)
    plain = quantize_onnx_int8(files["onnx"], tmp_path / "plain.onnx", calibration=calibration)
    muls = [
        Counter(n.op_type for n in onnx.load(str(p)).graph.node)["Mul"] for p in (plain, folded)
    ]
    hardswish, se = _count(wide.model, nn.Hardswish), _count(wide.model, SqueezeExcite)
    # One Mul by 1/6 per hard-sigmoid (in every hard-swish and squeeze-excite) is gone; the
    # products stay.
    assert muls == [2 * (hardswish + se), hardswish + se]
    # An Add per hard-swish (x + 3) and per residual sum: squeeze-excite's gate has its +3 in
    # its conv's bias.
    residuals = sum(getattr(m, "residual", False) is True for m in wide.model.modules())
    assert Counter(n.op_type for n in onnx.load(str(folded)).graph.node)["Add"] == (
        hardswish + residuals
    )
    assert onnx_float_nodes(folded) == {}
    before, after = (run_onnx(p, wide.inputs) for p in (plain, folded))
    assert np.array_equal(before, after)


def _gate(case: str) -> onnx.ModelProto:
    """x → Conv(w, b) → z → HardSigmoid (α 1/6, β 1/2) → gate, and, by ``case``: "alone";
    "read" (z is read again, by a Mul); "output" (z is a graph output too); "shared" (another
    Conv reads b, writing a second output); "no bias"."""
    h = onnx.helper
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1), dtype=np.float32), "w"),
        onnx.numpy_helper.from_array(rng.standard_normal(4, dtype=np.float32), "b"),
    ]
    conv_inputs = ["x", "w"] if case == "no bias" else ["x", "w", "b"]
    nodes = [
        h.make_node("Conv", conv_inputs, ["z"]),
        h.make_node("HardSigmoid", ["z"], ["gate"], alpha=1 / 6, beta=0.5),
    ]
    outputs = ["gate"]
    if case == "read":
        nodes.append(h.make_node("Mul", ["z", "gate"], ["swish"]))
        outputs = ["swish"]
    elif case == "output":
        outputs.append("z")
    elif case == "shared":
        nodes.append(h.make_node("Conv", ["x", "w", "b"], ["other"]))
        outputs.append("other")
    shape = [1, 4, 3, 3]
    graph = h.make_graph(
        nodes,
        "gate",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape) for name in outputs],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize(
    ("case", "shifted"),
    [("alone", True), ("shared", True), ("read", False), ("output", False), ("no bias", False)],
)
def test_gate_shift_goes_into_the_conv_bias_only_where_that_is_exact(
    case: str, shifted: bool
) -> None:
    model = _gate(case)
    x = np.random.default_rng(1).standard_normal((1, 4, 3, 3), dtype=np.float32) * 4
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    original = onnx.numpy_helper.to_array(model.graph.initializer[1])  # b
    rewritten = int8_form(model)
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ("Add" not in ops) == shifted
    assert "HardSigmoid" not in ops
    biases = {
        i.name: onnx.numpy_helper.to_array(i)
        for i in rewritten.graph.initializer
        if i.name == "b" or i.name.endswith("_shifted_bias")
    }
    if case == "alone":  # β/α = 3, in place
        assert list(biases) == ["b"] and np.allclose(biases["b"], original + 3)
    elif case == "shared":  # the other Conv keeps its bias; the gate's reads a shifted copy
        (copy,) = [name for name in biases if name != "b"]
        assert np.array_equal(biases["b"], original) and np.allclose(biases[copy], original + 3)
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})
    for a, b in zip(got, expected, strict=True):
        assert np.abs(a - b).max() <= 1e-5


def _rescale(s_in: float, k: float, s_out: float, z_out: int) -> onnx.ModelProto:
    """uint8 q → DequantizeLinear(s_in, 3) → Mul(k, an int8 constant) → QuantizeLinear(s_out,
    z_out) → DequantizeLinear: a float output."""
    h, a = onnx.helper, np.array
    inits = [
        onnx.numpy_helper.from_array(value, name)
        for name, value in [
            ("s_in", a(s_in, np.float32)),
            ("z_in", a(3, np.uint8)),
            ("k_q", a(127, np.int8)),
            ("k_s", a(k / 127, np.float32)),
            ("k_z", a(0, np.int8)),
            ("s_out", a(s_out, np.float32)),
            ("z_out", a(z_out, np.uint8)),
        ]
    ]
    nodes = [
        h.make_node("DequantizeLinear", ["q", "s_in", "z_in"], ["x"]),
        h.make_node("DequantizeLinear", ["k_q", "k_s", "k_z"], ["k"]),
        h.make_node("Mul", ["x", "k"], ["y"]),
        h.make_node("QuantizeLinear", ["y", "s_out", "z_out"], ["y_q"]),
        h.make_node("DequantizeLinear", ["y_q", "s_out", "z_out"], ["out"]),
    ]
    graph = h.make_graph(
        nodes,
        "rescale",
        [h.make_tensor_value_info("q", onnx.TensorProto.UINT8, [1, 256])],
        [h.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 256])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


@pytest.mark.parametrize(
    ("s_out", "z_out", "folds"),
    [
        (0.6 / 6, 3, True),  # exactly the input's scale times k
        (0.6 / 6 * (1 + 1e-3), 3, True),  # 255 steps off by 0.26 of a step at most
        (0.6 / 6 * (1 + 3e-3), 3, False),  # the top integers would move
        (0.6 / 6, 4, False),  # another zero point
    ],
)
def test_only_rescales_that_keep_every_integer_fold(s_out: float, z_out: int, folds: bool) -> None:
    model = _rescale(0.6, 1 / 6, s_out, z_out)
    q = np.arange(256, dtype=np.uint8).reshape(1, 256)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"q": q})[0]
    folded = fold_rescales(model)
    onnx.checker.check_model(folded)
    ops = [n.op_type for n in folded.graph.node]
    assert ("Mul" not in ops) == folds
    got = ort.InferenceSession(folded.SerializeToString()).run(None, {"q": q})[0]
    assert np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("size", "stride", "kernel"), list(itertools.product([1, 2, 3, 5, 8, 14], [1, 2], [7, 9]))
)
def test_banded_depthwise_is_the_same_convolution(size: int, stride: int, kernel: int) -> None:
    torch.manual_seed(size)
    layer = ConvBNAct(6, 6, kernel, stride=stride, groups=6, act="hswish").eval()
    layer.bn.running_mean.uniform_(-1, 1)
    layer.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 6, size, size)
    for int8 in (False, True):
        form = xnnpack_form(layer, int8=int8)
        assert isinstance(form.act, SplitHardswish if int8 else nn.Hardswish)
        with torch.no_grad():
            assert torch.allclose(form(x), layer(x), atol=1e-5)
    assert isinstance(layer.act, nn.Hardswish)  # the original is left alone


class CumSum(nn.Module):
    """An op neither quantizer has an int8 kernel for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def test_an_op_without_int8_kernel_is_named(tmp_path: Path) -> None:
    calibration = np.random.default_rng(0).standard_normal((4, 4, 8, 8), dtype=np.float32)
    fp32 = export_tflite(CumSum(), tmp_path / "cumsum.tflite", input_shape=(1, 4, 8, 8), nhwc=False)
    # TFLite int8 is full integer (for int8-only NPUs): a float op in it is refused, whole.
    with pytest.raises(ExportError, match=r"no int8 kernel for CUMSUM in .*export fp32 only"):
        quantize_tflite_int8(fp32, tmp_path / "cumsum_int8.tflite", calibration=calibration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cumsum.tflite"]
    # ONNX int8 may keep a float island; the card names it.
    onnx_fp32 = export_onnx(CumSum(), tmp_path / "cumsum.onnx", input_shape=(1, 4, 8, 8))
    q = quantize_onnx_int8(onnx_fp32, tmp_path / "cumsum_int8.onnx", calibration=calibration)
    assert onnx_float_nodes(q) == {"CumSum": 1}
