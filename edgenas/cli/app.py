"""The `edgenas` application: its command groups, and `train` and `eval`. Most heavy imports
happen inside the commands that need them, so that quick commands start quickly; the
recipe's schema (``edgenas.recipe``) still loads torch here, which is why ``edgenas.__main__``
installs its Ctrl-C handler before importing this module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgenas.cli.devices import devices_app
from edgenas.cli.export import export_command
from edgenas.cli.npu import npu_app
from edgenas.cli.ofa_import import import_app
from edgenas.cli.profile import latency_app, profile_command
from edgenas.cli.report import report_command
from edgenas.cli.run import run_command
from edgenas.cli.search import search_command
from edgenas.cli.user_errors import SEED_MAX, UserErrorsGroup
from edgenas.console import err_console as console
from edgenas.console import stage_progress
from edgenas.recipe import MAX_THREADS
from edgenas.subnet_choice import choose_subnet
from once_for_all.splits import EvalSplit
from once_for_all.training_devices import TrainingDevice

app = typer.Typer(
    name="edgenas",
    help="Hardware-aware neural architecture search for edge devices (Once-for-All).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=UserErrorsGroup,
)
app.add_typer(npu_app, name="npu")
app.add_typer(devices_app, name="devices")
app.add_typer(latency_app, name="latency")
app.add_typer(import_app, name="import")
app.command("profile")(profile_command)
app.command("search")(search_command)
app.command("export")(export_command)
app.command("run")(run_command)
app.command("report")(report_command)


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML, e.g. recipes/tiny-fmnist.yaml")],
    out: Annotated[
        Path | None, typer.Option(help="run folder (default: runs/<recipe name>)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run folder's checkpoint")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
    threads: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_THREADS, help="torch threads (default: the recipe's)"),
    ] = None,
    device: Annotated[
        TrainingDevice | None,
        typer.Option(help="auto (a GPU if torch sees one), cpu or cuda (default: the recipe's)"),
    ] = None,
) -> None:
    """Train a supernet with progressive shrinking, one checkpoint per epoch."""
    from edgenas.recipe import load_recipe
    from edgenas.stages.train import TrainOptions
    from edgenas.stages.train import train as run_training
    from once_for_all.distributed import launched_rank

    r = load_recipe(recipe)
    options = TrainOptions(
        out=out or Path("runs") / r.name,
        resume=resume,
        threads=threads,
        device=device,
        say_new_run=True,
    )
    final = run_training(r, options, console=console, quiet=quiet)
    if launched_rank() == 0:
        console.print(f"supernet written to {final}")


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="supernet checkpoint (supernet.pt)")],
    subnet: Annotated[str, typer.Option(help="max, min, random, or a subnet JSON file")] = "max",
    split: Annotated[
        EvalSplit, typer.Option(help="val during search; test for final reporting")
    ] = "val",
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed for --subnet random")] = 0,
    data: Annotated[
        Path | None,
        typer.Option(
            help="ImageNet-layout folder (train/<wnid>/, val/<wnid>/) for a supernet that records "
            "no data (imported)"
        ),
    ] = None,
    images: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="images of the split evaluated (default: all; from --data: 2000 val, 5000 test)",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="processes decoding a streamed folder's images (default: the core count; 0: this one)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON to stdout")] = False,
) -> None:
    """Accuracy of a subnet with inherited weights, after BN recalibration."""
    from once_for_all import evaluate_subnet, load_supernet
    from once_for_all.checkpoint import FolderReads, open_training_data, require_complete

    supernet, _, payload = load_supernet(checkpoint)
    require_complete(payload, checkpoint)  # as export does: its subnets are not trained yet
    space = supernet.space
    chosen = choose_subnet(subnet, space, seed=seed)
    # only the split evaluated is read from --data (and train/'s BN images)
    wanted = images or (FolderReads.val if split == "val" else FolderReads.test)
    reads = FolderReads(val=wanted if split == "val" else 0, test=wanted if split == "test" else 0)
    # a folder (streamed in training, or an imported supernet's) streams, decoded as evaluated
    bundle = open_training_data(checkpoint, payload, folder=data, reads=reads, workers=workers)
    held = len(getattr(bundle, split))
    if images is not None and images > held:  # it was capped silently
        console.print(
            f"{images} images asked, but the {split} split holds {held}: evaluating all {held}"
        )
    # An imported supernet's val split is a fixed hold-out (10,000 of ImageNet's train/): by
    # default its first 2,000, as search evaluates; a run's own splits, all of them.
    limit = images if images is not None or "data" in payload else wanted
    with stage_progress("eval", quiet=False) as progress:
        acc = evaluate_subnet(supernet, chosen, bundle, split=split, limit=limit, progress=progress)
    if as_json:
        typer.echo(json.dumps({"subnet": chosen.to_dict(), "accuracy": acc, "split": split}))
    else:
        console.print(f"{chosen.key}: {split} accuracy {acc:.4f}")
