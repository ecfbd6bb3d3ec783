"""Holding out test and validation images, and the per-channel statistics of a split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt
import torch

from once_for_all.data.errors import DataError
from once_for_all.data.spec import ImageSplit

TEST_FRACTION = 1 / 6
# The test hold-out of a source without a test set is fixed, whatever the run's seed, so that
# every run on the same data reports on the same images
TEST_HOLDOUT_SEED = 0


def hold_out_test(split: ImageSplit, *, name: str) -> tuple[ImageSplit, ImageSplit]:
    """Split into (train, test), 1/6 of each class to test, chosen by a fixed seed."""
    train_index, test_index = held_out_test_indices(split.labels, name=name)
    return split.select(train_index), split.select(test_index)


def held_out_test_indices(labels: torch.Tensor, *, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``hold_out_test``'s (train, test) indices for int64 ``labels``, each sorted."""
    generator = torch.Generator().manual_seed(TEST_HOLDOUT_SEED)
    test_parts: list[torch.Tensor] = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        count = round(len(members) * TEST_FRACTION)
        test_parts.append(members[torch.randperm(len(members), generator=generator)[:count]])
    test_index = torch.cat(test_parts).sort().values
    if len(test_index) == 0:
        raise DataError(
            f"data '{name}': {len(labels)} images are too few to hold out a test set (1/6 of each "
            "class): add images or provide a separate test set (train/ and test/ folders, or "
            "x_test/y_test in the .npz)"
        )
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_index] = True
    return torch.nonzero(~is_test).flatten(), test_index


def hold_out_validation(
    split: ImageSplit, *, val_size: int, seed: int, train_limit: int | None, name: str
) -> tuple[ImageSplit, ImageSplit]:
    """Split into (train, val): `val_size` images chosen by a permutation seeded with `seed`;
    `train_limit` then keeps the first N remaining images of that permutation. Both keep the
    source's order."""
    train_index, val_index = validation_indices(
        len(split), val_size=val_size, seed=seed, train_limit=train_limit, name=name
    )
    return split.select(train_index), split.select(val_index)


def validation_indices(
    n: int, *, val_size: int, seed: int, train_limit: int | None, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``hold_out_validation``'s (train, val) indices into ``n`` images, each sorted."""
    if val_size < 0:
        raise DataError(f"val_size={val_size} must be >= 0")
    if val_size >= n:
        raise DataError(
            f"data '{name}': val_size={val_size} leaves no training images out of "
            f"{n}: hold out fewer (a recipe's data.val_size; --images of edgenas eval, "
            "--eval-images of edgenas search)"
        )
    if train_limit is not None and train_limit < 1:
        raise DataError(f"train_limit={train_limit} must be >= 1 (or None for all)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_index = order[:val_size]
    train_index = order[val_size:] if train_limit is None else order[val_size:][:train_limit]
    return train_index.sort().values, val_index.sort().values


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W], in [0, 1] units."""
    if len(images) == 0:
        raise DataError("cannot compute mean/std of an empty training split")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means: list[float] = []
    stds: list[float] = []
    for c in range(images.shape[1]):
        # a 256-bin histogram gives exact float64 moments without a float copy of the images
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        # a constant channel would otherwise divide by zero in normalize
        stds.append(max(var**0.5, 1.0 / 255.0))
    return tuple(means), tuple(stds)


def spread_sample(labels: Sequence[int], n: int, *, seed: int) -> list[int]:
    """Indices of ``n`` items (all when ``n`` >= len) spread over the classes: each class's
    items in a seeded random order, taken one per class in turn (classes in a seeded order),
    so every class gets ``n // classes`` or one more while it has items. Sorted; the same for
    the same (labels, n, seed)."""
    if n < 0:
        raise DataError(f"image limit {n} must be >= 0")
    if n >= len(labels):
        return list(range(len(labels)))
    return sorted(int(i) for i in spread_order(labels, seed=seed)[:n])


# Which images an evaluation limited to N images of a split takes (``eval_head``).
EVAL_SEED = 0
# OFA recalibrates BN on 2,000 training images; a fixed seed makes accuracies repeatable.
BN_IMAGES = 2000
BN_SEED = 1234


class _Split(Protocol):
    """An image split held in memory (``ImageSplit``) or streamed (``StreamSplit``)."""

    @property
    def labels(self) -> Any: ...

    def __len__(self) -> int: ...

    def select(self, indices: Any) -> Any: ...


Split = TypeVar("Split", bound=_Split)


def eval_head(split: Split, n: int | None) -> Split:
    """The ``n`` images of ``split`` that work limited to ``n`` images evaluates on (all of
    it, as it is, for None or n >= len: an accuracy does not depend on the order): spread
    over the classes, the same for the same split. The split's own first ``n`` were its
    first classes' where the split is in class order, as a folder's are: a limited accuracy
    was measured on a few classes."""
    if n is None or n >= len(split):
        return split
    return spread_head(split, n)


def spread_head(split: Split, n: int | None) -> Split:
    """``eval_head``'s images, in an order whose every head is spread over the classes too,
    whatever ``n`` (None: all): for work that takes the first of them later (a device's check
    on fewer of export's test images)."""
    if len(split) == 0:
        return split
    index = spread_order(split.labels.tolist(), seed=EVAL_SEED)[:n]
    # ImageSplit indexes a tensor; StreamSplit, an array
    return cast(
        Split, split.select(torch.from_numpy(index) if isinstance(split, ImageSplit) else index)
    )


def spread_order(labels: Sequence[int], *, seed: int) -> npt.NDArray[np.int64]:
    """Every index of ``labels`` in ``spread_sample``'s order: its first ``n`` are the ``n``
    it samples."""
    rng = np.random.default_rng(seed)
    array = np.asarray(labels, dtype=np.int64)
    classes = np.unique(array)
    class_rank = np.empty(int(classes.max()) + 1, dtype=np.int64)
    class_rank[classes] = rng.permutation(len(classes))
    # each item's rank within its class, in a random order
    order = rng.permutation(len(array))
    shuffled = array[order]
    by_class = np.argsort(shuffled, kind="stable")
    starts = np.searchsorted(shuffled[by_class], shuffled[by_class], side="left")
    rank = np.empty(len(array), dtype=np.int64)
    rank[order[by_class]] = np.arange(len(array)) - starts
    return np.lexsort((class_rank[array], rank)).astype(np.int64)
