"""Fixtures for the core model tests: both built-in spaces at small sizes, and supernets whose
BN statistics, affine parameters and kernel transforms are far from their defaults."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from once_for_all import OFAMobileNetV3, SearchSpace, get_space
from once_for_all.elastic_ops import ElasticDepthwiseConv, ElasticPointwiseConv

# Space name -> (input resolution, batch size, batch for estimating BN statistics): the
# smallest resolution and small batches keep imagenet cheap.
SPACE_CASES = {"mbv3-tiny": (28, 4, 16), "mbv3-imagenet": (128, 2, 4)}


@dataclass(frozen=True)
class SpaceCase:
    """A built-in space with the input size its tests use."""

    space: SearchSpace
    resolution: int
    batch: int
    calibration_batch: int

    def inputs(self, seed: int, *, batch: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        n = self.batch if batch is None else batch
        return torch.randn(n, self.space.in_channels, self.resolution, self.resolution, generator=g)


@pytest.fixture(params=sorted(SPACE_CASES))
def case(request: pytest.FixtureRequest) -> SpaceCase:
    return SpaceCase(get_space(request.param), *SPACE_CASES[request.param])


def randomise_supernet(net: OFAMobileNetV3, case: SpaceCase, seed: int) -> None:
    """Perturb the kernel transforms, SE biases, the head and every BN's affine parameters, then
    estimate BN statistics of the full network on random inputs, so that they differ per
    channel from the defaults while activations keep their scale through the depth. Leaves
    ``net`` in eval mode with the max subnet active."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, ElasticDepthwiseConv):
                for name, p in module.named_parameters():
                    if name.startswith("transform_"):
                        p.add_(0.1 * torch.randn(p.shape, generator=g))
            if isinstance(module, ElasticPointwiseConv) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
        # torch's default init of the head gives logits near zero and nearly input-independent
        for head in (net.feature_mix.conv, net.classifier):
            nn.init.kaiming_normal_(head.weight, generator=g)
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.weight.copy_(1.0 + 0.3 * torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g))
            bn.reset_running_stats()
            bn.momentum = None
        net.set_active(case.space.max_subnet(r=case.resolution))
        net.train()
        net(case.inputs(seed + 1000, batch=case.calibration_batch))
        net.eval()
        for bn in bns:
            bn.momentum = 0.1


@pytest.fixture(scope="session")
def pristine_supernets() -> dict[str, OFAMobileNetV3]:
    """Randomised supernets by space name, built on first use; tests get copies."""
    return {}


@pytest.fixture
def supernet(case: SpaceCase, pristine_supernets: dict[str, OFAMobileNetV3]) -> OFAMobileNetV3:
    """A randomised supernet of ``case.space`` in eval mode with the max subnet active; a fresh
    copy for every test."""
    name = case.space.name
    if name not in pristine_supernets:
        torch.manual_seed(0)
        net = OFAMobileNetV3(case.space)
        randomise_supernet(net, case, seed=0)
        pristine_supernets[name] = net
    return copy.deepcopy(pristine_supernets[name])
