"""OFAMobileNetV3: the elastic supernet (kernel size, expand ratio, depth, resolution)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import pairwise
from typing import Any, cast

import torch
from torch import Tensor, nn

from once_for_all.elastic_ops import (
    ElasticBatchNorm2d,
    ElasticDepthwiseConv,
    ElasticPointwiseConv,
    ElasticSqueezeExcite,
)
from once_for_all.head import MobileNetV3Head
from once_for_all.layers import ConvBNAct, activation
from once_for_all.network_config import (
    first_block_config,
    head_config,
    mid_channels,
    network_config,
)
from once_for_all.search_space import Activation, SearchSpace
from once_for_all.static_net import MBConvBlock, MobileNetV3, build_from_config
from once_for_all.subnet import Subnet


class ElasticMBConv(nn.Module):
    """An MBConv block whose kernel size and expand ratio are chosen per forward pass."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_sizes: tuple[int, ...],
        expand_ratios: tuple[int, ...],
        stride: int,
        act: Activation,
        se: bool,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.act_name, self.use_se = stride, act, se
        self.expand_ratios = expand_ratios
        max_mid = self.mid_channels(expand_ratios[-1])
        self.expand_conv = ElasticPointwiseConv(in_channels, max_mid)
        self.expand_bn = ElasticBatchNorm2d(max_mid)
        self.depthwise = ElasticDepthwiseConv(max_mid, kernel_sizes, stride)
        self.depthwise_bn = ElasticBatchNorm2d(max_mid)
        self.se = ElasticSqueezeExcite(max_mid) if se else None
        self.project_conv = ElasticPointwiseConv(max_mid, out_channels)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self.act = activation(act)
        self.residual = stride == 1 and in_channels == out_channels
        self.active_kernel = kernel_sizes[-1]
        self.active_expand = expand_ratios[-1]

    def mid_channels(self, expand_ratio: int) -> int:
        return mid_channels(self.in_channels, expand_ratio)

    def forward(self, x: Tensor) -> Tensor:
        mid = self.mid_channels(self.active_expand)
        y = self.act(self.expand_bn(self.expand_conv(x, mid)))
        y = self.act(self.depthwise_bn(self.depthwise(y, self.active_kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.out_channels))
        return x + y if self.residual else y

    # ---- extraction

    @torch.no_grad()
    def static_state(self, kernel_size: int, expand_ratio: int) -> dict[str, Tensor]:
        """Weights of the active block under the static ``MBConvBlock`` parameter names."""
        mid = self.mid_channels(expand_ratio)
        cin = self.in_channels
        state: dict[str, Tensor] = {"expand.conv.weight": self.expand_conv.weight[:mid, :cin]}
        state.update(_bn_state("expand.bn", self.expand_bn, mid))
        state["depthwise.conv.weight"] = self.depthwise.active_weight(mid, kernel_size)
        state.update(_bn_state("depthwise.bn", self.depthwise_bn, mid))
        if self.se is not None:
            se_mid = self.se.mid_channels(mid)
            assert self.se.reduce.bias is not None and self.se.expand.bias is not None
            state["se.reduce.weight"] = self.se.reduce.weight[:se_mid, :mid]
            state["se.reduce.bias"] = self.se.reduce.bias[:se_mid]
            state["se.expand.weight"] = self.se.expand.weight[:mid, :se_mid]
            state["se.expand.bias"] = self.se.expand.bias[:mid]
        state["project.conv.weight"] = self.project_conv.weight[:, :mid]
        state.update(_bn_state("project.bn", self.project_bn, self.out_channels))
        return {k: v.detach().clone() for k, v in state.items()}

    # ---- elastic width

    @torch.no_grad()
    def sort_channels(self, *, keep: Iterable[int] = ()) -> None:
        """Reorder expanded channels by importance (L1 norm of their projection weights) so
        that every smaller expand ratio keeps the most important ones. Leaves the function
        computed by the full block unchanged.

        ``keep``: expand ratios whose channels must stay in front (OFA's
        ``re_organize_middle_weights(expand_ratio_stage)``): the channels of the smallest kept
        ratio come first, sorted among themselves, then those the next kept ratio adds, and so
        on; the rest follow, sorted among themselves. Ratios already trained as subnets keep
        their channel sets that way. The squeeze-excite bottleneck is fully re-sorted, as OFA
        does."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        order = _grouped_order(importance, [self.mid_channels(e) for e in keep])
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        if self.se is not None:
            se = self.se
            assert se.expand.bias is not None and se.reduce.bias is not None
            se.expand.weight.copy_(se.expand.weight[order])
            se.expand.bias.copy_(se.expand.bias[order])
            se.reduce.weight.copy_(se.reduce.weight[:, order])
            # The SE bottleneck is elastic too: sort its channels by their expand weights.
            se_importance = se.expand.weight.abs().sum(dim=(0, 2, 3))
            se_order = torch.argsort(se_importance, descending=True, stable=True)
            se.expand.weight.copy_(se.expand.weight[:, se_order])
            se.reduce.weight.copy_(se.reduce.weight[se_order])
            se.reduce.bias.copy_(se.reduce.bias[se_order])
        self.depthwise.weight.copy_(self.depthwise.weight[order])
        _permute_bn(self.depthwise_bn, order)
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        _permute_bn(self.expand_bn, order)


def _grouped_order(importance: Tensor, widths: Iterable[int]) -> Tensor:
    """Channel indices by descending importance within each group that the prefix ``widths``
    cut: [0, w1), [w1, w2), ..., [wn, all).

    OFA forms the same groups by subtracting multiples of 1e5 from the later groups'
    importance. In float32 that rounds their importance to steps of 1/64 or coarser, and close
    channels tie there; this sort orders them by their exact importance instead. In OFA's
    schedule no subnet's channels depend on the order inside a later group (each stage adds a
    smaller ratio, inside the first group), and in float64 the two orders are equal."""
    n = len(importance)
    cuts = sorted({0, n, *(w for w in widths if 0 < w < n)})
    return torch.cat(
        [
            start + torch.argsort(importance[start:end], descending=True, stable=True)
            for start, end in pairwise(cuts)
        ]
    )


def _bn_state(prefix: str, bn: nn.BatchNorm2d, channels: int) -> dict[str, Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.num_batches_tracked is not None
    return {
        f"{prefix}.weight": bn.weight[:channels],
        f"{prefix}.bias": bn.bias[:channels],
        f"{prefix}.running_mean": bn.running_mean[:channels],
        f"{prefix}.running_var": bn.running_var[:channels],
        f"{prefix}.num_batches_tracked": bn.num_batches_tracked,
    }


def _permute_bn(bn: nn.BatchNorm2d, order: Tensor) -> None:
    assert bn.running_mean is not None and bn.running_var is not None
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t[order])


class OFAMobileNetV3(MobileNetV3Head):
    """The supernet of a ``SearchSpace``. ``set_active`` picks a subnet; ``extract`` returns it
    as a standalone ``MobileNetV3`` whose eval outputs equal this network's active path."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        w = space.width
        self.stem = ConvBNAct(
            space.in_channels, w(space.stem_width), 3, stride=space.stem_stride, act=space.stem_act
        )
        first = w(space.first_block_width)
        self.first_block = MBConvBlock(first_block_config(space))
        blocks: list[ElasticMBConv] = []
        cin = first
        for stage, width in zip(space.stages, space.stage_widths, strict=True):
            for i in range(space.max_depth):
                blocks.append(
                    ElasticMBConv(
                        cin,
                        width,
                        kernel_sizes=space.kernel_sizes,
                        expand_ratios=space.expand_ratios,
                        stride=stage.stride if i == 0 else 1,
                        act=stage.act,
                        se=stage.se,
                    )
                )
                cin = width
        self.blocks = nn.ModuleList(blocks)
        self.build_head(head_config(space))
        self._depths = [space.max_depth] * len(space.stages)
        self.active: Subnet = space.max_subnet()
        self.set_active(self.active)

    # ---- choosing the active subnet

    def set_active(self, subnet: Subnet) -> None:
        self.space.validate(subnet)
        for module, ks, e in zip(self.blocks, subnet.ks, subnet.e, strict=True):
            block = cast(ElasticMBConv, module)
            block.active_kernel = ks
            block.active_expand = e
        self._depths = list(subnet.d)
        self.active = subnet

    def sample_active(self, rng: random.Random | int, **choices: Any) -> Subnet:
        """Activate a random subnet (``choices`` restrict ks/e/d/r as in ``SearchSpace.sample``)."""
        subnet = self.space.sample(rng, **choices)
        self.set_active(subnet)
        return subnet

    def forward(self, x: Tensor) -> Tensor:
        x = self.first_block(self.stem(x))
        depth = self.space.max_depth
        for stage, d in enumerate(self._depths):
            for block in self.blocks[stage * depth : stage * depth + d]:
                x = block(x)
        return self.forward_head(x)

    # ---- elastic width

    def sort_channels(self, *, keep: Iterable[int] = ()) -> None:
        """Sort every block's expanded channels by importance (before an elastic-expand phase),
        keeping the channels of the expand ratios ``keep`` in front (see
        ``ElasticMBConv.sort_channels``)."""
        ratios = tuple(keep)
        for block in self.blocks:
            cast(ElasticMBConv, block).sort_channels(keep=ratios)

    # ---- extraction

    def subnet_config(self, subnet: Subnet) -> dict[str, Any]:
        """The static network config of ``subnet`` (see ``static_net.build_from_config``)."""
        return network_config(self.space, subnet)

    @torch.no_grad()
    def extract(self, subnet: Subnet | None = None) -> MobileNetV3:
        """A standalone static network holding copies of ``subnet``'s weights (default: the active one)."""
        subnet = subnet or self.active
        config = self.subnet_config(subnet)
        state: dict[str, Tensor] = {}
        for name, tensor in self.stem.state_dict().items():
            state[f"stem.{name}"] = tensor.clone()
        for name, tensor in self.first_block.state_dict().items():
            state[f"blocks.0.{name}"] = tensor.clone()
        for i, b in enumerate(self.space.active_blocks(subnet), start=1):
            block = cast(ElasticMBConv, self.blocks[b])
            for name, tensor in block.static_state(subnet.ks[b], subnet.e[b]).items():
                state[f"blocks.{i}.{name}"] = tensor
        state.update(self.head_state())
        model = build_from_config(config, state)
        model.train(self.training)
        return model
