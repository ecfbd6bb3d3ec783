"""`edgenas search`: Pareto-optimal subnets for one or more devices under latency budgets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgenas.console import err_console, fail, stage_progress
from edgenas.search.sampler_names import SamplerName

if TYPE_CHECKING:
    import numpy as np

    from once_for_all import OFAMobileNetV3, SearchSpace, Subnet
    from once_for_all.accuracy_dataset import AccuracyCache
    from once_for_all.data import DataBundle


class AccuracySource(str, Enum):
    predictor = "predictor"
    direct = "direct"


def _user_errors() -> tuple[type[Exception], ...]:
    from edgenas.search.pareto import InfeasibleBudget
    from edgenas.search.study_runner import StudyError
    from latency.table import TableError
    from once_for_all import CheckpointError, SubnetError
    from once_for_all.accuracy_dataset import AccuracyCacheError
    from once_for_all.accuracy_predictor import AccuracyPredictorError
    from once_for_all.data import DataError

    return (
        InfeasibleBudget,
        StudyError,
        TableError,
        CheckpointError,
        SubnetError,
        AccuracyCacheError,
        AccuracyPredictorError,
        DataError,
    )


def resolve_predictor(device: str, profiles: Path) -> Path:
    """``device`` is a predictor.json, a folder holding one, or a name under ``profiles``."""
    from latency.table import TableError

    for candidate in (
        Path(device),
        Path(device) / "predictor.json",
        profiles / device / "predictor.json",
    ):
        if candidate.is_file():
            return candidate
    raise TableError(
        f"no latency predictor for device {device!r} (looked for {device}, "
        f"{Path(device) / 'predictor.json'} and {profiles / device / 'predictor.json'}); "
        f"run 'edgenas profile {device} --space SPACE --out {profiles / device}' first"
    )


def search_command(
    supernet: Annotated[Path, typer.Option(help="supernet.pt from edgenas train")],
    device: Annotated[
        list[str],
        typer.Option(
            help="device name (profiled under --profiles), a predictor.json or its folder; repeatable"
        ),
    ],
    budget_ms: Annotated[
        list[float] | None,
        typer.Option(help="latency budget per --device, in the same order (hard constraint)"),
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
        AccuracySource, typer.Option(help="screen with an MLP predictor, or evaluate every trial")
    ] = AccuracySource.predictor,
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
        list[Path] | None, typer.Option(help="subnet JSON files to try first (repeatable)")
    ] = None,
    objective: Annotated[
        list[str] | None, typer.Option(help="also minimise params, macs or peak_activation_bytes")
    ] = None,
    profiles: Annotated[Path, typer.Option(help="where device names are looked up")] = Path(
        "runs/profiles"
    ),
    seed: Annotated[
        int,
        typer.Option(help="sampler seed (workers of one study that share it reseed apart)"),
    ] = 0,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print pareto.json to stdout")] = False,
) -> None:
    """Find the accuracy-latency Pareto front with Optuna and pick the best subnet under each
    budget. Several devices give a joint front (one subnet family for all targets); the
    study is stored and a rerun (or another worker on the same storage) continues it."""
    import optuna

    from edgenas.search.pareto import (
        check_budgets,
        choose,
        pareto_document,
        pareto_front,
        pareto_plot,
        write_pareto,
    )
    from edgenas.search.problem import DeviceTarget, SearchProblem
    from edgenas.search.study_runner import SearchRun, open_storage
    from latency.predictors import load_predictor
    from once_for_all import CheckpointError, Subnet, load_supernet
    from once_for_all.accuracy_dataset import AccuracyCache
    from once_for_all.data import load_data

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budgets = list(budget_ms or [])
    if budgets and len(budgets) != len(device):
        raise fail(
            f"{len(device)} --device but {len(budgets)} --budget-ms: give one budget per device, "
            "in the same order"
        )
    extra = tuple(objective or ())
    bad = [o for o in extra if o not in ("params", "macs", "peak_activation_bytes")]
    if bad:
        raise fail(f"--objective {bad[0]!r}: use params, macs or peak_activation_bytes")
    try:
        net, _, payload = load_supernet(supernet)
        space = net.space
        if "data" not in payload:
            raise CheckpointError(
                f"checkpoint {supernet} does not record its data settings; retrain it with edgenas train"
            )
        targets = []
        for i, name in enumerate(device):
            predictor = load_predictor(resolve_predictor(name, profiles))
            targets.append(
                DeviceTarget(predictor.header.device, predictor, budgets[i] if budgets else None)
            )
        # Latency side first: a wrong predictor or an unreachable budget fails in seconds,
        # before any accuracy evaluation.
        problem = SearchProblem(space, _unset_accuracy, tuple(targets), extra)  # type: ignore[arg-type]
        check_budgets(problem)
        out.mkdir(parents=True, exist_ok=True)
        # An unreachable or wrong storage fails here too, before any accuracy evaluation.
        store = open_storage(storage or f"journal:{out / 'study.log'}")
        data = load_data(**payload["data"])
        cache = AccuracyCache.open(out / "accuracy_cache.json", net, limit=eval_images)
        evaluate = _evaluator(net, data, cache, quiet=quiet)
        if accuracy is AccuracySource.predictor:
            acc_fn = _accuracy_predictor(space, evaluate, accuracy_samples, out)
        else:
            acc_fn = _direct(evaluate)
        problem = dataclasses.replace(problem, accuracy=acc_fn)
        direct = accuracy is AccuracySource.direct
        run = SearchRun(
            problem,
            storage=store,
            study_name=study_name,
            sampler=sampler,
            seed=seed,
            sync_every=1 if direct else 100,
            batch=1 if direct else 25,
        )
        run.enqueue([space.validate(Subnet.load(p)) for p in enqueue or []])
        with stage_progress("search trials", quiet=quiet) as progress:
            run.run(trials, progress=lambda d, t: progress("optimise", d, t))
        front = pareto_front(problem, run.persistent, measure=evaluate, reevaluate=reevaluate)
        chosen = choose(problem, front)
        document = pareto_document(
            problem,
            run.persistent,
            front,
            chosen,
            accuracy_source=f"{accuracy.value}; front re-evaluated with inherited weights "
            f"({cache.header.split} split)",
        )
        write_pareto(out / "pareto.json", document)
        pareto_plot(document, run.persistent, out / "pareto.png")
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(document))
        return
    _print_choice(document, out)


Evaluate = Callable[[Sequence["Subnet"]], list[float]]


def _unset_accuracy(subnets: Sequence[Subnet]) -> np.ndarray:
    raise AssertionError("accuracy is set once the budgets are known to be reachable")


def _evaluator(
    net: OFAMobileNetV3, data: DataBundle, cache: AccuracyCache, *, quiet: bool
) -> Evaluate:
    """Accuracy with inherited weights (BN recalibrated), cached by subnet."""
    from once_for_all.accuracy_dataset import evaluate_many

    def evaluate(subnets: Sequence[Subnet]) -> list[float]:
        with stage_progress("accuracy (inherited weights)", quiet=quiet) as progress:
            return evaluate_many(
                net, subnets, data, cache=cache, progress=lambda d, t: progress("evaluate", d, t)
            )

    return evaluate


def _accuracy_predictor(
    space: SearchSpace, evaluate: Evaluate, samples: int, out: Path
) -> Callable[[Sequence[Subnet]], np.ndarray]:
    """OFA's accuracy predictor, fitted on ``samples`` evaluated subnets (reused when the
    saved one was fitted on the same evaluations)."""
    from once_for_all.accuracy_dataset import sample_dataset
    from once_for_all.accuracy_predictor import fit_accuracy_predictor

    subnets = sample_dataset(space, samples, seed=0)
    accuracies = evaluate(subnets)
    predictor = fit_accuracy_predictor(space, subnets, accuracies, seed=0)
    predictor.save(out / "accuracy_predictor.pt")
    v = predictor.validation
    err_console.print(
        f"accuracy predictor: {v['n_train']} train / {v['n_holdout']} held-out subnets, "
        f"RMSE {v['rmse']:.4f} (constant {v['constant']['rmse']:.4f}), Kendall τ {v['kendall']:.3f}",
        highlight=False,
    )
    return predictor.predict_many


def _direct(evaluate: Evaluate) -> Callable[[Sequence[Subnet]], np.ndarray]:
    import numpy as np

    return lambda subnets: np.asarray(evaluate(subnets), dtype=np.float64)


def _print_choice(document: dict[str, Any], out: Path) -> None:
    front = document["front"]
    table = Table(
        title=f"chosen subnets ({len(front)} on the front, {document['trials']} trials)",
        title_justify="left",
    )
    for col in (
        "device",
        "budget ms",
        "accuracy",
        "latency ms (predicted)",
        "MACs",
        "params",
        "subnet",
    ):
        table.add_column(col)
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
