"""Where the search's accuracies come from: what `edgenas search --accuracy` and a recipe's
``search.accuracy`` accept. This module imports nothing, so the CLI can offer the names
without loading torch."""

from __future__ import annotations

from typing import Literal

# predictor: OFA's MLP fitted on evaluated subnets screens the trials; direct: every trial
# is evaluated with inherited weights; ofa-predictor: OFA's published ImageNet accuracy
# predictor (acc_predictor.pth, given by the user) scores every trial, nothing is evaluated.
AccuracySource = Literal["predictor", "direct", "ofa-predictor"]

# What the figure is where it is OFA's published predictor's (pareto.json's "accuracy"
# starts with it; the report and the CLI label the figure with it).
OFA_FIGURE = "OFA's predicted ImageNet top-1"


def accuracy_label(described: str | None) -> str:
    """The axis or column label for accuracies that pareto.json describes as ``described``."""
    return OFA_FIGURE if (described or "").startswith(OFA_FIGURE) else "accuracy (val)"
