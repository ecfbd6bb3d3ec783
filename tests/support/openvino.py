"""The OpenVINO environment of the tests: onnxruntime-openvino and the OpenVINO Runtime in
.venv-openvino, which `make setup` makes (the bundled local-cpu-openvino and
local-cpu-openvino-runtime profiles, and their -no-amx twins, run their runner there)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def pinned_version(package: str = "onnxruntime-openvino") -> str:
    """``package``'s version in requirements-openvino.txt."""
    lines = (REPO / "requirements-openvino.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith(f"{package}=="))


def edgenas(*args: str | Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """The edgenas command, run from the repository (the bundled profiles name
    .venv-openvino/bin/python from there) with its block cache in ``cache``."""
    return subprocess.run(
        [sys.executable, "-m", "edgenas", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "EDGENAS_CACHE": str(cache)},
        cwd=REPO,
        timeout=900,
    )


def profile_and_export(device: str, trained: Path, folder: Path) -> None:
    """`edgenas profile DEVICE` (mbv3-tiny at 28 px, 10 calibration subnets) into
    ``folder/profiles``, then `edgenas export` of the trained supernet's min subnet as fp32
    and int8 ONNX, measured on ``device``, into ``folder/export``. The int8 file is left
    unpadded, with the line that says why: OpenVINO has kernels of its own."""
    proc = edgenas(
        "profile",
        device,
        *("--space", "mbv3-tiny", "--resolution", "28", "--calibrate", "10"),
        *("--out", folder / "profiles" / device, "--quiet"),
        cache=folder / "cache",
    )
    assert proc.returncode == 0, proc.stderr
    proc = edgenas(
        "export",
        *("--supernet", trained / "run" / "supernet.pt", "--subnet", "min"),
        *("--format", "onnx", "--int8", "--device", device, "--profiles", folder / "profiles"),
        *("--calibration-images", "64", "--test-images", "400", "--out", folder / "export"),
        cache=folder / "cache",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"int8 ONNX channels aligned for none ({device}: kernels of their own)" in " ".join(
        proc.stderr.split()
    )
