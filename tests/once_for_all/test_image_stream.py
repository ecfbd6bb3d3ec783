"""Streamed image folders: listing and hold-outs, OFA's transforms per batch resolution,
determinism across workers and resumes, mixed image modes, corrupt files and the bad layouts,
on real JPEG and PNG files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from once_for_all import (
    OFAMobileNetV3,
    PhaseConfig,
    ProgressiveShrinkingTrainer,
    TrainConfig,
    evaluate_subnet,
    get_space,
)
from once_for_all.data import DataError, load_data, normalize
from once_for_all.data.image_stream import (
    StepBatches,
    StreamBundle,
    StreamLoader,
    StreamSplit,
    decode,
    hold_in_memory,
    stream_image_folder,
)
from once_for_all.data.transforms import center_crop
from once_for_all.evaluation import bn_batches
from once_for_all.ofa_import import IMAGENET_SPEC
from tests.support.imagenet_folder import wnid, write_imagenet_folder

OFA_NORM = {"mean": IMAGENET_SPEC.mean, "std": IMAGENET_SPEC.std}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_folder(
        tmp_path_factory.mktemp("stream") / "inet", classes=3, per_class=8, size=(120, 90)
    )


def test_listing_holds_out_val_and_keeps_the_val_folder_as_test(folder: Path) -> None:
    bundle = stream_image_folder(folder, image_size=64, val_size=4, **OFA_NORM)
    assert bundle.spec.class_names == (wnid(0), wnid(1), wnid(2))
    assert (bundle.spec.channels, bundle.spec.image_size) == (3, 64)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (20, 4, 24)
    assert bundle.test.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    train = {str(bundle.train.path(i)) for i in range(len(bundle.train))}
    val = {str(bundle.val.path(i)) for i in range(len(bundle.val))}
    assert not train & val and all("/train/" in p for p in train | val)
    for i in range(len(bundle.test)):
        assert bundle.test.path(i).parent.name == wnid(int(bundle.test.labels[i]))


def test_the_splits_are_the_in_memory_paths_images(folder: Path) -> None:
    bundle = stream_image_folder(folder, image_size=64, val_size=4, seed=3, **OFA_NORM)
    memory = load_data(
        str(folder), val_size=4, seed=3, image_size=64, resize="center-crop", **OFA_NORM
    )
    assert memory.spec == bundle.spec
    for name in ("train", "val", "test"):
        streamed, held = getattr(bundle, name), getattr(memory, name)
        loader = StreamLoader(streamed, bundle.spec, batch_size=64, shuffle=False, workers=0)
        ((x, y),) = list(loader.epoch(0))
        # 120x90 to 64 px: no draft scaling applies, so the decoded pixels are the same
        assert torch.equal(y, held.labels) and torch.equal(x, normalize(held.images, memory.spec))
    # training augments both alike: OFA's train transforms, streamed or held
    assert memory.train_transforms == "ofa"
    assert hold_in_memory(bundle, train=4, val=2, test=2).train_transforms == "ofa"


def test_computed_statistics_and_grey_folders_get_one_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for k in range(6):
            pixels = rng.integers(0, 256, (40, 40), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / c / f"{k}.jpg")
    bundle = stream_image_folder(tmp_path, image_size=32, val_size=2, workers=0)
    assert bundle.spec.channels == 1 and len(bundle.spec.mean) == 1
    assert 0.3 < bundle.spec.mean[0] < 0.7 and bundle.spec.std[0] > 0.1
    # a one-folder layout holds out 1/6 of each class as test
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 2, 2)


def test_eval_batches_are_the_normalised_centre_crop(folder: Path) -> None:
    bundle = stream_image_folder(folder, image_size=64, val_size=4, **OFA_NORM)
    loader = StreamLoader(bundle.test, bundle.spec, batch_size=10, shuffle=False, workers=0)
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [10, 10, 4] and len(loader) == 3
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (10, 3, 64, 64)
    assert y.tolist() == bundle.test.labels[:10].tolist()
    # 120x90 to 64 px: no draft scaling applies, so the pixels are exactly the crop's
    with Image.open(bundle.test.path(3)) as image:
        expected = np.asarray(center_crop(image.convert("RGB"), 64)).transpose(2, 0, 1)
    assert torch.equal(x[3], normalize(torch.from_numpy(expected[None].copy()), bundle.spec)[0])


def test_draft_decoding_stays_close_to_the_full_decode(tmp_path: Path) -> None:
    # a smooth 400x300 photo-like image centre-cropped to 48 px decodes at 1/4 scale
    yy, xx = np.mgrid[0:300, 0:400]
    pixels = np.stack([xx * 255 // 400, yy * 255 // 300, (xx + yy) * 255 // 700], axis=-1)
    path = tmp_path / "smooth.jpg"
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    with Image.open(path) as image:
        full = np.asarray(center_crop(image.convert("RGB"), 48)).astype(np.int16)
    drafted = decode(path, 3, 48, None).transpose(1, 2, 0).astype(np.int16)
    assert drafted.shape == (48, 48, 3)
    assert np.abs(drafted - full).mean() < 3


def test_each_batch_comes_at_one_drawn_resolution_whatever_the_workers(folder: Path) -> None:
    bundle = stream_image_folder(folder, image_size=64, val_size=4, **OFA_NORM)
    args = {"batch_size": 3, "shuffle": True, "augment": True, "resolutions": (32, 48, 64)}
    serial = StreamLoader(bundle.train, bundle.spec, **args, seed=5, workers=0)
    parallel = StreamLoader(bundle.train, bundle.spec, **args, seed=5, workers=2)
    first = list(serial.epoch(1))
    assert len(first) == 7
    sizes = [x.shape[-1] for x, _ in first]
    assert set(sizes) <= {32, 48, 64} and len(set(sizes)) > 1
    assert sizes == serial.sampler(1).resolutions
    for (xa, ya), (xb, yb) in zip(first, parallel.epoch(1), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # a resumed epoch replays the rest; another epoch draws anew
    for (xa, ya), (xb, yb) in zip(first[4:], serial.epoch(1, start=4), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(serial.epoch(2))
    assert [y.tolist() for _, y in other] != [y.tolist() for _, y in first]
    # a training process's shard decodes its rows of each global batch, augmented alike
    shard = StreamLoader(bundle.train, bundle.spec, **args, seed=5, workers=0, rows=slice(1, 3))
    for (xa, ya), (xb, yb) in zip(first, shard.epoch(1), strict=True):
        assert torch.equal(xa[1:3], xb) and torch.equal(ya[1:3], yb)


def test_augmentation_varies_the_same_image() -> None:
    sampler = StepBatches(4, batch_size=4, resolutions=(32,), shuffle=True, seed=0)
    assert sorted(i for i, _, _ in next(iter(sampler))) == [0, 1, 2, 3]
    assert len({seed for _, _, seed in next(iter(sampler))}) == 4
    with pytest.raises(DataError, match="start=9"):
        StepBatches(4, batch_size=4, resolutions=(32,), start=9)


def test_mixed_modes_become_the_specs_channels(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    Image.new("L", (40, 40), 100).save(a / "grey.jpg")
    Image.new("RGBA", (40, 40), (200, 10, 10, 0)).save(a / "rgba.png")
    Image.new("CMYK", (40, 40), (0, 255, 0, 0)).save(a / "cmyk.jpg")
    Image.new("P", (40, 40), 3).save(b / "palette.png")
    # 16-bit grey: 128 * 257 is 8-bit 128 (Pillow's own conversion would clip it to 255)
    Image.fromarray(np.full((40, 40), 128 * 257, dtype=np.uint16)).save(b / "deep.png")
    split = StreamSplit.of(
        tmp_path, [(p, 0) for p in sorted(a.iterdir())] + [(p, 1) for p in sorted(b.iterdir())]
    )
    for channels in (1, 3):
        for i in range(len(split)):
            pixels = decode(split.path(i), channels, 32, np.random.default_rng(i))
            assert pixels.shape == (channels, 32, 32) and pixels.dtype == np.uint8
    deep = decode(b / "deep.png", 3, 32, None)
    assert np.abs(deep.astype(int) - 128).max() <= 1
    # Float grey (a TIFF's mode F) in 0…1, as a .npz's float images: it decoded all black,
    # and counted as colour (walk-through). Other float values are taken as 0…255.
    for value, pixel in ((0.5, 128), (100.0, 100)):
        Image.fromarray(np.full((40, 40), value, np.float32), mode="F").save(b / "float.tif")
        assert np.abs(decode(b / "float.tif", 1, 32, None).astype(int) - pixel).max() <= 1
    # A resampling filter's overshoot past 1 (or below 0) keeps the image on 0…1 (review).
    overshot = np.full((40, 40), 0.5, np.float32)
    overshot[0, 0], overshot[0, 1] = 1.01, -0.001
    Image.fromarray(overshot, mode="F").save(b / "float.tif")
    assert np.median(decode(b / "float.tif", 1, 40, None)) == 128
    only_floats = tmp_path / "floats"  # grey, not colour
    for c in ("x", "y"):
        (only_floats / c).mkdir(parents=True)
        for k in range(12):
            grey = np.full((40, 40), (k + 1) / 12, np.float32)
            Image.fromarray(grey, mode="F").save(only_floats / c / f"{k}.tif")
    assert load_data(str(only_floats), val_size=2, image_size=32).spec.channels == 1


def test_a_corrupt_jpeg_is_skipped_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_imagenet_folder(tmp_path / "inet", classes=2, per_class=3, size=(64, 48))
    bad = root / "val" / wnid(1) / f"{wnid(1)}_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    bundle = stream_image_folder(root, image_size=32, val_size=1, **OFA_NORM)
    loader = StreamLoader(bundle.test, bundle.spec, batch_size=6, shuffle=False, workers=0)
    with caplog.at_level(logging.WARNING):
        (x, y), *rest = list(loader.epoch(0))
    assert x.shape == (5, 3, 32, 32)
    assert not rest and len(y) == 5 and y.tolist() == [0, 0, 0, 1, 1]
    assert loader.skipped == [bad]
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1
    # a second epoch logs nothing new; a split with nothing readable is refused
    list(loader.epoch(1))
    assert loader.skipped == [bad]
    # nor does another loader of the same files (each of a training's loaders said it again)
    again = StreamLoader(bundle.test, bundle.spec, batch_size=6, shuffle=False, workers=0)
    list(again.epoch(0))
    assert again.skipped == [bad]
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1
    only_bad = StreamLoader(bundle.test.select([3]), bundle.spec, batch_size=2, shuffle=False)
    with pytest.raises(DataError, match=r"none of the images .*_0\.JPEG"):
        list(only_bad.epoch(0))


def test_a_class_none_of_whose_images_could_be_read_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every image of a class corrupt: eval exited 0 with an accuracy over the other classes,
    # and only one warning per file said so (data audit).
    root = write_imagenet_folder(tmp_path / "inet", classes=3, per_class=2, size=(48, 48))
    for bad in (root / "val" / wnid(2)).iterdir():
        bad.write_bytes(b"not a JPEG")
    bundle = stream_image_folder(root, image_size=32, val_size=1, **OFA_NORM)
    loader = StreamLoader(bundle.test, bundle.spec, batch_size=4, shuffle=False, workers=0)
    with caplog.at_level(logging.WARNING):
        labels = [int(y) for _, batch in loader.epoch(0) for y in batch]
        list(loader.epoch(1))  # said once per loader
    assert sorted(set(labels)) == [0, 1]
    named = [r.getMessage() for r in caplog.records if "could be read" in r.getMessage()]
    assert named == [
        f"class {wnid(2)}: none of its 2 image(s) here could be read; what is trained or "
        "measured on this split leaves the class out"
    ]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("flat", r"no class folders, need at least 2"),
        ("empty", r"holds no images .*: add images or remove the folder"),
        ("extra-val", r"have no counterpart in .*: use the same class folder names"),
    ],
)
def test_bad_layouts_are_refused_in_one_line(tmp_path: Path, breakage: str, message: str) -> None:
    root = write_imagenet_folder(tmp_path / "inet", classes=2, per_class=1, size=(32, 32))
    if breakage == "flat":
        root = tmp_path / "flat"
        root.mkdir()
        Image.new("RGB", (8, 8)).save(root / "x.jpg")
    elif breakage == "empty":
        (root / "train" / wnid(1) / f"{wnid(1)}_0.JPEG").unlink()
    else:
        (root / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match=message) as info:
        stream_image_folder(root, image_size=32, val_size=0, **OFA_NORM)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def grey_bundle(tmp_path_factory: pytest.TempPathFactory) -> StreamBundle:
    """Ten classes of grey 44x36 JPEGs, streamed at mbv3-tiny's 32 px."""
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"c{c}").mkdir()
        for k in range(6):
            pixels = rng.integers(0, 256, (36, 44), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{k}.jpg")
    return stream_image_folder(root, image_size=32, val_size=6, workers=0)


def test_subnets_evaluate_on_a_streamed_folder(grey_bundle: StreamBundle) -> None:
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    supernet = OFAMobileNetV3(space).eval()
    subnet = space.sample(1, r=[30])
    batches = list(bn_batches(grey_bundle, 30, images=20, batch_size=8))
    assert [tuple(x.shape) for x in batches] == [(8, 1, 30, 30), (8, 1, 30, 30), (4, 1, 30, 30)]
    acc = evaluate_subnet(supernet, subnet, grey_bundle, bn_images=20, limit=5)
    assert 0.0 <= acc <= 1.0 and acc * 5 == round(acc * 5)
    assert evaluate_subnet(supernet, subnet, grey_bundle, bn_images=20, limit=5) == acc


def test_progressive_shrinking_trains_and_resumes_on_a_streamed_folder(
    grey_bundle: StreamBundle, tmp_path: Path
) -> None:
    space = get_space("mbv3-tiny")
    config = TrainConfig(
        phases=(
            PhaseConfig("full", 1, 0.05, kd_ratio=0.0),
            PhaseConfig("kernel", 1, 0.02, ks=space.kernel_sizes),
        ),
        batch_size=16,
        eval_images=6,
        bn_images=16,
    )

    def trainer(checkpoint: Path) -> ProgressiveShrinkingTrainer:
        torch.manual_seed(0)
        net = OFAMobileNetV3(space)
        return ProgressiveShrinkingTrainer(net, grey_bundle, config, checkpoint=checkpoint)

    whole = trainer(tmp_path / "whole.pt")
    whole.train()
    assert len(whole.state.history) == 2
    trainer(tmp_path / "parts.pt").train(stop_after_epochs=1)
    resumed = trainer(tmp_path / "parts.pt")
    assert resumed.resume()
    resumed.train()
    expected = whole.supernet.state_dict()
    for name, tensor in resumed.supernet.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


class _AlwaysFirstClass(torch.nn.Module):
    """Predicts class 0 for every image: its accuracy is the share of class 0 it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device to read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 4)
        logits[:, 0] = 1.0
        return logits


def test_limited_evaluations_and_bn_read_every_class_of_a_folder_in_class_order(
    tmp_path: Path,
) -> None:
    # A folder's splits are in class order, and a limit took their first images: BN
    # statistics and accuracies of the first classes only (a subnet that told 4 colours
    # apart perfectly scored 0.14 in training's log; walk-through).
    root = tmp_path / "colours"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for c, colour in enumerate(colours):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(30):
            Image.new("RGB", (16, 16), colour).save(root / f"c{c}" / f"{k}.png")
    from once_for_all.data.image_stream import StreamBundle
    from once_for_all.data.splits import spread_head
    from once_for_all.evaluation import accuracy

    memory = load_data(str(root), val_size=40, seed=0, image_size=16)
    streamed = stream_image_folder(root, image_size=16, val_size=40, seed=0)
    assert memory.val.labels.tolist() == sorted(memory.val.labels.tolist())  # class order
    for data in (memory, streamed):
        for split in ("val", "test"):
            said = accuracy(
                _AlwaysFirstClass(), getattr(data, split), data, resolution=16, limit=12
            )
            assert said == pytest.approx(0.25), (type(data).__name__, split)
    # The BN slice of images held in memory holds every class's colour (streamed ones were
    # drawn at random already, then colour-jittered).
    means = torch.cat([x.mean(dim=(2, 3)) for x in bn_batches(memory, 16, images=16)])
    assert len(torch.unique(means.round(decimals=3), dim=0)) == 4
    held = hold_in_memory(streamed, train=16, val=12, test=12)
    assert isinstance(streamed, StreamBundle)
    for split in ("val", "test"):
        labels = getattr(held, split).labels.tolist()
        assert sorted(labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # Export's test images, whose first a device checks: spread in every head, all of them
    # too (export's default; review: the first N of a class-ordered split otherwise).
    for test in (memory.test, held.test):
        ordered = spread_head(test, None).labels.tolist()
        assert sorted(ordered) == sorted(test.labels.tolist())
        assert sorted(ordered[:4]) == [0, 1, 2, 3]
