"""ImageNet-layout folders: OFA's eval transform, fixed normalisation, label order, bounded
reads and the bad inputs, on real JPEG files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from once_for_all.checkpoint import CheckpointDocument, CheckpointError, data_settings
from once_for_all.data import DataError, load_data, normalize
from once_for_all.data.splits import spread_sample
from once_for_all.data.transforms import center_crop
from once_for_all.ofa_import import IMAGENET_SPEC
from tests.support.imagenet_folder import wnid, write_imagenet_folder

OFA_NORM = {"mean": list(IMAGENET_SPEC.mean), "std": list(IMAGENET_SPEC.std)}


def _gradient(width: int, height: int) -> Image.Image:
    x = np.arange(width)[None, :, None] * 3 + np.arange(height)[:, None, None] * 5
    pixels = (x + np.array([0, 40, 80])) % 256
    return Image.fromarray(pixels.astype(np.uint8))


def test_center_crop_at_the_resize_size_only_crops() -> None:
    # size 7: the shorter side goes to ceil(7 / 0.875) = 8, which a 10x8 image has already;
    # the crop starts at round(1.5) = 2 (half to even) across and round(0.5) = 0 down
    image = _gradient(10, 8)
    out = np.asarray(center_crop(image, 7))
    assert out.shape == (7, 7, 3)
    assert np.array_equal(out, np.asarray(image)[0:7, 2:9])


def test_center_crop_resizes_the_shorter_side_then_crops_the_centre() -> None:
    # 500x375 at 224: shorter side to 256, longer to int(256 * 500 / 375) = 341 (torchvision
    # truncates); crop offsets round(58.5) = 58 across, round(16.0) = 16 down
    image = _gradient(500, 375)
    resized = np.asarray(image.resize((341, 256), Image.Resampling.BILINEAR))
    assert np.array_equal(np.asarray(center_crop(image, 224)), resized[16:240, 58:282])
    # portrait: the width is the shorter side
    tall = _gradient(375, 500)
    resized = np.asarray(tall.resize((256, 341), Image.Resampling.BILINEAR))
    assert np.array_equal(np.asarray(center_crop(tall, 224)), resized[58:282, 16:240])


def _write(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_folder_read_with_the_crop_fixed_normalisation_and_sorted_synsets(tmp_path: Path) -> None:
    root = tmp_path / "inet"
    # created out of order; each class's images are one grey level, to read labels back
    for level, name in ((30, "n0300"), (200, "n0100"), (120, "n0200")):
        for split in ("train", "val"):
            for k in range(3):
                _write(root / split / name / f"{k}.JPEG", Image.new("RGB", (64, 48), (level,) * 3))
    data = load_data(str(root), image_size=16, resize="center-crop", val_size=1, **OFA_NORM)
    assert data.spec.class_names == ("n0100", "n0200", "n0300")  # label i = i-th sorted wnid
    assert data.spec.mean == IMAGENET_SPEC.mean and data.spec.std == IMAGENET_SPEC.std
    assert tuple(data.test.images.shape) == (9, 3, 16, 16)
    for split in (data.train, data.val, data.test):
        levels = split.images.float().mean(dim=(1, 2, 3))
        expected = torch.tensor([200.0, 120.0, 30.0])[split.labels]
        assert torch.allclose(levels, expected, atol=2)
    x = normalize(data.test.images[:1], data.spec)
    pixel = float(data.test.images[0, 0, 0, 0]) / 255
    assert float(x[0, 0, 0, 0]) == pytest.approx((pixel - 0.485) / 0.229, abs=1e-6)


def test_other_modes_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    _write(root / "train" / "a" / "grey.jpg", Image.new("L", (20, 20), 90))
    _write(root / "train" / "a" / "cmyk.jpg", Image.new("CMYK", (20, 20), (0, 0, 0, 0)))
    _write(root / "train" / "b" / "rgba.png", Image.new("RGBA", (20, 20), (10, 20, 30, 0)))
    _write(root / "train" / "b" / "rgb.JPEG", Image.new("RGB", (20, 20), (10, 20, 30)))
    _write(root / "val" / "a" / "grey.jpg", Image.new("L", (20, 20), 90))
    data = load_data(str(root), image_size=8, resize="center-crop", val_size=1, **OFA_NORM)
    assert data.spec.channels == 3 and data.test.images.shape[1] == 3


def test_spread_sample_is_seeded_and_spread_over_classes() -> None:
    labels = [c for c in range(7) for _ in range(c + 3)]
    picked = spread_sample(labels, 15, seed=4)
    assert picked == sorted(picked) and picked == spread_sample(labels, 15, seed=4)
    assert picked != spread_sample(labels, 15, seed=5)
    counts = Counter(labels[i] for i in picked)
    assert sorted(counts.values()) == [2] * 6 + [3]
    assert spread_sample(labels, 100, seed=0) == list(range(len(labels)))


def test_only_the_images_asked_for_are_decoded(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "inet", classes=4, per_class=5)
    data = load_data(
        str(root),
        image_size=16,
        resize="center-crop",
        val_size=2,
        train_read_limit=6,
        test_read_limit=0,
        **OFA_NORM,
    )
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 0)
    assert data.spec.num_classes == 4
    # a corrupt file that is not picked is never opened; one that is picked is named
    picked = {p.name for p in (root / "val").rglob("*.JPEG")}
    for path in (root / "val").rglob("*.JPEG"):
        path.write_bytes(path.read_bytes()[:100])
    load_data(
        str(root), image_size=16, resize="center-crop", val_size=2, test_read_limit=0, **OFA_NORM
    )
    with pytest.raises(DataError, match=r"cannot read image .*\.JPEG .*fix or remove it") as err:
        load_data(
            str(root),
            image_size=16,
            resize="center-crop",
            val_size=2,
            test_read_limit=1,
            **OFA_NORM,
        )
    assert any(name in str(err.value) for name in picked)
    assert "\n" not in str(err.value)


def test_val_is_the_held_out_split_unless_test_holds_the_classes(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "inet", classes=2, per_class=2)
    (root / "test").mkdir()
    (root / "test" / "unlabelled.JPEG").write_bytes(
        (root / "val" / wnid(0) / f"{wnid(0)}_0.JPEG").read_bytes()
    )
    data = load_data(str(root), image_size=8, resize="center-crop", val_size=1, **OFA_NORM)
    assert len(data.test) == 4  # from val/: ImageNet's test/ holds no class folders
    (root / "test" / wnid(0)).mkdir()
    with pytest.raises(DataError, match="both test/ and val/ class folders"):
        load_data(str(root), image_size=8, resize="center-crop", val_size=1, **OFA_NORM)


def _payload(**extra: object) -> CheckpointDocument:
    return {"data_spec": IMAGENET_SPEC.to_dict(), **extra}  # type: ignore[return-value]


def test_data_settings_of_an_imported_and_a_trained_checkpoint(tmp_path: Path) -> None:
    imported = _payload(imported={"ofa_net_id": "ofa_mbv3_d234_e346_k357_w1.0"})
    with pytest.raises(CheckpointError, match="give --data FOLDER, an ImageNet-layout folder"):
        data_settings(imported, "x.pt")
    settings = data_settings(imported, "x.pt", folder=tmp_path)
    assert settings["resize"] == "center-crop" and settings["image_size"] == 224
    assert settings["mean"] == OFA_NORM["mean"] and settings["std"] == OFA_NORM["std"]
    trained = _payload(data={"source": "fashion-mnist"})
    assert data_settings(trained, "t.pt", folder="fashion-mnist") == {"source": "fashion-mnist"}
    with pytest.raises(
        CheckpointError, match=r"data .* was trained on fashion-mnist, the only data"
    ):
        data_settings(trained, "t.pt", folder=tmp_path)
