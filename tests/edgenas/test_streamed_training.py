"""A recipe's data section chooses between a folder held in memory and one streamed from
disk; `edgenas train` on a streamed folder records what the later commands load."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from rich.console import Console

from edgenas.recipe import RecipeError, load_recipe
from edgenas.stages.train import TrainOptions, train
from export import read_onnx_metadata
from once_for_all import evaluate_subnet, load_checkpoint, load_supernet
from once_for_all.checkpoint import FolderReads, load_training_data, open_training_data
from once_for_all.data import DataError, StreamBundle, StreamLoader, image_stream, normalize
from once_for_all.data.image_stream import streams
from once_for_all.data.splits import eval_head
from once_for_all.evaluation import bn_batches
from tests.edgenas.conftest import MICRO_RECIPE
from tests.support.cli_here import edgenas_here


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten classes of grey 44x36 JPEGs, mbv3-tiny's input."""
    root = tmp_path_factory.mktemp("grey") / "grey"
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(8):
            pixels = rng.integers(0, 256, (36, 44), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{k}.jpg")
    return root


def test_auto_streams_a_folder_by_its_decoded_size(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not streams(str(folder), image_size=32)  # 80 x 3 KiB
    assert not streams(str(folder), image_size=None)
    assert streams(str(folder), image_size=32, holding="stream")
    assert not streams(str(folder), image_size=32, holding="memory")
    monkeypatch.setattr(image_stream, "STREAM_ABOVE_BYTES", 80 * 3 * 32 * 32 - 1)
    assert streams(str(folder), image_size=32)
    assert not streams("fashion-mnist", image_size=32)
    with pytest.raises(DataError, match="only a folder of class folders streams"):
        streams("fashion-mnist", image_size=32, holding="stream")
    with pytest.raises(DataError, match="give image_size"):
        streams(str(folder), image_size=None, holding="stream")
    # without image_size, auto sizes the folder by its first image (44x36: 44 px)
    monkeypatch.setattr(image_stream, "STREAM_ABOVE_BYTES", 80 * 3 * 44 * 44 - 1)
    with pytest.raises(DataError, match=r"80 images would take .* GiB decoded.*give image_size"):
        streams(str(folder), image_size=None)


def _recipe(tmp_path: Path, data: dict[str, object]) -> Path:
    recipe = copy.deepcopy(MICRO_RECIPE)
    recipe["space"] = {"name": "mbv3-tiny", "in_channels": 1, "num_classes": 10}
    recipe["data"] = data
    recipe["train"]["phases"] = recipe["train"]["phases"][:1]  # type: ignore[index]
    recipe["train"]["batch_size"] = 16  # type: ignore[index]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def streamed_run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A supernet trained on ``folder`` streamed: its final checkpoint."""
    tmp_path = tmp_path_factory.mktemp("streamed")
    data = {"source": str(folder), "val_size": 8, "image_size": 32, "stream": "stream"}
    recipe = load_recipe(_recipe(tmp_path, data))
    return train(recipe, TrainOptions(out=tmp_path / "run"), console=Console(), quiet=True)


def test_a_streamed_training_records_the_crop_and_normalisation(streamed_run: Path) -> None:
    payload = load_checkpoint(streamed_run)
    settings = payload["data"]
    assert payload.get("streamed") is True
    assert "stream" not in settings and settings["resize"] == "center-crop"
    assert len(settings["mean"]) == 1
    # the commands after training load the same images, crop and normalisation
    bundle = load_training_data(streamed_run, payload)
    assert bundle.spec.to_dict() == payload["data_spec"]
    assert (len(bundle.train), len(bundle.val)) == (62, 8)


def test_later_commands_read_only_what_they_use_of_trainings_own_splits(
    streamed_run: Path,
) -> None:
    payload = load_checkpoint(streamed_run)
    streamed = open_training_data(streamed_run, payload, workers=0)
    assert isinstance(streamed, StreamBundle)
    assert (len(streamed.train), len(streamed.val)) == (62, 8)
    # search and export hold a bounded part in memory: val is training's own hold-out
    held = load_training_data(streamed_run, payload, reads=FolderReads(train=10, val=4, test=3))
    assert (len(held.train), len(held.val), len(held.test)) == (10, 4, 3)
    first_four = eval_head(streamed.val, 4)  # what an evaluation on 4 images reads
    assert held.val.labels.tolist() == first_four.labels.tolist()
    assert set(held.train.labels.tolist()) == set(range(10))  # spread over the classes
    # the held pixels are the streamed eval transform's, before normalisation
    loader = StreamLoader(first_four, streamed.spec, batch_size=4, shuffle=False, workers=0)
    first, _ = next(iter(loader))
    assert torch.allclose(normalize(held.val.images, held.spec), first)


def test_eval_of_a_streamed_supernet_streams_with_progress(streamed_run: Path) -> None:
    result = edgenas_here("eval", streamed_run, "--subnet", "max", "--json", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "eval: evaluate 8/8 (100%)" in result.stderr
    payload = load_checkpoint(streamed_run)
    supernet, _, _ = load_supernet(streamed_run)
    bundle = open_training_data(streamed_run, payload, workers=0)
    expected = evaluate_subnet(supernet, supernet.space.max_subnet(), bundle)
    assert json.loads(result.stdout)["accuracy"] == expected


def test_eval_search_and_export_recalibrate_bn_on_the_same_images(streamed_run: Path) -> None:
    # eval recalibrated on a random slice through OFA's train transforms, search and export on
    # a spread held in memory by the eval transform: one subnet, two accuracies (walk-through).
    payload = load_checkpoint(streamed_run)
    supernet, _, _ = load_supernet(streamed_run)
    streamed = open_training_data(streamed_run, payload, workers=0)  # what eval reads
    searched = load_training_data(streamed_run, payload, reads=FolderReads(train=0, test=0))
    exported = load_training_data(streamed_run, payload, reads=FolderReads(train=100, val=4))
    assert isinstance(streamed, StreamBundle)
    for held in (searched, exported):
        for r in (32, 24):
            for a, b in zip(bn_batches(streamed, r), bn_batches(held, r), strict=True):
                assert torch.equal(a, b)
    # OFA's train transforms: random crops of the files, not the centre crops held as train
    # (the same 62 files here, in the same order)
    assert exported.bn is not None
    assert torch.equal(exported.bn.labels, exported.train.labels)
    assert not torch.equal(exported.bn.images, exported.train.images)
    subnet = supernet.space.max_subnet()  # at the images' own size: the same pixels evaluated
    accuracies = {evaluate_subnet(supernet, subnet, d) for d in (streamed, searched)}
    assert len(accuracies) == 1
    # Below it too: search and export evaluated the held 32 px crop resized, eval the files
    # decoded at the subnet's resolution; one subnet had two accuracies (walk-through).
    for held, split in ((searched, "val"), (exported, "val"), (exported, "test")):
        files = eval_head(getattr(streamed, split), len(getattr(held, split)))
        (decoded, labels), *_ = StreamLoader(
            files, streamed.spec, batch_size=64, shuffle=False, workers=0, resolutions=(24,)
        ).epoch(0)
        at_24 = held.split_at(split, 24)
        assert torch.equal(normalize(at_24.images, held.spec), decoded)
        assert torch.equal(at_24.labels, labels)
        assert held.split_at(split, 24) is at_24  # decoded once
        assert held.split_at(split, 32) is getattr(held, split)
    for r in (28, 30):
        for subnet in (supernet.space.max_subnet(r=r), supernet.space.min_subnet(r=r)):
            said = {evaluate_subnet(supernet, subnet, d) for d in (streamed, searched)}
            assert len(said) == 1, (subnet.key, said)


def test_images_decoded_again_per_resolution_keep_to_a_budget(
    streamed_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One copy per resolution met: mbv3-imagenet's 25 would hold 4.6 GB of 2,000 images.
    payload = load_checkpoint(streamed_run)
    held = load_training_data(streamed_run, payload, reads=FolderReads(train=0, test=0))
    first = held.split_at("val", 28)
    monkeypatch.setattr(image_stream, "DECODED_BUDGET_BYTES", first.images.nbytes)
    assert held.split_at("val", 28) is first  # within the budget: kept
    other = held.split_at("val", 30)  # over it: the least recently used goes
    assert held.split_at("val", 30) is other
    again = held.split_at("val", 28)
    assert again is not first and torch.equal(again.images, first.images)


def test_searches_and_exports_of_a_folder_not_held_whole_record_the_evaluation_method(
    streamed_run: Path, folder: Path, tmp_path: Path
) -> None:
    # A streamed run's search stayed up to date after the evaluation method of such data
    # changed: `edgenas run` kept the front of the older method (stop 61's list).
    from edgenas.run_folder import RunFolder
    from edgenas.stage_inputs import upstream_inputs
    from once_for_all.accuracy_dataset import EVAL_METHOD

    path = _recipe(tmp_path, {"source": str(folder), "image_size": 32, "stream": "stream"})
    recipe = load_recipe(path)
    run = RunFolder(tmp_path / "run", recipe, path)
    run.root.mkdir()
    run.layout.supernet.symlink_to(streamed_run)
    assert upstream_inputs(run, recipe, [])["eval_method"] == EVAL_METHOD
    payload = dict(torch.load(streamed_run, weights_only=True))
    del payload["streamed"]  # as if trained on the folder held in memory: method 2, as before
    run.layout.supernet.unlink()
    torch.save(payload, run.layout.supernet)
    assert "eval_method" not in upstream_inputs(run, recipe, [])


def test_a_bad_stream_choice_is_refused(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="stream"):
        load_recipe(_recipe(tmp_path, {"source": str(folder), "stream": "disk"}))


def test_export_of_a_streamed_supernet_describes_its_centre_crop(
    streamed_run: Path, tmp_path: Path
) -> None:
    # The card and the ONNX metadata said "resized (bilinear) to 32x32": a deployment would
    # feed whole photos squashed to the input, where the subnet was trained and scored on
    # centre crops (data audit).
    out = tmp_path / "export"
    args = ["--subnet", "max", "--format", "onnx", "--no-verify", "--out", out]
    result = edgenas_here("export", "--supernet", streamed_run, *args)
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["data"]["resize"] == "center-crop"
    assert (
        "resized (bilinear, antialiased as PIL's resize is) so that the shorter side is 37 px "
        "and centre-cropped to 32x32 "
        "(OFA's evaluation transform)"
    ) in (out / "card.md").read_text()
    described = json.loads(read_onnx_metadata(out / "model.onnx")["edgenas.input"])
    assert (described["resize"], described["crop_fraction"]) == ("center-crop", 0.875)
