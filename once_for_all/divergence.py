"""Training that diverged: a loss or an output that is not a finite number stops the work
with one line, before anything is written from it (a NaN supernet or model is worse than none:
every later stage would carry it silently)."""

from __future__ import annotations

import math

from once_for_all.errors import EdgenasError


class DivergedError(EdgenasError):
    """Training produced a non-finite loss or weights (usually a learning rate far too high)."""


def require_finite_loss(loss: float, *, where: str, fix: str) -> float:
    """``loss`` if it is finite, else ``DivergedError`` naming ``where`` it happened and the
    ``fix``. Takes the float the loop already reads, so the check costs nothing."""
    if not math.isfinite(loss):
        raise DivergedError(f"training diverged: the loss is {loss} at {where}; {fix}")
    return loss
