"""int8 ranges end where the activation goes flat: a hard-swish input's range starts at −3
and a hard-sigmoid input's lies within −3…3, in the ONNX and the TFLite int8 files and in
the quantization-aware simulation, and only when nothing else reads the tensor."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from export import (
    export_onnx,
    export_tflite,
    onnx_int8_form,
    quantize_onnx_int8,
    quantize_tflite_int8,
    tflite_int8_ranges,
)
from export.onnx_int8_form import int8_form
from export.runtime_graph import onnx_float_nodes
from export.verify import run_onnx, run_tflite, tflite_interpreter
from once_for_all import build_from_config, get_space
from once_for_all.network_config import network_config
from once_for_all.quant_aware import activation_ranges, live_ranges

pytestmark = pytest.mark.slow

SHAPE = (1, 3, 12, 12)


class WideStem(nn.Module):
    """A MobileNetV3-like stem whose pre-activation reaches far below −3 (−60 or so), as the
    fmnist supernet's stem does (−90…55), then squeeze-excite and a projection."""

    def __init__(self, *, extra_reader: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.reduce = nn.Conv2d(8, 8, 1)
        self.expand = nn.Conv2d(8, 8, 1)
        self.gate = nn.Hardsigmoid()
        self.project = nn.Conv2d(8, 4, 1)
        self.extra_reader = extra_reader
        with torch.no_grad():
            self.conv.weight.mul_(6)
            self.conv.bias.copy_(torch.tensor([-40.0, -20, 0, 5, -30, 10, -10, 0]))
            self.expand.weight.mul_(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.conv(x)
        y = self.act(pre)
        g = self.gate(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        out = self.project(y * g)
        # A second reader of the pre-activation: its range must then stay whole.
        return out + pre[:, :4] if self.extra_reader else out


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE[1:]), dtype=np.float32)


def _lowest(scale: float, zero_point: int, qmin: int) -> float:
    return scale * (qmin - zero_point)


def _conv_output_quantization(model: onnx.ModelProto) -> tuple[float, int]:
    """Scale and zero point of the first conv's output in a QDQ graph."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    quant = next(n for n in model.graph.node if n.input[0] == conv.output[0])
    assert quant.op_type == "QuantizeLinear"
    return float(inits[quant.input[1]]), int(inits[quant.input[2]])


def test_onnx_int8_spends_no_steps_where_hard_swish_is_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = WideStem().eval()
    with torch.no_grad():
        pre = model.conv(torch.from_numpy(_images(64, 1)))
    assert float(pre.min()) < -30  # the range the clip drops is real
    fp32 = export_onnx(model, tmp_path / "m.onnx", input_shape=SHAPE)
    calibration, x = _images(64, 1), _images(200, 2)
    clipped = quantize_onnx_int8(fp32, tmp_path / "clipped.onnx", calibration=calibration)
    monkeypatch.setattr(onnx_int8_form, "_clip_dead_range", lambda *args: [])
    whole = quantize_onnx_int8(fp32, tmp_path / "whole.onnx", calibration=calibration)

    q = onnx.load(str(clipped))
    # The Clip merged into the conv: no Clip and no float node is left.
    assert Counter(n.op_type for n in q.graph.node)["Clip"] == 0
    assert onnx_float_nodes(clipped) == {}
    scale, zero_point = _conv_output_quantization(q)
    assert -3 - scale <= _lowest(scale, zero_point, 0) <= -3 + scale
    whole_scale, _ = _conv_output_quantization(onnx.load(str(whole)))
    top = float(pre.max())
    assert scale == pytest.approx((top + 3) / 255, rel=0.05)
    assert whole_scale == pytest.approx((top - float(pre.min())) / 255, rel=0.05)

    # Finer steps, and nothing lost where the clip saturates: a smaller error (measured 0.79×;
    # the squeeze-excite and projection add errors of their own).
    reference = run_onnx(fp32, x)
    errors = [np.abs(run_onnx(p, x) - reference).mean() for p in (clipped, whole)]
    assert errors[0] < 0.85 * errors[1]


def test_onnx_clip_is_exact_and_left_out_when_another_op_reads_the_input(
    tmp_path: Path,
) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = _images(8, 3) * 3
    counts = []
    for extra in (False, True):
        fp32 = export_onnx(
            WideStem(extra_reader=extra).eval(), tmp_path / f"{extra}.onnx", input_shape=SHAPE
        )
        prepared = tmp_path / f"{extra}_prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        rewritten = int8_form(onnx.load(str(prepared)))
        onnx.checker.check_model(rewritten)
        onnx.save(rewritten, str(tmp_path / f"{extra}_rewritten.onnx"))
        before = run_onnx(prepared, x)
        after = run_onnx(tmp_path / f"{extra}_rewritten.onnx", x)
        assert np.abs(before - after).max() <= 1e-4 * np.abs(before).max()
        counts.append(sum(n.name.endswith("_live_range") for n in rewritten.graph.node))
    # hard-swish's input, then none: the gate's shift goes into its conv's bias (its Clip
    # to 0…6 is the range), and the second reader keeps hard-swish's input whole.
    assert counts == [1, 0]


def _tflite_conv_output(path: Path) -> tuple[float, int]:
    """Scale and zero point of the int8 file's first conv output."""
    interpreter = tflite_interpreter(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    conv = next(
        op
        for op in interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
    )
    scale, zero_point = tensors[int(conv["outputs"][0])]["quantization"]
    return float(scale), int(zero_point)


def test_tflite_int8_spends_no_steps_where_hard_swish_is_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = WideStem().eval()
    with torch.no_grad():
        pre = model.conv(torch.from_numpy(_images(64, 1)))
    calibration, x = _images(64, 1).transpose(0, 2, 3, 1), _images(200, 2)
    fp32 = export_tflite(model, tmp_path / "m.tflite", input_shape=SHAPE)
    for_int8 = export_tflite(model, tmp_path / "for_int8.tflite", input_shape=SHAPE, for_int8=True)
    narrowed: list[list[str]] = []
    clip = tflite_int8_ranges.clip_dead_ranges

    def spy(content: bytes, qsvs: dict) -> list[str]:
        narrowed.append(clip(content, qsvs))
        return narrowed[-1]

    monkeypatch.setattr(tflite_int8_ranges, "clip_dead_ranges", spy)
    clipped = quantize_tflite_int8(for_int8, tmp_path / "clipped.tflite", calibration=calibration)
    monkeypatch.setattr(tflite_int8_ranges, "clip_dead_ranges", lambda *args: [])
    whole = quantize_tflite_int8(for_int8, tmp_path / "whole.tflite", calibration=calibration)

    # (x/6)·relu6(x + 3): the hard-swish input narrowed; the gate is relu6 fused into its conv.
    assert len(narrowed) == 1 and len(narrowed[0]) == 2  # x and x/6
    scale, zero_point = _tflite_conv_output(clipped)
    assert -3 - scale <= _lowest(scale, zero_point, -128) <= -3 + scale
    whole_scale, _ = _tflite_conv_output(whole)
    assert whole_scale == pytest.approx((float(pre.max()) - float(pre.min())) / 255, rel=0.05)

    reference = run_tflite(fp32, x)
    errors = [np.abs(run_tflite(p, x) - reference).mean() for p in (clipped, whole)]
    assert errors[0] < 0.85 * errors[1]  # measured 0.69×


def test_tflite_range_is_kept_whole_when_another_op_reads_the_input(tmp_path: Path) -> None:
    model = WideStem(extra_reader=True).eval()
    for_int8 = export_tflite(model, tmp_path / "for_int8.tflite", input_shape=SHAPE, for_int8=True)
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    flat = tfl_flatbuffer_utils.read_model(bytearray(for_int8.read_bytes()))
    names = [t.name.decode() for t in flat.subgraphs[0].tensors]
    qsvs = {n: {"min": np.array([-100.0]), "max": np.array([100.0])} for n in names}
    assert tflite_int8_ranges.clip_dead_ranges(for_int8.read_bytes(), qsvs) == []
    assert all(q["min"][0] == -100 and q["max"][0] == 100 for q in qsvs.values())


def test_quant_aware_simulation_clips_where_export_does() -> None:
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    model = build_from_config(network_config(space, space.max_subnet())).eval()
    live = live_ranges(model)
    hardswish = sum(isinstance(getattr(m, "act", None), nn.Hardswish) for m in model.modules())
    gates = sum(isinstance(getattr(m, "gate", None), nn.Hardsigmoid) for m in model.modules())
    assert Counter(live.values()) == {(-3.0, float("inf")): hardswish, (-3.0, 3.0): gates}
    images = torch.randn(16, *model.input_shape[1:]) * 4
    ranges = activation_ranges(model, images)
    for name, (floor, ceiling) in live.items():
        assert floor <= ranges[name][0] <= 0 <= ranges[name][1] <= ceiling
