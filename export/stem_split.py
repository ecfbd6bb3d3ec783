"""The stem written as groups of channels, so that int8 gives each group a scale of its own.

int8 files quantize each activation tensor with one scale (TFLite, onnxruntime's QDQ and
NPU compilers alike). A MobileNetV3 stem's channels can span very different ranges: on the
fmnist supernet they reach 0.2 to 55 after hard-swish, and one scale leaves the small ones a
few steps; that tensor alone cost 3 points of top-1 agreement with fp32. ``split_stem``
writes the stem convolution, and the first block's depthwise convolution that reads it
channel by channel, once per group of channels (``once_for_all.quant_aware.stem_groups``):
each group's stem output is a tensor of its own, so the quantizer gives it its own scale.
The depthwise outputs are concatenated for the first block's projection, the only place
where the groups meet, after the wide range has been mixed down.

The rewrite is exact in float: the concatenation puts the channels in group order, and the
projection's input weights follow. A residual first block (OFA's spaces) adds the stem's
output to its own: that sum is kept in group order too, so every layer that reads it (the
following residual blocks, up to the first that is not) has its channels reordered the same
way, down to the first layer that mixes them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from export.errors import ExportError
from once_for_all.layers import ConvBNAct
from once_for_all.static_net import MBConvBlock, MobileNetV3


class SplitStemLayers(nn.Module):
    """A stem and the first block that reads it (a plain depthwise convolution and its
    projection, no expansion), per group of ``stem``'s output channels (see the module
    doc). The output's channels are the first block's, or, where it adds the stem's output
    (residual), in group order."""

    def __init__(
        self, stem: ConvBNAct, first: MBConvBlock, groups: Sequence[Sequence[int]]
    ) -> None:
        super().__init__()
        self.stems = nn.ModuleList(_channels(stem, g, depthwise=False) for g in groups)
        self.depthwise = nn.ModuleList(
            _channels(first.depthwise, g, depthwise=True) for g in groups
        )
        self.project = first.project
        self.residual = first.residual

    def forward(self, x: Tensor) -> Tensor:
        parts = [stem(x) for stem in self.stems]
        y = self.project(torch.cat([dw(p) for dw, p in zip(self.depthwise, parts, strict=True)], 1))
        return y + torch.cat(parts, 1) if self.residual else y


class SplitStem(nn.Module):
    """A MobileNetV3 whose stem and first block run per group of channels
    (``SplitStemLayers``). ``network`` is the model it came from, reordered; its own stem and
    first block are no longer used (the first block's projection is shared)."""

    def __init__(self, network: MobileNetV3, groups: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.network = network
        self.layers = SplitStemLayers(network.stem, _first_block(network), groups)

    def forward(self, x: Tensor) -> Tensor:
        network = self.network
        return network.forward_head(network.blocks[1:](self.layers(x)))


@torch.no_grad()
def split_stem(model: nn.Module, groups: Sequence[Sequence[int]]) -> nn.Module:
    """A copy of ``model`` (a MobileNetV3, possibly rewritten by ``xnnpack_form``) with its
    stem split into ``groups`` of output channels (each channel in exactly one group), as the
    module doc says; ``model`` itself when there is one group."""
    if len(groups) <= 1:
        return model
    problem = split_problem(model)
    if problem is not None:
        raise ExportError(f"cannot split the stem{problem}; export it with --stem-groups 1")
    assert isinstance(model, MobileNetV3)
    channels = model.stem.conv.out_channels
    order = [c for g in groups for c in g]
    if sorted(order) != list(range(channels)) or not all(groups):
        raise ExportError(
            f"stem groups {[list(g) for g in groups]} do not split the stem's {channels} "
            "channels into non-empty groups, each channel once"
        )
    network = copy.deepcopy(model).eval()
    first = _first_block(network)
    index = torch.tensor(order)
    project = first.project.conv
    project.weight.copy_(project.weight[:, index])
    if first.residual:
        _reorder_readers(network, index)
    return SplitStem(network, groups).eval()


def splittable(model: nn.Module) -> bool:
    """Whether ``split_stem`` can write ``model``'s stem in groups."""
    return split_problem(model) is None


def split_problem(model: nn.Module) -> str | None:
    """Why ``model``'s stem cannot be split (a phrase to follow "cannot split the stem"), or
    None when it can."""
    if not isinstance(model, MobileNetV3) or not isinstance(model.stem.conv, nn.Conv2d):
        return (
            f" of a {type(model).__name__}: only a MobileNetV3 with a plain stem convolution "
            "has one"
        )
    first = _first_block(model)
    depthwise = first.depthwise.conv
    if (
        first.expand is not None
        or first.se is not None
        or not isinstance(depthwise, nn.Conv2d)
        or depthwise.groups != depthwise.in_channels
    ):
        return (
            ": the first block does not read it with a plain depthwise convolution (it "
            "expands, has squeeze-excite or a banded kernel)"
        )
    if first.residual and any(
        isinstance(b, MBConvBlock) and b.expand is None for b in list(model.blocks)[1:]
    ):
        return ": a later block reads it channel by channel"
    return None


def _first_block(network: MobileNetV3) -> MBConvBlock:
    block = network.blocks[0]
    assert isinstance(block, MBConvBlock)
    return block


def _reorder_readers(network: MobileNetV3, index: Tensor) -> None:
    """The first block's sum leaves in group order: its projection's outputs follow, and so
    does each later residual block (its first conv's inputs, its projection's outputs) until
    a layer reads the sum into channels of its own."""
    _output_channels(_first_block(network).project, index)
    for block in list(network.blocks)[1:]:
        assert isinstance(block, MBConvBlock) and block.expand is not None  # split_problem
        _input_channels(block.expand.conv, index)
        if not block.residual:
            return
        _output_channels(block.project, index)
    _input_channels(network.final_expand.conv, index)


def _input_channels(conv: nn.Module, index: Tensor) -> None:
    assert isinstance(conv, nn.Conv2d) and conv.groups == 1
    conv.weight.copy_(conv.weight[:, index])


def _output_channels(layer: ConvBNAct, index: Tensor) -> None:
    """Reorder an activation-free ConvBNAct's output channels (conv rows, batch norm)."""
    conv = layer.conv
    assert isinstance(conv, nn.Conv2d)
    conv.weight.copy_(conv.weight[index])
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[index])
    if isinstance(layer.bn, nn.BatchNorm2d):
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(layer.bn, name)
            tensor.copy_(tensor[index])


@torch.no_grad()
def _channels(layer: ConvBNAct, channels: Sequence[int], *, depthwise: bool) -> ConvBNAct:
    """A copy of ``layer`` computing only output ``channels`` (a depthwise layer also reads
    only those); its activation is kept (it works channel by channel)."""
    index = torch.tensor(list(channels))
    conv = layer.conv
    part = copy.deepcopy(layer)
    part.conv = nn.Conv2d(
        len(index) if depthwise else conv.in_channels,
        len(index),
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        groups=len(index) if depthwise else conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    part.conv.weight.copy_(conv.weight[index])
    if conv.bias is not None and part.conv.bias is not None:
        part.conv.bias.copy_(conv.bias[index])
    if isinstance(layer.bn, nn.BatchNorm2d):
        bn = nn.BatchNorm2d(len(index), eps=layer.bn.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).copy_(getattr(layer.bn, name)[index])
        part.bn = bn
    return part.eval()
