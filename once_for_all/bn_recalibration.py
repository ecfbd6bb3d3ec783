"""Batch-norm recalibration: subnets share BN buffers in the supernet, so their running
statistics must be re-estimated on training data before evaluation, as OFA's
``set_running_statistics`` does."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class _Estimate:
    """One BN layer's statistics over the batches it saw, as OFA estimates them: each batch's
    mean and biased variance over its images and pixels, averaged with the batch's image
    count as its weight."""

    def __init__(self) -> None:
        self.images = 0
        self.mean: Tensor | None = None
        self.var: Tensor | None = None

    def add(self, x: Tensor) -> None:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).square().mean(dims)
        n = x.shape[0]
        # float64 sums: thousands of batches would otherwise round away the last ones
        mean64, var64 = mean.flatten().double() * n, var.double() * n
        self.mean = mean64 if self.mean is None else self.mean + mean64
        self.var = var64 if self.var is None else self.var + var64
        self.images += n


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, batches: Iterable[Tensor], *, max_batches: int | None = None
) -> int:
    """Re-estimate the running statistics of every BN layer that ``batches`` (inputs already
    at the model's resolution) pass through, as OFA's ``set_running_statistics``: the mean of
    the batches' means and of their biased variances, each batch weighted by its images,
    written into the layer's first channels (those the input has: a supernet's active
    subnet). Layers no batch reaches keep theirs. Returns the number of batches used; the
    model is left in eval mode. Works on extracted networks and on a supernet with an active
    subnet alike."""
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    estimates = {bn: _Estimate() for bn in bns}
    momenta = [bn.momentum for bn in bns]
    # the layers count the batches in train mode; recalibration is not training
    tracked = [
        None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone() for bn in bns
    ]
    handles = [
        bn.register_forward_pre_hook(lambda m, args: estimates[m].add(args[0])) for bn in bns
    ]
    for bn in bns:
        bn.momentum = 0.0  # the layers normalise by the batch's statistics and store nothing
    model.train()
    used = 0
    try:
        for x in batches:
            if max_batches is not None and used >= max_batches:
                break
            model(x)
            used += 1
    finally:
        for handle in handles:
            handle.remove()
        for bn, momentum, count in zip(bns, momenta, tracked, strict=True):
            bn.momentum = momentum
            if count is not None and bn.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(count)
        model.eval()
    if used == 0:
        raise ValueError(
            "BN recalibration got no batches: give it a non-empty slice of the training data"
        )
    for bn, estimate in estimates.items():
        if estimate.mean is None or estimate.var is None:
            continue
        assert bn.running_mean is not None and bn.running_var is not None  # tracked
        c = estimate.mean.shape[0]
        bn.running_mean[:c] = (estimate.mean / estimate.images).to(bn.running_mean.dtype)
        bn.running_var[:c] = (estimate.var / estimate.images).to(bn.running_var.dtype)
    return used
