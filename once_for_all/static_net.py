"""The static MobileNetV3 that a subnet extracts to: plain torch layers, no elastic code.

A network is fully described by its ``config`` (JSON-safe), and ``build_from_config`` rebuilds
it; weights travel separately as a state dict. This is what gets exported to ONNX/TFLite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from once_for_all.head import MobileNetV3Head
from once_for_all.layers import ConvBNAct, SqueezeExcite

NETWORK_FORMAT = "edgenas.mobilenetv3/1"
Device = torch.device | str | None


class MBConvBlock(nn.Module):
    """Inverted residual: 1×1 expand → k×k depthwise → (SE) → 1×1 project, residual when shapes match."""

    def __init__(self, cfg: Mapping[str, Any], *, device: Device = None) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        cin, cout, mid = cfg["in_channels"], cfg["out_channels"], cfg["mid_channels"]
        act = cfg["act"]
        self.expand = ConvBNAct(cin, mid, 1, act=act, device=device) if cfg["expand"] else None
        self.depthwise = ConvBNAct(
            mid, mid, cfg["kernel_size"], stride=cfg["stride"], groups=mid, act=act, device=device
        )
        se = cfg["se_channels"]
        self.se = SqueezeExcite(mid, se, device=device) if se else None
        self.project = ConvBNAct(mid, cout, 1, act=None, device=device)
        self.residual = bool(cfg["residual"])

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class MobileNetV3(MobileNetV3Head):
    """A concrete MobileNetV3 built from a config (see ``OFAMobileNetV3.extract``)."""

    def __init__(self, config: Mapping[str, Any], *, device: Device = None) -> None:
        super().__init__()
        if config.get("format") != NETWORK_FORMAT:
            raise ValueError(
                f"not a network config: format {config.get('format')!r}, expected {NETWORK_FORMAT!r}"
            )
        self._config = dict(config)
        stem = config["stem"]
        self.stem = ConvBNAct(
            stem["in_channels"],
            stem["out_channels"],
            3,
            stride=stem["stride"],
            act=stem["act"],
            device=device,
        )
        self.blocks = nn.Sequential(*(MBConvBlock(b, device=device) for b in config["blocks"]))
        self.build_head(config["head"], device=device)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def resolution(self) -> int:
        return int(self._config["input"]["resolution"])

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW shape of one input image."""
        inp = self._config["input"]
        return (1, int(inp["channels"]), int(inp["resolution"]), int(inp["resolution"]))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.blocks(self.stem(x)))


def build_from_config(
    config: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None
) -> MobileNetV3:
    """Rebuild a static network; with ``state_dict`` the weights are assigned without a copy
    and without the (slow) random initialisation."""
    if state_dict is None:
        return MobileNetV3(config)
    # Built on the meta device (passed explicitly: a device context costs a dispatch per
    # tensor op), then the given tensors are assigned.
    model = MobileNetV3(config, device="meta")
    model.load_state_dict(dict(state_dict), assign=True)
    return model
