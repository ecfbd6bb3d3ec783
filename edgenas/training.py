"""`edgenas train`: a recipe's progressive-shrinking schedule into a run folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgenas.recipe import Recipe
from once_for_all import CheckpointError, OFAMobileNetV3, ProgressiveShrinkingTrainer
from once_for_all.data import load_data
from once_for_all.progressive_shrinking import EpochRecord, PhaseConfig

CHECKPOINT_NAME = "checkpoint.pt"
SUPERNET_NAME = "supernet.pt"


def train(
    recipe: Recipe,
    out: Path,
    *,
    resume: bool,
    console: Console,
    quiet: bool = False,
    stop_after_epochs: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train (or resume) and return the path of the final ``supernet.pt``."""
    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.exists() and not resume:
        raise CheckpointError(
            f"{out} already holds a training checkpoint: pass --resume to continue it, or choose another --out"
        )
    # Threads change speed and at most the last bits of float sums, not the schedule, so a
    # resumed run may use another count (bit-identical resumption needs the same one).
    torch.set_num_threads(threads or recipe.train.threads)
    data = load_data(**recipe.data.load_kwargs())
    space = recipe.search_space()
    config = recipe.train_config()
    torch.manual_seed(config.seed)  # initial weights
    trainer = ProgressiveShrinkingTrainer(
        OFAMobileNetV3(space),
        data,
        config,
        checkpoint=checkpoint,
        metadata={"recipe": recipe.model_dump(mode="json"), "data": recipe.data.load_kwargs()},
    )
    if resume and trainer.resume():
        st = trainer.state
        console.print(f"resuming {checkpoint}: {len(st.history)} epoch(s) done", style="dim")
    if not quiet:
        console.print(
            f"training {space.id} on {data.spec.name}: {len(data.train)} train / {len(data.val)} val images, "
            f"{len(config.phases)} phases, {sum(p.epochs for p in config.phases)} epochs"
        )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=None, metrics="")

        def on_step(
            phase: PhaseConfig, epoch: int, step: int, steps: int, metrics: dict[str, float]
        ) -> None:
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
            stop_after_epochs=stop_after_epochs,
        )
    final = out / SUPERNET_NAME
    if state.phase_index >= len(config.phases):
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.copyfile(checkpoint, tmp)
        tmp.replace(final)
    return final
