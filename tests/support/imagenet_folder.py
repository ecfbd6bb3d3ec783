"""Small ImageNet-layout folders of real JPEG files: root/train/<wnid>/*.JPEG and
root/val/<wnid>/*.JPEG, as torchvision's ImageFolder and OFA read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def wnid(i: int) -> str:
    """A synset-like folder name; sorted names keep the numeric order."""
    return f"n{i:08d}"


def write_imagenet_folder(
    root: Path,
    *,
    classes: int = 1000,
    per_class: int = 1,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
) -> Path:
    """``per_class`` random-noise JPEGs of ``size`` (width, height) per class and split;
    returns ``root``."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / wnid(c)
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid(c)}_{k}.JPEG", quality=75)
    return root
