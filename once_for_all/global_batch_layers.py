"""Batch norm and dropout that behave, on each rank's shard, as they would on the whole global
batch in one process, so that N processes train the same supernet as one (up to the order of
float sums).

Plain DDP normalises each shard with its own statistics; with the small per-process batches of
CPU training that changes the weights far beyond float tolerance, and it makes the result
depend on the number of processes. Here batch norm all-reduces its per-channel sums, and
dropout draws the mask of the whole global batch (every rank's RNG is in the same state) and
keeps its own rows. ``torch.nn.SyncBatchNorm`` does the first for CUDA tensors of a fixed
width; the elastic supernet needs prefixes of channels, on any device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from once_for_all.elastic_ops import ElasticBatchNorm2d


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the incoming gradients over the ranks as well."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_over_ranks(tensor: Tensor) -> Tensor:
    out: Tensor = _SumOverRanks.apply(tensor)
    return out


class GlobalBatchNorm2d(ElasticBatchNorm2d):
    """Elastic batch norm whose training statistics are those of the global batch.

    Outside training, or without a process group, it is an ``ElasticBatchNorm2d``. Its state
    dict is the same, so checkpoints do not depend on how a run was launched.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None
        c = x.shape[1]
        dims = (0, 2, 3)
        # Sums in float64: the variance comes from E[x²] - E[x]², which float32 would round badly.
        local = torch.cat(
            [
                x.sum(dims, dtype=torch.float64),
                x.square().sum(dims, dtype=torch.float64),
                x.new_full((1,), x.numel() // c, dtype=torch.float64),
            ]
        )
        total = sum_over_ranks(local)
        count = total[-1]
        mean = total[:c] / count
        var = (total[c : 2 * c] / count - mean.square()).clamp_min(0.0)
        scale = self.weight[:c] * torch.rsqrt(var + self.eps).to(x.dtype)
        shift = self.bias[:c] - mean.to(x.dtype) * scale
        with torch.no_grad():
            factor = self._momentum_factor()
            unbiased = var * (count / (count - 1).clamp_min(1.0))
            self.running_mean[:c].lerp_(mean.to(x.dtype), factor)
            self.running_var[:c].lerp_(unbiased.to(x.dtype), factor)
        return x * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)


class GlobalBatchDropout(nn.Dropout):
    """Dropout of this rank's rows ``rows`` of a global batch of ``total`` rows: the mask is
    drawn for the whole batch, exactly as ``F.dropout`` draws it in one process."""

    def __init__(self, p: float, *, rows: slice, total: int) -> None:
        super().__init__(p)
        self.rows = rows
        self.total = total

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0.0
        shape = (self.total, *x.shape[1:])
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * noise.div_(1 - self.p)[self.rows]


def use_global_batch_layers(
    module: nn.Module, *, rows: slice, total: int, sync_bn: bool = True
) -> None:
    """Replace, in place, every dropout inside ``module`` (and with ``sync_bn`` every batch
    norm) by its global-batch version; parameters and buffers are shared, not copied, so
    optimizers built before or after both work."""
    for name, child in module.named_children():
        replacement: nn.Module | None = None
        if (
            sync_bn
            and isinstance(child, nn.BatchNorm2d)
            and not isinstance(child, GlobalBatchNorm2d)
        ):
            bn = GlobalBatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            for key, param in child.named_parameters(recurse=False):
                setattr(bn, key, param)
            for key, buffer in child.named_buffers(recurse=False):
                setattr(bn, key, buffer)
            replacement = bn
        elif type(child) is nn.Dropout:
            replacement = GlobalBatchDropout(child.p, rows=rows, total=total)
        if replacement is None:
            use_global_batch_layers(child, rows=rows, total=total, sync_bn=sync_bn)
            continue
        replacement.train(child.training)
        setattr(module, name, replacement)
