"""Fixtures for the application's tests: a micro recipe that trains in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
