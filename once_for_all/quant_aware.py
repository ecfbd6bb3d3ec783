"""Quantization-aware fine-tuning, the light way: simulate int8 activations while training.

Post-training int8 quantization gives every activation tensor one scale (per tensor, as
TFLite and onnxruntime's QDQ do). A MobileNetV3 stem whose channels span very different
ranges then loses most levels in its small channels, and top-1 agreement with fp32 falls to
~95%. Fine-tuning with those activations fake-quantized (min/max ranges from calibration
images, straight-through gradients) teaches the weights to live with it; the usual
post-training quantization of the fine-tuned model then keeps its accuracy. Weights are left
in float: per-channel int8 weights cost little.

The input of each hard-swish is clipped at −3 and that of each hard-sigmoid at −3 and 3
before it is quantized, as export quantizes them (``export.onnx_int8_form``,
``export.tflite_int8_ranges``): the functions are flat there, so the clip changes nothing
in float and leaves the quantization steps to the range that matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from once_for_all.layers import SqueezeExcite
from once_for_all.static_net import MBConvBlock

# Outputs that become int8 tensors in a quantized graph (a conv followed by BN is fused with
# it, so only the BN output counts).
_QUANTIZED_OUTPUTS = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Linear,
    SqueezeExcite,
    MBConvBlock,
)


def quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs a per-tensor int8 graph quantizes. Converters fuse a conv
    with its BN, and a conv (or conv + BN) with a following ReLU: only the last output of
    such a chain is a tensor of its own."""
    fused: set[int] = set()
    for m in model.modules():
        if isinstance(getattr(m, "bn", None), nn.BatchNorm2d):
            fused.add(id(m.conv))
            if isinstance(getattr(m, "act", None), nn.ReLU):
                fused.add(id(m.bn))
        if isinstance(m, SqueezeExcite):
            fused.add(id(m.reduce))  # reduce → ReLU
    return {
        name: m
        for name, m in model.named_modules()
        if id(m) not in fused and isinstance(m, (*_QUANTIZED_OUTPUTS, nn.Conv2d))
    }


def live_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """The quantized outputs that only a hard-swish or a hard-sigmoid reads, with the range
    beyond which that function is flat: (−3, inf) for hard-swish, (−3, 3) for hard-sigmoid."""
    live: dict[str, tuple[float, float]] = {}
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, SqueezeExcite) and type(m.gate) is nn.Hardsigmoid:
            live[f"{prefix}expand"] = (-3.0, 3.0)
        elif type(getattr(m, "act", None)) is nn.Hardswish and isinstance(
            getattr(m, "conv", None), nn.Conv2d
        ):
            before = "bn" if isinstance(getattr(m, "bn", None), nn.BatchNorm2d) else "conv"
            live[f"{prefix}{before}"] = (-3.0, float("inf"))
    return live


@torch.no_grad()
def activation_ranges(model: nn.Module, images: Tensor) -> dict[str, tuple[float, float]]:
    """Min and max of each quantized output over ``images`` (eval mode), as min/max
    calibration computes them, within ``live_ranges``; the range always includes 0."""
    ranges: dict[str, tuple[float, float]] = {}
    handles = []
    for name, module in quantized_modules(model).items():

        def record(_m: nn.Module, _i: object, out: Tensor, name: str = name) -> None:
            lo, hi = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(lo, float(out.min())), max(hi, float(out.max())))

        handles.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        for batch in images.split(256):
            model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, (floor, ceiling) in live_ranges(model).items():
        if name in ranges:
            lo, hi = ranges[name]
            ranges[name] = (max(lo, floor), min(hi, ceiling))
    return ranges


def fake_quantize(x: Tensor, lo: float, hi: float) -> Tensor:
    """int8 affine quantize-dequantize of ``x`` over [lo, hi], with a straight-through
    gradient."""
    scale = max(hi - lo, 1e-8) / 255.0
    zero_point = round(-128 - lo / scale)
    q = (torch.clamp(torch.round(x / scale) + zero_point, -128, 127) - zero_point) * scale
    return x + (q - x).detach()


@contextmanager
def int8_activations(
    model: nn.Module, calibration: Tensor
) -> Iterator[dict[str, tuple[float, float]]]:
    """Within the block, ``model``'s activations are int8-simulated with ranges measured on
    ``calibration`` (float NCHW images as the model takes them); yields the ranges."""
    ranges = activation_ranges(model, calibration)
    handles = [
        module.register_forward_hook(lambda _m, _i, out, r=ranges[name]: fake_quantize(out, *r))
        for name, module in quantized_modules(model).items()
        if name in ranges
    ]
    try:
        yield ranges
    finally:
        for h in handles:
            h.remove()
