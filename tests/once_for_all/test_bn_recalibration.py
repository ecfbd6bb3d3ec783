"""BN recalibration (OFA's set_running_statistics: exact statistics over the given batches, on
static networks and on a supernet alike) and subnet evaluation with inherited weights, on real
Fashion-MNIST."""

from __future__ import annotations

import copy
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
from once_for_all.data.splits import eval_head
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
    # equal-size batches: the variance is the average of the batches' biased variances (OFA's),
    # which is within a fraction of a percent of the variance of all images together
    per_batch = torch.stack([per_channel(f).var(1, unbiased=False) for f in features]).mean(0)
    torch.testing.assert_close(bn.running_var, per_batch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, everything.var(1), rtol=1e-2, atol=1e-6)


def test_single_batch_gives_exact_biased_variance(
    tiny_model: MobileNetV3, fmnist_small: DataBundle
) -> None:
    (batch,) = fmnist_batches(fmnist_small, n=1, size=100, resolution=RESOLUTION, seed=5)
    recalibrate_bn(tiny_model, [batch])
    bn = tiny_model.stem.bn
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():
        flat = per_channel(tiny_model.stem.conv(batch))
    torch.testing.assert_close(bn.running_mean, flat.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, flat.var(1, unbiased=False), rtol=1e-5, atol=1e-6)


def test_every_bn_is_reestimated(tiny_model: MobileNetV3) -> None:
    # Inputs all zero: every BN's input is constant per channel, so each running variance
    # is exactly 0 and no scrambled value can survive.
    recalibrate_bn(tiny_model, [torch.zeros(4, 1, RESOLUTION, RESOLUTION)])
    for bn in bns(tiny_model):
        assert bn.running_var is not None
        assert float(bn.running_var.abs().max()) < 1e-6


def test_statistics_equal_ofas_set_running_statistics(
    tiny_model: MobileNetV3, fmnist_small: DataBundle
) -> None:
    """Parity with OFA's own estimator, batches of unequal sizes included (a short last batch
    weighs by its images; torch's cumulative average weighed every batch alike)."""
    from tests.support.ofa_reference import import_ofa

    set_running_statistics = import_ofa().imagenet_classification.elastic_nn.utils.__dict__[
        "set_running_statistics"
    ]
    batches = [
        *fmnist_batches(fmnist_small, n=2, size=16, resolution=RESOLUTION, seed=3),
        *fmnist_batches(fmnist_small, n=1, size=3, resolution=RESOLUTION, seed=4),
    ]
    theirs = copy.deepcopy(tiny_model)
    set_running_statistics(theirs, [(b, None) for b in batches])
    recalibrate_bn(tiny_model, batches)
    for mine, ofa in zip(bns(tiny_model), bns(theirs), strict=True):
        assert mine.running_mean is not None and ofa.running_mean is not None
        assert mine.running_var is not None and ofa.running_var is not None
        torch.testing.assert_close(mine.running_mean, ofa.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mine.running_var, ofa.running_var, rtol=1e-5, atol=1e-6)


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
    scramble_running_stats(supernet)  # so that every channel re-estimated shows
    stored = {k: v.clone() for k, v in supernet.state_dict().items() if "running_" in k}
    recalibrate_bn(supernet, batches)
    # channels the subnet does not use keep the statistics other subnets share (OFA writes
    # only the first ones too); so do the layers of blocks the subnet skips
    now = supernet.state_dict()
    changed = {k: stored[k] != now[k] for k in stored}
    assert any(not c.any() for c in changed.values())  # skipped blocks' layers
    # (changed, channels up to the last changed one) per re-estimated buffer
    reached = [(c, int(c.nonzero().max()) + 1) for c in changed.values() if c.any()]
    assert all(bool(c[:n].all()) for c, n in reached)  # a prefix, every channel of it
    assert any(n < len(c) for c, n in reached)  # narrower than the layer
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
    scored = eval_head(fmnist_small.val, 300)  # 300 images spread over the classes
    images = normalize(scored.images, fmnist_small.spec)
    with torch.no_grad():
        pred = model(resize_batch(images, 30)).argmax(1)
    assert acc == int((pred == scored.labels).sum()) / 300
