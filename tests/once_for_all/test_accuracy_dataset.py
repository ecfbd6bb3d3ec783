"""Accuracy cache and evaluation of many subnets: round trip, resume, refusal of foreign caches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import once_for_all.accuracy_dataset as accuracy_dataset
from once_for_all import OFAMobileNetV3, Subnet, SubnetError, get_space
from once_for_all.accuracy_dataset import (
    CACHE_FORMAT,
    EVAL_METHOD,
    AccuracyCache,
    AccuracyCacheError,
    CacheHeader,
    data_fingerprint,
    evaluate_many,
    evaluation_method,
    sample_dataset,
    supernet_fingerprint,
)
from once_for_all.data import DataBundle, DataSpec, ImageSplit
from once_for_all.data.image_stream import stream_image_folder
from once_for_all.ofa_import import IMAGENET_SPEC
from tests.support.imagenet_folder import wnid, write_imagenet_folder

SPACE = get_space("mbv3-tiny")
# Few BN and validation images keep each real evaluation around 0.1 s on one core.
BN_IMAGES, LIMIT = 32, 64


def open_cache(
    path: Path, supernet: OFAMobileNetV3, *, save_every: int = 8, split: str = "val"
) -> AccuracyCache:
    return AccuracyCache.open(
        path, supernet, split=split, bn_images=BN_IMAGES, limit=LIMIT, save_every=save_every
    )


@pytest.fixture(scope="module")
def supernet() -> OFAMobileNetV3:
    torch.manual_seed(0)
    return OFAMobileNetV3(SPACE).eval()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Subnet]:
    """Subnets passed to the real ``evaluate_subnet``, in call order."""
    calls: list[Subnet] = []
    real = accuracy_dataset.evaluate_subnet

    def spy(supernet: OFAMobileNetV3, subnet: Subnet, data: DataBundle, **kw: object) -> float:
        calls.append(subnet)
        return real(supernet, subnet, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(accuracy_dataset, "evaluate_subnet", spy)
    return calls


def test_cache_round_trip(tmp_path: Path, supernet: OFAMobileNetV3) -> None:
    path = tmp_path / "acc.json"
    cache = open_cache(path, supernet)
    subnets = sample_dataset(SPACE, 3, seed=0)
    for i, subnet in enumerate(subnets):
        cache.put(subnet, i / 10)
    cache.save()
    assert not list(tmp_path.glob(".*tmp"))
    doc = json.loads(path.read_text())
    assert doc["format"] == CACHE_FORMAT
    assert doc["header"] == {
        "space": SPACE.id,
        "supernet": supernet_fingerprint(supernet),
        "split": "val",
        "bn_images": BN_IMAGES,
        "limit": LIMIT,
        "data": "",  # opened without data: not checked
        "method": EVAL_METHOD,
    }
    assert doc["entries"][subnets[1].to_json()] == 0.1

    reopened = open_cache(path, supernet)
    assert len(reopened) == len(subnets)
    assert [reopened.get(s) for s in subnets] == [i / 10 for i in range(len(subnets))]
    assert reopened.items() == [(SPACE.canonical(s), i / 10) for i, s in enumerate(subnets)]
    assert reopened.get(SPACE.sample(99)) is None


def test_a_cache_of_the_older_evaluation_method_is_evaluated_again(
    tmp_path: Path, supernet: OFAMobileNetV3, caplog: pytest.LogCaptureFixture
) -> None:
    # Its accuracies were on the first images of each split (a folder's first classes): kept,
    # they would sit beside accuracies on images spread over the classes (walk-through).
    path = tmp_path / "acc.json"
    cache = open_cache(path, supernet)
    subnets = sample_dataset(SPACE, 1, seed=0)
    for subnet in subnets:
        cache.put(subnet, 0.5)
    cache.save()
    doc = json.loads(path.read_text())
    del doc["header"]["method"]  # as an older edgenas wrote it,
    doc["header"]["data"] = "0123456789abcdef"  # of a streamed folder's other held images
    path.write_text(json.dumps(doc))
    with caplog.at_level("WARNING"):
        fresh = open_cache(path, supernet)
    assert len(fresh) == 0
    said = " ".join(caplog.text.split())
    assert f"accuracy cache {path} was made by an older edgenas, whose BN statistics" in said
    assert f"its {len(subnets)} accuracies are evaluated again" in said
    # Another setting of the same old file is still refused, not started afresh.
    with pytest.raises(AccuracyCacheError, match="was made with limit"):
        AccuracyCache.open(path, supernet, bn_images=BN_IMAGES, limit=LIMIT + 1)
    # A newer edgenas's is refused, not called older and overwritten (review).
    doc["header"]["method"] = EVAL_METHOD + 1
    path.write_text(json.dumps(doc))
    with pytest.raises(AccuracyCacheError, match=r"was made by a newer edgenas \(evaluation"):
        open_cache(path, supernet)


def test_method_3_keeps_the_caches_of_data_held_whole_in_memory(
    tmp_path: Path, supernet: OFAMobileNetV3, caplog: pytest.LogCaptureFixture
) -> None:
    # Method 3 changed the BN images of folders not held whole only: every method-2 cache was
    # evaluated again, Fashion-MNIST's with a warning about folders' BN crops (review).
    images = torch.zeros((6, 1, 28, 28), dtype=torch.uint8)
    split = ImageSplit(images, torch.arange(6) % 2)
    spec = DataSpec("d", 1, 28, 2, ("a", "b"), (0.5,), (0.25,))
    whole = DataBundle(spec, split, split, split)
    held = DataBundle(spec, split, split, split, bn=split)  # a folder's, with its BN crops
    assert (evaluation_method(whole), evaluation_method(held)) == (2, EVAL_METHOD)
    for data, kept in ((whole, True), (held, False)):
        path = tmp_path / f"{kept}.json"
        cache = AccuracyCache.open(path, supernet, bn_images=BN_IMAGES, limit=LIMIT, data=data)
        cache.put(SPACE.max_subnet(), 0.5)
        cache.save()
        doc = json.loads(path.read_text())
        doc["header"]["method"] = 2  # as the edgenas before method 3 wrote it
        path.write_text(json.dumps(doc))
        with caplog.at_level("WARNING"):
            opened = AccuracyCache.open(path, supernet, bn_images=BN_IMAGES, limit=LIMIT, data=data)
        assert len(opened) == (1 if kept else 0)
    assert caplog.text.count("was made by an older edgenas") == 1


def test_put_saves_every_few_entries(tmp_path: Path, supernet: OFAMobileNetV3) -> None:
    path = tmp_path / "acc.json"
    cache = open_cache(path, supernet, save_every=2)
    subnets = sample_dataset(SPACE, 1, seed=0)
    cache.put(subnets[0], 0.5)
    assert not path.exists()
    cache.put(subnets[1], 0.6)
    assert len(json.loads(path.read_text())["entries"]) == 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cache.put(subnets[2], 1.5)


def _with_other_skipped_entries(subnet: Subnet) -> Subnet:
    """The same network: every block beyond its stage's depth at the largest choices."""
    active = set(SPACE.active_blocks(subnet))
    k, e = SPACE.kernel_sizes[-1], SPACE.expand_ratios[-1]
    return dataclasses.replace(
        subnet,
        ks=tuple(v if b in active else k for b, v in enumerate(subnet.ks)),
        e=tuple(v if b in active else e for b, v in enumerate(subnet.e)),
    )


def test_one_network_is_evaluated_once_whatever_its_skipped_blocks_hold(
    tmp_path: Path, supernet: OFAMobileNetV3, fmnist_small: DataBundle, counted: list[Subnet]
) -> None:
    # A search's parameters include every slot's choices, so its samplers propose one network
    # under several subnets; each was evaluated again.
    subnet = SPACE.min_subnet()
    twin = _with_other_skipped_entries(subnet)
    assert twin != subnet
    path = tmp_path / "acc.json"
    accs = evaluate_many(supernet, [subnet, twin], fmnist_small, cache=open_cache(path, supernet))
    assert counted == [subnet] and accs[0] == accs[1]

    # A cache written with the subnets' own JSON as keys (before) answers for the twin too.
    doc = json.loads(path.read_text())
    doc["entries"] = {twin.to_json(): 0.25}
    path.write_text(json.dumps(doc))
    assert open_cache(path, supernet).get(subnet) == 0.25


def test_evaluate_many_resumes_without_reevaluating(
    tmp_path: Path, supernet: OFAMobileNetV3, fmnist_small: DataBundle, counted: list[Subnet]
) -> None:
    path = tmp_path / "acc.json"
    subnets = sample_dataset(SPACE, 4, seed=1)

    on_disk: list[int] = []

    def interrupt_after_four(stage: str, done: int, total: int) -> None:
        # What a SIGKILL would leave: the file as written so far, before any final save.
        on_disk.append(len(json.loads(path.read_text())["entries"]) if path.exists() else 0)
        if done == 4:
            raise KeyboardInterrupt

    cache = open_cache(path, supernet, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_many(supernet, subnets, fmnist_small, cache=cache, progress=interrupt_after_four)
    assert on_disk == [0, 2, 2, 4]
    assert counted == subnets[:4]

    progress: list[tuple[int, int]] = []
    resumed = open_cache(path, supernet, save_every=2)
    assert len(resumed) == 4
    accs = evaluate_many(
        supernet,
        subnets,
        fmnist_small,
        cache=resumed,
        progress=lambda _, done, total: progress.append((done, total)),
    )
    assert counted == subnets  # the first four came from the cache
    assert progress == [(i, 6) for i in range(1, 7)]
    assert len(open_cache(path, supernet)) == 6

    # A cached accuracy is the one a fresh evaluation gives.
    fresh = open_cache(tmp_path / "fresh.json", supernet)
    assert evaluate_many(supernet, subnets[:2], fmnist_small, cache=fresh) == accs[:2]
    assert all(0.0 <= a <= 1.0 for a in accs)


def test_cache_for_other_settings_or_supernet_is_refused(
    tmp_path: Path, supernet: OFAMobileNetV3
) -> None:
    path = tmp_path / "acc.json"
    open_cache(path, supernet).save()
    with pytest.raises(AccuracyCacheError, match="bn_images 32, not 64") as info:
        AccuracyCache.open(path, supernet, bn_images=64, limit=64)
    assert "delete it or choose another cache path" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(AccuracyCacheError, match="split 'val', not 'test'"):
        open_cache(path, supernet, split="test")

    other = OFAMobileNetV3(SPACE)
    other.load_state_dict(supernet.state_dict())
    with torch.no_grad():
        other.classifier.weight.add_(1e-3)
    with pytest.raises(AccuracyCacheError, match="supernet"):
        open_cache(path, other)

    foreign = tmp_path / "foreign.json"
    AccuracyCache(foreign, CacheHeader(space="mbv3-imagenet-0123456789", supernet="x")).save()
    with pytest.raises(AccuracyCacheError, match="space 'mbv3-imagenet-0123456789'"):
        AccuracyCache.open(foreign, supernet)


def test_the_cache_is_keyed_by_the_data_it_was_evaluated_on(
    tmp_path: Path, supernet: OFAMobileNetV3, fmnist_small: DataBundle
) -> None:
    path = tmp_path / "acc.json"
    AccuracyCache.open(path, supernet, data=fmnist_small).save()
    assert AccuracyCache.open(path, supernet, data=fmnist_small).header.data  # same data: kept
    # One pixel of one validation image changed: the accuracies were of other data.
    images = fmnist_small.val.images.clone()
    images[0, 0, 0, 0] ^= 1
    changed = dataclasses.replace(
        fmnist_small, val=dataclasses.replace(fmnist_small.val, images=images)
    )
    with pytest.raises(AccuracyCacheError, match=r"made with data '[0-9a-f]{16}', not"):
        AccuracyCache.open(path, supernet, data=changed)
    # So is a training split (BN recalibration draws from it) with other labels.
    labels = fmnist_small.train.labels.clone()
    labels[0] = (labels[0] + 1) % 10
    relabelled = dataclasses.replace(
        fmnist_small, train=dataclasses.replace(fmnist_small.train, labels=labels)
    )
    assert data_fingerprint(relabelled, "val") != data_fingerprint(fmnist_small, "val")


def test_a_streamed_folder_is_keyed_by_its_listing(tmp_path: Path) -> None:
    folder = write_imagenet_folder(tmp_path / "inet", classes=2, per_class=6, size=(48, 40))
    norm = {"mean": IMAGENET_SPEC.mean, "std": IMAGENET_SPEC.std}
    before = data_fingerprint(stream_image_folder(folder, image_size=32, val_size=2, **norm), "val")
    again = stream_image_folder(folder, image_size=32, val_size=2, **norm)
    assert data_fingerprint(again, "val") == before
    next(iter((folder / "train" / wnid(1)).iterdir())).unlink()  # one training image less
    after = stream_image_folder(folder, image_size=32, val_size=2, **norm)
    assert data_fingerprint(after, "val") != before


def test_evaluate_many_refuses_a_cache_of_another_supernet(
    tmp_path: Path, supernet: OFAMobileNetV3, fmnist_small: DataBundle
) -> None:
    cache = open_cache(tmp_path / "acc.json", supernet)
    other = OFAMobileNetV3(SPACE)
    with pytest.raises(AccuracyCacheError, match="another supernet"):
        evaluate_many(other, [SPACE.min_subnet()], fmnist_small, cache=cache)
    alien = Subnet(space="elsewhere", ks=(3,), e=(3,), d=(2,), r=28)
    with pytest.raises(SubnetError, match="elsewhere"):
        evaluate_many(supernet, [alien], fmnist_small, cache=cache)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "edgenas.lut/1"}', "not an accuracy cache"),
        ('{"format": "edgenas.accuracy-cache/1", "header": {"space": 1}}', "damaged"),
    ],
)
def test_corrupt_or_foreign_cache_is_refused(
    tmp_path: Path, supernet: OFAMobileNetV3, text: str, needle: str
) -> None:
    path = tmp_path / "acc.json"
    path.write_text(text)
    with pytest.raises(AccuracyCacheError, match=needle) as info:
        AccuracyCache.open(path, supernet)
    assert "\n" not in str(info.value)


def test_sample_dataset_gives_extremes_and_distinct_networks() -> None:
    subnets = sample_dataset(SPACE, 50, seed=3)
    assert len(subnets) == 52
    assert subnets[:2] == [SPACE.max_subnet(), SPACE.min_subnet()]
    encodings = {SPACE.encode(s).tobytes() for s in subnets}
    assert len(encodings) == 52
    for s in subnets:
        SPACE.validate(s)
    assert sample_dataset(SPACE, 50, seed=3) == subnets
    assert sample_dataset(SPACE, 50, seed=4) != subnets


def test_sample_dataset_fails_rather_than_looping_when_the_space_is_too_small() -> None:
    # Only 2 resolutions x 1 depth x 1 kernel x 1 expand ratio: 2 distinct networks.
    from dataclasses import replace

    small = replace(SPACE, name="two", kernel_sizes=(3,), expand_ratios=(3,), depths=(2,))
    small = replace(small, resolutions=(28, 32))
    assert len(sample_dataset(small, 0, seed=0)) == 2
    with pytest.raises(ValueError, match="ask for fewer"):
        sample_dataset(small, 1, seed=0)
