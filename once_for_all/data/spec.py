"""What a data set is: its description (`DataSpec`), its splits and the bundle of both."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TypeVar

import torch

from once_for_all.data.errors import DataError
from once_for_all.data.transforms import TrainTransforms

DATASPEC_FORMAT = "edgenas.dataspec/1"

_T = TypeVar("_T")


@dataclass(frozen=True)
class DataSpec:
    """Everything a model or a deployed runner needs to know about the input data.

    `mean` and `std` are per channel, in [0, 1] pixel units, computed on the training split.
    """

    name: str
    channels: int
    image_size: int
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DataError(f"data spec '{self.name}': channels={self.channels}: allowed 1, 3")
        if self.image_size < 1:
            raise DataError(f"data spec '{self.name}': image_size={self.image_size} must be >= 1")
        if self.num_classes < 2 or len(self.class_names) != self.num_classes:
            raise DataError(
                f"data spec '{self.name}': num_classes={self.num_classes} with "
                f"{len(self.class_names)} class names; need at least 2 classes, one name each"
            )
        for field, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.channels or not all(math.isfinite(v) for v in values):
                raise DataError(
                    f"data spec '{self.name}': {field}={list(values)} must hold "
                    f"{self.channels} finite value(s), one per channel"
                )
        if not all(s > 0 for s in self.std):
            raise DataError(f"data spec '{self.name}': std={list(self.std)} must be positive")

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe dict, tagged with the format version."""
        return {
            "format": DATASPEC_FORMAT,
            "name": self.name,
            "channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> DataSpec:
        """Inverse of `to_dict`; refuses another format or missing and mistyped fields."""
        fmt = d.get("format")
        if fmt != DATASPEC_FORMAT:
            raise DataError(
                f"data spec has format {fmt!r}, this edgenas reads {DATASPEC_FORMAT!r}: "
                "regenerate it with this version"
            )
        return cls(
            name=_field(d, "name", str),
            channels=_field(d, "channels", int),
            image_size=_field(d, "image_size", int),
            num_classes=_field(d, "num_classes", int),
            class_names=tuple(_list_field(d, "class_names", str)),
            mean=tuple(_list_field(d, "mean", float)),
            std=tuple(_list_field(d, "std", float)),
        )


def _field(d: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    value = d.get(key)
    # bool is an int subclass; a flag where a count belongs is a mistake, not a 1
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"data spec field {key!r}={value!r}: expected {kind.__name__}")
    return value


def _list_field(d: Mapping[str, object], key: str, kind: type[_T]) -> list[_T]:
    value = d.get(key)
    if not isinstance(value, (list, tuple)):
        raise DataError(f"data spec field {key!r}={value!r}: expected a list")
    items: list[_T] = []
    for item in value:
        # JSON writes 1.0 as 1.0, but a hand-written spec may say 1
        if kind is float and isinstance(item, int) and not isinstance(item, bool):
            item = float(item)
        if not isinstance(item, kind) or isinstance(item, bool):
            raise DataError(
                f"data spec field {key!r}={value!r}: expected a list of {kind.__name__}"
            )
        items.append(item)
    return items


@dataclass(frozen=True)
class ImageSplit:
    """Images as uint8 [N, C, H, W] and their labels as int64 [N], all in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"image split: images are {self.images.dtype} {list(self.images.shape)}, "
                "expected uint8 [N, C, H, W]"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DataError(
                f"image split: labels are {self.labels.dtype} {list(self.labels.shape)}, "
                "expected int64 [N]"
            )
        if len(self.labels) != len(self.images):
            raise DataError(f"image split: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: torch.Tensor) -> ImageSplit:
        """The images at `indices`, in that order."""
        return ImageSplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class DataBundle:
    """A data set ready for training and search.

    `train` excludes the held-out `val` images; `val` (from the official training set) is for
    BN recalibration and subnet accuracy during search; `test` is for final reporting only.
    `train_transforms` is how training augments `train` (where it augments): photos read with
    OFA's centre crop take OFA's train transforms, as they would streamed. `bn`, where given,
    holds the images BN is recalibrated on instead of `train`'s: a streamed folder's, cropped
    by OFA's train transforms from the files (once_for_all.data.image_stream.hold_bn_images).
    `decode_at`, where given (images held from a folder), decodes a split's files again at
    another resolution (`split_at`).
    """

    spec: DataSpec
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    train_transforms: TrainTransforms = "crop-flip"
    bn: ImageSplit | None = None
    decode_at: Callable[[str, int], ImageSplit] | None = dataclass_field(
        default=None, compare=False
    )

    def split_at(self, name: str, resolution: int) -> ImageSplit:
        """Split ``name`` (train, val, test) as a subnet of ``resolution`` is evaluated on it:
        the images held, which the loader resizes; for a folder's, the same files decoded at
        that resolution by the eval transform (once), as streaming them decodes them: a
        resized crop of the largest size differed from the crop at the subnet's size, and so
        did one subnet's accuracy between eval and search or export."""
        held: ImageSplit = getattr(self, name)
        if self.decode_at is None or resolution == self.spec.image_size:
            return held
        return self.decode_at(name, resolution)

    def __post_init__(self) -> None:
        expected = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        splits = (("train", self.train), ("val", self.val), ("test", self.test), ("bn", self.bn))
        for name, split in ((n, s) for n, s in splits if s is not None):
            if tuple(split.images.shape[1:]) != expected:
                raise DataError(
                    f"data '{self.spec.name}': {name} images are {list(split.images.shape[1:])}, "
                    f"the spec says {list(expected)}"
                )


@dataclass(frozen=True)
class RawDataset:
    """A source as read from disk, before the validation split; `test` is None if the source
    has no official test set."""

    name: str
    class_names: tuple[str, ...]
    train: ImageSplit
    test: ImageSplit | None
