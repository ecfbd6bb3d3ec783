"""Predicted-vs-measured latency scatter plots (PNG) for predictor validation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# The object-oriented API with an explicit Agg canvas: no pyplot, so no global backend or
# figure registry to disturb in the caller's process.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from latency.metrics import check_latencies
from once_for_all.files import atomic_path

BAND = 0.10


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def scatter_plot(
    predicted: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str,
    figures: Mapping[str, float] | None = None,
) -> Path:
    """Write a PNG of predicted (y) against measured (x) latency in ms, with the y = x line,
    the ±10% band around it and, if given, ``figures`` (e.g. ``validation_figures``) in a text
    box. Missing parent folders are created; the file appears whole or not at all. Returns
    the path written. Raises ValueError on input that ``check_latencies`` refuses.
    """
    p, m = check_latencies(predicted, measured)
    path = Path(path)

    fig = Figure(figsize=(5.5, 5.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lo, hi = float(min(p.min(), m.min())), float(max(p.max(), m.max()))
    pad = 0.05 * (hi - lo) or 0.05 * hi  # a single point still gets a visible range
    lo, hi = max(0.0, lo - pad), hi + pad
    line = np.array([lo, hi])
    ax.fill_between(
        line, line * (1 - BAND), line * (1 + BAND), color="tab:green", alpha=0.15, label="±10%"
    )
    ax.plot(line, line, color="tab:green", linewidth=1.0, label="y = x")
    ax.scatter(m, p, s=12, alpha=0.7, color="tab:blue", edgecolors="none", label="subnets")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (ms)", ylabel="predicted (ms)")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    if figures:
        text = "\n".join(f"{name}: {_format(value)}" for name, value in figures.items())
        ax.text(
            0.03,
            0.97,
            text,
            transform=ax.transAxes,
            va="top",
            ha="left",
            family="monospace",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
        )

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
