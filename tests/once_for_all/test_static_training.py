from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from once_for_all import (
    MobileNetV3,
    OFAMobileNetV3,
    accuracy,
    build_from_config,
    get_space,
    train_static,
)
from once_for_all.data import BatchLoader, DataBundle, load_data, resize_batch


@pytest.fixture(scope="module")
def fmnist_1k() -> DataBundle:
    return load_data("fashion-mnist", val_size=500, train_limit=1000)


@pytest.fixture(scope="module")
def tiny_config() -> dict[str, Any]:
    space = get_space("mbv3-tiny")
    # a small subnet at a resolution other than the data's 28 px, so the resize path is used
    return OFAMobileNetV3(space).subnet_config(space.min_subnet(r=30))


def _fresh(config: dict[str, Any], seed: int = 0) -> MobileNetV3:
    torch.manual_seed(seed)
    return build_from_config(config)


@torch.no_grad()
def _val_loss(model: MobileNetV3, data: DataBundle) -> float:
    model.eval()
    loader = BatchLoader(data.val, data.spec, batch_size=500, shuffle=False)
    x, y = next(iter(loader))
    return float(F.cross_entropy(model(resize_batch(x, model.resolution)), y))


def test_one_epoch_learns(fmnist_1k: DataBundle, tiny_config: dict[str, Any]) -> None:
    model = _fresh(tiny_config)
    loss_before = _val_loss(model, fmnist_1k)
    epochs_seen: list[tuple[int, float, float]] = []
    history = train_static(
        model,
        fmnist_1k,
        epochs=1,
        lr=0.1,
        batch_size=16,
        on_epoch=lambda e, loss, acc: epochs_seen.append((e, loss, acc)),
    )
    assert len(history) == 1
    record = history[0]
    assert set(record) == {"epoch", "lr", "train_loss", "train_acc", "seconds"}
    assert epochs_seen == [(1, record["train_loss"], record["train_acc"])]
    assert record["lr"] < 0.01  # cosine decay ends near zero
    assert not model.training
    assert _val_loss(model, fmnist_1k) < min(loss_before, math.log(10))
    # 10 balanced classes: chance is 10%
    assert accuracy(model, fmnist_1k.val, fmnist_1k, resolution=30) > 0.25


def test_same_seed_same_weights(fmnist_1k: DataBundle, tiny_config: dict[str, Any]) -> None:
    def run(seed: int, teacher: MobileNetV3 | None = None) -> dict[str, torch.Tensor]:
        model = _fresh(tiny_config)
        train_static(model, fmnist_1k, epochs=1, lr=0.1, seed=seed, teacher=teacher)
        return model.state_dict()

    first, again, other = run(0), run(0), run(1)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)

    teacher = _fresh(tiny_config, seed=5).eval()
    distilled = run(0, teacher=copy.deepcopy(teacher))
    distilled_again = run(0, teacher=copy.deepcopy(teacher))
    assert all(torch.equal(distilled[k], distilled_again[k]) for k in first)
    assert not all(torch.equal(first[k], distilled[k]) for k in first)


def test_refuses_mismatched_data(fmnist_1k: DataBundle) -> None:
    space = get_space("mbv3-imagenet")
    config = OFAMobileNetV3(space).subnet_config(space.min_subnet())
    with pytest.raises(ValueError, match="3 channel"):
        train_static(build_from_config(config), fmnist_1k, epochs=1, lr=0.1)


def test_refuses_bad_arguments(fmnist_1k: DataBundle, tiny_config: dict[str, Any]) -> None:
    model = _fresh(tiny_config)
    with pytest.raises(ValueError, match="epochs=0"):
        train_static(model, fmnist_1k, epochs=0, lr=0.1)
    with pytest.raises(ValueError, match="batch_size=2000"):
        train_static(model, fmnist_1k, epochs=1, lr=0.1, batch_size=2000)
