"""The training layout: NCHW for a narrow head, channels-last after it, the same function."""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.memory_layout import to_training_layout
from once_for_all.search_space import get_space

CL = torch.channels_last


def _layouts(network: nn.Module, names: list[str], x: Tensor) -> dict[str, str]:
    """The memory layout of each named submodule's output for input ``x``."""
    seen: dict[str, str] = {}
    handles = []
    for name in names:

        def record(module: nn.Module, args: object, out: Tensor, name: str = name) -> None:
            # 1×1 maps are both layouts at once: say which one the strides are
            seen[name] = "channels_last" if out.stride(1) == 1 else "nchw"

        handles.append(network.get_submodule(name).register_forward_hook(record))
    network(x)
    for handle in handles:
        handle.remove()
    return seen


def test_tiny_head_is_nchw_and_the_body_channels_last() -> None:
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    net = to_training_layout(OFAMobileNetV3(space)).train()
    x = torch.randn(4, 1, 32, 32)
    layouts = _layouts(net, ["stem", "first_block.depthwise", "first_block", "blocks.0"], x)
    # The 8-channel stem and first block stay NCHW; the hook hands channels-last on.
    assert layouts == {
        "stem": "nchw",
        "first_block.depthwise": "nchw",
        "first_block": "channels_last",
        "blocks.0": "channels_last",
    }
    assert net.stem.conv.weight.is_contiguous()
    assert net.blocks[0].expand_conv.weight.is_contiguous(memory_format=CL)


def test_wide_head_is_channels_last_throughout() -> None:
    space = get_space("mbv3-imagenet")
    torch.manual_seed(0)
    net = to_training_layout(OFAMobileNetV3(space)).eval()
    subnet = space.min_subnet()
    net.set_active(subnet)
    x = torch.randn(1, 3, subnet.r, subnet.r)
    layouts = _layouts(net, ["stem", "first_block", "blocks.0"], x)
    assert set(layouts.values()) == {"channels_last"}


def test_same_function_and_gradients_in_any_input_layout() -> None:
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    plain = OFAMobileNetV3(space).train()
    laid_out = to_training_layout(OFAMobileNetV3(space).train())
    laid_out.load_state_dict(plain.state_dict())
    subnet = space.sample(random.Random(3))
    plain.set_active(subnet)
    laid_out.set_active(subnet)
    x = torch.randn(8, 1, subnet.r, subnet.r)
    torch.manual_seed(1)  # the same dropout mask for every forward pass
    expected = plain(x)
    expected.square().sum().backward()
    for inputs in (x, x.contiguous(memory_format=CL)):
        laid_out.zero_grad()
        torch.manual_seed(1)
        got = laid_out(inputs)
        got.square().sum().backward()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        for (name, p), q in zip(laid_out.named_parameters(), plain.parameters(), strict=True):
            if q.grad is None:  # not on the active subnet's path
                assert p.grad is None, name
                continue
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_twice_adds_no_second_set_of_hooks() -> None:
    net = OFAMobileNetV3(get_space("mbv3-tiny"))
    to_training_layout(net)
    hooks = (len(net._forward_pre_hooks), len(net.first_block._forward_hooks))
    assert hooks == (1, 1)
    to_training_layout(net)
    assert (len(net._forward_pre_hooks), len(net.first_block._forward_hooks)) == hooks
    # a second call still leaves the head NCHW
    assert net.stem.conv.weight.is_contiguous()
    assert set(net.state_dict()) == set(OFAMobileNetV3(get_space("mbv3-tiny")).state_dict())
