"""A user's own images: an ImageFolder-style directory or a .npz file."""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError

from once_for_all.data.batches import resize_images
from once_for_all.data.errors import DataError
from once_for_all.data.spec import ImageSplit, RawDataset
from once_for_all.data.splits import TEST_HOLDOUT_SEED, spread_sample
from once_for_all.data.transforms import GRAY_MODES, Resize, resize_image, to_channels
from once_for_all.errors import one_line

# What Pillow reads (its wheels carry WebP and TIFF); anything else in a class folder
# (.DS_Store, README.txt, Thumbs.db) is not an image of the class.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# The held-out split's folder: edgenas's name, then ImageNet's.
HELD_OUT_NAMES = ("test", "val")
_FOLDER_LAYOUT = (
    "expected root/<class>/*.png or root/train/<class>/... + root/test/<class>/... "
    "(or root/val/<class>/..., ImageNet's layout)"
)
_NPZ_LAYOUT = "[N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3"
# What operating systems leave in folders: skipped without a word.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
log = logging.getLogger(__name__)
_warned: set[tuple[Path, int]] = set()  # folders whose skipped files were said (per process)


def load_image_folder(
    root: Path,
    *,
    image_size: int | None,
    resize: Resize = "squash",
    channels: int | None = None,
    train_read_limit: int | None = None,
    test_read_limit: int | None = None,
    seed: int = 0,
) -> RawDataset:
    """Images in class folders, optionally split into train/ and test/ (or val/, ImageNet's
    layout). Labels index the sorted class folder names (torchvision ImageFolder's order,
    which numbers ImageNet's synsets as OFA's labels do).

    ``channels`` 1 or 3 converts every image (CMYK, grey, RGBA... to RGB); by default one
    channel if every image read is grayscale, else RGB. Every image becomes ``image_size``
    square by ``resize`` (once_for_all.data.transforms); ``image_size`` defaults to the size
    of the first image, which must then be square.

    Only ``train_read_limit`` training and ``test_read_limit`` test images are decoded (all
    when None), spread over the classes by a draw seeded with ``seed`` (train) or a fixed
    seed (test); each costs channels x image_size**2 bytes (147 KiB for 3 x 224 x 224). An
    unreadable image is refused, naming the file.
    """
    listing = list_image_folder(root)
    class_names, split_layout = list(listing.class_names), listing.test is not None
    train_files, test_files = listing.train, listing.test or []
    train_files = _limited(train_files, train_read_limit, seed)
    test_files = _limited(test_files, test_read_limit, TEST_HOLDOUT_SEED)
    files = train_files + test_files
    if not files:
        raise DataError(f"image folder {root}: the read limits leave no image to read")

    if channels is None:
        modes = [_header(path)[0] for path, _ in files]
        channels = 1 if all(mode in GRAY_MODES for mode in modes) else 3
    if image_size is None:
        width, height = _header(files[0][0])[1]
        if width != height:
            raise DataError(
                f"{files[0][0]} is {width}x{height}, not square: give image_size (a recipe's "
                "data.image_size), the size every image is resized to"
            )
        image_size = width
    size = image_size

    def split(files: list[tuple[Path, int]]) -> ImageSplit:
        # filled in place: the decoded split is the only copy held
        pixels = np.empty((len(files), channels, size, size), dtype=np.uint8)
        for i, (path, _) in enumerate(files):
            pixels[i] = _read_image(path, channels, size, resize)
        labels = torch.tensor([label for _, label in files], dtype=torch.int64)
        return ImageSplit(torch.from_numpy(pixels), labels)

    test = split(test_files) if split_layout else None
    return RawDataset(root.resolve().name, tuple(class_names), split(train_files), test)


@dataclass(frozen=True)
class FolderListing:
    """The image files of an image folder and their labels, found without decoding any:
    ``test`` is the test/ (or val/) folder's, None in the one-folder layout."""

    class_names: tuple[str, ...]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None


def list_image_folder(root: Path) -> FolderListing:
    """The files of an image folder (see ``load_image_folder`` for the layouts), sorted by
    class then name; labels index the sorted class names. Refuses, in one line, a missing
    folder, fewer than 2 class folders, a class folder without images and held-out class
    folders that the training folder lacks."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    train_dir = root / "train"
    test_dir = _held_out_folder(root) if train_dir.is_dir() else None
    class_names = image_folder_classes(root)
    skipped: list[Path] = []
    train_files = _image_files(
        train_dir if test_dir is not None else root, class_names, class_names, skipped
    )
    if test_dir is None:
        _say_skipped(root, skipped)
        return FolderListing(tuple(class_names), train_files, None)
    test_classes = _class_folders(test_dir, minimum=1)
    unknown = sorted(set(test_classes) - set(class_names))
    if unknown:
        raise DataError(
            f"{test_dir}: class folder(s) {_few(unknown)} have no counterpart in {train_dir}: "
            "use the same class folder names in both"
        )
    test_files = _image_files(test_dir, test_classes, class_names, skipped)
    _say_skipped(root, skipped)
    return FolderListing(tuple(class_names), train_files, test_files)


def _say_skipped(root: Path, skipped: list[Path]) -> None:
    """One warning (once per process: several commands' steps list a folder) for the files
    of class folders that are not read: images of a type edgenas does not take (.gif, .heic)
    were left out without a word, and so were subfolders."""
    if not skipped or (root, len(skipped)) in _warned:
        return
    _warned.add((root, len(skipped)))
    kinds = Counter(
        "subfolder" if p.is_dir() else (p.suffix.lower() or "no suffix") for p in skipped
    )
    counts = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
    log.warning(
        "image folder %s: skipped %d entr%s of class folders that %s not images edgenas reads "
        "(%s; first: %s): it reads %s files directly in each class folder; convert or move "
        "the others",
        root,
        len(skipped),
        "y" if len(skipped) == 1 else "ies",
        "is" if len(skipped) == 1 else "are",
        counts,
        min(skipped),
        ", ".join(IMAGE_SUFFIXES),
    )


def image_folder_classes(root: Path) -> list[str]:
    """The class names of an image folder (its train/ folder's, in the split layout), sorted:
    label i is the i-th name."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    train_dir = root / "train"
    split_layout = train_dir.is_dir() and _held_out_folder(root) is not None
    return _class_folders(train_dir if split_layout else root)


def _held_out_folder(root: Path) -> Path | None:
    """test/ or val/; where both exist, the one holding class folders (ImageNet's test/
    holds unlabelled images)."""
    found = [root / name for name in HELD_OUT_NAMES if (root / name).is_dir()]
    if len(found) == 2:
        labelled = [d for d in found if any(p.is_dir() for p in d.iterdir())]
        if len(labelled) == 2:
            raise DataError(
                f"{root} has both test/ and val/ class folders: keep one as the held-out split"
            )
        found = labelled or found[:1]
    return found[0] if found else None


def _limited(files: list[tuple[Path, int]], limit: int | None, seed: int) -> list[tuple[Path, int]]:
    if limit is None:
        return files
    return [files[i] for i in spread_sample([label for _, label in files], limit, seed=seed)]


def _few(names: list[str]) -> str:
    return str(names) if len(names) <= 5 else f"{names[:5]} and {len(names) - 5} more"


def _class_folders(folder: Path, *, minimum: int = 2) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names == ["train"]:
        # The split layout without its held-out half: not one class named "train".
        raise DataError(
            f"{folder}: train/ has no val/ or test/ beside it with the same class folders; "
            f"add one, or put the class folders in {folder} itself; {_FOLDER_LAYOUT}"
        )
    if len(names) < minimum:
        found = "no class folders" if not names else f"only class folder {names}"
        raise DataError(f"{folder}: {found}, need at least {minimum}; {_FOLDER_LAYOUT}")
    return names


def _image_files(
    folder: Path, classes: list[str], class_names: list[str], skipped: list[Path]
) -> list[tuple[Path, int]]:
    """The image files of each class folder, labelled; the other entries (but hidden and
    system files) go into ``skipped``."""
    files: list[tuple[Path, int]] = []
    labels = {name: i for i, name in enumerate(class_names)}
    for name in classes:
        found: list[Path] = []
        # scandir's entries know their type without a stat per file (1.28 M in ImageNet's train/)
        with os.scandir(folder / name) as entries:
            for e in entries:
                if e.name.startswith(".") or e.name.lower() in _SYSTEM_FILES:
                    continue
                # a link whose target is gone is an image that cannot be read, not no image
                if (e.is_file() or e.is_symlink()) and os.path.splitext(e.name)[1].lower() in (
                    IMAGE_SUFFIXES
                ):
                    found.append(Path(e.path))
                else:
                    skipped.append(Path(e.path))
        found.sort()
        if not found:
            raise DataError(
                f"class folder {folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                "add images or remove the folder"
            )
        files.extend((path, labels[name]) for path in found)
    return files


# What Pillow raises for a file that is no readable image: broken bytes, a truncated file,
# and a "decompression bomb" (over ~179 MP, e.g. a large scan), refused at Image.open.
BAD_IMAGE = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except BAD_IMAGE as exc:
        raise DataError(
            f"cannot read image {path} ({one_line(exc, limit=80)}): fix or remove it"
        ) from None


def _read_image(path: Path, channels: int, size: int, resize: Resize) -> npt.NDArray[np.uint8]:
    try:
        with Image.open(path) as image:
            # load decodes the whole file: a truncated JPEG fails here, not later
            image.load()
            converted = to_channels(image, channels)
    except BAD_IMAGE as exc:
        raise DataError(
            f"cannot read image {path} ({one_line(exc, limit=80)}): fix or remove it"
        ) from None
    pixels = np.asarray(resize_image(converted, size, resize), dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def load_npz(path: Path, *, image_size: int | None) -> RawDataset:
    """Images `x` and labels `y`, optionally `x_test`/`y_test` and `class_names`, from a .npz.

    `x` is uint8, or float in [0, 1] (integers within 0..255 are accepted too).
    """
    if path.is_dir():
        raise DataError(f"{path} is a folder: give the path of a .npz file with x and y")
    if not path.is_file():
        raise DataError(f"{path} does not exist: give the path of a .npz file with x and y")
    with path.open("rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if not zipped:  # np.load would try a .npy, or a pickle and advise trusting it
        raise DataError(
            f"{path} is not a .npz file (an empty file, or not a zip archive as np.savez writes): "
            "give one written by np.savez, or re-create it if it is damaged"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({one_line(exc, limit=80)}): give one written "
            "by np.savez, or re-create it if it is damaged"
        ) from None
    with archive:
        keys = set(archive.files)
        for key in ("x", "y"):
            if key not in keys:
                raise DataError(
                    f"{path}: key '{key}' is missing; expected x as {_NPZ_LAYOUT} and y as [N]"
                )
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: x_test and y_test must be given together (or neither)")
        x = _npz_images(_npz_array(archive, "x", path), "x", path)
        y = _npz_labels(_npz_array(archive, "y", path), "y", len(x), path)
        x_test = y_test = None
        if "x_test" in keys:
            x_test = _npz_images(_npz_array(archive, "x_test", path), "x_test", path)
            y_test = _npz_labels(_npz_array(archive, "y_test", path), "y_test", len(x_test), path)
            if x_test.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{path}: x_test images are {list(x_test.shape[1:])} (C, H, W), "
                    f"x images are {list(x.shape[1:])}: store both at the same size and channels"
                )
        names = _npz_class_names(archive, path) if "class_names" in keys else None

    max_label = max(int(y.max()), -1 if y_test is None else int(y_test.max()))
    num_classes = len(names) if names is not None else max_label + 1
    if max_label >= num_classes:
        raise DataError(
            f"{path}: label {max_label} but only {num_classes} class_names: give one name per class"
        )
    if num_classes < 2:
        raise DataError(f"{path}: labels name only {num_classes} class, need at least 2")
    # Every class needs training images, as in a folder layout: a class without any cannot be
    # learnt, and a stray huge label would make a classifier (and names) of that many classes.
    trained = np.unique(y)
    if len(trained) < num_classes:
        gap = next((i for i, label in enumerate(trained.tolist()) if label != i), len(trained))
        if names is not None:
            raise DataError(
                f"{path}: no image in 'y' has label {gap} (class_names[{gap}] = {names[gap]!r}): "
                "give every named class training images, or drop its name"
            )
        if y_test is not None and int(y_test.max()) > int(y.max()):  # not 'y''s own gap
            raise DataError(
                f"{path}: 'y_test' has label {int(y_test.max())}, which no image in 'y' has "
                f"(its labels go up to {int(y.max())}): every test class needs training images"
            )
        raise DataError(
            f"{path}: no image in 'y' has label {gap}, though the labels go up to {max_label}: "
            "number the classes 0..K-1, each with training images"
        )
    height, width = x.shape[2:]
    if image_size is None:
        if height != width:
            raise DataError(
                f"{path}: images are {height}x{width}, not square: give image_size (a recipe's "
                "data.image_size), the size they are resized to"
            )
        image_size = height

    def split(images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]) -> ImageSplit:
        resized = resize_images(torch.from_numpy(images), image_size)
        return ImageSplit(resized, torch.from_numpy(labels))

    class_names = names if names is not None else tuple(str(i) for i in range(num_classes))
    test = None if x_test is None or y_test is None else split(x_test, y_test)
    return RawDataset(path.stem, class_names, split(x, y), test)


def _npz_array(archive: Any, key: str, path: Path) -> npt.NDArray[Any]:
    try:
        return np.asarray(archive[key])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        # np.load reads only the zip's index: a damaged member fails here, when read
        raise DataError(
            f"{path}: key '{key}' is corrupt ({one_line(exc, limit=80)}): the file is damaged "
            "or truncated; re-create it (np.savez) or copy it again"
        ) from None
    except ValueError as exc:  # object arrays need pickle, which is never enabled here
        raise DataError(
            f"{path}: key '{key}' cannot be read without pickle ({exc}): save it as a plain "
            "numeric or string array"
        ) from None


def _npz_images(x: npt.NDArray[Any], key: str, path: Path) -> npt.NDArray[np.uint8]:
    shape = list(x.shape)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = _channels_first(x, key, path)
    else:
        raise DataError(f"{path}: '{key}' has shape {shape}; expected {_NPZ_LAYOUT}")
    if len(x) == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise DataError(f"{path}: '{key}' has shape {shape}; it holds no images")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{path}: '{key}' has integer values outside 0..255: store uint8")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{path}: '{key}' is float with values outside [0, 1]: scale it to [0, 1] "
                "or store uint8"
            )
        scaled = np.rint(x.astype(np.float32) * np.float32(255.0))
        return np.ascontiguousarray(scaled, dtype=np.uint8)
    raise DataError(f"{path}: '{key}' has dtype {x.dtype}; store uint8, or float in [0, 1]")


def _channels_first(x: npt.NDArray[Any], key: str, path: Path) -> npt.NDArray[Any]:
    first_ok, last_ok = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
    if first_ok and last_ok:
        # tiny images are ambiguous; a square image decides, channels-first (torch's) otherwise
        last_ok = x.shape[1] == x.shape[2] and x.shape[2] != x.shape[3]
        first_ok = not last_ok
    if first_ok:
        return x
    if last_ok:
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: '{key}' has shape {list(x.shape)}; expected {_NPZ_LAYOUT}")


def _npz_labels(y: npt.NDArray[Any], key: str, n: int, path: Path) -> npt.NDArray[np.int64]:
    if y.shape != (n,):
        raise DataError(
            f"{path}: '{key}' has shape {list(y.shape)}; expected [{n}], one label per image"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{key}' has dtype {y.dtype}; store integer class indices")
    if y.min() < 0:
        raise DataError(f"{path}: '{key}' holds negative labels; use class indices 0..K-1")
    if int(y.max()) > np.iinfo(np.int64).max:  # uint64: astype would wrap it negative
        raise DataError(f"{path}: '{key}' holds label {int(y.max())}; use class indices 0..K-1")
    return y.astype(np.int64)


def _npz_class_names(archive: Any, path: Path) -> tuple[str, ...]:
    names = _npz_array(archive, "class_names", path)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(
            f"{path}: 'class_names' has shape {list(names.shape)} and dtype {names.dtype}; "
            "expected a 1-D string array"
        )
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
