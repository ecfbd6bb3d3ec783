"""The graph form that LiteRT's default CPU delegate, XNNPACK, runs fast and in one piece.

``xnnpack_form`` rewrites a copy of a model before TFLite conversion. Both rewrites are
exact (the model computes the same function, up to float rounding):

- **Depthwise convolutions larger than 5×5 become row bands.** XNNPACK's depthwise kernels
  take up to 25 taps in one pass. Measured on this project's AVX2 x86 CPU (1 thread, 480
  channels, 20×20, LiteRT 2.3), a 7×7 depthwise conv took 4.9 ms in fp32 and 22 ms in int8,
  against 0.68 ms in onnxruntime; as three bands (3×7, 3×7, 1×7, summed) it took 1.3 ms and
  0.83 ms. Batch norm is folded into the bands, so no float op is left between them.
- **For int8, hard-swish is written in int8 ops that XNNPACK delegates, and its 1/6 goes
  into the weights of the layers that read it.** XNNPACK runs HARD_SWISH only in float, so
  an int8 HARD_SWISH ends the delegated partition: the largest mbv3-imagenet subnet fell
  into 28 partitions, its int8 file ran 4× slower than fp32. ADD (with a fused RELU6) and
  MUL stay int8 and delegated. In a MobileNetV3 block or head every reader of a hard-swish
  is linear in it (the next conv, squeeze-excite's pooling and product, the classifier), so
  hard-swish is written as 6·hswish(x) = x·relu6(x+3) and those readers' weights are scaled
  by 1/6: two int8 element-wise ops per activation instead of three (timed side by side
  against the three-op form, 3 runs on a shared AVX2 EPYC: int8 median 3-6% faster on the
  mbv3-imagenet min subnet at 160 px, within noise on the max subnet). Squeeze-excite's
  hard-sigmoid, relu6(z+3)/6, becomes a RELU6 fused into its expand conv (bias + 3), its
  1/6 going into the projection conv. The stem's hard-swish also feeds residual sums: each
  residual block's output is scaled by 6 too (its projection's batch norm) until a block
  that adds no input takes the 1/6. Any other hard-swish is written as (x/6)·relu6(x+3).
  The TFLite converter fuses x·relu6(x+3)/6 and x·hardsigmoid(x) back into HARD_SWISH, not
  these forms. fp32 files keep HARD_SWISH, which XNNPACK runs in float as one op.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from once_for_all.head import MobileNetV3Head
from once_for_all.layers import ConvBNAct, SqueezeExcite
from once_for_all.static_net import MBConvBlock, MobileNetV3

MAX_TAPS = 25  # XNNPACK's largest one-pass depthwise kernel (5×5)


def xnnpack_form(model: nn.Module, *, int8: bool) -> nn.Module:
    """A copy of ``model`` (in eval mode) rewritten as the module docstring says; ``int8``
    also rewrites hard-swish and hard-sigmoid. ``model`` itself is left as it was."""
    rewritten = copy.deepcopy(model).eval()
    if int8:
        _fold_sixths(rewritten)  # before banding, which folds the scaled weights
    _rewrite(rewritten, int8=int8)
    return rewritten


class BandedDepthwise(nn.Module):
    """A k×k depthwise convolution (k > 5) as bands of rows, each a VALID convolution of at
    most ``MAX_TAPS`` taps over the padded input, summed; the folded batch norm is the first
    band's bias.

    Taps that only ever meet padding are left out: on a 2×2 map a 7×7 kernel with padding 3
    reads 3×3 of its taps. Besides saving work, this keeps every band's output from being a
    constant, which int8 calibration cannot give a range (XNNPACK then refuses the graph).
    """

    def __init__(self, weight: Tensor, bias: Tensor, *, stride: int, padding: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)
        self.kernel, self.stride, self.padding = weight.shape[-1], stride, padding

    def forward(self, x: Tensor) -> Tensor:
        p, s, k = self.padding, self.stride, self.kernel
        rows = _live_taps(x.shape[2], k, s, p)
        cols = _live_taps(x.shape[3], k, s, p)
        out_h = (x.shape[2] + 2 * p - k) // s + 1
        out_w = (x.shape[3] + 2 * p - k) // s + 1
        x = F.pad(x, (p, p, p, p))
        x = x[:, :, :, cols.start : cols.start + (out_w - 1) * s + len(cols)]
        height = max(1, MAX_TAPS // len(cols))
        total: Tensor | None = None
        for top in range(rows.start, rows.stop, height):
            bottom = min(top + height, rows.stop)
            band = x[:, :, top : top + (out_h - 1) * s + bottom - top]
            w = self.weight[:, :, top:bottom, cols.start : cols.stop]
            y = F.conv2d(band, w, self.bias if total is None else None, s, 0, 1, x.shape[1])
            total = y if total is None else total + y
        assert total is not None
        return total


def _live_taps(size: int, kernel: int, stride: int, padding: int) -> range:
    """The kernel taps along one axis that meet the input (not only padding) at some output."""
    last = (size + 2 * padding - kernel) // stride  # the last output position
    return range(max(0, padding - last * stride), min(kernel, padding + size))


class SplitHardswish(nn.Module):
    """hard-swish as (x/6)·relu6(x+3): the int8 form XNNPACK delegates (see module doc)."""

    def forward(self, x: Tensor) -> Tensor:
        return (x * (1.0 / 6.0)) * F.relu6(x + 3.0)


class ScaledHardswish(nn.Module):
    """6·hard-swish(x) = x·relu6(x+3): hard-swish whose 1/6 its readers' weights hold."""

    def forward(self, x: Tensor) -> Tensor:
        return x * F.relu6(x + 3.0)


SIXTH = 1.0 / 6.0


@torch.no_grad()
def _fold_sixths(model: nn.Module) -> None:
    """Write the hard-swishes and hard-sigmoids of ``model``'s MobileNetV3 blocks, head and
    stem as ScaledHardswish and ReLU6, their 1/6 moved into the weights of the layers that
    read them (see module doc). Exact classes only: a subclass may read them differently."""
    for module in model.modules():
        if type(module) is MBConvBlock:
            _fold_block(module)
        if type(module) in (MobileNetV3, MobileNetV3Head):
            head: MobileNetV3Head = module  # type: ignore[assignment]
            if _scale_act(head.final_expand):
                _scale(head.feature_mix.conv, SIXTH)
            if _scale_act(head.feature_mix):
                _scale(head.classifier, SIXTH)
        if type(module) is MobileNetV3 and _scale_act(module.stem):
            _fold_stem_scale(module)


def _fold_stem_scale(model: MobileNetV3) -> None:
    """The stem's output is 6× what it was: the first block's first conv takes the 1/6; a
    residual block adds its input to its output, so its projection's batch norm scales the
    output by 6 too and the next block takes the 1/6 (the head, after the last block)."""
    scale = 6.0
    for block in model.blocks:
        assert isinstance(block, MBConvBlock)
        _scale((block.depthwise if block.expand is None else block.expand).conv, 1.0 / scale)
        if not block.residual:
            return
        _scale_output(block.project, scale)
    _scale(model.final_expand.conv, 1.0 / scale)


def _fold_block(block: MBConvBlock) -> None:
    if block.expand is not None and _scale_act(block.expand):
        _scale(block.depthwise.conv, SIXTH)
    project = 1.0
    if _scale_act(block.depthwise):
        project = SIXTH  # y·gate is linear in y
        if block.se is not None:
            _scale(block.se.reduce, SIXTH)  # through the mean
    if block.se is not None and _fold_gate(block.se):
        project *= SIXTH
    _scale(block.project.conv, project)


def _scale_act(layer: ConvBNAct) -> bool:
    """Replace ``layer``'s hard-swish by ScaledHardswish; False if it has none."""
    if type(layer.act) is not nn.Hardswish:
        return False
    layer.act = ScaledHardswish()
    return True


def _fold_gate(se: SqueezeExcite) -> bool:
    """hard-sigmoid(z) = relu6(z+3)/6: the +3 into the expand conv's bias, the gate a ReLU6
    (6× the hard-sigmoid); False if the gate is something else."""
    if type(se.gate) is not nn.Hardsigmoid or se.expand.bias is None:
        return False
    se.expand.bias.add_(3.0)
    se.gate = nn.ReLU6()  # type: ignore[assignment]
    return True


def _scale(layer: nn.Conv2d | nn.Linear, factor: float) -> None:
    """Scale a linear layer's input weights: it reads an input ``1 / factor`` times as large."""
    if factor != 1.0:
        layer.weight.mul_(factor)


def _scale_output(layer: ConvBNAct, factor: float) -> None:
    """Make an activation-free ConvBNAct's output ``factor`` times as large."""
    assert isinstance(layer.act, nn.Identity)
    affine = layer.bn if isinstance(layer.bn, nn.BatchNorm2d) else layer.conv
    affine.weight.mul_(factor)
    if affine.bias is not None:
        affine.bias.mul_(factor)


def _rewrite(module: nn.Module, *, int8: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, ConvBNAct) and _too_wide(child.conv):
            weight, bias = _folded(child.conv, child.bn)
            child.conv = BandedDepthwise(  # type: ignore[assignment]
                weight, bias, stride=child.conv.stride[0], padding=_padding(child.conv)
            )
            child.bn = nn.Identity()
        elif isinstance(child, nn.Conv2d) and _too_wide(child):
            weight, bias = _folded(child, nn.Identity())
            setattr(
                module,
                name,
                BandedDepthwise(weight, bias, stride=child.stride[0], padding=_padding(child)),
            )
            continue
        elif int8 and isinstance(child, nn.Hardswish):
            setattr(module, name, SplitHardswish())
            continue
        _rewrite(child, int8=int8)


def _too_wide(conv: nn.Conv2d) -> bool:
    """A square, undilated, zero-padded depthwise conv with more taps than XNNPACK's
    one-pass kernels take."""
    kh, kw = conv.kernel_size
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and kh == kw
        and kh * kw > MAX_TAPS
        and conv.dilation == (1, 1)
        and conv.stride[0] == conv.stride[1]
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and conv.padding[0] == conv.padding[1]
    )


def _padding(conv: nn.Conv2d) -> int:
    return int(conv.padding[0])  # _too_wide checked it is a tuple


@torch.no_grad()
def _folded(conv: nn.Conv2d, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """The conv's weight and bias with an eval-mode batch norm after it folded in."""
    weight = conv.weight.detach().clone()
    bias = (
        conv.bias.detach().clone()
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=weight.dtype)
    )
    if isinstance(bn, nn.BatchNorm2d):
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean) * scale + bn.bias
    return weight, bias
