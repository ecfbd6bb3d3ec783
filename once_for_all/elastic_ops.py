"""Dynamic operators: layers holding the largest weights whose active part is chosen per call.

Each has a fast path for the full size, so training the largest subnet costs what a static
network costs. Smaller sizes use prefixes of the channels (channels are sorted by importance
before the elastic-width phase, so prefixes keep the important ones).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from once_for_all.search_space import make_divisible


class ElasticDepthwiseConv(nn.Module):
    """Depthwise conv with an elastic kernel.

    A smaller kernel is the centre of the next larger one, passed through a learned
    (k²×k²) transformation shared by all channels (OFA's kernel transformation matrices),
    so the small kernels are not forced to equal the centre of the large one.
    """

    def __init__(self, max_channels: int, kernel_sizes: Sequence[int], stride: int) -> None:
        super().__init__()
        self.kernel_sizes = sorted(kernel_sizes)
        self.max_kernel = self.kernel_sizes[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        # transform_{big}to{small}: identity at start, learned during the elastic-kernel phase.
        for big, small in zip(self.kernel_sizes[::-1], self.kernel_sizes[-2::-1], strict=False):
            self.register_parameter(
                f"transform_{big}to{small}", nn.Parameter(torch.eye(small * small))
            )

    def transform(self, big: int, small: int) -> Tensor:
        matrix: Tensor = getattr(self, f"transform_{big}to{small}")
        return matrix

    def active_weight(self, channels: int, kernel_size: int) -> Tensor:
        """The depthwise filter of the first ``channels`` channels at ``kernel_size``."""
        weight = self.weight[:channels]
        sizes = self.kernel_sizes[::-1]
        for big, small in itertools.pairwise(sizes):
            if small < kernel_size:
                break
            start = (big - small) // 2
            centre = weight[:, :, start : start + small, start : start + small]
            flat = centre.reshape(channels, small * small)
            weight = F.linear(flat, self.transform(big, small)).reshape(channels, 1, small, small)
        return weight

    def forward(self, x: Tensor, kernel_size: int) -> Tensor:
        channels = x.shape[1]
        weight = self.active_weight(channels, kernel_size)
        return F.conv2d(x, weight, None, self.stride, kernel_size // 2, 1, channels)


class ElasticPointwiseConv(nn.Module):
    """1×1 conv whose input and output channels are prefixes of the largest ones."""

    def __init__(self, max_in: int, max_out: int, *, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        cin = x.shape[1]
        weight: Tensor = self.weight
        bias: Tensor | None = self.bias
        if out_channels != weight.shape[0] or cin != weight.shape[1]:
            weight = weight[:out_channels, :cin]
            bias = bias[:out_channels] if bias is not None else None
        return F.conv2d(x, weight, bias)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over a prefix of its channels; running statistics of the prefix are updated
    in place, so every width shares (and recalibration resets) one set of buffers."""

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None
        factor = self._momentum_factor()
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c],
            self.running_var[:c],
            self.weight[:c],
            self.bias[:c],
            use_batch,
            factor,
            self.eps,
        )

    def _momentum_factor(self) -> float:
        # Mirrors nn.BatchNorm2d: momentum=None means a cumulative average (BN recalibration).
        if not (self.training and self.track_running_stats):
            return 0.0
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite whose width follows the active expanded channels."""

    def __init__(self, max_channels: int, reduction_divisor: int = 8) -> None:
        super().__init__()
        self.divisor = reduction_divisor
        max_mid = self.mid_channels(max_channels)
        self.reduce = ElasticPointwiseConv(max_channels, max_mid, bias=True)
        self.expand = ElasticPointwiseConv(max_mid, max_channels, bias=True)

    def mid_channels(self, channels: int) -> int:
        return make_divisible(channels // 4, self.divisor)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(self.reduce(s, self.mid_channels(c)), inplace=True)
        s = F.hardsigmoid(self.expand(s, c), inplace=True)
        return x * s
