"""An exponential moving average of a model's weights (BigNAS trains its supernet with one).

Only the parameters are averaged: batch-norm statistics are recalibrated for every subnet
before it is evaluated or extracted, so an average of them would not be used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from once_for_all.errors import EdgenasError


class WeightAverageError(EdgenasError, ValueError):
    """An average saved for other weights than the model's."""


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every optimiser step, from
    the weights it starts with (BigNAS, timm's ModelEmaV2).

    The decay is used as given from the first update. TensorFlow's ramp,
    ``min(decay, (1 + n) / (10 + n))``, would reach it only after ``9 / (1 - decay)`` updates,
    later than the end of a short phase: 0.999 and 0.9998 gave the same weights over the
    5,577 steps of recipes/fmnist.yaml's last phase. The start weights keep ``decay ** n``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"a weight average's decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self._params = dict(model.named_parameters())
        self.average = {name: p.detach().clone() for name, p in self._params.items()}

    @torch.no_grad()
    def update(self) -> None:
        names = list(self._params)
        torch._foreach_lerp_(
            [self.average[n] for n in names],
            [self._params[n].detach() for n in names],
            1.0 - self.decay,
        )
        self.updates += 1

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Replace the model's weights by the average (at the end of the averaging)."""
        for name, p in self._params.items():
            p.copy_(self.average[name])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the average inside the block and its own weights again after it."""
        with torch.no_grad():
            own = {name: p.detach().clone() for name, p in self._params.items()}
            self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self._params.items():
                    p.copy_(own[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        average: dict[str, Tensor] = state["average"]
        if set(average) != set(self._params) or any(
            average[n].shape != p.shape for n, p in self._params.items()
        ):
            raise WeightAverageError(
                "the saved weight average is for another network than this one"
            )
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.average = {n: average[n].to(p.device).clone() for n, p in self._params.items()}
