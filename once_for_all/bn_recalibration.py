"""Batch-norm recalibration: subnets share BN buffers in the supernet, so their running
statistics must be re-estimated on training data before evaluation (OFA's
``set_running_statistics``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, batches: Iterable[Tensor], *, max_batches: int | None = None
) -> int:
    """Reset every BN layer's running statistics and re-estimate them as an exact cumulative
    average over ``batches`` (inputs already at the model's resolution). Returns the number of
    batches used; the model is left in eval mode. Works on extracted networks and on a
    supernet with an active subnet alike."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    used = 0
    try:
        for x in batches:
            if max_batches is not None and used >= max_batches:
                break
            model(x)
            used += 1
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    if used == 0:
        raise ValueError(
            "BN recalibration got no batches: give it a non-empty slice of the training data"
        )
    return used
