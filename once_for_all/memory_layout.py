"""The memory layout a network trains in on the CPU.

Channels-last is about 3x faster than NCHW for the depthwise convolutions (76 vs 220 ms a
step, measured on the tiny space), so the network trains channels-last, except for a narrow
head. PyTorch's channels-last batch norm on the CPU is several times slower than NCHW for a
layer of 8 channels (10.6 vs 1.8 ms forward and backward for a 128×8×32×32 batch; 16, 32 and
48 channels cost about what NCHW does, 24 twice as much per element), and in the tiny space
the stem and the fixed first block are 8 channels wide at the full input resolution. Those
two layers therefore stay NCHW and the activations change layout once, after the first block:
an expand-2 step of recipes/fmnist.yaml (4 subnets, batch 128, 2 threads, an AVX-512 Xeon)
went from 382 to 344 ms.
"""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.static_net import MobileNetV3

# Layers narrower than this keep NCHW (see above).
NARROW_CHANNELS = 16

_HOOKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def to_training_layout(network: ModuleT) -> ModuleT:
    """Convert ``network``'s weights in place to the layout it trains fastest in and return it.

    Inputs of any layout are accepted: the network brings them to its stem's layout itself
    (forward hooks, so the function it computes and its state dict are unchanged). Modules
    other than this project's networks go channels-last throughout.
    """
    network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    head = _head(network)
    head_format = torch.channels_last
    if head and _widest_batch_norm(head) < NARROW_CHANNELS:
        head_format = torch.contiguous_format
        for layer in head:
            layer.to(memory_format=head_format)  # type: ignore[call-overload]
    if network in _HOOKED:
        return network  # one set of hooks however often this is called

    def stem_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x: Tensor = args[0]
        return (x.contiguous(memory_format=head_format), *args[1:])

    network.register_forward_pre_hook(stem_input)
    if head and head_format is torch.contiguous_format:
        head[-1].register_forward_hook(_to_channels_last)
    _HOOKED.add(network)
    return network


def _head(network: nn.Module) -> tuple[nn.Module, ...]:
    """The stem and the fixed first block of our networks; nothing for other modules."""
    if isinstance(network, OFAMobileNetV3):
        return network.stem, network.first_block
    if isinstance(network, MobileNetV3):
        return network.stem, network.blocks[0]
    return ()


def _widest_batch_norm(layers: tuple[nn.Module, ...]) -> int:
    return max(
        (
            m.num_features
            for layer in layers
            for m in layer.modules()
            if isinstance(m, nn.BatchNorm2d)
        ),
        default=NARROW_CHANNELS,
    )


def _to_channels_last(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
    return output.contiguous(memory_format=torch.channels_last)
