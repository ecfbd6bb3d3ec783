"""`edgenas train`: a recipe's progressive-shrinking schedule into a run folder.

Run it under ``torchrun --nproc_per_node N -m edgenas train ...`` to train with N processes
(on one machine or, with ``--nnodes``, several): the recipe's batch size is then the global
batch, split across them (unless ``train.lr_scaling: linear``), and only rank 0 writes the run
folder and the console output.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgenas.console import LineProgress
from edgenas.recipe import Recipe, RecipeError
from edgenas.run_layout import CHECKPOINT_NAME, SPACE_NAME, SUPERNET_NAME
from once_for_all import CheckpointError, OFAMobileNetV3, ProgressiveShrinkingTrainer, SearchSpace
from once_for_all.checkpoint import CheckpointMetadata, load_checkpoint
from once_for_all.data import DataBundle, DataSpec, StreamBundle, load_data, stream_image_folder
from once_for_all.data.image_stream import streams
from once_for_all.data.load import BUILTIN_SOURCES, names_a_path
from once_for_all.data.source_digest import source_digest
from once_for_all.distributed import (
    World,
    barrier,
    broadcast_object,
    process_group,
    training_device,
)
from once_for_all.files import atomic_path, output_folder_for_work, write_json
from once_for_all.folder_lock import FolderBusyError, folder_lock
from once_for_all.progressive_shrinking import EpochRecord, PhaseConfig
from once_for_all.training_devices import TrainingDevice
from once_for_all.transfer import InitialWeights, read_initial_weights

# What training writes before its first epoch: a folder holding only it holds no work.
_RECORDS = frozenset({SPACE_NAME})


@dataclass(frozen=True)
class TrainOptions:
    """Where and how ``train`` runs a recipe's schedule (the schedule is the recipe's)."""

    out: Path  # the run folder
    resume: bool = False  # continue from out's checkpoint (else one there is an error)
    threads: int | None = None  # default: the recipe's train.threads
    # The CPU or this process's GPU (default: the recipe's train.device); GPUs talk over NCCL,
    # CPUs over gloo.
    device: TrainingDevice | None = None
    stop_after_epochs: int | None = None  # stop early, as a kill would (tests, benchmarks)
    # A user's --resume expects a checkpoint: finding none (a mistyped --out), the run says
    # that it starts anew. `edgenas run` resumes whatever is there, without a word.
    say_new_run: bool = False


def train(recipe: Recipe, options: TrainOptions, *, console: Console, quiet: bool = False) -> Path:
    """Train (or resume) and return the path of the final ``supernet.pt``. Under torchrun,
    every process calls this; rank 0 writes, the others return once it has written."""
    if recipe.train is None:
        raise RecipeError(
            f"recipe {recipe.name!r} has no train section: add one to train a supernet"
        )
    compute = training_device(options.device or recipe.train.device)
    if compute.type == "cuda":
        torch.cuda.set_device(compute)  # NCCL's collectives use the current device
    with process_group(device=compute) as world, ExitStack() as held:
        busy = None
        if world.is_main:
            # Before loading data or training; refused by the data (missing, too small,
            # another space's) or stopped before a first epoch, a folder this call made is not
            # left behind. A checkpoint stays.
            held.enter_context(output_folder_for_work(options.out, records=_RECORDS))
            try:
                held.enter_context(folder_lock(options.out))
            except FolderBusyError as exc:
                busy = str(exc)
        busy = broadcast_object(busy, world)  # every process stops, not only the first
        if busy:
            raise FolderBusyError(busy)
        return _train(
            recipe,
            options,
            world,
            console=console,
            quiet=quiet or not world.is_main,
            device=compute,
        )


def _train(
    recipe: Recipe,
    options: TrainOptions,
    world: World,
    *,
    console: Console,
    quiet: bool,
    device: torch.device,
) -> Path:
    out = options.out
    checkpoint = out / CHECKPOINT_NAME
    resuming, foreign = broadcast_object(
        (checkpoint.exists(), not checkpoint.exists() and (out / SUPERNET_NAME).exists()), world
    )
    if foreign:
        # Imported (or its checkpoint deleted): training would replace it at its end, and its
        # space.json at its start.
        raise CheckpointError(
            f"{out} already holds a supernet ({SUPERNET_NAME}) that no training checkpoint "
            "there continues: choose another --out"
        )
    if resuming and not options.resume:
        raise CheckpointError(
            f"{out} already holds a training checkpoint: pass --resume to continue it, or choose another --out"
        )
    # Threads change speed and at most the last bits of float sums, not the schedule, so a
    # resumed run may use another count (bit-identical resumption needs the same one). The
    # count is the machine's: torchrun's processes on one machine share it.
    assert recipe.train is not None  # checked by train()
    torch.set_num_threads(max(1, (options.threads or recipe.train.threads) // world.local_size))
    # Its normalisation and trained expand ratios shape the run; a resume takes them as the
    # run's own checkpoint recorded them (and its weights): the file may be gone since.
    # a damaged one: what to do here, in --out
    fix = f"restore it, or delete it to train into {out} afresh (edgenas run: --force train)"
    resumed = load_checkpoint(checkpoint, damaged_fix=fix) if resuming and options.resume else None
    init = None
    if recipe.train.init_from:
        init = InitialWeights.recorded(resumed) if resumed is not None else None
        init = init or read_initial_weights(recipe.train.init_from)
    # in the form the run's checkpoint recorded it (an earlier edgenas's), to compare with it
    like = resumed.get("source_digest") if resumed is not None else None
    del resumed  # its weights: the trainer reads them again, not a second copy all along
    space, settings, data = _training_data(recipe, init)
    if (upsampled := upsampling(data.spec, space)) and world.is_main and not quiet:
        console.print(f"warning: {upsampled}", markup=False, highlight=False)
    config = recipe.train_config()
    _check_teacher(recipe, init, data.spec)
    if world.is_main:
        # The space as a file: what `edgenas profile --space` takes for a space adapted to data.
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SPACE_NAME, space.to_dict())
    torch.manual_seed(config.seed)  # initial weights (with init_from: the new classifier's)
    supernet = OFAMobileNetV3(space)
    metadata: CheckpointMetadata = {"recipe": recipe.model_dump(mode="json"), "data": settings}
    if (digest := source_digest(str(settings["source"]), like=like)) is not None:
        metadata["source_digest"] = digest
    if isinstance(data, StreamBundle):
        metadata["streamed"] = True
    if init is not None:
        if not resuming:  # the run's own checkpoint, once there, holds the weights
            init.load_into(supernet, data.spec)
        metadata["init_from"] = init.record(data.spec)
    trainer = ProgressiveShrinkingTrainer(
        supernet,
        data,
        config,
        checkpoint=checkpoint,
        metadata=metadata,
        world=world,
        device=device,
        pretrained_expand_ratios=init.expand_ratios if init is not None else (),
    )
    if options.resume and trainer.resume() and world.is_main:
        st = trainer.state
        console.print(f"resuming {checkpoint}: {len(st.history)} epoch(s) done", style="dim")
    elif options.resume and options.say_new_run and world.is_main:
        console.print(f"no checkpoint in {out}: starting a new run", style="dim")
    if not quiet:
        console.print(
            f"training {space.id} on {data.spec.name}: {len(data.train)} train / {len(data.val)} val images, "
            f"{len(config.phases)} phases, {sum(p.epochs for p in config.phases)} epochs"
            + (f", {world.size} processes" if world.size > 1 else "")
            + (f", on {device.type}" if device.type != "cpu" else "")
        )
    # Without a terminal (a log file, CI, nohup) a bar is never drawn: plain lines instead, or
    # an ImageNet epoch would print nothing for hours.
    plain = not quiet and not console.is_terminal
    lines = LineProgress("train", console=console) if plain else None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or lines is not None,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=None, metrics="")

        def on_step(
            phase: PhaseConfig, epoch: int, step: int, steps: int, metrics: dict[str, float]
        ) -> None:
            if lines is not None:
                lines(f"{phase.name} epoch {epoch + 1}/{phase.epochs}", step, steps)
                return
            progress.update(
                task,
                description=f"{phase.name} {epoch + 1}/{phase.epochs}",
                completed=step,
                total=steps,
                metrics=f"loss {metrics['loss']:.3f} acc {metrics['acc']:.3f}",
            )

        def on_epoch(r: EpochRecord) -> None:
            progress.console.print(
                f"{r.phase} epoch {r.epoch}: loss {r.train_loss:.3f}, train acc {r.train_acc:.3f}, "
                f"val acc max {r.val_acc_max:.3f} min {r.val_acc_min:.3f} ({r.seconds:.0f} s)"
            )

        state = trainer.train(
            on_step=on_step,
            on_epoch=None if quiet else on_epoch,
            stop_after_epochs=options.stop_after_epochs,
        )
    final = out / SUPERNET_NAME
    if state.phase_index >= len(config.phases) and world.is_main:
        with atomic_path(final) as tmp:
            shutil.copyfile(checkpoint, tmp)
    barrier(world)
    return final


def check_training(recipe: Recipe) -> None:
    """Refuse what a new training of ``recipe`` would refuse before its first epoch (a start
    of another space, data that does not fit the space, an unreadable image in data held in
    memory), without training: `edgenas run` checks this before it discards a training, and
    what was made from it, for changed inputs. It discarded them, then found the recipe or
    the data wrong (walk-through)."""
    assert recipe.train is not None
    init = read_initial_weights(recipe.train.init_from) if recipe.train.init_from else None
    _, _, data = _training_data(recipe, init)
    _check_teacher(recipe, init, data.spec)


def _training_data(
    recipe: Recipe, init: InitialWeights | None
) -> tuple[SearchSpace, dict[str, Any], DataBundle | StreamBundle]:
    """The recipe's space, the data's settings as training records them, and the data,
    checked against the space and the start ``init``."""
    space = recipe.search_space()
    if init is not None:
        init.check_space(space)  # before any image is read
    settings = data_settings(recipe, init)
    data: DataBundle | StreamBundle
    if streams(recipe.data.source, image_size=settings["image_size"], holding=recipe.data.stream):
        data = stream_image_folder(
            Path(recipe.data.source).expanduser(),
            image_size=settings["image_size"],
            channels=init.space.in_channels if init is not None else None,
            mean=settings.get("mean"),
            std=settings.get("std"),
            val_size=settings["val_size"],
            seed=settings["seed"],
            train_limit=settings["train_limit"],
        )
        # what the commands after training load: the same crop and normalisation
        settings |= {
            "resize": "center-crop",
            "mean": list(data.spec.mean),
            "std": list(data.spec.std),
        }
    else:
        data = load_data(**settings)
    recipe.check_data(data.spec)
    return space, settings, data


def _check_teacher(recipe: Recipe, init: InitialWeights | None, spec: DataSpec) -> None:
    if init is None:
        return
    first = recipe.train_config().phases[0]
    if first.kd_ratio > 0 and first.distill == "teacher" and init.resets_classifier(spec):
        raise RecipeError(
            f"recipe {recipe.name!r}: train.phases[{first.name}] distils from the full "
            "network frozen at its start, whose classifier init_from starts afresh for "
            "the data's classes: use distill: inplace (with sandwich: true) or kd_ratio 0"
        )


def upsampling(spec: DataSpec, space: SearchSpace) -> str | None:
    """Why every subnet would see the data upsampled (images smaller than the space's least
    resolution: trained on blur, at the cost of the larger input), or None."""
    least = min(space.resolutions)
    if spec.image_size >= least:
        return None
    return (
        f"the data's images are {spec.image_size} px, below the space's least resolution "
        f"{least}: every subnet sees them upsampled; give data.image_size >= {least}, or a "
        "space of lower resolutions"
    )


def data_settings(recipe: Recipe, init: InitialWeights | None) -> dict[str, Any]:
    """``load_data``'s arguments for the recipe's data. A start (``init_from``) brings the
    normalisation its weights were trained with, which sets a folder's channels too, and
    OFA's crop (shorter side resized, centre cropped) rather than squashing photos to a
    square: a folder held in memory is then read as a streamed one is."""
    settings = recipe.data.load_kwargs()
    source = str(settings["source"])
    if names_a_path(source) or (
        source not in BUILTIN_SOURCES and Path(source).expanduser().exists()
    ):  # a folder or file, also by a bare name (flowers, data.npz)
        # Recorded absolute: eval, search and export read it from wherever they run (read
        # against their folder, a relative path was "moved or deleted").
        settings["source"] = str(Path(source).expanduser().absolute())
    if init is not None:
        settings |= {
            "mean": list(init.spec.mean),
            "std": list(init.spec.std),
            "resize": "center-crop",
        }
    return settings
