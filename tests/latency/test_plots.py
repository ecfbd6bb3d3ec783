"""The predicted-vs-measured scatter plot is a whole, readable PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latency.metrics import validation_figures
from latency.plots import scatter_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (660, 600)  # 5.5 x 5 inches at 120 dpi


def test_writes_a_png_with_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    measured = rng.uniform(5.0, 40.0, size=200)
    predicted = measured * rng.normal(1.0, 0.06, size=200)
    target = tmp_path / "plots" / "pi4" / "validation.png"  # folders are created

    written = scatter_plot(
        predicted,
        measured,
        target,
        title="pi4: calibrated predictor",
        figures=validation_figures(predicted, measured),
    )

    assert written == target
    _assert_png(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["validation.png"]


def test_replaces_an_existing_file_and_plots_a_single_point(tmp_path: Path) -> None:
    target = tmp_path / "scatter.png"
    target.write_bytes(b"old")
    scatter_plot([2.0], [2.1], str(target), title="one subnet")
    _assert_png(target)


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "scatter.png"
    with pytest.raises(ValueError, match="measured latencies must be positive"):
        scatter_plot([1.0, 2.0], [1.0, 0.0], target, title="bad")
    assert list(tmp_path.iterdir()) == []
