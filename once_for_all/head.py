"""The MobileNetV3 head: final expand 1×1 conv → global average pool → feature-mix 1×1 conv
(no batch norm) → dropout → classifier.

Declared once, for the static network, the supernet and the latency head block, so the head
a lookup table times is the head that gets deployed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from once_for_all.layers import ConvBNAct

# The head's layers, in registration order. Their names are state dict keys that saved
# checkpoints and the import of OFA weights by name rely on.
HEAD_LAYERS = ("final_expand", "feature_mix", "dropout", "classifier")


def feature_mix_bias(config: Mapping[str, Any]) -> bool:
    """Whether the head of ``config`` (a network config's ``head`` section) has a feature-mix
    bias: configs hold the key only when it has none (OFA's spaces)."""
    return bool(config.get("feature_mix_bias", True))


class MobileNetV3Head(nn.Module):
    """The head alone when built with a ``config``: logits ``[N, classes]`` from ``[N, C, H, W]``.

    The networks subclass it rather than hold it, so that its layers sit at the top level of
    their state dict (``final_expand.conv.weight``, not ``head.final_expand.conv.weight``):
    they construct it without a config, call ``build_head`` after their body's layers (the
    state dict keeps its order) and ``forward_head`` on the body's features.
    """

    final_expand: ConvBNAct
    feature_mix: ConvBNAct
    dropout: nn.Dropout
    classifier: nn.Linear

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if config is not None:
            self.build_head(config, device=device)

    def build_head(
        self, config: Mapping[str, Any], *, device: torch.device | str | None = None
    ) -> None:
        """Add the head's layers; ``config`` is a network config's ``head`` section
        (``network_config.head_config``)."""
        self.final_expand = ConvBNAct(
            config["in_channels"], config["final_expand"], 1, act="hswish", device=device
        )
        self.feature_mix = ConvBNAct(
            config["final_expand"],
            config["feature_mix"],
            1,
            act="hswish",
            bn=False,
            bias=feature_mix_bias(config),
            device=device,
        )
        self.dropout = nn.Dropout(config["dropout"])
        self.classifier = nn.Linear(config["feature_mix"], config["num_classes"], device=device)

    def forward_head(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` from the last block's features ``[N, C, H, W]``."""
        x = self.final_expand(x)
        x = x.mean((2, 3), keepdim=True)
        x = self.feature_mix(x)
        x = torch.flatten(x, 1)
        return cast(Tensor, self.classifier(self.dropout(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(x)

    @torch.no_grad()
    def head_state(self) -> dict[str, Tensor]:
        """Copies of the head's weights under their state dict names."""
        return {
            f"{layer}.{name}": tensor.clone()
            for layer in HEAD_LAYERS
            for name, tensor in getattr(self, layer).state_dict().items()
        }
