"""Standalone torch modules for single blocks: what gets exported and timed per table entry.

They are built from the same layers as the static network (the head block is its head
class itself, ``MobileNetV3Head``), so a block measured alone runs the same operators as
inside a subnet. Weights are random (seeded): latency does not depend
on their values.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from export.stem_split import SplitStemLayers
from latency.blocks import BlockSpec
from once_for_all.head import MobileNetV3Head
from once_for_all.layers import ConvBNAct
from once_for_all.quant_aware import consecutive_groups
from once_for_all.static_net import MBConvBlock


class StemBlock(nn.Module):
    """Stem convolution followed by the fixed first block."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        stem = spec.config["stem"]
        self.stem = ConvBNAct(
            stem["in_channels"], stem["out_channels"], 3, stride=stem["stride"], act=stem["act"]
        )
        self.first_block = MBConvBlock(spec.config["first_block"])

    def forward(self, x: Tensor) -> Tensor:
        return self.first_block(self.stem(x))


def split_stem_block(block: StemBlock, groups: int) -> nn.Module:
    """``block`` with its stem in ``groups`` groups of consecutive channels, as an int8 file
    with its stem split runs it (``export.stem_split``): the same function, in the same
    channel order."""
    parts = consecutive_groups(block.stem.conv.out_channels, groups)
    return SplitStemLayers(block.stem, block.first_block, parts)


def block_module(spec: BlockSpec, *, seed: int = 0) -> nn.Module:
    """An eval-mode module computing ``spec`` with seeded random weights."""
    torch.manual_seed(seed)
    module: nn.Module
    if spec.kind == "stem":
        module = StemBlock(spec)
        if spec.config.get("groups", 1) > 1:
            module = split_stem_block(module, spec.config["groups"])
    elif spec.kind == "head":
        module = MobileNetV3Head(spec.config)
    else:
        module = MBConvBlock(spec.config)
    return module.eval()


def block_input_shape(spec: BlockSpec) -> tuple[int, int, int, int]:
    """NCHW input shape (batch 1)."""
    c, h, w = spec.input_shape
    return (1, c, h, w)
