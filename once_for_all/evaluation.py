"""Subnet accuracy with inherited weights: extract, recalibrate BN, evaluate."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from once_for_all.bn_recalibration import recalibrate_bn
from once_for_all.data import BatchLoader, DataBundle, ImageSplit, resize_batch
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.subnet import Subnet

# OFA recalibrates BN on 2,000 training images; a fixed seed makes accuracies repeatable.
BN_IMAGES = 2000
BN_SEED = 1234


def device_of(model: nn.Module) -> torch.device:
    """Where the model's weights live (inputs are moved there)."""
    return next(model.parameters()).device


@torch.no_grad()
def accuracy(
    model: nn.Module,
    split: ImageSplit,
    data: DataBundle,
    *,
    resolution: int,
    batch_size: int = 500,
    limit: int | None = None,
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``split`` resized to ``resolution``."""
    model.eval()
    device = device_of(model)
    loader = BatchLoader(split, data.spec, batch_size=batch_size, shuffle=False, limit=limit)
    correct = total = 0
    for x, y in loader.epoch(0):
        pred = model(resize_batch(x.to(device), resolution)).argmax(1)
        correct += int((pred.cpu() == y).sum())
        total += len(y)
    return correct / max(total, 1)


def bn_batches(
    data: DataBundle, resolution: int, *, images: int = BN_IMAGES, batch_size: int = 200
) -> Iterator[torch.Tensor]:
    """A fixed random slice of the training split at ``resolution`` for BN recalibration."""
    loader = BatchLoader(
        data.train, data.spec, batch_size=batch_size, shuffle=True, seed=BN_SEED, limit=images
    )
    for x, _ in loader.epoch(0):
        yield resize_batch(x, resolution)


def evaluate_subnet(
    supernet: OFAMobileNetV3,
    subnet: Subnet,
    data: DataBundle,
    *,
    split: str = "val",
    bn_images: int = BN_IMAGES,
    limit: int | None = None,
) -> float:
    """Accuracy of ``subnet`` with weights inherited from ``supernet`` after BN recalibration.
    ``split`` is ``val`` during search and ``test`` only for final reporting."""
    model = supernet.extract(subnet)
    device = device_of(model)
    recalibrate_bn(model, (x.to(device) for x in bn_batches(data, subnet.r, images=bn_images)))
    return accuracy(model, getattr(data, split), data, resolution=subnet.r, limit=limit)
