"""Subnet accuracy with inherited weights: extract, recalibrate BN, evaluate; on data held in
memory (``DataBundle``) or streamed from an image folder (``StreamBundle``)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from once_for_all.bn_recalibration import recalibrate_bn
from once_for_all.data import (
    BatchLoader,
    DataBundle,
    DataError,
    ImageSplit,
    StreamBundle,
    StreamLoader,
    StreamSplit,
    resize_batch,
)
from once_for_all.data.image_stream import hold_bn_images
from once_for_all.data.splits import BN_IMAGES, BN_SEED, eval_head
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.progress import Progress
from once_for_all.subnet import Subnet


def device_of(model: nn.Module) -> torch.device:
    """Where the model's weights live (inputs are moved there)."""
    return next(model.parameters()).device


@torch.no_grad()
def accuracy(
    model: nn.Module,
    split: ImageSplit | StreamSplit,
    data: DataBundle | StreamBundle,
    *,
    resolution: int,
    batch_size: int = 500,
    limit: int | None = None,
    progress: Progress | None = None,
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``limit`` images of ``split`` (``eval_head``'s,
    spread over the classes) at ``resolution``: stored images resized, streamed ones decoded
    by OFA's eval transform at that resolution (resize to r / 0.875, centre crop r).
    ``progress`` hears stage ``"evaluate"`` in images after each batch."""
    model.eval()
    device = device_of(model)
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit} must be >= 1 (or None for the whole split)")
    loader: BatchLoader | StreamLoader
    if isinstance(split, StreamSplit):
        loader = StreamLoader(
            eval_head(split, limit),
            data.spec,
            batch_size=batch_size,
            shuffle=False,
            resolutions=(resolution,),
            workers=data.workers if isinstance(data, StreamBundle) else None,
        )
    else:
        loader = BatchLoader(
            eval_head(split, limit),
            data.spec,
            batch_size=batch_size,
            shuffle=False,
            # resized on the host a few at a time (its memory); a GPU resizes them itself
            resolution=resolution if device.type == "cpu" else None,
        )
    correct = total = 0
    # a streamed batch is short by the unreadable images it skipped: count images offered
    images, offered = len(loader.split), 0
    for x, y in loader.epoch(0):
        pred = model(resize_batch(x.to(device), resolution)).argmax(1)
        correct += int((pred.cpu() == y).sum())
        total += len(y)
        if progress is not None:
            offered = min(offered + batch_size, images)
            progress("evaluate", offered, images)
    return correct / max(total, 1)


def bn_batches(
    data: DataBundle | StreamBundle,
    resolution: int,
    *,
    images: int = BN_IMAGES,
    batch_size: int = 200,
) -> Iterator[torch.Tensor]:
    """A fixed random slice of the training split at ``resolution`` for BN recalibration,
    or of a folder's BN images (``hold_bn_images``: OFA's train transforms, as its
    ``set_running_statistics`` reads them through the training loader). A streamed folder's
    are decoded here; search and export hold the same ones (``hold_in_memory``), in the
    same batches: one subnet's BN statistics are the same in eval, search and export, and so
    is its accuracy (``DataBundle.split_at``)."""
    if isinstance(data, StreamBundle):
        source = hold_bn_images(data, images)
    else:
        source = data.train if data.bn is None else data.bn
    # The slice is drawn first: a loader's limit keeps the first images it is given, and a
    # folder's split is in class order (BN statistics of its first classes only).
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(BN_SEED))
    loader = BatchLoader(
        source.select(order[:images]),
        data.spec,
        batch_size=batch_size,
        shuffle=True,
        seed=BN_SEED,
        resolution=resolution,
    )
    for x, _ in loader.epoch(0):
        yield x


def evaluate_subnet(
    supernet: OFAMobileNetV3,
    subnet: Subnet,
    data: DataBundle | StreamBundle,
    *,
    split: str = "val",
    bn_images: int = BN_IMAGES,
    limit: int | None = None,
    progress: Progress | None = None,
) -> float:
    """Accuracy of ``subnet`` with weights inherited from ``supernet`` after BN recalibration.
    ``split`` is ``val`` during search and ``test`` only for final reporting; ``progress``
    as ``accuracy``'s."""
    model = supernet.extract(subnet)
    device = device_of(model)
    recalibrate_bn(model, (x.to(device) for x in bn_batches(data, subnet.r, images=bn_images)))
    images = (
        data.split_at(split, subnet.r) if isinstance(data, DataBundle) else getattr(data, split)
    )
    return accuracy(model, images, data, resolution=subnet.r, limit=limit, progress=progress)
