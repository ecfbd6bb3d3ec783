"""`edgenas search`: Pareto-optimal subnets for one or more devices under latency budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgenas.cli.user_errors import SEED_MAX, budget_lists, fail, given_flags
from edgenas.console import err_console
from edgenas.search.accuracy_sources import AccuracySource, accuracy_label
from edgenas.search.sampler_names import SamplerName

if TYPE_CHECKING:
    from edgenas.search.pareto import ParetoDocument


def search_command(
    ctx: typer.Context,
    device: Annotated[
        list[str],
        typer.Option(
            help="device name (profiled under --profiles), a predictor.json or its folder; repeatable"
        ),
    ],
    supernet: Annotated[
        Path | None,
        typer.Option(help="supernet.pt from edgenas train (optional with ofa-predictor)"),
    ] = None,
    budget_ms: Annotated[
        list[str] | None,
        typer.Option(
            help="latency budget per --device, in the same order (hard constraint); several "
            "for one device as 15,18,23 (a subnet is chosen under each)",
            callback=budget_lists,
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for pareto.json, pareto.png, the study")] = Path(
        "runs/search"
    ),
    trials: Annotated[
        int, typer.Option(min=1, help="completed trials the study should hold")
    ] = 2000,
    sampler: Annotated[
        SamplerName, typer.Option(help="Optuna sampler, or OFA's evolution")
    ] = "nsga2",
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage: journal:PATH (default OUT/study.log), sqlite:///x.db, "
            "postgresql://user@host/db; workers given the same storage and --study-name share "
            "one study"
        ),
    ] = None,
    study_name: Annotated[str, typer.Option(help="study name inside the storage")] = "edgenas",
    accuracy: Annotated[
        AccuracySource,
        typer.Option(
            help="screen with an MLP predictor, evaluate every trial, or score with OFA's "
            "published ImageNet predictor (--ofa-predictor)"
        ),
    ] = "predictor",
    ofa_predictor: Annotated[
        Path | None,
        typer.Option(
            help="OFA's acc_predictor.pth for --accuracy ofa-predictor (OFA's tutorial "
            "downloads it from raw.githubusercontent.com/han-cai/files/master/ofa/)"
        ),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            help="with --accuracy ofa-predictor and no --supernet: the space (ofa-mbv3-w1.2)"
        ),
    ] = None,
    accuracy_samples: Annotated[
        int, typer.Option(min=10, help="subnets evaluated to fit the accuracy predictor")
    ] = 100,
    eval_images: Annotated[
        int | None, typer.Option(min=1, help="validation images per evaluation (default: all)")
    ] = None,
    reevaluate: Annotated[
        int, typer.Option(min=1, help="front members re-evaluated with inherited weights")
    ] = 20,
    enqueue: Annotated[
        list[Path] | None,
        typer.Option(
            help="subnets to try first (repeatable): a subnet JSON file (edgenas's, or OFA's "
            "arch dict), pareto.json#K, max or min"
        ),
    ] = None,
    objective: Annotated[
        list[str] | None, typer.Option(help="also minimise params, macs or peak_activation_bytes")
    ] = None,
    profiles: Annotated[Path, typer.Option(help="where device names are looked up")] = Path(
        "runs/profiles"
    ),
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            max=SEED_MAX,
            help="sampler seed (workers of one study that share it reseed apart)",
        ),
    ] = 0,
    data: Annotated[
        Path | None,
        typer.Option(
            help="ImageNet-layout folder (train/<wnid>/, val/<wnid>/) for a supernet that records "
            "no data (imported); --eval-images of train/ are held out (default 2000)"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print pareto.json to stdout")] = False,
) -> None:
    """Find the accuracy-latency Pareto front with Optuna and pick the best subnet under each
    budget. Several devices give a joint front (one subnet family for all targets); the
    study is stored and a rerun (or another worker on the same storage) continues it."""
    from edgenas.stages.search import SearchOptions, search

    _refuse_unused(ctx, accuracy)
    result = search(
        SearchOptions(
            supernet=supernet,
            devices=tuple(device),
            out=out,
            # budget_lists parsed the strings into budgets
            budgets_ms=tuple(cast("list[float | tuple[float, ...]]", budget_ms or [])),
            trials=trials,
            sampler=sampler,
            storage=storage,
            study_name=study_name,
            accuracy=accuracy,
            accuracy_samples=accuracy_samples,
            eval_images=eval_images,
            reevaluate=reevaluate,
            enqueue=tuple(enqueue or ()),
            objectives=tuple(objective or ()),
            profiles=profiles,
            seed=seed,
            space=space,
            ofa_predictor=ofa_predictor,
            data=data,
        ),
        quiet=quiet,
        say=lambda message: None if quiet else err_console.print(message, highlight=False),
    )
    if as_json:
        typer.echo(json.dumps(result.document))
        return
    print_choice(result.document, out)


# Options that --accuracy leaves nothing to do: with OFA's predictor no supernet's subnet is
# evaluated; evaluating every trial fits no predictor.
_UNUSED_WITH = {
    "ofa-predictor": (
        ("accuracy_samples", "eval_images", "reevaluate", "data"),
        "scores subnets with OFA's predictor, and evaluates none",
    ),
    "direct": (("accuracy_samples",), "evaluates every trial, and fits no accuracy predictor"),
}


def _refuse_unused(ctx: typer.Context, accuracy: str) -> None:
    """Refuse an option the --accuracy source leaves nothing to do: taken, it would be
    thought applied (it was, silently)."""
    names, why = _UNUSED_WITH.get(accuracy, ((), ""))
    flags = given_flags(ctx, names)
    if flags:
        raise fail(f"{flags[0]}: --accuracy {accuracy} {why}; leave {flags[0]} out")


def print_choice(document: ParetoDocument, out: Path) -> None:
    """The search's chosen subnets, one row per device budget, and where its files are."""
    front = document["front"]
    table = Table(
        title=f"chosen subnets ({len(front)} on the front, {document['trials']} trials)",
        title_justify="left",
    )
    for col in (
        "device",
        "budget ms",
        accuracy_label(document.get("accuracy")),
        "latency ms (predicted)",
        "MACs",
        "params",
        "subnet",
    ):
        table.add_column(col, overflow="fold")  # device names differ by a suffix: never cut
    for c in document["chosen"]:
        m = front[c["index"]]
        acc = (
            m["accuracy"]["measured"]
            if m["accuracy"]["measured"] is not None
            else m["accuracy"]["predicted"]
        )
        table.add_row(
            escape(c["device"]),
            f"{c['budget_ms']:g}",
            f"{acc:.4f}",
            ", ".join(f"{k} {v['predicted']:.3f}" for k, v in m["latency_ms"].items()),
            f"{m['macs'] / 1e6:.2f}M",
            f"{m['params'] / 1e3:.0f}k",
            f"d={m['subnet']['d']} r={m['subnet']['r']}",
        )
    Console(stderr=True).print(table)
    err_console.print(
        f"front and choices: {escape(str(out / 'pareto.json'))}, plot: {escape(str(out / 'pareto.png'))}"
    )
