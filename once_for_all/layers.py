"""Plain torch building blocks shared by the static network and the supernet's fixed parts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from once_for_all.search_space import Activation


def activation(name: Activation | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}: use relu or hswish")


class ConvBNAct(nn.Module):
    """conv → batch norm → activation; ``groups=channels`` makes it depthwise. The conv has a
    bias exactly when there is no batch norm, unless ``bias`` says otherwise."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        act: Activation | None = None,
        bn: bool = True,
        bias: bool | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=not bn if bias is None else bias,
            device=device,
        )
        self.bn = nn.BatchNorm2d(out_channels, device=device) if bn else nn.Identity()
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: pool → 1×1 reduce → ReLU → 1×1 expand → hard-sigmoid → scale."""

    def __init__(
        self, channels: int, mid_channels: int, *, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid_channels, 1, bias=True, device=device)
        self.expand = nn.Conv2d(mid_channels, channels, 1, bias=True, device=device)
        self.relu = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.relu(self.reduce(s))))
        return x * s
