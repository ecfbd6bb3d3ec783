"""How a decoded image becomes a square of `size` pixels: squashed (edgenas's default for small
data sets of square images), OFA's ImageNet eval transform (a centre crop), or OFA's ImageNet
train transforms (random-resized crop, horizontal flip, colour jitter), all on PIL images, as
torchvision's transforms do (torchvision does not import beside this torch build)."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageEnhance

Resize = Literal["squash", "center-crop"]
RESIZES: tuple[Resize, ...] = get_args(Resize)
# A training split's augmentation: a 2-pixel padded crop and a flip (small square images held
# in memory), or OFA's train transforms (photos: a folder read with OFA's centre crop, or
# streamed).
TrainTransforms = Literal["crop-flip", "ofa"]

# OFA (and torchvision's ImageNet recipes) resize to size / 0.875 before the centre crop:
# 256 px for 224.
CROP_FRACTION = 0.875
# OFA's RandomResizedCrop(scale=(0.08, 1.0)) with torchvision's default aspect ratios
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# OFA's distort_color="tf": ColorJitter(brightness=32/255, saturation=0.5)
JITTER_BRIGHTNESS = 32.0 / 255.0
JITTER_SATURATION = 0.5
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
FLOAT_MODE = "F"  # 32-bit float grey (TIFF)
GRAY_MODES = ("1", "L", "LA", *SIXTEEN_BIT_MODES, FLOAT_MODE)


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


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as 8-bit grey (``channels`` 1) or RGB (3), from any mode Pillow reads: grey,
    palette, RGBA (alpha dropped, as torchvision's ImageFolder does), CMYK, 16-bit grey,
    which is scaled to 8 bits (Pillow's own conversion clips it at 255), and float grey, whose
    values in 0…1 (−0.5…1.5: a resampling filter overshoots) are scaled as a .npz's float
    images are and clipped (Pillow's conversion made them 0, black), others taken as 0…255."""
    target = "L" if channels == 1 else "RGB"
    if image.mode == target:
        return image
    if image.mode in (*SIXTEEN_BIT_MODES, FLOAT_MODE):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if image.mode == FLOAT_MODE:
            # 0…1 give or take a resampling filter's overshoot (a 1.01 made a whole image
            # 0…255, nearly black); an image of 0…255 values all below 1.5 is black anyway.
            unit = values.size and values.min() >= -0.5 and values.max() <= 1.5
            scale = 255.0 if unit else 1.0
        else:
            scale = 1 / 257.0
        grey = Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8))
        return grey if channels == 1 else grey.convert("RGB")
    return image.convert(target)


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of torchvision's ``RandomResizedCrop.get_params``
    with OFA's scale (0.08, 1) and ratio (3/4, 4/3): ten tries at a random area and log-uniform
    aspect ratio, then the centre crop of the image clamped to those ratios."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def train_augment(
    image: Image.Image, size: int, box: tuple[float, float, float, float], rng: np.random.Generator
) -> Image.Image:
    """OFA's train transform after the crop box is drawn: ``box`` resized (bilinear) to
    size x size, a horizontal flip with probability 1/2, then colour jitter (brightness
    factor in 1 +- 32/255, saturation in 1 +- 0.5, in a random order, as torchvision's
    ``ColorJitter``; saturation leaves grey images alone)."""
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    brightness = rng.uniform(1 - JITTER_BRIGHTNESS, 1 + JITTER_BRIGHTNESS)
    saturation = rng.uniform(1 - JITTER_SATURATION, 1 + JITTER_SATURATION)
    for step in rng.permutation(2):
        if step == 0:
            image = ImageEnhance.Brightness(image).enhance(brightness)
        elif image.mode == "RGB":
            image = ImageEnhance.Color(image).enhance(saturation)
    return image
