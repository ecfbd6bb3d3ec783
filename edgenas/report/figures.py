"""The report's figures, drawn with matplotlib and returned as inline SVG.

Text stays text (``svg.fonttype: none``), so the report is small and searchable; each
figure gets its own hash salt so that the element ids of several inline SVGs in one page
never collide.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgenas.report.collect import DeviceData
from edgenas.search.pareto import BUDGET, FRONT, TRIALS
from latency.blocks import BlockSpec, mbconv_block, slot_input_size, subnet_blocks
from latency.plots import BAND
from once_for_all.network_config import slot_config
from once_for_all.search_space import SearchSpace


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an ``<svg>`` element, ready to inline in HTML."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def training_curves(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Accuracy, loss and learning rate per epoch, with the progressive-shrinking phases
    marked: the validation accuracy of the largest and smallest subnet shows what each
    phase costs the full network and gains the small ones."""
    fig = _figure(10.0, 3.4)
    acc, loss, lr = fig.subplots(1, 3)
    x = np.arange(1, len(history) + 1)

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in history]

    acc.plot(x, col("val_acc_max"), "o-", ms=3, label="val, largest subnet")
    acc.plot(x, col("val_acc_min"), "s-", ms=3, label="val, smallest subnet")
    acc.plot(x, col("train_acc"), "--", c="grey", label="train (sampled subnets)")
    acc.set_title("accuracy", pad=22)
    acc.set_xlabel("epoch")
    acc.legend(fontsize=7, loc="lower right")
    loss.plot(x, col("train_loss"), "o-", ms=3, c="#9467bd")
    loss.set(title="training loss", xlabel="epoch")
    lr.plot(x, col("lr"), "o-", ms=3, c="#8c564b")
    lr.set(title="learning rate (epoch end)", xlabel="epoch")
    # Phase boundaries and names, on every panel.
    starts = [i for i, r in enumerate(history) if i == 0 or r["phase"] != history[i - 1]["phase"]]
    for ax in (acc, loss, lr):
        ax.grid(alpha=0.3)
        for i in starts[1:]:
            ax.axvline(i + 0.5, c="grey", lw=0.8, ls=":")
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(history)
        acc.text(
            (i + end + 1) / 2,
            1.0,
            str(history[i]["phase"]),
            transform=acc.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=30,
        )
    return fig


def predictor_scatter(device: DeviceData) -> Figure | None:
    """Predicted against measured latency of the calibration subnets: the calibrated
    predictor's held-out (cross-validated) prediction, and the raw lut-sum."""
    from latency.predictors import CalibratedPredictor, load_predictor

    predictor = load_predictor(device.path)
    if not isinstance(predictor, CalibratedPredictor):
        return None  # lut-sum only (calibrate: 0): no end-to-end measurements
    calibration = predictor.calibration
    if not calibration.get("measured_ms"):
        return None
    subnets = [predictor.space.subnet_from_dict(s) for s in calibration["subnets"]]
    measured = np.asarray(calibration["measured_ms"], dtype=float)
    lut_sum = predictor.base.predict_many(subnets)
    held_out = calibration.get("held_out_ms")
    # Files written before held-out predictions were kept show the refitted model (in-sample).
    calibrated, label = (
        (np.asarray(held_out, dtype=float), "calibrated (held-out folds)")
        if held_out
        else (predictor.predict_many(subnets), "calibrated (in-sample)")
    )
    fig = _figure(4.4, 4.0)
    ax = fig.subplots()
    points = [measured, calibrated, lut_sum]
    lo = float(min(p.min() for p in points))
    hi = float(max(p.max() for p in points))
    pad = 0.05 * (hi - lo) or 0.05 * hi
    line = np.array([max(0.0, lo - pad), hi + pad])
    ax.fill_between(
        line, line * (1 - BAND), line * (1 + BAND), color=BUDGET, alpha=0.15, label="±10%"
    )
    ax.plot(line, line, c=BUDGET, lw=1)
    ax.scatter(measured, lut_sum, s=12, marker="^", c=TRIALS, edgecolors="grey", label="lut-sum")
    ax.scatter(measured, calibrated, s=14, c=FRONT, label=label)
    ax.set(
        xlim=tuple(line),
        ylim=tuple(line),
        xlabel="measured (ms)",
        ylabel="predicted (ms)",
        title=f"{device.name}: {len(measured)} subnets",
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _space_and_blocks(device: DeviceData) -> tuple[SearchSpace, Mapping[str, float], int]:
    space = SearchSpace.from_dict(device.predictor["space"])
    resolution = max(device.predictor["header"]["resolutions"])
    # A table measured per resolution may hold other figures for some blocks at this one.
    at_r = device.predictor.get("resolution_ms", {}).get(str(resolution), {})
    return space, {**device.predictor["block_ms"], **at_r}, resolution


def largest_subnet_blocks(device: DeviceData) -> list[tuple[str, BlockSpec]]:
    """The blocks of the space's largest subnet at the largest profiled resolution, each
    with its short label (``stem``, ``b0``, ..., ``head``): the blocks the block view shows."""
    space, _, r = _space_and_blocks(device)
    blocks = subnet_blocks(space, space.max_subnet(r=r))
    return [
        ("stem" if b.kind == "stem" else "head" if b.kind == "head" else f"b{i}", b)
        for i, b in enumerate(blocks)
    ]


def _annotate(ax: Axes, values: np.ndarray, fmt: str) -> None:
    finite = values[np.isfinite(values)]
    middle = float(finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                format(v, fmt),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v > middle else "black",
            )


def block_heatmap(device: DeviceData) -> Figure:
    """Each elastic block slot (rows) in each kernel/expand choice (columns) at the largest
    profiled resolution: which choices cost what on this device."""
    space, block_ms, r = _space_and_blocks(device)
    choices = [(k, e) for k in space.kernel_sizes for e in space.expand_ratios]
    slots = range(space.num_blocks)
    values = np.full((len(slots), len(choices)), np.nan)
    for s in slots:
        size = slot_input_size(space, s, r)
        for j, (k, e) in enumerate(choices):
            key = mbconv_block(slot_config(space, s, k, e), size).key
            values[s, j] = block_ms.get(key, np.nan)
    fig = _figure(0.55 * len(choices) + 2.4, 0.26 * len(slots) + 1.4)
    ax = fig.subplots()
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    _annotate(ax, values, ".3g")
    ax.set_xticks(range(len(choices)), [f"k{k} e{e}" for k, e in choices], fontsize=7, rotation=45)
    labels = [f"stage {s // space.max_depth + 1} block {s % space.max_depth + 1}" for s in slots]
    ax.set_yticks(range(len(slots)), labels, fontsize=7)
    ax.set_title(f"{device.name}: block latency (ms) at {r} px", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="ms")
    return fig


def latency_shares(devices: Sequence[DeviceData]) -> Figure | None:
    """The largest subnet's latency split over its blocks, one row per device: where each
    device spends its time (an NPU and a CPU rarely agree)."""
    rows: list[list[float]] = []
    names: list[str] = []
    labels: list[str] = []
    for device in devices:
        _, block_ms, _ = _space_and_blocks(device)
        labelled = largest_subnet_blocks(device)
        ms = np.array([block_ms.get(b.key, np.nan) for _, b in labelled], dtype=float)
        if not np.isfinite(ms).all() or ms.sum() <= 0:
            continue
        if labels and len(labelled) != len(labels):
            continue  # another space: its blocks do not line up with the first device's
        labels = [label for label, _ in labelled]
        rows.append(list(100 * ms / ms.sum()))
        names.append(device.name)
    if not rows:
        return None
    values = np.array(rows)
    fig = _figure(0.42 * values.shape[1] + 2.6, 0.45 * len(rows) + 1.5)
    ax = fig.subplots()
    image = ax.imshow(values, aspect="auto", cmap="magma_r")
    _annotate(ax, values, ".0f")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("share of the largest subnet's latency per block (%)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="%")
    return fig
