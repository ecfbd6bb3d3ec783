"""The OpenVINO environment of the tests: onnxruntime-openvino in .venv-openvino, which
`make setup` makes (the bundled local-cpu-openvino profile runs its runner there)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPENVINO_PYTHON = REPO / ".venv-openvino" / "bin" / "python"
OPENVINO = "OpenVINOExecutionProvider"


def require_openvino() -> Path:
    """The OpenVINO environment's Python; the test is skipped where setup did not make it."""
    if not OPENVINO_PYTHON.exists():
        pytest.skip(f"no {OPENVINO_PYTHON}: run 'make setup' to create .venv-openvino")
    return OPENVINO_PYTHON


def pinned_version() -> str:
    """onnxruntime-openvino's version in requirements-openvino.txt."""
    lines = (REPO / "requirements-openvino.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith("onnxruntime-openvino=="))
