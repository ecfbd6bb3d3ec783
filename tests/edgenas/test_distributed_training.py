"""`edgenas train` under torchrun: 2 CPU processes (gloo) against one process with the same
global batch, and a run resumed on another number of processes.

The supernet at initialisation is badly conditioned in float32: one process with 1 thread and
with 2 threads already differ by about 5% in the parameters' updates after these four steps
(measured; float64 gradients differ from float32 ones by ~3%). The comparison is therefore of
the updates ``w - w0``, relative to their size, with a bound well above that floor and well
below what a real difference gives (each process normalising its own shard, i.e. plain DDP
batch norm, differs by ~110%).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console

from edgenas.recipe import load_recipe
from edgenas.stages.train import TrainOptions, train
from once_for_all import OFAMobileNetV3, get_space, load_checkpoint

# Two phases, two steps each: the teacher phase, then elastic kernel and depth with knowledge
# distillation and two subnets per step (parameters of skipped blocks get no gradient).
# Small learning rates keep the float noise from being amplified (see the module docstring).
RECIPE: dict[str, Any] = {
    "name": "distributed",
    "space": "mbv3-tiny",
    "data": {"source": "fashion-mnist", "val_size": 200, "train_limit": 128, "seed": 0},
    "train": {
        "seed": 0,
        "threads": 1,
        "batch_size": 64,
        "sync_bn": True,  # the statistics of the global batch, as one process sees them
        "eval_images": 50,
        "bn_images": 32,
        "phases": [
            {"name": "full", "epochs": 1, "lr": 0.005, "kd_ratio": 0},
            {
                "name": "depth",
                "epochs": 1,
                "lr": 0.002,
                "ks": [3, 5, 7],
                "d": [2, 3, 4],
                "subnets_per_step": 2,
            },
        ],
    },
}
UPDATE_TOLERANCE = 0.2  # relative difference of the parameter updates (float noise: ~0.05)
STATS_TOLERANCE = 0.01  # the same for BN running statistics (float noise: ~0.001)


def torchrun(
    processes: int, *args: str | Path, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "edgenas",
            "train",
            *map(str, args),
            *(["--quiet"] if quiet else []),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def relative_update_difference(
    got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> tuple[float, float]:
    """``|got - expected| / |expected - initial|`` over the parameters and over the float
    buffers; integer buffers (BN batch counts) must be equal."""
    torch.manual_seed(RECIPE["train"]["seed"])
    initial_net = OFAMobileNetV3(get_space(RECIPE["space"]))
    initial = initial_net.state_dict()
    params = {name for name, _ in initial_net.named_parameters()}
    sums = {True: [0.0, 0.0], False: [0.0, 0.0]}
    for name, tensor in expected.items():
        if not tensor.is_floating_point():
            assert torch.equal(got[name], tensor), name
            continue
        part = sums[name in params]
        part[0] += float((got[name].double() - tensor.double()).square().sum())
        part[1] += float((tensor.double() - initial[name].double()).square().sum())
    return (
        (sums[True][0] / sums[True][1]) ** 0.5,
        (sums[False][0] / sums[False][1]) ** 0.5,
    )


def assert_same_training(got: Path, expected: Path) -> None:
    a, b = load_checkpoint(got), load_checkpoint(expected)
    assert a["complete"] and b["complete"]
    assert [h["phase"] for h in a["history"]] == [h["phase"] for h in b["history"]]
    assert a["teacher"] is not None
    params, stats = relative_update_difference(a["model"], b["model"])
    assert params < UPDATE_TOLERANCE, f"parameter updates differ by {params:.1%}"
    assert stats < STATS_TOLERANCE, f"BN statistics differ by {stats:.2%}"
    losses = [
        (x["train_loss"], y["train_loss"]) for x, y in zip(a["history"], b["history"], strict=True)
    ]
    assert all(x == pytest.approx(y, rel=1e-3) for x, y in losses), losses


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "distributed.yaml"
    path.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def one_process(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the recipe trained by one process (in this one)."""
    out = tmp_path_factory.mktemp("one") / "run"
    return train(load_recipe(recipe), TrainOptions(out), console=Console(quiet=True), quiet=True)


def test_two_processes_train_what_one_does(recipe: Path, one_process: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = torchrun(2, recipe, "--out", out, quiet=False)
    assert_same_training(out / "supernet.pt", one_process)
    # Rank 0 alone writes the run folder and the console output.
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "space.json", "supernet.pt"]
    assert proc.stderr.count("supernet written to") == 1
    assert proc.stderr.count("full epoch 1:") == 1
    assert "2 processes" in proc.stderr


def test_resume_on_another_number_of_processes(
    recipe: Path, one_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    r = load_recipe(recipe)
    console = Console(quiet=True)
    train(r, TrainOptions(out, stop_after_epochs=1), console=console, quiet=True)
    assert load_checkpoint(out / "checkpoint.pt")["phase_index"] == 1
    torchrun(2, recipe, "--out", out, "--resume")
    assert_same_training(out / "supernet.pt", one_process)
