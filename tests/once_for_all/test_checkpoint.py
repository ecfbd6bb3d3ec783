"""Supernet checkpoints: atomic writes, refusal of missing, corrupt, foreign and malicious
files, and a load_supernet round trip."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgenas.cli.app import app
from once_for_all import (
    CheckpointError,
    OFAMobileNetV3,
    get_space,
    load_checkpoint,
    load_supernet,
)
from once_for_all.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointDocument,
    load_training_data,
    open_training_data,
    save_checkpoint,
)
from once_for_all.data import DataBundle, DataSpec, load_data
from once_for_all.data.source_digest import source_digest
from once_for_all.progressive_shrinking import changed_data
from tests.support.imagenet_folder import wnid, write_imagenet_folder

if TYPE_CHECKING:
    from conftest import SpaceCase

# What an unpickled malicious object did; it must stay empty when loading is refused.
EXECUTED: list[str] = []


def _record(message: str) -> str:
    EXECUTED.append(message)
    return message


class Malicious:
    """Unpickling this calls ``_record``: stands in for ``os.system`` and friends."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record, ("code ran while loading a checkpoint",))


def payload(net: OFAMobileNetV3, spec: DataSpec) -> dict[str, Any]:
    """The keys ``ProgressiveShrinkingTrainer._payload`` writes that loading needs."""
    return {"space": net.space.to_dict(), "data_spec": spec.to_dict(), "model": net.state_dict()}


def rgb_spec(case: SpaceCase) -> DataSpec:
    n = case.space.num_classes
    return DataSpec(
        name="synthetic-rgb",
        channels=3,
        image_size=case.resolution,
        num_classes=n,
        class_names=tuple(f"class-{i}" for i in range(n)),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


@pytest.fixture
def small_payload() -> dict[str, Any]:
    return {"epoch": 3, "weights": torch.arange(6.0).reshape(2, 3), "history": [{"loss": 1.5}]}


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---- saving


def test_save_and_load(tmp_path: Path, small_payload: dict[str, Any]) -> None:
    path = tmp_path / "runs" / "demo" / "supernet.pt"  # parents are created
    save_checkpoint(path, small_payload)
    assert files_in(path.parent) == ["supernet.pt"]  # no temporary file left
    loaded = load_checkpoint(path)
    assert loaded["format"] == CHECKPOINT_FORMAT == "edgenas.supernet/1"
    assert loaded["epoch"] == 3 and loaded["history"] == [{"loss": 1.5}]
    assert torch.equal(loaded["weights"], small_payload["weights"])
    assert load_checkpoint(str(path))["epoch"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (torch sees none)")
def test_a_checkpoint_made_on_a_gpu_holds_host_tensors(tmp_path: Path) -> None:
    """Run on an H200 (see the README): a supernet trained there first saved its state_dict
    and optimizer on cuda:0, which a plain torch.load on a machine without a GPU refuses."""
    net = OFAMobileNetV3(get_space("mbv3-tiny")).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 1, 32, 32, device="cuda")).sum().backward()
    opt.step()
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, {"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": {}})
    locations: set[str] = set()

    def record(storage: Any, location: str) -> Any:
        locations.add(location)
        return storage

    torch.load(path, map_location=record, weights_only=True)
    assert locations == {"cpu"}


def test_save_replaces_the_previous_file(tmp_path: Path, small_payload: dict[str, Any]) -> None:
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, small_payload)
    save_checkpoint(path, small_payload | {"epoch": 4})
    assert load_checkpoint(path)["epoch"] == 4
    assert files_in(tmp_path) == ["supernet.pt"]


def test_failed_save_keeps_the_previous_file(tmp_path: Path, small_payload: dict[str, Any]) -> None:
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, small_payload)
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, small_payload | {"epoch": 4, "callback": lambda: None})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 3
    assert files_in(tmp_path) == ["supernet.pt"]


def test_failed_first_save_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "supernet.pt"
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, {"callback": lambda: None})
    assert files_in(tmp_path) == []


# ---- refusing bad files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "supernet.pt"
    with pytest.raises(
        CheckpointError,
        match=f"^checkpoint {re.escape(str(path))} not found: train one with 'edgenas train RECIPE'",
    ):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="edgenas train"):
        load_supernet(path)
    # a run folder given for its checkpoint was "not found" though it exists
    path.write_bytes(b"")
    with pytest.raises(
        CheckpointError,
        match=f"^checkpoint {re.escape(str(tmp_path))} is a folder: give the checkpoint file "
        f"in it \\({re.escape(str(path))}\\)$",
    ):
        load_checkpoint(tmp_path)


def _truncated(path: Path, good: bytes) -> None:
    path.write_bytes(good[: len(good) // 2])


def _empty(path: Path, good: bytes) -> None:
    path.write_bytes(b"")


def _plain_pickle(path: Path, good: bytes) -> None:
    path.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT}, protocol=4))


def _text(path: Path, good: bytes) -> None:
    path.write_text("format: edgenas.supernet/1\n")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "corrupt",
    [_truncated, _empty, _plain_pickle, _text],
    ids=["truncated", "empty", "plain-pickle", "text"],
)
def test_corrupt_file(tmp_path: Path, small_payload: dict[str, Any], corrupt: Any) -> None:
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, small_payload)
    corrupt(path, path.read_bytes())
    with pytest.raises(
        CheckpointError,
        match=f"^checkpoint {re.escape(str(path))} is corrupt or not an edgenas checkpoint \\(.*\\): retrain or restore it$",
    ):
        load_checkpoint(path)


# Random bytes reach torch's legacy (non-zip) unpickler, which fails in many ways (bad
# opcodes, IndexError, KeyError, UnicodeDecodeError...): every one must become a CheckpointError.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_truncated_or_foreign_file_is_named_so(tmp_path: Path) -> None:
    """torch's zip reader reports some truncated files as OSError EINVAL, and its
    weights_only refusal advises weights_only=False: neither reaches the user as such."""
    path = tmp_path / "supernet.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(100_000)}}, path)
    path.write_bytes(path.read_bytes()[:5000])
    message = (
        f"checkpoint {path} is corrupt or not an edgenas checkpoint (truncated or damaged): "
        "retrain or restore it"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps(Path("x"), protocol=2))  # a pickle of a Python object
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "besides tensors and plain containers" in str(info.value)
    assert "weights_only" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        # a run folder's space.json given as the checkpoint: torch's legacy unpickler said
        # it held Python objects
        (
            b'{"format": "edgenas.space/1"}',
            'a text file starting \'{"format": "edgenas.space/1"}\', not a PyTorch file',
        ),
        (b"x,y\n1,2\n", "a text file starting 'x,y', not a PyTorch file"),
        (
            b"\x00\xff\x10binary",
            "not a PyTorch file: it is neither a zip archive nor a pickle",
        ),  # '101' before
        (b"", "the file is empty"),
    ],
)
def test_a_file_that_is_no_pytorch_file_is_named_so(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "supernet.pt"
    path.write_bytes(content)
    message = (
        f"checkpoint {path} is corrupt or not an edgenas checkpoint ({why}): retrain or restore it"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        load_checkpoint(path)


def test_a_zip_archive_cut_short_is_named_so_at_any_length(
    tmp_path: Path, small_payload: dict[str, Any]
) -> None:
    # Cut further in, miniz's "failed finding central directory. This is an internal miniz
    # error. If yo" reached the user.
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, small_payload)
    good = path.read_bytes()
    for length in (4, 100, len(good) // 3, len(good) // 2, len(good) - 10):
        path.write_bytes(good[:length])
        with pytest.raises(CheckpointError, match=r"\(truncated or damaged\): retrain"):
            load_checkpoint(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "supernet.pt"
    rng = random.Random(0)
    for size in (1, 2, 16, 64, 256) * 40:
        path.write_bytes(rng.randbytes(size))
        with pytest.raises(CheckpointError, match="is corrupt or not an edgenas checkpoint"):
            load_checkpoint(path)


def test_other_format(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": "edgenas.predictor/1", "model": {}}, path)
    message = (
        f"{path} is not an edgenas supernet checkpoint (format 'edgenas.predictor/1', expected "
        "'edgenas.supernet/1'): train one with 'edgenas train RECIPE', or import OFA's supernet "
        "file with 'edgenas import ofa-supernet FILE --out DIR' and give DIR/supernet.pt"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        load_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match=r"\(format None, expected 'edgenas.supernet/1'\)"):
        load_checkpoint(path)
    # The command the message names exists, with the arguments it gives.
    usage = CliRunner().invoke(app, ["import", "ofa-supernet", "--help"])
    assert usage.exit_code == 0 and "--out" in usage.output
    torch.save(torch.zeros(3), path)
    with pytest.raises(
        CheckpointError, match=r"\(format 'Tensor', expected 'edgenas.supernet/1'\)"
    ):
        load_checkpoint(path)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "supernet.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "evil": Malicious()}, path)
    EXECUTED.clear()
    with pytest.raises(CheckpointError, match="is corrupt or not an edgenas checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_supernet(path)
    assert EXECUTED == []
    # the file really is dangerous: an unrestricted load runs its code
    torch.load(path, weights_only=False)
    assert EXECUTED == ["code ran while loading a checkpoint"]
    EXECUTED.clear()


# ---- load_supernet


def spec_for(case: SpaceCase, fmnist_small: DataBundle) -> DataSpec:
    return fmnist_small.spec if case.space.in_channels == 1 else rgb_spec(case)


def test_load_supernet_round_trip(
    case: SpaceCase, supernet: OFAMobileNetV3, fmnist_small: DataBundle, tmp_path: Path
) -> None:
    spec = spec_for(case, fmnist_small)
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, payload(supernet, spec) | {"epoch": 2})

    loaded, loaded_spec, meta = load_supernet(path)
    assert isinstance(loaded, OFAMobileNetV3)
    assert not loaded.training
    assert loaded.space == case.space and loaded.space.id == case.space.id
    assert loaded_spec == spec
    assert meta["format"] == CHECKPOINT_FORMAT and meta["epoch"] == 2
    original = supernet.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.state_dict().items())

    x = case.inputs(4)
    for subnet in (
        case.space.max_subnet(r=case.resolution),
        case.space.sample(5, r=[case.resolution]),
    ):
        supernet.set_active(subnet)
        loaded.set_active(subnet)
        with torch.no_grad():
            assert torch.equal(loaded(x), supernet(x))


def test_load_supernet_refuses_an_invalid_payload(
    case: SpaceCase, supernet: OFAMobileNetV3, fmnist_small: DataBundle, tmp_path: Path
) -> None:
    spec = spec_for(case, fmnist_small)
    good = payload(supernet, spec)
    other_space = "mbv3-tiny" if case.space.name == "mbv3-imagenet" else "mbv3-imagenet"
    tampered_space = good["space"] | {"num_classes": 7}
    bad_payloads = {
        "no-space": {k: v for k, v in good.items() if k != "space"},
        "no-data-spec": {k: v for k, v in good.items() if k != "data_spec"},
        "no-model": {k: v for k, v in good.items() if k != "model"},
        "tampered-space": good | {"space": tampered_space},
        "space-not-a-dict": good | {"space": case.space.id},
        "data-spec-not-a-dict": good | {"data_spec": ["fashion-mnist"]},
        "model-not-a-dict": good | {"model": [1, 2]},
        "bad-data-spec": good | {"data_spec": spec.to_dict() | {"channels": 2}},
        "weights-of-another-space": good | {"space": get_space(other_space).to_dict()},
        "missing-weight": good
        | {"model": {k: v for i, (k, v) in enumerate(good["model"].items()) if i}},
    }
    for name, bad in bad_payloads.items():
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, bad)
        with pytest.raises(
            CheckpointError,
            match=f"^checkpoint {re.escape(str(path))} does not hold a valid supernet \\(",
        ):
            load_supernet(path)


def test_a_weight_of_the_wrong_shape_is_named_with_both_shapes(
    case: SpaceCase, supernet: OFAMobileNetV3, fmnist_small: DataBundle, tmp_path: Path
) -> None:
    # torch's multi-line message was cut to "Error(s) in loading state_dict for
    # OFAMobileNetV3:", naming nothing (audit, finding 8).
    good = payload(supernet, spec_for(case, fmnist_small))
    key = "classifier.weight"
    shape = list(good["model"][key].shape)
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, good | {"model": good["model"] | {key: good["model"][key][:1]}})
    with pytest.raises(CheckpointError) as raised:
        load_supernet(path)
    assert str(raised.value) == (
        f"checkpoint {path} does not hold a valid supernet ({key} has shape {[1, *shape[1:]]}, "
        f"the supernet {shape}, for space {case.space.id}): retrain or restore it"
    )


def _trained_on_folder(tmp_path: Path, *, streamed: bool) -> tuple[Path, CheckpointDocument]:
    """A folder of photos and the data records of a checkpoint trained on it."""
    folder = write_imagenet_folder(tmp_path / "photos", classes=2, per_class=6, size=(20, 20))
    settings: dict[str, Any] = {
        "source": str(folder),
        "image_size": 16,
        "val_size": 4,
        "seed": 0,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    data = load_data(**settings)
    payload = cast(
        CheckpointDocument,
        {
            "format": CHECKPOINT_FORMAT,
            "data": settings,
            "data_spec": data.spec.to_dict(),
            "source_digest": source_digest(str(folder)),
            **({"streamed": True} if streamed else {}),
        },
    )
    return folder, payload


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_data_whose_files_changed_since_training_is_refused(tmp_path: Path, streamed: bool) -> None:
    # One image added to the folder moved the validation split drawn from its training
    # images: eval and search scored subnets on images training saw, without a word; resume
    # refused it (data audit).
    folder, payload = _trained_on_folder(tmp_path, streamed=streamed)
    path = tmp_path / "supernet.pt"
    assert len(open_training_data(path, payload).val) == 4  # the same files: read as trained
    # Files that are no images of a class (Finder's .DS_Store) are not the data, and a link
    # loop is not walked: the digest listed every file, following links (review).
    (folder / ".DS_Store").write_bytes(b"Bud1")
    (folder / "train" / wnid(0) / "README.txt").write_text("photos from the lab")
    (folder / "train" / wnid(0) / "loop").symlink_to("..")
    assert len(load_training_data(path, payload).val) == 4
    extra = folder / "train" / wnid(0) / "extra.JPEG"
    shutil.copy(next((folder / "train" / wnid(1)).iterdir()), extra)
    message = (
        f"the data at {folder} changed since {path} was trained on it (files added, removed or "
        "rewritten in train/): its validation split would now hold other images"
    )
    for read in (open_training_data, load_training_data):
        with pytest.raises(CheckpointError, match=f"^{re.escape(message)}"):
            read(path, payload)
    extra.unlink()  # restored: read again
    assert len(load_training_data(path, payload).val) == 4
    os.utime(folder / "train" / wnid(1), ns=(0, 0))  # copied elsewhere: other times, same data
    assert source_digest(str(folder)) == payload["source_digest"]
    shutil.move(folder, tmp_path / "moved")  # a missing source: its new place is asked for
    with pytest.raises(CheckpointError, match=r"does not exist \(moved or deleted\): give its new"):
        load_training_data(path, payload)


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_held_out_images_that_changed_leave_the_training_as_it_was(
    tmp_path: Path, streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # An image added to val/ (which training never reads) was refused, saying the validation
    # split would hold training images, and `edgenas run` trained again (walk-through).
    from edgenas.stage_inputs import data_source_fingerprint, held_out_fingerprint
    from once_for_all.data.source_digest import SIZED, SPLIT

    folder, payload = _trained_on_folder(tmp_path, streamed=streamed)
    path = tmp_path / "supernet.pt"
    assert payload["source_digest"].startswith(SPLIT)
    trained, held_out = data_source_fingerprint(str(folder)), held_out_fingerprint(str(folder))
    extra = folder / "val" / wnid(0) / "extra.JPEG"
    shutil.copy(next((folder / "val" / wnid(1)).iterdir()), extra)
    with caplog.at_level(logging.WARNING, logger="once_for_all.checkpoint"):
        assert len(load_training_data(path, payload).val) == 4
    assert [r.getMessage() for r in caplog.records] == [
        f"the held-out images of {folder} (test/ or val/) changed since {path} was trained: "
        "test accuracies are on the images there now"
    ]
    assert data_source_fingerprint(str(folder)) == trained  # the train stage: as it was
    assert held_out_fingerprint(str(folder)) != held_out  # the exports: checked again
    extra.rename(folder / "train" / wnid(0) / "extra.JPEG")  # a training image: refused
    with pytest.raises(CheckpointError, match=r"\(files added, removed or rewritten in train/\)"):
        load_training_data(path, payload)
    assert data_source_fingerprint(str(folder)) != trained
    # A checkpoint of the digest before, of both parts in one, refuses either change.
    (folder / "train" / wnid(0) / "extra.JPEG").unlink()
    whole = source_digest(str(folder), like=SIZED)
    assert whole is not None and whole.startswith(SIZED)
    shutil.copy(next((folder / "val" / wnid(1)).iterdir()), extra)
    with pytest.raises(CheckpointError, match="changed since"):
        load_training_data(path, {**payload, "source_digest": whole})


def test_a_folder_with_a_file_name_that_is_not_utf8_has_a_digest(tmp_path: Path) -> None:
    # A name from a Windows zip (Latin-1 bytes) was a UnicodeEncodeError traceback out of
    # `edgenas train` and `run`: the digests encoded names as UTF-8 (walk-through).
    from edgenas.stage_inputs import data_source_fingerprint

    folder = tmp_path / "photos"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / name / "a.png")
    listing = hashlib.sha256(b"train|cat/a.png|0\ntrain|dog/a.png|1\n").hexdigest()
    assert source_digest(str(folder), like=listing) == listing  # as recorded before: unchanged
    shutil.copy(folder / "cat" / "a.png", os.fsencode(folder / "cat") + b"/caf\xe9.png")
    assert source_digest(str(folder), like=listing) not in (None, listing)
    assert source_digest(str(folder)) is not None
    assert data_source_fingerprint(str(folder)) is not None


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_data_that_moved_is_taken_where_it_holds_the_same_files(
    tmp_path: Path, streamed: bool
) -> None:
    # A moved folder was "unknown data source", --data NEWPATH was refused although the
    # checkpoint's digest could show it is the same data, and resume called it other data
    # (its spec is named after the folder) (audit, finding 3).
    folder, payload = _trained_on_folder(tmp_path, streamed=streamed)
    settings, trained = dict(payload["data"]), DataSpec.from_dict(payload["data_spec"])
    path = tmp_path / "supernet.pt"
    moved = tmp_path / "elsewhere" / "imgs"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    with pytest.raises(CheckpointError) as raised:
        open_training_data(path, payload)
    assert str(raised.value) == (
        f"the data {path} was trained on, {folder}, does not exist (moved or deleted): give its "
        "new place with --data (in a recipe, data.source), or restore it"
    )
    bundle = open_training_data(path, payload, folder=moved)
    assert len(bundle.val) == 4 and bundle.spec.class_names == trained.class_names
    # resuming training from the moved folder: the same data, though its spec's name differs
    now = load_data(**settings | {"source": str(moved)})
    assert now.spec.name != trained.name
    assert changed_data(payload, now.spec.to_dict(), settings, source_digest(str(moved))) == ""
    # Other images are still other data, and so is a folder that is not there.
    other = write_imagenet_folder(tmp_path / "other", classes=2, per_class=7, size=(20, 20))
    with pytest.raises(CheckpointError) as raised:
        open_training_data(path, payload, folder=other)
    assert str(raised.value) == (
        f"data {other}: checkpoint {path} was trained on {folder}, the only data its subnets "
        f"are evaluated on, and {other} holds other files: give that data (or where it "
        "moved), or leave out --data (in a recipe, give that data.source)"
    )
    assert changed_data(payload, trained.to_dict(), settings, source_digest(str(other)))
    # Other images under the same file names are other data too: the digest listed names and
    # labels only, and `eval --data` took them (walk-through).
    renamed = write_imagenet_folder(tmp_path / "same", classes=2, per_class=6, size=(30, 30))
    with pytest.raises(CheckpointError, match=f"^data {re.escape(str(renamed))}: checkpoint"):
        open_training_data(path, payload, folder=renamed)
    # A checkpoint of an earlier edgenas recorded the names and labels alone: compared so.
    names_only = hashlib.sha256()
    for split, folder_name in (("train", "train"), ("test", "val")):
        for c in range(2):
            for k in range(6):
                name = f"{folder_name}/{wnid(c)}/{wnid(c)}_{k}.JPEG"
                names_only.update(f"{split}|{name}|{c}\n".encode())
    earlier = cast(CheckpointDocument, {**payload, "source_digest": names_only.hexdigest()})
    assert len(open_training_data(path, earlier, folder=moved).val) == 4
    with pytest.raises(CheckpointError, match=r"^data \S+/gone does not exist: give the data"):
        open_training_data(path, payload, folder=tmp_path / "gone")
    # A data set's name is other data, not a path that does not exist (walk-through).
    with pytest.raises(CheckpointError) as raised:
        open_training_data(path, payload, folder="fashion-mnist")
    assert str(raised.value).startswith(
        f"data fashion-mnist: checkpoint {path} was trained on {folder}, the only data its "
        "subnets are evaluated on: give that data"
    )
