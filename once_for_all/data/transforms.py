"""How a decoded image becomes a square of `size` pixels: squashed (edgenas's default for small
data sets of square images) or OFA's ImageNet eval transform (a centre crop).

Issue 22's train transforms (random-resized crop, flip, colour jitter) belong here too."""

from __future__ import annotations

import math
from typing import Literal, get_args

from PIL import Image

Resize = Literal["squash", "center-crop"]
RESIZES: tuple[Resize, ...] = get_args(Resize)

# OFA (and torchvision's ImageNet recipes) resize to size / 0.875 before the centre crop:
# 256 px for 224.
CROP_FRACTION = 0.875


def squash(image: Image.Image, size: int) -> Image.Image:
    """Bilinear resize to size x size, whatever the aspect ratio."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """OFA's eval transform (``transforms.Resize(ceil(size / 0.875))`` then
    ``transforms.CenterCrop(size)``): the shorter side resized (PIL bilinear, which
    antialiases when shrinking) to ``ceil(size / 0.875)``, the longer side in proportion
    (truncated, as torchvision does), then the centre ``size`` x ``size`` square; the offsets
    round half to even, as torchvision's ``round``."""
    short = math.ceil(size / CROP_FRACTION)
    width, height = image.size
    if width <= height:
        new = (short, int(short * height / width))
    else:
        new = (int(short * width / height), short)
    if new != image.size:
        image = image.resize(new, Image.Resampling.BILINEAR)
    left = round((new[0] - size) / 2.0)
    top = round((new[1] - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def resize_image(image: Image.Image, size: int, resize: Resize) -> Image.Image:
    """``image`` as size x size by the named transform."""
    return center_crop(image, size) if resize == "center-crop" else squash(image, size)
