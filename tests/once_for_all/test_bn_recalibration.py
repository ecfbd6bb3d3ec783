"""BN recalibration (exact statistics over the given batches, on static networks and on a
supernet alike) and subnet evaluation with inherited weights, on real Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import torch
from torch import Tensor, nn

from once_for_all import (
    MobileNetV3,
    OFAMobileNetV3,
    evaluate_subnet,
    get_space,
    recalibrate_bn,
)
from once_for_all.data import BatchLoader, DataBundle, normalize, resize_batch
from once_for_all.evaluation import bn_batches

if TYPE_CHECKING:
    from conftest import SpaceCase

RESOLUTION = 32  # Fashion-MNIST is 28 px: this resizes


def fmnist_batches(
    data: DataBundle, *, n: int, size: int, resolution: int, seed: int = 0
) -> list[Tensor]:
    loader = BatchLoader(
        data.train, data.spec, batch_size=size, shuffle=True, seed=seed, limit=n * size
    )
    return [resize_batch(x, resolution) for x, _ in loader.epoch(0)]


def bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def scramble_running_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(99)
    for bn in bns(model):
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 5 + 0.1)


def batches_tracked(bn: nn.modules.batchnorm._BatchNorm) -> int:
    assert bn.num_batches_tracked is not None
    return int(bn.num_batches_tracked)


def per_channel(x: Tensor) -> Tensor:
    return x.transpose(0, 1).reshape(x.shape[1], -1)


@pytest.fixture
def tiny_model() -> MobileNetV3:
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    model = OFAMobileNetV3(space).extract(space.sample(0, r=[RESOLUTION]))
    scramble_running_stats(model)
    return model


def test_stem_bn_gets_exact_statistics_of_real_batches(
    tiny_model: MobileNetV3, fmnist_small: DataBundle
) -> None:
    batches = fmnist_batches(fmnist_small, n=4, size=64, resolution=RESOLUTION)
    assert [tuple(b.shape) for b in batches] == [(64, 1, RESOLUTION, RESOLUTION)] * 4

    assert recalibrate_bn(tiny_model, batches) == 4

    bn = tiny_model.stem.bn
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        features = [tiny_model.stem.conv(b) for b in batches]
    everything = per_channel(torch.cat(features))
    torch.testing.assert_close(bn.running_mean, everything.mean(1), rtol=1e-5, atol=1e-6)
    # equal-size batches: the variance is the average of the batches' unbiased variances,
    # which is within a fraction of a percent of the variance of all images together
    per_batch = torch.stack([per_channel(f).var(1) for f in features]).mean(0)
    torch.testing.assert_close(bn.running_var, per_batch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, everything.var(1), rtol=1e-2, atol=1e-6)
    assert batches_tracked(bn) == 4


def test_single_batch_gives_exact_unbiased_variance(
    tiny_model: MobileNetV3, fmnist_small: DataBundle
) -> None:
    (batch,) = fmnist_batches(fmnist_small, n=1, size=100, resolution=RESOLUTION, seed=5)
    recalibrate_bn(tiny_model, [batch])
    bn = tiny_model.stem.bn
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():
        flat = per_channel(tiny_model.stem.conv(batch))
    torch.testing.assert_close(bn.running_mean, flat.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, flat.var(1, unbiased=True), rtol=1e-5, atol=1e-6)


def test_every_bn_is_reset(tiny_model: MobileNetV3) -> None:
    # Inputs all zero: every BN's input is constant per channel, so each running variance
    # is exactly 0 and no scrambled value can survive.
    recalibrate_bn(tiny_model, [torch.zeros(4, 1, RESOLUTION, RESOLUTION)])
    for bn in bns(tiny_model):
        assert bn.running_var is not None
        assert float(bn.running_var.abs().max()) < 1e-6
        assert batches_tracked(bn) == 1


def test_leaves_eval_mode_and_restores_momentum(tiny_model: MobileNetV3) -> None:
    layers = bns(tiny_model)
    momenta: list[float | None] = [0.05, None, 0.3]
    for i, bn in enumerate(layers):
        bn.momentum = momenta[i % 3]
    tiny_model.train()
    recalibrate_bn(tiny_model, [torch.randn(4, 1, RESOLUTION, RESOLUTION)])
    assert not any(m.training for m in tiny_model.modules())
    assert [bn.momentum for bn in layers] == [momenta[i % 3] for i in range(len(layers))]


def test_raises_on_no_batches(tiny_model: MobileNetV3) -> None:
    layers = bns(tiny_model)
    tiny_model.train()
    with pytest.raises(
        ValueError, match=r"^BN recalibration got no batches: give it a non-empty slice"
    ):
        recalibrate_bn(tiny_model, [])
    assert not tiny_model.training
    assert all(bn.momentum == 0.1 for bn in layers)
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(tiny_model, [torch.randn(2, 1, RESOLUTION, RESOLUTION)], max_batches=0)


def test_max_batches(tiny_model: MobileNetV3) -> None:
    batches = [
        torch.randn(4, 1, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(i))
        for i in range(5)
    ]
    consumed: list[int] = []

    def stream() -> Iterator[Tensor]:
        for i, b in enumerate(batches):
            consumed.append(i)
            yield b

    assert recalibrate_bn(tiny_model, stream(), max_batches=2) == 2
    assert consumed[:2] == [0, 1] and len(consumed) <= 3  # lazily consumed
    two = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    recalibrate_bn(tiny_model, batches[:2])
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in two.items())


def test_supernet_recalibration_matches_extracted(
    case: SpaceCase, supernet: OFAMobileNetV3, fmnist_small: DataBundle
) -> None:
    space = case.space
    subnet = space.sample(3, e=[space.expand_ratios[0]], d=[space.depths[0]], r=[case.resolution])
    if space.in_channels == 1:
        batches = fmnist_batches(fmnist_small, n=2, size=8, resolution=case.resolution)
    else:
        batches = [case.inputs(20 + i, batch=case.calibration_batch) for i in range(2)]
    x = case.inputs(7)

    direct = supernet.extract(subnet)
    with torch.no_grad():
        before = direct(x)
    recalibrate_bn(direct, batches)

    supernet.set_active(subnet)
    recalibrate_bn(supernet, batches)
    via_supernet = supernet.extract(subnet)
    with torch.no_grad():
        expected = direct(x)
        assert float((via_supernet(x) - expected).abs().max()) <= 1e-4
        assert float((supernet(x) - expected).abs().max()) <= 1e-4
    assert float((expected - before).abs().max()) > 1e-3  # recalibration changed something


def test_evaluate_subnet_on_real_data(fmnist_small: DataBundle) -> None:
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    supernet = OFAMobileNetV3(space).eval()
    subnet = space.sample(1, r=[30])
    state = {k: v.clone() for k, v in supernet.state_dict().items()}

    acc = evaluate_subnet(supernet, subnet, fmnist_small, bn_images=200, limit=300)
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert evaluate_subnet(supernet, subnet, fmnist_small, bn_images=200, limit=300) == acc
    # the supernet's own weights and BN statistics are untouched
    assert all(torch.equal(v, supernet.state_dict()[k]) for k, v in state.items())

    # the same figure by hand: extract, recalibrate on the seeded training slice, score val
    model = supernet.extract(subnet)
    recalibrate_bn(model, bn_batches(fmnist_small, 30, images=200))
    images = normalize(fmnist_small.val.images[:300], fmnist_small.spec)
    with torch.no_grad():
        pred = model(resize_batch(images, 30)).argmax(1)
    assert acc == int((pred == fmnist_small.val.labels[:300]).sum()) / 300
