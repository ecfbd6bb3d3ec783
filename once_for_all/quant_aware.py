"""Quantization-aware fine-tuning, the light way: simulate int8 activations while training.

Post-training int8 quantization gives every activation tensor one scale (per tensor, as
TFLite and onnxruntime's QDQ do). A MobileNetV3 stem whose channels span very different
ranges then loses most levels in its small channels, and top-1 agreement with fp32 falls to
~95%. Fine-tuning with those activations fake-quantized (min/max ranges from calibration
images, straight-through gradients) teaches the weights to live with it; the usual
post-training quantization of the fine-tuned model then keeps its accuracy. Weights are left
in float: per-channel int8 weights cost little.

The stem's output channels may be quantized in groups of similar range, each with a scale of
its own (``stem_groups``), as export writes the stem (``export.stem_split``):
one scale for all of them left the small channels of the fmnist supernet's stem (0.2 to 55
after hard-swish) a few steps each.

The input of each hard-swish is clipped at −3 and that of each hard-sigmoid at −3 and 3
before it is quantized, as export quantizes them (``export.onnx_int8_form``,
``export.tflite_int8_ranges``): the functions are flat there, so the clip changes nothing
in float and leaves the quantization steps to the range that matters.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor, nn

from once_for_all.errors import EdgenasError
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


class StemGroupsError(EdgenasError, ValueError):
    """More stem groups than the stem has channels, or fewer than one."""


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
def channel_ranges(
    model: nn.Module, images: Tensor, names: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Per-channel min and max, as a (channels, 2) tensor, of each quantized output (or of
    ``names`` among them) over ``images`` (eval mode), within ``live_ranges``; the range always
    includes 0."""
    modules = quantized_modules(model)
    seen: dict[str, Tensor] = {}
    handles = []
    for name in modules if names is None else names:

        def record(_m: nn.Module, _i: object, out: Tensor, name: str = name) -> None:
            dims = [d for d in range(out.dim()) if d != 1]  # all but the channels
            lo, hi = out.amin(dims).clamp(max=0.0), out.amax(dims).clamp(min=0.0)
            if name in seen:
                lo, hi = torch.minimum(seen[name][:, 0], lo), torch.maximum(seen[name][:, 1], hi)
            seen[name] = torch.stack([lo, hi], 1)

        handles.append(modules[name].register_forward_hook(record))
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
        if name in seen:
            seen[name] = torch.stack(
                [seen[name][:, 0].clamp(min=floor), seen[name][:, 1].clamp(max=ceiling)], 1
            )
    return seen


def activation_ranges(model: nn.Module, images: Tensor) -> dict[str, tuple[float, float]]:
    """Min and max of each quantized output over ``images`` (eval mode), as min/max
    calibration computes them, within ``live_ranges``; the range always includes 0."""
    return _tensor_ranges(channel_ranges(model, images))


def _tensor_ranges(per_channel: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """One (min, max) per tensor from ``channel_ranges``."""
    return {name: group_ranges(r, [range(len(r))])[0] for name, r in per_channel.items()}


def stem_outputs(model: nn.Module) -> list[str]:
    """The quantized outputs of ``model``'s stem (its conv or batch norm, its activation):
    the tensors whose channels ``stem_groups`` groups. Empty for a model without a stem."""
    return [name for name in quantized_modules(model) if name.startswith("stem.")]


def check_stem_groups(groups: int, channels: int | None = None) -> None:
    """Refuse fewer groups than one, or more than the stem's ``channels`` (where known)."""
    if groups < 1:
        raise StemGroupsError(f"stem groups {groups}: give 1 or more (1 keeps the stem whole)")
    if channels is not None and groups > channels:
        raise StemGroupsError(
            f"stem groups {groups}: the stem has {channels} channels; give 1 to {channels}"
        )


def stem_groups(model: nn.Module, images: Tensor, groups: int) -> list[list[int]]:
    """The stem's output channels in ``groups`` groups of (nearly) equal size, by the range of
    the stem's output over ``images``, smallest first: each group's int8 tensors get a scale
    of their own. One group (all channels, in order) when ``groups`` is 1 or there is no stem."""
    names = stem_outputs(model)
    check_stem_groups(groups)
    if not names:
        return []
    ranges = channel_ranges(model, images, names[-1:])[names[-1]]
    channels = len(ranges)
    if groups == 1:
        return [list(range(channels))]
    check_stem_groups(groups, channels)
    # Ties (equal ranges) keep channel order, so the grouping repeats on equal data.
    order = sorted(range(channels), key=lambda c: (float(ranges[c, 1] - ranges[c, 0]), c))
    return [sorted(order[a:b]) for a, b in itertools.pairwise(group_bounds(channels, groups))]


def group_bounds(channels: int, groups: int) -> list[int]:
    """Where ``stem_groups`` cuts ``channels`` into ``groups`` groups of (nearly) equal size:
    each group's first position, then ``channels``."""
    return [round(i * channels / groups) for i in range(groups + 1)]


def consecutive_groups(channels: int, groups: int) -> list[list[int]]:
    """``channels`` in ``groups`` groups of consecutive channels, of the sizes ``stem_groups``
    gives: all that latency depends on, for models whose ranges do not matter (random
    weights timed for a latency table)."""
    return [list(range(a, b)) for a, b in itertools.pairwise(group_bounds(channels, groups))]


def fake_quantize(x: Tensor, lo: float, hi: float) -> Tensor:
    """int8 affine quantize-dequantize of ``x`` over [lo, hi], with a straight-through
    gradient."""
    scale = max(hi - lo, 1e-8) / 255.0
    zero_point = round(-128 - lo / scale)
    q = (torch.clamp(torch.round(x / scale) + zero_point, -128, 127) - zero_point) * scale
    return x + (q - x).detach()


def fake_quantize_groups(
    x: Tensor, groups: Sequence[Sequence[int]], ranges: Sequence[tuple[float, float]]
) -> Tensor:
    """``fake_quantize`` of each group of ``x``'s channels (dim 1) over its own range."""
    with torch.no_grad():
        q = x.clone()
        for channels, (lo, hi) in zip(groups, ranges, strict=True):
            q[:, list(channels)] = fake_quantize(x[:, list(channels)], lo, hi)
    return x + (q - x).detach()


def group_ranges(per_channel: Tensor, groups: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
    """The (min, max) of each group of channels from ``channel_ranges``' (channels, 2)."""
    return [
        (float(per_channel[list(g), 0].min()), float(per_channel[list(g), 1].max())) for g in groups
    ]


@contextmanager
def int8_activations(
    model: nn.Module, calibration: Tensor, *, groups: int = 1
) -> Iterator[dict[str, tuple[float, float]]]:
    """Within the block, ``model``'s activations are int8-simulated with ranges measured on
    ``calibration`` (float NCHW images as the model takes them), the stem's in ``groups``
    groups of channels (``stem_groups``); yields the per-tensor ranges."""
    per_channel = channel_ranges(model, calibration)
    ranges = _tensor_ranges(per_channel)
    stem = stem_groups(model, calibration, groups)
    grouped = set(stem_outputs(model)) if len(stem) > 1 else set()
    handles = []
    for name, module in quantized_modules(model).items():
        if name not in ranges:
            continue
        quantize: Callable[[Tensor], Tensor]
        if name in grouped:
            by_group = group_ranges(per_channel[name], stem)
            quantize = partial(fake_quantize_groups, groups=stem, ranges=by_group)
        else:
            quantize = partial(fake_quantize, lo=ranges[name][0], hi=ranges[name][1])
        handles.append(module.register_forward_hook(lambda _m, _i, out, q=quantize: q(out)))
    try:
        yield ranges
    finally:
        for h in handles:
            h.remove()
