"""OFA's reference MobileNetV3 supernets with random weights everywhere, as OFA's release
files hold them: what the import is tested against (the real files are not on this machine).

At OFA's initialisation the kernel-transform matrices are the identity, BN statistics are
0/1 and biases 0, so a transposed matrix or a misplaced statistic would change nothing:
``randomise`` replaces every one of them. Statistics unrelated to the activations would in
turn shrink the input's share of the logits stage by stage (to 1e-8: a flipped kernel in the
first stages went unseen), so ``condition`` then estimates them with OFA's own
``set_running_statistics`` on random images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tests.support.ofa_reference import import_ofa


def reference_supernet(width: float) -> Any:
    """OFA's ``OFAMobileNetV3`` as ``ofa.model_zoo.ofa_net`` builds the published ones."""
    ofa = import_ofa()
    networks = ofa.imagenet_classification.elastic_nn.networks
    return networks.OFAMobileNetV3(
        n_classes=1000,
        dropout_rate=0,
        width_mult=width,
        ks_list=[3, 5, 7],
        expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4],
    )


@torch.no_grad()
def randomise(net: nn.Module, *, seed: int) -> nn.Module:
    """Random transforms, BN affine parameters and statistics, and biases; returns ``net`` in
    eval mode."""
    g = torch.Generator().manual_seed(seed)

    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g)

    for name, p in net.named_parameters():
        if name.endswith("_matrix"):
            p.copy_(torch.eye(p.shape[0]) + 0.3 * randn(p) / p.shape[0] ** 0.5)
        elif name.endswith("bias"):
            p.copy_(0.1 * randn(p))
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert m.running_mean is not None and m.running_var is not None
            m.weight.copy_(1.0 + 0.2 * randn(m.weight))
            m.running_mean.copy_(0.1 * randn(m.running_mean))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net.eval()


@torch.no_grad()
def condition(net: Any, *, seed: int, resolution: int = 160, images: int = 8) -> Any:
    """The BN statistics of ``net``'s active subnet estimated by OFA's
    ``set_running_statistics`` on ``images`` random images; returns ``net`` in eval mode.
    Statistics estimated for one subnet are off for the others (other kernels and widths),
    enough to lose the image again over the blocks: condition each subnet compared."""
    utils = import_ofa().imagenet_classification.elastic_nn.utils
    g = torch.Generator().manual_seed(seed)
    batch = torch.randn(images, 3, resolution, resolution, generator=g)
    utils.set_running_statistics(net, [(batch, None)])
    return net.eval()


def save_reference(width: float, path: Path, *, seed: int = 0, wrap: bool = True) -> nn.Module:
    """A randomised and conditioned reference supernet, saved to ``path`` as OFA's release
    files are (``{"state_dict": ...}``, or the bare state dict when ``wrap`` is false)."""
    net = randomise(reference_supernet(width), seed=seed)
    net.set_active_subnet(ks=7, e=6, d=4)
    condition(net, seed=seed)
    state = net.state_dict()
    torch.save({"state_dict": state} if wrap else state, path)
    return net
