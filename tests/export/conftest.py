"""Fixtures for the export tests: mbv3-tiny subnets with BN statistics estimated on real
Fashion-MNIST images (random-init BN leaves activations near zero, which would make the int8
checks meaningless), real images to calibrate and compare on, and one ``export_subnet`` of
the widest-kernel subnet in every format and precision, shared by the modules that check
those files (each TFLite conversion takes seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export.subnet_export import ExportOptions, ExportResult, export_subnet
from once_for_all import SearchSpace, build_from_config, get_space, recalibrate_bn
from once_for_all.data import DataBundle
from once_for_all.data.batches import normalize, resize_batch
from once_for_all.network_config import network_config
from once_for_all.subnet import Subnet


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
    """The smallest subnet (every kernel 3×3)."""
    space = get_space("mbv3-tiny")
    return _tiny_model(fmnist_small, space, space.min_subnet(), held_out=32)


@pytest.fixture(scope="session")
def wide(fmnist_small: DataBundle) -> TinyModel:
    """An mbv3-tiny subnet with every kernel 7×7 (down to 2×2 maps) and hard-swish stages:
    the form XNNPACK needs wide depthwise kernels banded for."""
    space = get_space("mbv3-tiny")
    n = len(space.max_subnet().ks)
    subnet = Subnet(space.id, ks=(7,) * n, e=(3,) * n, d=(2,) * len(space.stages), r=28)
    return _tiny_model(fmnist_small, space, subnet, held_out=64)


@dataclass(frozen=True)
class Exported:
    """``export_subnet``'s files of the ``wide`` subnet (all formats, fp32 and int8 calibrated
    on ``calibration_images`` training images, checked on ``test_images`` test images) in
    ``folder``, which holds nothing else."""

    folder: Path
    result: ExportResult
    calibration_images: int
    test_images: int


@pytest.fixture(scope="session")
def wide_export(
    wide: TinyModel, fmnist_small: DataBundle, tmp_path_factory: pytest.TempPathFactory
) -> Exported:
    folder = tmp_path_factory.mktemp("wide-export")
    calibration, test = 64, 300
    result = export_subnet(
        wide.model,
        fmnist_small,
        folder,
        # The stem whole, whatever the untrained subnet's agreement ("auto" could split it;
        # test_stem_split checks that).
        options=ExportOptions(
            int8=True, test_images=test, calibration_images=calibration, stem_groups=1
        ),
        metadata={"edgenas.subnet": "s"},
    )
    return Exported(folder, result, calibration, test)


def _tiny_model(
    fmnist_small: DataBundle, space: SearchSpace, subnet: Subnet, *, held_out: int
) -> TinyModel:
    torch.manual_seed(0)
    model = build_from_config(network_config(space, subnet))

    def images(split: torch.Tensor) -> torch.Tensor:
        return resize_batch(normalize(split, fmnist_small.spec), subnet.r)

    recalibrate_bn(model, images(fmnist_small.train.images[:512]).split(64))
    return TinyModel(
        model=model.eval(),
        input_shape=(1, fmnist_small.spec.channels, subnet.r, subnet.r),
        calibration=images(fmnist_small.train.images[512:576]).numpy(),
        inputs=images(fmnist_small.val.images[:held_out]).numpy(),
    )
