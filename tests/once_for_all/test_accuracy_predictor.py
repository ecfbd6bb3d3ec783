"""Accuracy predictor: it ranks held-out subnets where a constant cannot, it survives a save and
load unchanged, and it works end to end on accuracies measured on a (briefly trained) supernet."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from once_for_all import OFAMobileNetV3, Subnet, SubnetError, get_space
from once_for_all.accuracy_dataset import AccuracyCache, evaluate_many, sample_dataset
from once_for_all.accuracy_predictor import (
    PREDICTOR_FORMAT,
    AccuracyPredictor,
    AccuracyPredictorError,
    fit_accuracy_predictor,
    load_accuracy_predictor,
)
from once_for_all.data import BatchLoader, DataBundle, resize_batch

SPACE = get_space("mbv3-tiny")


def synthetic_accuracy(subnets: list[Subnet], *, seed: int) -> list[float]:
    """A smooth, saturating function of capacity (kernel, expand ratio and depth per block,
    and resolution) plus measurement noise: shaped like real accuracy, known exactly."""
    noise = np.random.default_rng(seed).normal(0.0, 0.005, len(subnets))
    out = []
    for subnet, eps in zip(subnets, noise, strict=True):
        capacity = 0.1 * SPACE.resolutions.index(subnet.r)
        for b in SPACE.active_blocks(subnet):
            stage_weight = 1.0 + 0.5 * SPACE.stage_of(b)  # later stages matter more
            capacity += stage_weight * (
                0.05
                + 0.02 * SPACE.kernel_sizes.index(subnet.ks[b])
                + 0.04 * SPACE.expand_ratios.index(subnet.e[b])
            )
        out.append(0.92 - 0.6 * math.exp(-capacity) + float(eps))
    return out


@pytest.fixture(scope="module")
def synthetic() -> tuple[list[Subnet], list[float], AccuracyPredictor]:
    subnets = sample_dataset(SPACE, 198, seed=0)
    accuracies = synthetic_accuracy(subnets, seed=0)
    return subnets, accuracies, fit_accuracy_predictor(SPACE, subnets, accuracies, seed=0)


def test_predictor_beats_a_constant_on_held_out_subnets(
    synthetic: tuple[list[Subnet], list[float], AccuracyPredictor],
) -> None:
    _, _, predictor = synthetic
    v = predictor.validation
    assert (v["n_train"], v["n_holdout"], v["n_fit"]) == (160, 40, 200)
    assert v["rmse"] < 0.5 * v["constant"]["rmse"]
    assert v["kendall"] > 0.6
    assert math.isnan(v["constant"]["kendall"])
    # Unseen subnets: predictions follow the true function, not the mean.
    unseen = [SPACE.sample(random.Random(10_000 + i)) for i in range(100)]
    truth = np.array(synthetic_accuracy(unseen, seed=1))
    predicted = predictor.predict_many(unseen)
    assert np.sqrt(np.mean((predicted - truth) ** 2)) < 0.5 * truth.std()
    assert predictor.predict(SPACE.max_subnet()) > predictor.predict(SPACE.min_subnet())


def test_fit_is_deterministic_and_leaves_torch_settings_alone(
    synthetic: tuple[list[Subnet], list[float], AccuracyPredictor],
) -> None:
    subnets, accuracies, predictor = synthetic
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    again = fit_accuracy_predictor(SPACE, subnets, accuracies, seed=0)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(1), expected_draw)  # the global RNG was not consumed
    np.testing.assert_array_equal(again.predict_many(subnets), predictor.predict_many(subnets))
    other = fit_accuracy_predictor(SPACE, subnets, accuracies, seed=1, refit=False, epochs=20)
    assert not np.array_equal(other.predict_many(subnets), predictor.predict_many(subnets))
    assert other.validation["n_fit"] == other.validation["n_train"]


def test_save_and_load_give_identical_predictions(
    tmp_path: Path, synthetic: tuple[list[Subnet], list[float], AccuracyPredictor]
) -> None:
    subnets, _, predictor = synthetic
    path = tmp_path / "accuracy_predictor.pt"
    predictor.save(path)
    assert not list(tmp_path.glob(".*tmp"))
    payload = torch.load(path, weights_only=True)  # tensors and plain data only
    assert payload["format"] == PREDICTOR_FORMAT
    assert payload["space"]["id"] == SPACE.id
    loaded = load_accuracy_predictor(path)
    assert loaded.space == SPACE
    np.testing.assert_array_equal(loaded.predict_many(subnets), predictor.predict_many(subnets))
    assert loaded.validation["rmse"] == predictor.validation["rmse"]
    assert loaded.validation["n_holdout"] == predictor.validation["n_holdout"]


def test_predict_many_scores_ten_thousand_subnets(
    synthetic: tuple[list[Subnet], list[float], AccuracyPredictor],
) -> None:
    _, _, predictor = synthetic
    rng = random.Random(0)
    subnets = [SPACE.sample(rng) for _ in range(10_000)]
    predicted = predictor.predict_many(subnets)
    assert predicted.shape == (10_000,) and predicted.dtype == np.float64
    assert np.all(np.isfinite(predicted))
    assert predictor.predict(subnets[7]) == pytest.approx(predicted[7], abs=1e-12)
    assert predictor.predict_many([]).shape == (0,)


def test_predictor_refuses_subnets_of_another_space(
    synthetic: tuple[list[Subnet], list[float], AccuracyPredictor],
) -> None:
    _, _, predictor = synthetic
    alien = Subnet(space="elsewhere", ks=(3,), e=(3,), d=(2,), r=28)
    with pytest.raises(SubnetError, match="elsewhere"):
        predictor.predict(alien)


def test_fit_rejects_bad_input() -> None:
    subnets = sample_dataset(SPACE, 10, seed=0)
    with pytest.raises(ValueError, match="12 subnets but 11 accuracies"):
        fit_accuracy_predictor(SPACE, subnets, [0.5] * 11)
    with pytest.raises(ValueError, match="at least 10"):
        fit_accuracy_predictor(SPACE, subnets[:5], [0.5] * 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_accuracy_predictor(SPACE, subnets, [85.0] * 12)
    with pytest.raises(ValueError, match="holdout"):
        fit_accuracy_predictor(SPACE, subnets, [0.5] * 12, holdout=0.9)


def test_foreign_or_corrupt_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "edgenas.supernet/1", "model": {}}, foreign)
    damaged = tmp_path / "damaged.pt"
    torch.save({"format": PREDICTOR_FORMAT, "space": SPACE.to_dict()}, damaged)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(foreign.read_bytes()[:200])
    cases = [
        (tmp_path / "missing.pt", "not found"),
        (tmp_path, f"predictor {tmp_path} is a folder: give the predictor file in it"),
        (garbage, r"corrupt or not a torch file \(not a PyTorch file: it is neither a zip"),
        (truncated, r"corrupt or not a torch file \(truncated or damaged\): fit it again"),
        (foreign, "not an accuracy predictor"),
        (damaged, "damaged"),
    ]
    for path, needle in cases:
        with pytest.raises(AccuracyPredictorError, match=needle) as info:
            load_accuracy_predictor(path)
        assert "\n" not in str(info.value)


def briefly_trained_supernet(data: DataBundle, *, steps: int) -> OFAMobileNetV3:
    """A few Adam steps on random subnets: far from converged, but subnets now differ."""
    torch.manual_seed(0)
    net = OFAMobileNetV3(SPACE)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = random.Random(0)
    loader = BatchLoader(data.train, data.spec, batch_size=64, shuffle=True, seed=0)
    net.train()
    for _, (x, y) in zip(range(steps), loader.epoch(0), strict=False):
        subnet = net.sample_active(rng)
        loss = torch.nn.functional.cross_entropy(net(resize_batch(x, subnet.r)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def test_end_to_end_on_measured_accuracies(tmp_path: Path, fmnist_small: DataBundle) -> None:
    supernet = briefly_trained_supernet(fmnist_small, steps=30)
    subnets = sample_dataset(SPACE, 22, seed=0)
    # Fewer BN and validation images than a real run: this is a plumbing check, ~10 s on a core.
    cache = AccuracyCache.open(tmp_path / "acc.json", supernet, bn_images=128, limit=300)
    accuracies = evaluate_many(supernet, subnets, fmnist_small, cache=cache)
    assert len(accuracies) == len(cache) == 24
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert len(set(accuracies)) > 5, accuracies

    predictor = fit_accuracy_predictor(SPACE, subnets, accuracies, seed=0)
    v = predictor.validation
    assert (v["n_train"], v["n_holdout"]) == (19, 5)
    assert math.isfinite(v["rmse"]) and math.isfinite(v["constant"]["rmse"])
    # Refitted on all 24, it must at least reproduce the order of what it was fitted on.
    fitted = predictor.predict_many(subnets)
    assert np.corrcoef(fitted, accuracies)[0, 1] > 0.8
