"""Turning stored uint8 images into normalised float batches: in memory, seeded, no workers."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from once_for_all.data.errors import DataError
from once_for_all.data.spec import DataSpec, ImageSplit
from once_for_all.data.transforms import TrainTransforms, random_resized_crop_box, train_augment
from once_for_all.free_memory import available_memory

_CROP_PADDING = 2


def normalize(images_uint8: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """float32 `(x / 255 - mean) / std`, per channel, for uint8 images [N, C, H, W]."""
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
        raise DataError(
            f"normalize: got {images_uint8.dtype} {list(images_uint8.shape)}, "
            "expected uint8 [N, C, H, W]"
        )
    if images_uint8.shape[1] != spec.channels:
        raise DataError(
            f"normalize: images have {images_uint8.shape[1]} channel(s), "
            f"data '{spec.name}' has {spec.channels}"
        )
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images_uint8.to(torch.float32) / 255.0 - mean) / std


def resize_batch(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of float [N, C, H, W] to `resolution` square (align_corners=False).

    Antialiased only when downsampling; returns `x` itself when it already has that size.
    """
    if not x.is_floating_point() or x.dim() != 4:
        raise DataError(f"resize_batch: got {x.dtype} {list(x.shape)}, expected float [N, C, H, W]")
    if resolution < 1:
        raise DataError(f"resize_batch: resolution={resolution} must be >= 1")
    height, width = x.shape[-2:]
    if height == resolution and width == resolution:
        return x
    downsampling = resolution < height or resolution < width
    return F.interpolate(
        x,
        size=(resolution, resolution),
        mode="bilinear",
        align_corners=False,
        antialias=downsampling,
    )


# Images resized at a time: the float copies of a whole split took 5x its uint8 result
# (60,000 Fashion-MNIST images at 224 px: 15 GB at the peak, for a 3 GB result).
_RESIZE_CHUNK = 1024


def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """`resize_batch` for stored uint8 images, rounded back to uint8, a chunk at a time. A
    result larger than the memory this machine has free is refused before any work, in one
    line: it was the kernel's OOM killer's."""
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    n, channels = images.shape[:2]
    need = n * channels * resolution * resolution
    free = available_memory()
    if free is not None and need > free:
        raise DataError(
            f"{n} images of {channels} x {resolution} x {resolution} take {need / 2**30:.1f} "
            f"GiB in memory, and this machine has {free / 2**30:.1f} GiB free: give a smaller "
            "image_size (the largest resolution the network takes is enough)"
        )
    out = torch.empty((n, channels, resolution, resolution), dtype=torch.uint8)
    for start in range(0, n, _RESIZE_CHUNK):
        part = resize_batch(images[start : start + _RESIZE_CHUNK].to(torch.float32), resolution)
        out[start : start + len(part)] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


# The float copy of a batch's images at their own size, at most, before they are resized
# (``BatchLoader``'s ``resolution``): 222 images of 3 x 224 x 224.
_FLOAT_CHUNK_BYTES = 1 << 27


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for one (seed, epoch), independent of global RNG state, so a resumed run
    replays the same batches."""
    if seed < 0 or epoch < 0:
        raise DataError(f"seed={seed} and epoch={epoch} must both be >= 0")
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    # torch takes seeds below 2**63 here; drop the top bit
    return torch.Generator().manual_seed(int(state) >> 1)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random crop of the image zero-padded by 2 pixels, then a random horizontal
    flip; one vectorised gather over the whole batch."""
    n, channels, height, width = images.shape
    pad = _CROP_PADDING
    padded = F.pad(images, (pad, pad, pad, pad)).reshape(n, channels, -1)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(height)  # [N, H]
    cols = dx[:, None] + torch.arange(width)  # [N, W]
    # a flipped crop reads its columns right to left
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    flat = rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]  # [N, H, W] into padded
    index = flat.reshape(n, 1, -1).expand(n, channels, height * width)
    return padded.gather(2, index).reshape(n, channels, height, width)


def ofa_train_transforms(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """OFA's train transforms (``transforms.train_augment``: random-resized crop, flip, colour
    jitter) on each stored uint8 image [N, C, S, S], back at S x S: what a streamed folder's
    images get, drawn from the stored square instead of the file. The draws come from
    ``generator``, so a batch is repeatable."""
    n, channels, size, _ = images.shape
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    out = torch.empty_like(images)
    for i in range(n):
        pixels = images[i].numpy()
        image = Image.fromarray(pixels[0] if channels == 1 else pixels.transpose(1, 2, 0))
        box = random_resized_crop_box(size, size, rng)
        augmented = np.array(train_augment(image, size, box, rng), dtype=np.uint8)
        out[i] = torch.from_numpy(
            augmented[None] if channels == 1 else augmented.transpose(2, 0, 1)
        )
    return out


class BatchLoader:
    """Batches of (normalised float32 images [B, C, H, W] at native size, or resized to
    `resolution` where given, int64 labels).

    The order and the augmentation of an epoch depend only on (`seed`, epoch). `limit` keeps
    the first `limit` images of the split. `augment` adds, by `transforms`, a random
    2-pixel-padded crop and a random horizontal flip ("crop-flip": small square images,
    clothing; not meant for digits) or OFA's train transforms ("ofa": photos,
    `ofa_train_transforms`).
    """

    def __init__(
        self,
        split: ImageSplit,
        spec: DataSpec,
        *,
        batch_size: int,
        shuffle: bool,
        augment: bool = False,
        transforms: TrainTransforms = "crop-flip",
        seed: int = 0,
        drop_last: bool = False,
        limit: int | None = None,
        resolution: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size} must be >= 1")
        if limit is not None and limit < 1:
            raise DataError(f"limit={limit} must be >= 1 (or None for the whole split)")
        if seed < 0:
            raise DataError(f"seed={seed} must be >= 0")
        self.split = split if limit is None else split.select(torch.arange(min(limit, len(split))))
        self.spec = spec
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.transforms = transforms
        self.seed = seed
        self.drop_last = drop_last
        self.resolution = resolution

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch `epoch`, deterministic for a given (seed, epoch)."""
        generator = epoch_generator(self.seed, epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.split.images[index]
            if self.augment and self.transforms == "ofa":
                images = ofa_train_transforms(images, generator)
            elif self.augment:
                images = random_crop_flip(images, generator)
            yield self._floats(images), self.split.labels[index]

    def _floats(self, images: torch.Tensor) -> torch.Tensor:
        """A batch normalised, and resized to ``resolution`` where given a few images at a
        time: 500 images of 3 x 1024 x 1024 take 6 GiB as floats at their own size, and the
        OOM killer ended a training at its first validation (walk-through)."""
        if self.resolution is None:
            return normalize(images, self.spec)
        step = max(1, _FLOAT_CHUNK_BYTES // (images[0].numel() * 4))
        return torch.cat(
            [
                resize_batch(normalize(images[i : i + step], self.spec), self.resolution)
                for i in range(0, len(images), step)
            ]
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
