"""Fixtures for the export tests: the smallest mbv3-tiny subnet with BN statistics estimated
on real Fashion-MNIST images (random-init BN leaves activations near zero, which would make
the int8 checks meaningless), and real images to calibrate and compare on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from once_for_all import build_from_config, get_space, recalibrate_bn
from once_for_all.data import DataBundle
from once_for_all.data.batches import normalize, resize_batch
from once_for_all.network_config import network_config


@dataclass(frozen=True)
class TinyModel:
    """A static subnet, its NCHW input shape, and float32 NCHW images for it."""

    model: nn.Module
    input_shape: tuple[int, int, int, int]
    calibration: np.ndarray  # training images, for int8 calibration
    inputs: np.ndarray  # held-out validation images, for comparisons

    def reference(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="session")
def tiny(fmnist_small: DataBundle) -> TinyModel:
    space = get_space("mbv3-tiny")
    subnet = space.min_subnet()
    torch.manual_seed(0)
    model = build_from_config(network_config(space, subnet))

    def images(split: torch.Tensor) -> torch.Tensor:
        return resize_batch(normalize(split, fmnist_small.spec), subnet.r)

    recalibrate_bn(model, images(fmnist_small.train.images[:512]).split(64))
    return TinyModel(
        model=model.eval(),
        input_shape=(1, fmnist_small.spec.channels, subnet.r, subnet.r),
        calibration=images(fmnist_small.train.images[512:576]).numpy(),
        inputs=images(fmnist_small.val.images[:32]).numpy(),
    )
