"""`edgenas eval` and `edgenas export` of an imported OFA supernet with `--data`, an
ImageNet-layout folder of real JPEG files (1000 synset folders, one tiny image each)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgenas.cli import app
from edgenas.stages.ofa_import import import_ofa_supernet
from once_for_all import load_checkpoint
from once_for_all.checkpoint import (
    FolderReads,
    imported_val_size,
    load_training_data,
    stream_folder_data,
)
from once_for_all.data import StreamBundle
from once_for_all.evaluation import bn_batches
from once_for_all.ofa_import import IMAGENET_SPEC
from tests.edgenas.conftest import MICRO_RECIPE
from tests.support.imagenet_folder import wnid, write_imagenet_folder
from tests.support.ofa_supernets import save_reference


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the imported supernet.pt, its ImageNet-layout folder)."""
    root = tmp_path_factory.mktemp("imagenet")
    save_reference(1.0, root / "ofa_mbv3_d234_e346_k357_w1.0")
    import_ofa_supernet(root / "ofa_mbv3_d234_e346_k357_w1.0", root / "run")
    return root / "run" / "supernet.pt", write_imagenet_folder(root / "inet")


def _invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.stdout, result.stderr


def test_eval_reads_the_folder(imported: tuple[Path, Path]) -> None:
    ckpt, folder = imported
    code, out, err = _invoke(
        "eval", ckpt, "--subnet", "min", "--data", folder, "--images", "4", "--workers", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["split"] == "val" and doc["subnet"]["r"] == 128
    assert 0.0 <= doc["accuracy"] <= 1.0


def test_an_imported_supernets_images_do_not_depend_on_the_command(
    imported: tuple[Path, Path],
) -> None:
    # Each command held out as many validation images as it evaluated (eval --images 4,
    # search 2,000, export its parity images) and drew BN's from the rest, through OFA's
    # train transforms in eval only: one subnet's accuracy moved with the command.
    ckpt, folder = imported
    payload = load_checkpoint(ckpt)

    def listed(reads: FolderReads) -> StreamBundle:
        return stream_folder_data(ckpt, payload, folder=folder, reads=reads, workers=0)

    few, many = listed(FolderReads(val=4)), listed(FolderReads(val=50, test=0))
    assert [str(few.val.path(i)) for i in range(len(few.val))] == [
        str(many.val.path(i)) for i in range(len(many.val))
    ]
    assert len(few.val) == imported_val_size(1000) == 100  # a tenth of train/'s 1,000
    searched = load_training_data(ckpt, payload, folder=folder, reads=FolderReads(train=0, test=0))
    for a, b in zip(bn_batches(few, 128), bn_batches(searched, 128), strict=True):
        assert torch.equal(a, b)


def test_eval_of_an_imported_supernet_evaluates_as_many_images_as_search(
    imported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without --images it evaluated the whole fixed hold-out (10,000 of ImageNet's), not the
    # 2,000 its help and search's --eval-images default to (review). Here 30 of 100.
    ckpt, folder = imported
    monkeypatch.setattr(FolderReads, "val", 30)
    code, _, err = _invoke(
        "eval", ckpt, "--subnet", "min", "--data", folder, "--workers", "0", "--json"
    )
    assert code == 0, err
    assert "evaluate 30/30" in err and "evaluate 100/100" not in err


def test_export_calibrates_on_the_folder(imported: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, folder = imported
    out = tmp_path / "export"
    code, stdout, err = _invoke(
        "export", "--supernet", ckpt, "--subnet", "min", "--out", out, "--data", folder,
        "--format", "onnx", "--int8", "--calibration-images", "16", "--test-images", "20",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "card.md",
        "model.onnx",
        "model_int8.onnx",
    ]
    card = json.loads(stdout)
    assert card["name"] == json.loads((out / "card.json").read_text())["name"]
    spec = card["data"]
    # the recorded spec's size and OFA's normalisation; the folder's synsets as class names
    assert spec["image_size"] == 224 and spec["mean"] == list(IMAGENET_SPEC.mean)
    assert spec["std"] == list(IMAGENET_SPEC.std)
    assert spec["class_names"][:2] == [wnid(0), wnid(1)] and spec["num_classes"] == 1000
    assert "calibrating on 16 training images" in err and "checking on 20 test images" in err
    assert {f["name"] for f in card["files"]} == {"model.onnx", "model_int8.onnx"}


def test_a_folder_without_1000_classes_is_refused(
    imported: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, _ = imported
    folder = write_imagenet_folder(tmp_path / "inet", classes=999, size=(8, 8))
    code, _, err = _invoke("eval", ckpt, "--data", folder)
    assert code == 2
    assert err.strip() == (
        f"error: data folder {folder} has 999 class folders, {ckpt} classifies 1000 (imagenet): give "
        "the folder holding all 1000 class folders (train/<wnid>/, val/<wnid>/)"
    )


def test_data_for_a_checkpoint_that_records_its_data_is_refused(
    imported: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, folder = imported
    trained = tmp_path / "trained.pt"
    payload = torch.load(ckpt, weights_only=True)
    payload.pop("imported")
    torch.save({**payload, "data": {"source": "fashion-mnist", "val_size": 5000}}, trained)
    code, _, err = _invoke("export", "--supernet", trained, "--subnet", "min", "--out",
                           tmp_path / "out", "--data", folder)  # fmt: skip
    assert code == 2
    assert err.strip() == (
        f"error: data {folder}: checkpoint {trained} was trained on fashion-mnist, the only data "
        "its subnets are evaluated on: leave out --data (in a recipe, give that data.source)"
    )
    assert not (tmp_path / "out").exists()


def test_a_recipe_without_train_reads_its_data_source_for_an_imported_supernet(
    imported: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, _ = imported
    out = tmp_path / "run"
    out.mkdir()
    (out / "supernet.pt").symlink_to(ckpt)  # as 'edgenas import ofa-supernet ... --out' puts it
    folder = write_imagenet_folder(tmp_path / "inet", classes=999, size=(8, 8))
    recipe = copy.deepcopy(MICRO_RECIPE)
    recipe.update(
        {
            "name": "imported",
            "stages": ["search"],
            "data": {"source": str(folder)},
            "devices": [{"name": "npu-32x32-ws", "budget_ms": 1.0, "calibrate": 0}],
        }
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    code, _, err = _invoke("run", path, "--out", out, "--quiet")
    assert code == 2
    # the search read data.source as the imported supernet's folder (and refused 999 classes)
    assert (
        f"data folder {folder} has 999 class folders, {out / 'supernet.pt'} classifies 1000" in err
    )
