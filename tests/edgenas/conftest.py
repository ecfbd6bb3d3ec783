"""Fixtures for the application's tests: a micro recipe that trains in seconds."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.devices.conftest import device_python, sshd

__all__ = ["device_python", "sshd"]

MICRO_RECIPE = {
    "name": "micro",
    "space": "mbv3-tiny",
    "data": {"source": "fashion-mnist", "val_size": 200, "train_limit": 256, "seed": 0},
    "train": {
        "seed": 0,
        "threads": 1,
        "batch_size": 64,
        "eval_images": 100,
        "bn_images": 64,
        "phases": [
            {"name": "full", "epochs": 1, "lr": 0.05, "kd_ratio": 0},
            {"name": "kernel", "epochs": 1, "lr": 0.02, "ks": [3, 5, 7]},
            {
                "name": "depth",
                "epochs": 1,
                "lr": 0.01,
                "ks": [3, 5, 7],
                "d": [2, 3, 4],
                "subnets_per_step": 2,
            },
            {
                "name": "expand",
                "epochs": 2,
                "lr": 0.01,
                "ks": [3, 5, 7],
                "d": [2, 3, 4],
                "e": [3, 4, 6],
                "subnets_per_step": 2,
                "sort_channels": True,
            },
        ],
    },
}


@pytest.fixture
def micro_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO_RECIPE, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose run/supernet.pt was trained with the micro recipe by `edgenas train`."""
    folder = tmp_path_factory.mktemp("cli")
    recipe = folder / "micro.yaml"
    recipe.write_text(yaml.safe_dump(MICRO_RECIPE))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgenas",
            "train",
            str(recipe),
            "--out",
            str(folder / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return folder


REPO = Path(__file__).resolve().parents[2]
CPU_PROFILE = "name: test-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\nwarmup: 2\nruns: 5\n"
Run = tuple[Path, Path, Path, dict[str, Any]]  # recipe, run folder, block cache, summary


def run_recipe(folder: Path, **changes: Any) -> Path:
    """The micro recipe with a local onnxruntime device and the simulated NPU, every stage."""
    (folder / "cpu.yaml").write_text(CPU_PROFILE)
    recipe: dict[str, Any] = copy.deepcopy(MICRO_RECIPE)
    stages: dict[str, Any] = {
        "name": "micro-run",
        "devices": [
            {"name": str(folder / "cpu.yaml"), "budget_ms": 50.0, "calibrate": 10},
            {"name": "npu-32x32-ws", "budget_ms": 50.0, "calibrate": 10},
        ],
        "search": {"trials": 60, "accuracy_samples": 12, "eval_images": 100, "reevaluate": 4},
        "export": {
            "formats": ["onnx"],
            "int8": True,
            "calibration_images": 32,
            "test_images": 200,
        },
    }
    recipe.update(stages)
    recipe.update(changes)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def edgenas_run(
    recipe: Path, out: Path, *args: str, cache: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenas", "run", str(recipe), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "EDGENAS_CACHE": str(cache)},
        cwd=REPO,
        timeout=900,
    )


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One `edgenas run` of the micro recipe, shared by the run and report tests."""
    folder = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    recipe = run_recipe(folder)
    out = folder / "run"
    proc = edgenas_run(recipe, out, "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    return recipe, out, cache, json.loads(proc.stdout)
