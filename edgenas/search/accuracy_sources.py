"""Where the search's accuracies come from: what `edgenas search --accuracy` and a recipe's
``search.accuracy`` accept. This module imports nothing, so the CLI can offer the names
without loading torch."""

from __future__ import annotations

from typing import Literal

# predictor: OFA's MLP fitted on evaluated subnets screens the trials; direct: every trial
# is evaluated with inherited weights.
AccuracySource = Literal["predictor", "direct"]
