"""The search stage: the accuracy-latency Pareto front of a supernet's subnets for one or more
devices, and the best subnet under each device's budget (``pareto.json``, ``pareto.png``).

Several devices give a joint front (one subnet family for all targets). The study is stored
(a journal file by default), so a rerun, or another worker on the same storage, continues it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

from edgenas.console import stage_progress
from edgenas.search.accuracy_sources import OFA_FIGURE, AccuracySource
from edgenas.search.pareto import ParetoDocument
from edgenas.search.problem import AccuracyFn, ExtraObjective
from edgenas.search.sampler_names import SamplerName
from edgenas.search.study_runner import StudyError
from latency.profile_files import PREDICTOR_NAME
from latency.table import TableError

if TYPE_CHECKING:
    import numpy as np

    from once_for_all import OFAMobileNetV3, SearchSpace, Subnet
    from once_for_all.accuracy_dataset import AccuracyCache
    from once_for_all.data import DataBundle

EXTRA_OBJECTIVES: tuple[str, ...] = get_args(ExtraObjective)
Say = Callable[[str], None]


# Subnet accuracies with inherited weights, in --out: valid for as long as the supernet,
# the data and the number of images evaluated are the same (its header says which).
ACCURACY_CACHE_NAME = "accuracy_cache.json"


@dataclass(frozen=True)
class SearchOptions:
    """What ``search`` does. ``devices`` are predictor.json files, folders holding one, or
    device names under ``profiles``; ``budgets_ms`` gives one budget per device, or none; a
    device's entry may be several budgets (a subnet is chosen under each, the search is
    constrained by the largest).
    ``accuracy="ofa-predictor"`` scores with OFA's published predictor (``ofa_predictor``,
    OFA's acc_predictor.pth) and needs no trained supernet: the space comes from ``space``
    (a space name or space.json) or from the ``supernet`` checkpoint."""

    supernet: Path | None
    devices: tuple[str, ...]
    out: Path
    budgets_ms: tuple[float | tuple[float, ...], ...] = ()
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
    # With accuracy ofa-predictor, instead of a supernet: a space's name or space.json, or
    # the space itself (a recipe's)
    space: str | SearchSpace | None = None
    ofa_predictor: Path | None = None  # OFA's acc_predictor.pth, for accuracy ofa-predictor
    data: Path | None = None  # ImageNet-layout folder for a supernet that records no data
    # What to do about a stored study made for another search (default: the command's flags)
    clash_fix: str | None = None


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
    fail first, before any accuracy evaluation. ``options.out`` is locked meanwhile (workers
    sharing a study each have their own)."""
    from once_for_all.files import output_folder
    from once_for_all.folder_lock import folder_lock

    created = not options.out.exists()
    output_folder(options.out)
    try:
        with folder_lock(options.out):
            return _search(options, quiet=quiet, say=say)
    except BaseException:
        if created and not any(options.out.iterdir()):
            options.out.rmdir()  # a search refused before any work leaves no folder
        raise


def _search(options: SearchOptions, *, quiet: bool, say: Say) -> SearchResult:
    import optuna
    from optuna.trial import TrialState

    from edgenas.search.guided import budget_levels
    from edgenas.search.pareto import (
        check_budgets,
        choose,
        pareto_document,
        pareto_front,
        pareto_plot,
        write_pareto,
    )
    from edgenas.search.problem import DeviceTarget, SearchProblem
    from edgenas.search.study_runner import CLASH_FIX, SearchRun, check_study, open_storage
    from edgenas.subnet_choice import choose_subnet
    from latency.predictors import load_predictor
    from once_for_all import load_supernet
    from once_for_all.accuracy_dataset import (
        AccuracyCache,
        evaluation_method,
        supernet_fingerprint,
    )
    from once_for_all.checkpoint import FolderReads, load_training_data, require_complete
    from once_for_all.files import output_folder
    from once_for_all.ofa_accuracy_predictor import load_ofa_accuracy_predictor

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
    if twice := sorted({n for n in o.objectives if o.objectives.count(n) > 1}):
        # It searched on two copies of the one objective (walk-through).
        raise StudyError(f"--objective {twice[0]} is given more than once: give it once")
    ofa = None
    if o.accuracy == "ofa-predictor":
        # OFA's published predictor scores subnet choices: no supernet weights are needed.
        space = _space(o)
        if o.ofa_predictor is None:
            raise StudyError(
                "--accuracy ofa-predictor needs --ofa-predictor PATH, OFA's acc_predictor.pth "
                "(OFA's tutorial downloads it from https://raw.githubusercontent.com/han-cai/"
                "files/master/ofa/acc_predictor.pth)"
            )
        ofa = load_ofa_accuracy_predictor(o.ofa_predictor, space)
    else:
        if o.ofa_predictor is not None or o.space is not None:
            raise StudyError(
                f"--{'ofa-predictor' if o.ofa_predictor is not None else 'space'} is for "
                f"--accuracy ofa-predictor; --accuracy {o.accuracy} searches the --supernet's space"
            )
        if o.supernet is None:
            raise StudyError(
                f"--accuracy {o.accuracy} evaluates subnets of a trained supernet: give "
                "--supernet (or use --accuracy ofa-predictor with --space)"
            )
        net, _, payload = load_supernet(o.supernet)
        require_complete(payload, o.supernet)  # as eval and export: most subnets untrained
        space = net.space
        # Data replaced since training fails here; an imported supernet's --data reads only
        # the validation images evaluated (held out of train/) and BN's.
        reads = FolderReads(train=0, val=o.eval_images or FolderReads.val, test=0)
        data = load_training_data(o.supernet, payload, folder=o.data, reads=reads)
        held = len(data.val.labels)
        if o.eval_images is not None and o.eval_images > held:  # it was capped silently
            say(
                f"{o.eval_images} evaluation images asked, but the validation split holds "
                f"{held}: each subnet is evaluated on all {held}"
            )
    targets: list[DeviceTarget] = []
    predictor_files: dict[str, str] = {}
    for i, name in enumerate(o.devices):
        path = resolve_predictor(name, o.profiles)
        predictor = load_predictor(path)
        measured_on = predictor.header.device
        by_name = path not in (Path(name), Path(name) / PREDICTOR_NAME)
        if by_name and measured_on != name:
            # looked up by the device's name: a copied or misplaced folder is another device's
            raise StudyError(
                f"--device {name}: {path} is the predictor of device {measured_on!r}, not "
                f"{name!r} (a folder copied or moved there): profile {name} into a folder of "
                f"its own (edgenas profile {name} --space SPACE --out DIR) and give --device DIR"
            )
        predictor_files[measured_on] = _content_id(path.read_bytes())
        budgets = _levels(o.budgets_ms[i]) if o.budgets_ms else ()
        if any(t.name == measured_on for t in targets):
            raise StudyError(
                f"--device {name}: {measured_on} is given twice; give each device once (several "
                "budgets on one device: --budget-ms 1,2)"
            )
        targets.append(
            DeviceTarget(
                measured_on,
                predictor,
                budgets[-1] if budgets else None,
                budgets[:-1],
            )
        )
    # Latency side first: a wrong predictor or an unreachable budget fails in seconds,
    # before any accuracy evaluation.
    extra = cast(tuple[ExtraObjective, ...], o.objectives)  # checked above
    problem = SearchProblem(
        space,
        _unset_accuracy,
        tuple(targets),
        extra,
        accuracy_resolutions=ofa.resolutions if ofa is not None else None,
        accuracy_name=(
            f"OFA's accuracy predictor {o.ofa_predictor}"
            if ofa is not None
            else f"the accuracy of supernet {o.supernet} ({o.accuracy})"
        ),
        sources=(
            {"predictors": predictor_files, "accuracy": f"ofa-predictor {ofa.sha256[:16]}"}
            if ofa is not None
            else {
                "supernet": supernet_fingerprint(net),
                "predictors": predictor_files,
                "accuracy": o.accuracy,
                # what the accuracies are fitted or measured on: a rerun with other settings
                # continued the study under another predictor, and its front mixed the two
                "accuracy_settings": {
                    "eval_images": o.eval_images,
                    **({"samples": o.accuracy_samples} if o.accuracy == "predictor" else {}),
                    # which images they are: another method's accuracies are not these
                    "eval_method": evaluation_method(data),
                },
            }
        ),
    )
    shared = problem.resolutions  # resolutions that no device or accuracy source share fail first
    # max and min at the resolutions searched (OFA's Note10 tables: 160-224 px of 128-224)
    enqueued = [choose_subnet(str(p), space, resolutions=shared) for p in o.enqueue]
    for path, subnet in zip(o.enqueue, enqueued, strict=True):
        if subnet.r not in shared:  # it failed in Optuna, after the accuracy samples
            raise StudyError(
                f"--enqueue {path}: resolution {subnet.r} is not searched here (the devices' "
                f"predictors and the accuracy source share {', '.join(map(str, shared))}): give "
                "a subnet at one of those"
            )
    check_budgets(problem)
    if o.sampler == "guided":
        budget_levels(problem, sampler=o.sampler)  # it searches under budgets: say so first
    output_folder(o.out)
    # An unreachable or wrong storage fails here too, before any accuracy evaluation.
    store = open_storage(o.storage or f"journal:{o.out / 'study.log'}")
    # A study made for another search fails first; a new --out only helps a study kept there.
    elsewhere = "another --storage" if o.storage else "a new --out"
    check_study(store, o.study_name, problem, fix=o.clash_fix or f"{CLASH_FIX}, or {elsewhere}")
    evaluate: Evaluate | None = None
    accuracy: AccuracyFn
    if ofa is not None:
        accuracy = ofa.predict_many
        described = f"{OFA_FIGURE} ({ofa.description}); predicted, not measured"
    else:
        cache = AccuracyCache.open(
            o.out / ACCURACY_CACHE_NAME,
            net,
            limit=o.eval_images,
            data=data,
            # it was "choose another cache path", which search has no option for
            fix="search with the settings it was made with (limit: --eval-images), or into "
            "another --out",
        )
        evaluate = _evaluator(net, data, cache, quiet=quiet)
        if o.accuracy == "predictor":
            accuracy = _accuracy_predictor(space, evaluate, o.accuracy_samples, o.out, say)
        else:
            accuracy = _direct(evaluate)
        described = (
            f"{o.accuracy}; front re-evaluated with inherited weights ({cache.header.split} split)"
        )
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
    run.pull()
    if (held := len(run.completed())) >= o.trials:
        # It printed "optimise 8500/100 (8500%)" and went on without a word (walk-through).
        say(
            f"the study already holds {held} completed trials (--trials {o.trials}): none "
            f"is run, and the front is of all {held}; give more --trials to continue it"
        )
    else:
        with stage_progress("search trials", quiet=quiet) as progress:
            run.run(o.trials, progress=progress)
    # One read of the study: other workers go on storing trials, and the front, the count of
    # trials it is of and the plot's grey points were three snapshots (review).
    stored = run.persistent.get_trials(deepcopy=False)
    front = pareto_front(problem, stored, measure=evaluate, reevaluate=o.reevaluate)
    complete = sum(t.state == TrialState.COMPLETE for t in stored)
    chosen = choose(problem, front, trials=complete)
    document = pareto_document(
        problem, run.persistent.study_name, stored, front, chosen, accuracy_source=described
    )
    pareto = o.out / "pareto.json"
    write_pareto(pareto, document)
    plot = pareto_plot(document, stored, o.out / "pareto.png")
    return SearchResult(document, pareto, plot)


def _space(o: SearchOptions) -> SearchSpace:
    """The space to search with a predictor that needs no supernet: ``--space``, or the one
    the ``--supernet`` checkpoint records (both: they must agree)."""
    from once_for_all import SearchSpace, get_space
    from once_for_all.checkpoint import load_checkpoint

    named = o.space if isinstance(o.space, SearchSpace) else None
    if isinstance(o.space, str):
        try:
            named = get_space(o.space)
        except ValueError as exc:
            raise StudyError(f"--space: {exc}") from None
    if o.supernet is None:
        if named is None:
            raise StudyError(
                "--accuracy ofa-predictor needs the space to search: give --space "
                "(e.g. ofa-mbv3-w1.2) or --supernet"
            )
        return named
    stored = SearchSpace.from_dict(load_checkpoint(o.supernet)["space"])
    if named is not None and named.id != stored.id:
        given = o.space if isinstance(o.space, str) else named.name
        raise StudyError(
            f"--space {given} is {named.id}, the supernet {o.supernet} is {stored.id}: "
            "give one of them"
        )
    return stored


def resolve_predictor(device: str, profiles: Path) -> Path:
    """``device`` is a predictor.json, a folder holding one, or a name under ``profiles``."""
    # dict: a path given as a folder is not looked up twice (nor named twice below)
    candidates = dict.fromkeys(
        (Path(device), Path(device) / PREDICTOR_NAME, profiles / device / PREDICTOR_NAME)
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    *others, last = map(str, candidates)
    raise TableError(
        f"no latency predictor for device {device!r} (looked for {', '.join(others)} and "
        f"{last}); run 'edgenas profile {device} --space SPACE --out {profiles / device}' first"
    )


Evaluate = Callable[[Sequence["Subnet"]], list[float]]


def _content_id(content: bytes) -> str:
    """First 16 hex digits of a SHA-256, as ``supernet_fingerprint`` gives for weights."""
    return hashlib.sha256(content).hexdigest()[:16]


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
    # On too few samples it can rank worse than predicting their mean, silently (walk-through).
    worse = v["rmse"] > v["constant"]["rmse"]
    say(
        f"accuracy predictor: {v['n_train']} train / {v['n_holdout']} held-out subnets, "
        f"RMSE {v['rmse']:.4f} (constant {v['constant']['rmse']:.4f}), Kendall τ {v['kendall']:.3f}"
        + (
            "; worse than predicting their mean: give it more subnets (--accuracy-samples, a "
            "recipe's search.accuracy_samples)"
            if worse
            else ""
        )
    )
    return predictor.predict_many


def _direct(evaluate: Evaluate) -> Callable[[Sequence[Subnet]], np.ndarray]:
    import numpy as np

    return lambda subnets: np.asarray(evaluate(subnets), dtype=np.float64)


def _levels(budget: float | tuple[float, ...]) -> tuple[float, ...]:
    """A device's budgets, ascending and distinct."""
    levels = tuple(sorted(set(budget if isinstance(budget, tuple) else (budget,))))
    if not levels:
        raise StudyError("a device's budget list is empty: give at least one budget in ms")
    return levels
