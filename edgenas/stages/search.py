"""The search stage: the accuracy-latency Pareto front of a supernet's subnets for one or more
devices, and the best subnet under each device's budget (``pareto.json``, ``pareto.png``).

Several devices give a joint front (one subnet family for all targets). The study is stored
(a journal file by default), so a rerun, or another worker on the same storage, continues it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

from edgenas.console import stage_progress
from edgenas.search.accuracy_sources import AccuracySource
from edgenas.search.pareto import ParetoDocument
from edgenas.search.problem import ExtraObjective
from edgenas.search.sampler_names import SamplerName
from edgenas.search.study_runner import StudyError
from latency.table import TableError

if TYPE_CHECKING:
    import numpy as np

    from once_for_all import OFAMobileNetV3, SearchSpace, Subnet
    from once_for_all.accuracy_dataset import AccuracyCache
    from once_for_all.data import DataBundle

EXTRA_OBJECTIVES: tuple[str, ...] = get_args(ExtraObjective)
Say = Callable[[str], None]


@dataclass(frozen=True)
class SearchOptions:
    """What ``search`` does. ``devices`` are predictor.json files, folders holding one, or
    device names under ``profiles``; ``budgets_ms`` gives one budget per device, or none."""

    supernet: Path
    devices: tuple[str, ...]
    out: Path
    budgets_ms: tuple[float, ...] = ()
    trials: int = 2000
    sampler: SamplerName = "nsga2"
    storage: str | None = None  # default: journal:OUT/study.log
    study_name: str = "edgenas"
    accuracy: AccuracySource = "predictor"
    accuracy_samples: int = 100
    eval_images: int | None = None
    reevaluate: int = 20
    enqueue: tuple[Path, ...] = ()
    objectives: tuple[str, ...] = ()  # also minimise params, macs or peak_activation_bytes
    profiles: Path = Path("runs/profiles")
    seed: int = 0
    data: Path | None = None  # ImageNet-layout folder for a supernet that records no data


@dataclass(frozen=True)
class SearchResult:
    document: ParetoDocument  # what pareto.json holds
    pareto: Path
    plot: Path


def search(
    options: SearchOptions, *, quiet: bool = False, say: Say = lambda message: None
) -> SearchResult:
    """Run (or continue) the study and write ``pareto.json`` and ``pareto.png`` into
    ``options.out``. Wrong predictors, budgets no subnet can meet and unreachable storages
    fail first, before any accuracy evaluation."""
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
    from once_for_all import load_supernet
    from once_for_all.accuracy_dataset import AccuracyCache
    from once_for_all.checkpoint import FolderReads, load_training_data
    from once_for_all.files import output_folder

    o = options
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if o.budgets_ms and len(o.budgets_ms) != len(o.devices):
        raise StudyError(
            f"{len(o.devices)} --device but {len(o.budgets_ms)} --budget-ms: give one budget "
            "per device, in the same order"
        )
    bad = [name for name in o.objectives if name not in EXTRA_OBJECTIVES]
    if bad:
        raise StudyError(f"--objective {bad[0]!r}: use params, macs or peak_activation_bytes")
    net, _, payload = load_supernet(o.supernet)
    space = net.space
    enqueued = [_enqueued(p, space) for p in o.enqueue]
    # data replaced since training fails here; an imported supernet's --data reads only the
    # validation images evaluated (held out of train/) and BN's
    reads = FolderReads(val=o.eval_images or FolderReads.val, test=0)
    data = load_training_data(o.supernet, payload, folder=o.data, reads=reads)
    targets = []
    for i, name in enumerate(o.devices):
        predictor = load_predictor(resolve_predictor(name, o.profiles))
        budget = o.budgets_ms[i] if o.budgets_ms else None
        targets.append(DeviceTarget(predictor.header.device, predictor, budget))
    # Latency side first: a wrong predictor or an unreachable budget fails in seconds,
    # before any accuracy evaluation.
    extra = cast(tuple[ExtraObjective, ...], o.objectives)  # checked above
    problem = SearchProblem(space, _unset_accuracy, tuple(targets), extra)
    check_budgets(problem)
    output_folder(o.out)
    # An unreachable or wrong storage fails here too, before any accuracy evaluation.
    store = open_storage(o.storage or f"journal:{o.out / 'study.log'}")
    cache = AccuracyCache.open(o.out / "accuracy_cache.json", net, limit=o.eval_images)
    evaluate = _evaluator(net, data, cache, quiet=quiet)
    if o.accuracy == "predictor":
        accuracy = _accuracy_predictor(space, evaluate, o.accuracy_samples, o.out, say)
    else:
        accuracy = _direct(evaluate)
    problem = dataclasses.replace(problem, accuracy=accuracy)
    direct = o.accuracy == "direct"
    run = SearchRun(
        problem,
        storage=store,
        study_name=o.study_name,
        sampler=o.sampler,
        seed=o.seed,
        sync_every=1 if direct else 100,
        batch=1 if direct else 25,
    )
    run.enqueue(enqueued)
    with stage_progress("search trials", quiet=quiet) as progress:
        run.run(o.trials, progress=progress)
    front = pareto_front(problem, run.persistent, measure=evaluate, reevaluate=o.reevaluate)
    chosen = choose(problem, front)
    document = pareto_document(
        problem,
        run.persistent,
        front,
        chosen,
        accuracy_source=f"{o.accuracy}; front re-evaluated with inherited weights "
        f"({cache.header.split} split)",
    )
    pareto = o.out / "pareto.json"
    write_pareto(pareto, document)
    plot = pareto_plot(document, run.persistent, o.out / "pareto.png")
    return SearchResult(document, pareto, plot)


def resolve_predictor(device: str, profiles: Path) -> Path:
    """``device`` is a predictor.json, a folder holding one, or a name under ``profiles``."""
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
            return evaluate_many(net, subnets, data, cache=cache, progress=progress)

    return evaluate


def _accuracy_predictor(
    space: SearchSpace, evaluate: Evaluate, samples: int, out: Path, say: Say
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
    say(
        f"accuracy predictor: {v['n_train']} train / {v['n_holdout']} held-out subnets, "
        f"RMSE {v['rmse']:.4f} (constant {v['constant']['rmse']:.4f}), Kendall τ {v['kendall']:.3f}"
    )
    return predictor.predict_many


def _direct(evaluate: Evaluate) -> Callable[[Sequence[Subnet]], np.ndarray]:
    import numpy as np

    return lambda subnets: np.asarray(evaluate(subnets), dtype=np.float64)


def _enqueued(path: Path, space: SearchSpace) -> Subnet:
    """A subnet file given to --enqueue, checked against the space; errors name the file."""
    from once_for_all import Subnet, SubnetError

    subnet = Subnet.load(path)
    try:
        return space.validate(subnet)
    except SubnetError as exc:
        raise SubnetError(f"subnet file {path}: {exc}") from None
