"""How well predicted latencies match measured ones: the figures a predictor file records."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats  # scipy ships no type stubs

FIGURE_NAMES = ("n", "rmse_ms", "rmspe", "within_5pct", "within_10pct", "spearman", "kendall")

# Slack on the within-X tests so that 1.05 ms against 1.00 ms counts as within 5% despite
# float rounding (1.05 - 1.0 is 0.05000000000000004).
_TOLERANCE = 1e-12


def check_latencies(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both series as float64 arrays, or ValueError if they are empty, of different lengths,
    not one-dimensional, not finite, or if a measured latency is not positive."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if p.ndim != 1 or m.ndim != 1:
        raise ValueError(
            f"latencies must be flat sequences; got shapes {p.shape} (predicted) and "
            f"{m.shape} (measured)"
        )
    if len(p) != len(m):
        raise ValueError(
            f"{len(p)} predicted latencies but {len(m)} measured; give one prediction per "
            "measured subnet"
        )
    if len(m) == 0:
        raise ValueError("no latencies to compare; measure at least one subnet")
    for name, values in (("predicted", p), ("measured", m)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}]={values[bad[0]]}: latencies must be finite")
    bad = np.flatnonzero(m <= 0)
    if bad.size:
        raise ValueError(
            f"measured[{bad[0]}]={m[bad[0]]} ms: measured latencies must be positive "
            "(relative errors divide by them)"
        )
    return p, m


def validation_figures(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Agreement of predicted with measured latencies (milliseconds, one pair per subnet).

    Keys: ``n``; ``rmse_ms``; ``rmspe``, the root mean square of ``(p - m) / m``;
    ``within_5pct`` and ``within_10pct``, the fraction of subnets with ``|p - m| / m`` at most
    0.05 and 0.10; ``spearman`` and ``kendall`` (tau-b) rank correlations. Relative figures are
    fractions (0.05 means 5%). The rank correlations are NaN when fewer than two subnets are
    given or either series is constant, as ranks then say nothing. Raises ValueError on input
    that ``check_latencies`` refuses.
    """
    p, m = check_latencies(predicted, measured)
    relative = (p - m) / m
    ranked = len(m) >= 2 and np.ptp(p) > 0 and np.ptp(m) > 0
    return {
        "n": len(m),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "rmspe": float(np.sqrt(np.mean(relative**2))),
        "within_5pct": float(np.mean(np.abs(relative) <= 0.05 + _TOLERANCE)),
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10 + _TOLERANCE)),
        "spearman": float(stats.spearmanr(p, m).statistic) if ranked else math.nan,
        "kendall": float(stats.kendalltau(p, m).statistic) if ranked else math.nan,
    }
