"""Inputs the benchmark tests share: a finished (untrained) supernet checkpoint and a pair of
accuracy and latency predictors, all of mbv3-tiny and small enough to make in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from once_for_all import OFAMobileNetV3, TrainConfig, get_space
from once_for_all.checkpoint import CheckpointBody, save_checkpoint
from once_for_all.data import DataSpec


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint marked complete holding a freshly initialised mbv3-tiny supernet: enough
    for the checks that run before any work (it loads, its space takes the subnets)."""
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    spec = DataSpec(
        name="fashion-mnist",
        channels=1,
        image_size=28,
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        mean=(0.286,),
        std=(0.353,),
    )
    body = CheckpointBody(
        space=space.to_dict(),
        data_spec=spec.to_dict(),
        model=OFAMobileNetV3(space).state_dict(),
        teacher=None,
        optimizer=None,
        weight_average=None,
        phase_index=0,
        epoch=0,
        history=[],
        train_config=TrainConfig(phases=()).to_dict(),
        rng={},
        complete=True,
    )
    path = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    save_checkpoint(path, body)
    return path


@pytest.fixture(scope="session")
def predictors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(accuracy_predictor.pt, predictor.json) for mbv3-tiny: an MLP fitted for two epochs on
    tests/edgenas/search/synthetic.py's accuracy, and its synthetic lut-sum predictor."""
    from once_for_all.accuracy_dataset import sample_dataset
    from once_for_all.accuracy_predictor import fit_accuracy_predictor
    from tests.edgenas.search import synthetic

    folder = tmp_path_factory.mktemp("predictors")
    subnets = sample_dataset(synthetic.SPACE, 24, seed=0)
    accuracies = [float(a) for a in synthetic.accuracy(subnets)]
    fit_accuracy_predictor(
        synthetic.SPACE, subnets, accuracies, seed=0, epochs=2, refit=False
    ).save(folder / "accuracy_predictor.pt")
    synthetic.predictor().save(folder / "predictor.json")
    return folder / "accuracy_predictor.pt", folder / "predictor.json"
