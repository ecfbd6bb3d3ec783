"""`train.init_from`: training starts from another supernet's weights with a new classifier
for the data's classes, on a generated ImageNet-layout folder of real JPEG files."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console
from torch import Tensor

from edgenas.pipeline import run_recipe
from edgenas.recipe import Recipe, RecipeError, load_recipe
from edgenas.run_folder import RunOptions
from edgenas.stages import train as train_stage
from edgenas.stages.train import TrainOptions, train
from once_for_all import (
    CheckpointError,
    OFAMobileNetV3,
    PhaseConfig,
    ProgressiveShrinkingTrainer,
    TrainConfig,
    get_space,
    load_checkpoint,
)
from once_for_all.checkpoint import CheckpointBody, save_checkpoint
from once_for_all.data import DataSpec, load_data
from once_for_all.files import file_sha256
from once_for_all.ofa_import import IMAGENET_SPEC, ImportedSupernet, write_imported
from once_for_all.search_space import SearchSpace
from once_for_all.transfer import CLASSIFIER_KEYS, read_initial_weights
from tests.support.imagenet_folder import write_imagenet_folder

# the source's normalisation, which the transferred run must take over
SOURCE_NORM = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}
# what the source's own training sampled: a channel sort keeps these ratios' channels
SOURCE_PHASES = (
    PhaseConfig("full", 1, 0.1, kd_ratio=0.0),
    PhaseConfig("expand", 1, 0.1, e=(4, 6)),
)


def _space(*, channels: int = 3, classes: int = 10, **changes: Any) -> SearchSpace:
    space = dataclasses.replace(get_space("mbv3-tiny"), in_channels=channels, num_classes=classes)
    return dataclasses.replace(space, **changes)


def _write_source(path: Path, space: SearchSpace, *, seed: int = 7) -> dict[str, Tensor]:
    """A finished checkpoint of a random supernet (BN statistics included), as training
    writes one; returns its state."""
    torch.manual_seed(seed)
    net = OFAMobileNetV3(space)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.rand_like(tensor))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    channels = space.in_channels
    spec = DataSpec(
        name="source",
        channels=channels,
        image_size=32,
        num_classes=space.num_classes,
        class_names=tuple(f"s{i}" for i in range(space.num_classes)),
        mean=SOURCE_NORM["mean"][:channels],
        std=SOURCE_NORM["std"][:channels],
    )
    body = CheckpointBody(
        space=space.to_dict(),
        data_spec=spec.to_dict(),
        model=state,
        teacher=None,
        optimizer=None,
        weight_average=None,
        phase_index=len(SOURCE_PHASES),
        epoch=0,
        history=[],
        train_config=TrainConfig(phases=SOURCE_PHASES).to_dict(),
        rng={},
        complete=True,
    )
    save_checkpoint(path, body)
    return state


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 64 px RGB JPEGs in ImageNet's layout (train/ and val/)."""
    return write_imagenet_folder(
        tmp_path_factory.mktemp("own") / "own", classes=3, per_class=12, size=(64, 64)
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tensor]]:
    path = tmp_path_factory.mktemp("source") / "supernet.pt"
    return path, _write_source(path, _space())


RECIPE: dict[str, Any] = {
    "name": "transfer",
    "space": {"name": "mbv3-tiny", "in_channels": 3, "num_classes": 3},
    "data": {"val_size": 6, "image_size": 32, "seed": 0},
    "train": {
        "seed": 0,
        "threads": 1,
        "batch_size": 8,
        "eval_images": 6,
        "bn_images": 8,
        "phases": [
            # in-place distillation from the first phase: the loaded supernet is elastic already
            {
                "name": "elastic",
                "epochs": 1,
                "lr": 0.01,
                "ks": [3, 5, 7],
                "e": [3, 4, 6],
                "d": [2, 3, 4],
                "subnets_per_step": 2,
                "sandwich": True,
                "distill": "inplace",
                "kd_ratio": 1.0,
                "sort_channels": True,
            },
            {"name": "more", "epochs": 1, "lr": 0.005, "ks": [3, 5, 7], "kd_ratio": 0.0},
        ],
    },
}


def _recipe(tmp_path: Path, folder: Path, init_from: Path, **train: Any) -> Recipe:
    raw = copy.deepcopy(RECIPE)
    raw["data"]["source"] = str(folder)
    raw["train"] |= {"init_from": str(init_from), **train}
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_recipe(path)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Tensor]]:
    """The supernet's weights as each training run starts them (after a resume's load)."""
    seen: list[dict[str, Tensor]] = []

    class Spy(ProgressiveShrinkingTrainer):
        def train(self, **kwargs: Any) -> Any:
            seen.append({k: v.clone() for k, v in self.supernet.state_dict().items()})
            return super().train(**kwargs)

    monkeypatch.setattr(train_stage, "ProgressiveShrinkingTrainer", Spy)
    return seen


def test_training_starts_from_the_weights_with_a_new_classifier_and_resumes(
    folder: Path,
    source: tuple[Path, dict[str, Tensor]],
    tmp_path: Path,
    started: list[dict[str, Tensor]],
) -> None:
    path, state = source
    recipe = _recipe(tmp_path, folder, path)
    # streamed, as an own folder of real size is (the recipe's stream: auto)
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"stream": "stream"})})
    out = tmp_path / "run"
    options = TrainOptions(out=out, stop_after_epochs=1)
    train(recipe, options, console=Console(), quiet=True)  # killed after the first phase
    start = started[0]
    for key, tensor in state.items():
        if key not in CLASSIFIER_KEYS:
            assert torch.equal(start[key], tensor), key
    assert start["classifier.weight"].shape == (3, 256)
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    record = checkpoint["init_from"]
    assert record["classifier"] == "reset" and record["expand_ratios"] == [4, 6]
    assert record["sha256"] == file_sha256(path)
    # the weights expect the source's normalisation: the data takes it
    assert checkpoint["data_spec"]["mean"] == list(SOURCE_NORM["mean"])
    assert checkpoint["history"][0]["train_loss"] > 0

    # resumed, the run's own checkpoint holds the weights, not init_from, and records what
    # the start set: the file may be gone since (it was refused as not found; walk-through)
    gone = path.rename(path.with_name("moved-away.pt"))
    try:
        final = train(
            recipe,
            dataclasses.replace(options, resume=True, stop_after_epochs=None),
            console=Console(),
            quiet=True,
        )
    finally:
        gone.rename(path)
    assert all(torch.equal(started[1][k], v) for k, v in checkpoint["model"].items())
    done = load_checkpoint(final)
    assert done["complete"] and len(done["history"]) == 2
    assert done["init_from"] == record


def test_a_start_reads_a_folder_with_its_crop_held_in_memory_or_streamed(
    folder: Path, source: tuple[Path, dict[str, Tensor]], tmp_path: Path
) -> None:
    """A folder held in memory was squashed to a square while a streamed one (over 2 GiB
    decoded) was center-cropped: the weights of a start expect the crop either way."""
    path, _ = source
    recipe = _recipe(tmp_path, folder, path)
    settings = train_stage.data_settings(recipe, read_initial_weights(path))
    assert settings["resize"] == "center-crop"
    assert (settings["mean"], settings["std"]) == (
        list(SOURCE_NORM["mean"]),
        list(SOURCE_NORM["std"]),
    )
    assert "resize" not in train_stage.data_settings(recipe, None)  # no start: as before
    data = load_data(**settings)
    assert data.spec.image_size == 32 and data.spec.channels == 3


def test_a_sort_keeps_the_channels_of_the_ratios_trained_before(
    folder: Path, source: tuple[Path, dict[str, Tensor]], tmp_path: Path
) -> None:
    init = read_initial_weights(source[0])
    data = load_data(str(folder), val_size=6, image_size=32, **SOURCE_NORM)
    sort = PhaseConfig("expand", 1, 0.01, e=(3, 4, 6), sort_channels=True)
    mid4 = [block.mid_channels(4) for block in OFAMobileNetV3(_space(classes=3)).blocks]

    def sorted_rows(pretrained: tuple[int, ...]) -> list[bool]:
        net = OFAMobileNetV3(_space(classes=3))
        init.load_into(net, data.spec)
        before = [block.expand_conv.weight.clone() for block in net.blocks]
        trainer = ProgressiveShrinkingTrainer(
            net,
            data,
            TrainConfig(phases=(sort,), batch_size=8),
            checkpoint=tmp_path / f"{len(pretrained)}.pt",
            pretrained_expand_ratios=pretrained,
        )
        trainer.train(stop_after_epochs=0)  # starts the phase (the sort), trains nothing
        return [
            # the same channels make up e=4's prefix, whatever their order in it
            set(map(tuple, w[:m].flatten(1).tolist()))
            == set(map(tuple, block.expand_conv.weight[:m].flatten(1).tolist()))
            for w, block, m in zip(before, trainer.supernet.blocks, mid4, strict=True)
        ]

    assert all(sorted_rows(init.expand_ratios))
    assert not all(sorted_rows(()))  # a sort from scratch would have broken them


def test_the_first_phase_may_distil_only_from_a_start(tmp_path: Path, folder: Path) -> None:
    raw = copy.deepcopy(RECIPE)
    raw["data"]["source"] = str(folder)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=r"first phase trains the teacher.*init_from"):
        load_recipe(path)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_teacher_frozen_with_a_new_classifier_is_refused(
    folder: Path, source: tuple[Path, dict[str, Tensor]], tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path, folder, source[0])
    assert recipe.train is not None and recipe.train.phases is not None
    phases = recipe.train.phases
    teacher = dataclasses.replace(phases[0], sandwich=False, distill="teacher")
    raw = recipe.model_dump(mode="json")
    raw["train"]["phases"][0] = dataclasses.asdict(teacher)
    with pytest.raises(RecipeError) as exc:
        train(
            Recipe.model_validate(raw),
            TrainOptions(out=tmp_path / "run"),
            console=Console(),
            quiet=True,
        )
    assert "use distill: inplace" in _one_line(exc)
    assert not (tmp_path / "run" / "space.json").exists()  # refused before writing anything


def test_bad_starts_are_refused_in_one_line(
    folder: Path, source: tuple[Path, dict[str, Tensor]], tmp_path: Path
) -> None:
    other = tmp_path / "other.pt"
    _write_source(other, _space(feature_mix_width=128))
    grey = tmp_path / "grey.pt"
    _write_source(grey, _space(channels=1))
    both = tmp_path / "both.pt"
    _write_source(both, _space(channels=1, feature_mix_width=128))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    # Each names the whole space to set: following the first, which named no channels, met
    # the second (walk-through).
    for init_from, message in (
        (tmp_path / "missing.pt", r"init_from: checkpoint .*missing\.pt not found"),
        (text, r"init_from: checkpoint .*notes\.pt is corrupt or not an edgenas checkpoint"),
        (other, r"space mbv3-tiny-\w+, not the recipe's .*\(feature_mix_width differs\)"),
        (
            grey,
            r"takes 1 input channel\(s\), the recipe's space 3: set space: \{name: mbv3-tiny, "
            r"in_channels: 1, num_classes: \d+\}",
        ),
        (
            both,
            r"\(in_channels, feature_mix_width differ\): set space: \{name: mbv3-tiny, "
            r"in_channels: 1,",
        ),
    ):
        recipe = _recipe(tmp_path, folder, init_from)
        out = tmp_path / f"run-{init_from.stem}"
        with pytest.raises(CheckpointError, match=message) as exc:
            train(recipe, TrainOptions(out=out), console=Console(), quiet=True)
        _one_line(exc)
        assert not (out / "checkpoint.pt").exists() and not (out / "space.json").exists()


def test_a_changed_start_reruns_the_train_stage(folder: Path, tmp_path: Path) -> None:
    start = tmp_path / "start.pt"
    _write_source(start, _space())
    raw = copy.deepcopy(RECIPE)
    raw["data"]["source"] = str(folder)
    raw["train"]["init_from"] = str(start)
    raw["train"]["phases"] = raw["train"]["phases"][1:]
    raw["stages"] = ["train"]
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(raw))
    options = RunOptions(out=tmp_path / "run", quiet=True, threads=1)
    run_recipe(path, options, Console())
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stages"]["train"]["inputs"]["init_from"] == {"sha256": file_sha256(start)}
    _write_source(start, _space(), seed=8)  # the same path, other weights
    console = Console(record=True, width=200)
    run_recipe(path, options, console)
    assert "init_from.sha256 changed; discarding" in (tmp_path / "run" / "run.log").read_text()


def test_the_classifier_is_kept_for_the_same_classes_and_damage_names_the_key(
    folder: Path, tmp_path: Path
) -> None:
    data = load_data(str(folder), val_size=6, image_size=32, **SOURCE_NORM)
    path = tmp_path / "same.pt"
    state = _write_source(path, _space(classes=3))
    init = read_initial_weights(path)
    init = dataclasses.replace(
        init, spec=dataclasses.replace(init.spec, class_names=data.spec.class_names)
    )
    net = OFAMobileNetV3(_space(classes=3))
    init.load_into(net, data.spec)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert init.record(data.spec)["classifier"] == "kept"
    stem = next(iter(state))
    for damaged, message in (
        ({k: v for k, v in state.items() if k != stem}, f"missing key '{stem}'"),
        ({**state, "extra.weight": state[stem]}, "unknown key 'extra.weight'"),
        ({**state, stem: state[stem][:1]}, f"{stem} has shape"),
    ):
        with pytest.raises(CheckpointError, match=message) as exc:
            dataclasses.replace(init, state=damaged).load_into(net, data.spec)
        _one_line(exc)


def test_an_imported_supernet_was_trained_at_every_expand_ratio(tmp_path: Path) -> None:
    space = _space(classes=1000)
    imported = ImportedSupernet(space, OFAMobileNetV3(space).state_dict(), "ofa", "0" * 64, "1.0")
    path = tmp_path / "imported.pt"
    write_imported(imported, path)
    init = read_initial_weights(path)
    assert init.expand_ratios == (3, 4, 6)
    assert init.spec == IMAGENET_SPEC  # whose normalisation a transfer takes
