"""Dynamic operators: elastic kernel (with its transformation matrices), elastic pointwise
conv, batch norm over a channel prefix, elastic squeeze-excite."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from once_for_all import make_divisible
from once_for_all.elastic_ops import (
    ElasticBatchNorm2d,
    ElasticDepthwiseConv,
    ElasticPointwiseConv,
    ElasticSqueezeExcite,
)
from once_for_all.layers import SqueezeExcite

CHANNELS = 16


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dw_conv(stride: int = 1) -> ElasticDepthwiseConv:
    torch.manual_seed(0)
    return ElasticDepthwiseConv(CHANNELS, [3, 5, 7], stride)


def perturb_transforms(conv: ElasticDepthwiseConv, seed: int = 1) -> None:
    g = gen(seed)
    with torch.no_grad():
        for big, small in ((7, 5), (5, 3)):
            m = conv.transform(big, small)
            m.add_(0.2 * torch.randn(m.shape, generator=g))


def centre(weight: Tensor, size: int) -> Tensor:
    start = (weight.shape[-1] - size) // 2
    return weight[:, :, start : start + size, start : start + size]


def apply_transform(weight: Tensor, matrix: Tensor) -> Tensor:
    """``matrix`` acts on each channel's flattened kernel as OFA's ``F.linear`` does."""
    c, _, k, _ = weight.shape
    return (weight.reshape(c, k * k) @ matrix.T).reshape(c, 1, k, k)


def batches_tracked(bn: nn.modules.batchnorm._BatchNorm) -> int:
    assert bn.num_batches_tracked is not None
    return int(bn.num_batches_tracked)


# ---- elastic kernel


def test_transforms_start_as_identity() -> None:
    conv = dw_conv()
    names = {name for name, _ in conv.named_parameters()}
    assert names == {"weight", "transform_7to5", "transform_5to3"}
    assert torch.equal(conv.transform(7, 5), torch.eye(25))
    assert torch.equal(conv.transform(5, 3), torch.eye(9))
    assert conv.weight.shape == (CHANNELS, 1, 7, 7)


def test_max_kernel_is_the_raw_weight() -> None:
    conv = dw_conv()
    perturb_transforms(conv)
    assert torch.equal(conv.active_weight(CHANNELS, 7), conv.weight)
    assert torch.equal(conv.active_weight(6, 7), conv.weight[:6])


def test_identity_transforms_take_the_centre() -> None:
    conv = dw_conv()
    assert torch.equal(conv.active_weight(CHANNELS, 5), centre(conv.weight, 5))
    assert torch.equal(conv.active_weight(CHANNELS, 3), centre(conv.weight, 3))
    assert torch.equal(conv.active_weight(8, 3), centre(conv.weight[:8], 3))


def test_learned_transforms_change_the_small_kernels() -> None:
    conv = dw_conv()
    perturb_transforms(conv)
    w = conv.weight.detach()
    m75, m53 = conv.transform(7, 5).detach(), conv.transform(5, 3).detach()
    k5 = conv.active_weight(CHANNELS, 5).detach()
    k3 = conv.active_weight(CHANNELS, 3).detach()
    assert not torch.allclose(k5, centre(w, 5))
    assert not torch.allclose(k3, centre(w, 3))
    expected5 = apply_transform(centre(w, 5), m75)
    # the 3x3 is the centre of the *transformed* 5x5, transformed again
    expected3 = apply_transform(centre(expected5, 3), m53)
    torch.testing.assert_close(k5, expected5, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k3, expected3, rtol=1e-6, atol=1e-6)
    assert conv.active_weight(8, 3).shape == (8, 1, 3, 3)
    torch.testing.assert_close(conv.active_weight(8, 3).detach(), expected3[:8])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_forward_is_a_depthwise_conv(kernel: int, stride: int) -> None:
    conv = dw_conv(stride)
    perturb_transforms(conv)
    x = torch.randn(2, 10, 9, 9, generator=gen(2))  # fewer channels than the maximum
    with torch.no_grad():
        y = conv(x, kernel)
        expected = F.conv2d(x, conv.active_weight(10, kernel), None, stride, kernel // 2, 1, 10)
    assert y.shape == (2, 10, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
    assert torch.equal(y, expected)


def grads_after_training_step(kernel: int) -> dict[str, Tensor | None]:
    conv = dw_conv()
    perturb_transforms(conv)
    conv.train()
    x = torch.randn(2, CHANNELS, 8, 8, generator=gen(3))
    conv(x, kernel).square().sum().backward()
    return {name: p.grad for name, p in conv.named_parameters()}


def test_training_the_max_kernel_leaves_transforms_alone() -> None:
    grads = grads_after_training_step(7)
    assert grads["transform_7to5"] is None and grads["transform_5to3"] is None
    weight_grad = grads["weight"]
    assert weight_grad is not None and bool((weight_grad != 0).all())


def test_training_kernel_5_trains_its_transform() -> None:
    grads = grads_after_training_step(5)
    g75, weight_grad = grads["transform_7to5"], grads["weight"]
    assert g75 is not None and float(g75.abs().sum()) > 0
    assert grads["transform_5to3"] is None
    assert weight_grad is not None
    # only the centre 5x5 of the 7x7 weight is used
    ring = weight_grad.clone()
    ring[:, :, 1:6, 1:6] = 0
    assert not ring.any()
    assert bool((centre(weight_grad, 5) != 0).any())


def test_training_kernel_3_trains_both_transforms() -> None:
    grads = grads_after_training_step(3)
    g75, g53, weight_grad = grads["transform_7to5"], grads["transform_5to3"], grads["weight"]
    assert g75 is not None and float(g75.abs().sum()) > 0
    assert g53 is not None and float(g53.abs().sum()) > 0
    assert weight_grad is not None
    ring = weight_grad.clone()
    ring[:, :, 1:6, 1:6] = 0
    assert not ring.any()


# ---- elastic pointwise conv


def pointwise(bias: bool) -> ElasticPointwiseConv:
    torch.manual_seed(0)
    conv = ElasticPointwiseConv(12, 20, bias=bias)
    if conv.bias is not None:
        with torch.no_grad():
            conv.bias.copy_(torch.randn(20, generator=gen(4)))
    return conv


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("cin", "cout"), [(12, 20), (12, 8), (5, 20), (5, 8)])
def test_pointwise_uses_weight_prefixes(bias: bool, cin: int, cout: int) -> None:
    conv = pointwise(bias)
    x = torch.randn(2, cin, 4, 4, generator=gen(5))
    b = conv.bias[:cout] if conv.bias is not None else None
    with torch.no_grad():
        y = conv(x, cout)
        expected = F.conv2d(x, conv.weight[:cout, :cin], b)
    assert y.shape == (2, cout, 4, 4)
    assert torch.equal(y, expected)


# ---- batch norm over a channel prefix


def elastic_bn(momentum: float | None = 0.1) -> ElasticBatchNorm2d:
    bn = ElasticBatchNorm2d(CHANNELS, momentum=momentum)
    g = gen(6)
    with torch.no_grad():
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.copy_(torch.randn(CHANNELS, generator=g))
        bn.running_var.copy_(torch.rand(CHANNELS, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(CHANNELS, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(CHANNELS, generator=g))
    return bn


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=True)


def test_bn_prefix_updates_only_its_running_stats() -> None:
    bn = elastic_bn().train()
    assert bn.running_mean is not None and bn.running_var is not None
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    x = 3.0 + 2.0 * torch.randn(4, 8, 5, 5, generator=gen(7))
    y = bn(x)
    batch_mean, batch_var = channel_stats(x)
    torch.testing.assert_close(bn.running_mean[:8], 0.9 * mean0[:8] + 0.1 * batch_mean)
    torch.testing.assert_close(bn.running_var[:8], 0.9 * var0[:8] + 0.1 * batch_var)
    assert torch.equal(bn.running_mean[8:], mean0[8:])
    assert torch.equal(bn.running_var[8:], var0[8:])
    assert batches_tracked(bn) == 1
    # training mode normalises with the batch's own (biased) statistics
    biased = x.var((0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(biased + bn.eps)
    expected = expected * bn.weight[:8].view(1, -1, 1, 1) + bn.bias[:8].view(1, -1, 1, 1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_bn_prefix_in_eval_uses_running_stats() -> None:
    bn = elastic_bn().eval()
    assert bn.running_mean is not None and bn.running_var is not None
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(2, 8, 3, 3, generator=gen(8))
    with torch.no_grad():
        y = bn(x)
    rm, rv = bn.running_mean[:8].view(1, -1, 1, 1), bn.running_var[:8].view(1, -1, 1, 1)
    expected = (x - rm) / torch.sqrt(rv + bn.eps) * bn.weight[:8].view(1, -1, 1, 1)
    expected = expected + bn.bias[:8].view(1, -1, 1, 1)
    torch.testing.assert_close(y, expected)
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in state.items())


def test_bn_prefix_cumulative_average_without_momentum() -> None:
    bn = elastic_bn(momentum=None)
    bn.reset_running_stats()
    bn.train()
    assert bn.running_mean is not None and bn.running_var is not None
    xs = [torch.randn(3, 8, 4, 4, generator=gen(9 + i)) * (i + 1) + i for i in range(3)]
    for x in xs:
        bn(x)
    stats = [channel_stats(x) for x in xs]
    torch.testing.assert_close(bn.running_mean[:8], torch.stack([m for m, _ in stats]).mean(0))
    torch.testing.assert_close(bn.running_var[:8], torch.stack([v for _, v in stats]).mean(0))
    assert torch.equal(bn.running_mean[8:], torch.zeros(CHANNELS - 8))
    assert torch.equal(bn.running_var[8:], torch.ones(CHANNELS - 8))
    assert batches_tracked(bn) == 3


@pytest.mark.parametrize("training", [True, False])
def test_bn_full_width_is_plain_batch_norm(training: bool) -> None:
    bn = elastic_bn()
    plain = nn.BatchNorm2d(CHANNELS)
    plain.load_state_dict(bn.state_dict())
    bn.train(training)
    plain.train(training)
    x = torch.randn(2, CHANNELS, 3, 3, generator=gen(12))
    with torch.no_grad():
        assert torch.equal(bn(x), plain(x))
    for k, v in plain.state_dict().items():
        assert torch.equal(bn.state_dict()[k], v), k


# ---- elastic squeeze-excite


@pytest.mark.parametrize("channels", [96, 64, 40])
def test_squeeze_excite_matches_static_slice(channels: int) -> None:
    torch.manual_seed(0)
    se = ElasticSqueezeExcite(96)
    assert se.reduce.weight.shape == (24, 96, 1, 1)
    with torch.no_grad():
        assert se.reduce.bias is not None and se.expand.bias is not None
        se.reduce.bias.copy_(torch.randn(se.reduce.bias.shape, generator=gen(13)))
        se.expand.bias.copy_(torch.randn(se.expand.bias.shape, generator=gen(14)))
    mid = se.mid_channels(channels)
    assert mid == make_divisible(channels // 4, 8)
    static = SqueezeExcite(channels, mid)
    static.load_state_dict(
        {
            "reduce.weight": se.reduce.weight[:mid, :channels],
            "reduce.bias": se.reduce.bias[:mid],
            "expand.weight": se.expand.weight[:channels, :mid],
            "expand.bias": se.expand.bias[:channels],
        }
    )
    x = torch.randn(2, channels, 5, 5, generator=gen(15))
    with torch.no_grad():
        y = se(x)
        assert torch.equal(y, static(x))
    assert not torch.allclose(y, x)  # the gate does something
