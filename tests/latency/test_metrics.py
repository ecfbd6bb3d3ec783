"""Predictor validation figures against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latency.metrics import FIGURE_NAMES, validation_figures


def test_figures_match_hand_computed_values() -> None:
    # Errors 0, 11, -3, 4 ms; relative 0, 0.55, -0.1, 0.1. Predicted ranks 1, 3, 2, 4 against
    # 1, 2, 3, 4: Spearman 1 - 6 * 2 / (4 * 15) = 0.8; Kendall (5 - 1) / 6 pairs = 2/3.
    figures = validation_figures([10.0, 31.0, 27.0, 44.0], np.array([10.0, 20.0, 30.0, 40.0]))

    assert tuple(figures) == FIGURE_NAMES
    assert figures["n"] == 4
    assert figures["rmse_ms"] == pytest.approx(math.sqrt((0 + 121 + 9 + 16) / 4))
    assert figures["rmspe"] == pytest.approx(math.sqrt((0 + 0.55**2 + 0.01 + 0.01) / 4))
    assert figures["within_5pct"] == 0.25
    assert figures["within_10pct"] == 0.75  # exactly 10% off counts as within
    assert figures["spearman"] == pytest.approx(0.8)
    assert figures["kendall"] == pytest.approx(2 / 3)


def test_perfect_prediction() -> None:
    figures = validation_figures([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert figures == {
        "n": 3,
        "rmse_ms": 0.0,
        "rmspe": 0.0,
        "within_5pct": 1.0,
        "within_10pct": 1.0,
        "spearman": 1.0,
        "kendall": 1.0,
    }


def test_boundary_survives_float_rounding_and_ranks_need_variation() -> None:
    figures = validation_figures([1.05], [1.0])  # 1.05 - 1.0 is a hair above 0.05 in floats
    assert figures["within_5pct"] == 1.0
    assert math.isnan(figures["spearman"]) and math.isnan(figures["kendall"])

    constant = validation_figures([5.0, 5.0, 5.0], [4.0, 5.0, 6.0])
    assert constant["rmse_ms"] == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(constant["spearman"]) and math.isnan(constant["kendall"])


@pytest.mark.parametrize(
    ("predicted", "measured", "message"),
    [
        ([], [], "no latencies"),
        ([1.0, 2.0], [1.0], "2 predicted latencies but 1 measured"),
        ([1.0, 2.0], [1.0, 0.0], r"measured\[1\]=0.0 ms: measured latencies must be positive"),
        ([1.0], [-3.0], "must be positive"),
        ([float("nan")], [1.0], r"predicted\[0\]=nan"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "flat sequences"),
    ],
)
def test_bad_input_is_refused(predicted: list[float], measured: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validation_figures(predicted, measured)
