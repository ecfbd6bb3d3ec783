"""OFA's own evolution against edgenas's search, on the same two published predictors.

    python -m benchmarks.ofa_search [--ofa-files ../shared/ofa] [--trials 5000]

Both search OFA's MobileNetV3 w1.2 space (ofa-mbv3-w1.2) with OFA's published ImageNet
accuracy predictor and its Samsung Note10 latency tables (the setting of OFA's tutorial):

- OFA: ``ofa.tutorial.EvolutionFinder`` with its defaults (population 100, 500 generations,
  so 50,100 accuracy evaluations), one run per budget (15, 18, 23 and 32 ms);
- edgenas: one multi-objective search (NSGA-II, the default sampler) of ``--trials``
  subnets (one accuracy and one latency evaluation each) under the largest budget; the best
  subnet under each budget is read off its trials.

Evaluations are counted as OFA counts them: calls of the accuracy predictor, per subnet.
OFA also asks the latency predictor freely (it rejects over-budget samples before scoring
them: about 70,000-160,000 latency calls per run); both counts are in the JSON, under
``counting`` the rule.

Prints per budget the best predicted top-1 each reaches, its evaluations and seconds, as one
JSON object on stdout (progress on stderr). Target: with <= 5,000 evaluations, edgenas
reaches at every budget a predicted top-1 >= OFA's, in less wall time than OFA's four runs.
Each side's best subnet is re-scored by the other side's predictors (they agree to 1e-6: the
parity tests check it), so the comparison is of search, not of predictors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import optuna

from benchmarks.command_line import (
    ArgumentParser,
    Refused,
    at_least,
    blamed,
    number_list,
    run_main,
)
from devices.profiles import load_profile
from edgenas.search.problem import DeviceTarget, SearchProblem
from edgenas.search.sampler_names import SAMPLERS
from edgenas.search.space_params import subnet_from_params
from edgenas.search.study_runner import SearchRun
from latency.predictors import LatencyPredictor, load_predictor
from latency.published import import_published
from once_for_all import get_space
from once_for_all.ofa_accuracy_predictor import load_ofa_accuracy_predictor
from tests.support.ofa_reference import as_subnet, import_ofa, ofa_latency_table

SPACE = "ofa-mbv3-w1.2"
BUDGETS_MS = (15.0, 18.0, 23.0, 32.0)
TARGET_EVALUATIONS = 5000
# The Note10 budgets OFA's EvolutionFinder takes; outside them it asks on stdin for another.
OFA_BUDGET_RANGE_MS = (15.0, 60.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_ofa_files() -> Path:
    here = Path(__file__).resolve().parents[1]
    for folder in (
        Path(os.environ.get("EDGENAS_OFA_FILES", "")),
        here.parent / "shared" / "ofa",
        Path("/work/shared/ofa"),
    ):
        if (folder / "acc_predictor.pth").is_file():
            return folder
    return here.parent / "shared" / "ofa"


class _Counted:
    """Counts the subnets a predictor is asked about: OFA's (predict_accuracy,
    predict_efficiency) or edgenas's latency predictor (predict_many); anything else is the
    wrapped predictor's."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.accuracy_calls, self.latency_calls = inner, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_accuracy(self, population: list[dict[str, Any]]) -> Any:
        self.accuracy_calls += len(population)
        return self.inner.predict_accuracy(population)

    def predict_efficiency(self, spec: dict[str, Any]) -> float:
        self.latency_calls += 1
        return float(self.inner.predict_efficiency(spec))

    def predict_many(self, subnets: Any) -> Any:
        self.latency_calls += len(subnets)
        return self.inner.predict_many(subnets)


def run_ofa(files: Path, budgets: tuple[float, ...], seed: int) -> list[dict[str, Any]]:
    import torch

    import_ofa()
    from ofa.tutorial import AccuracyPredictor, EvolutionFinder

    accuracy = AccuracyPredictor(pretrained=False, device="cpu")
    accuracy.model.load_state_dict(
        torch.load(files / "acc_predictor.pth", map_location="cpu", weights_only=True)
    )
    table = ofa_latency_table(files / "note10")
    results = []
    for budget in budgets:
        acc, lat = _Counted(accuracy), _Counted(table)
        # OFA's evolution draws from the random module and numpy's global generator
        random.seed(seed)
        np.random.seed(seed)
        finder = EvolutionFinder(
            constraint_type="note10",
            efficiency_constraint=budget,
            efficiency_predictor=lat,
            accuracy_predictor=acc,
        )
        log(f"OFA evolution, {budget:g} ms: population 100, 500 generations ...")
        started = time.perf_counter()
        with torch.no_grad():
            _, (best_acc, best, best_ms) = finder.run_evolution_search()
        seconds = time.perf_counter() - started
        log(f"  top-1 {best_acc:.4f} at {best_ms:.2f} ms in {seconds:.1f} s")
        results.append(
            {
                "budget_ms": budget,
                "top1": float(best_acc),
                "latency_ms": float(best_ms),
                "subnet": best,
                "accuracy_evaluations": acc.accuracy_calls,
                "latency_evaluations": lat.latency_calls,
                "seconds": round(seconds, 2),
            }
        )
    return results


def run_edgenas(
    files: Path, budgets: tuple[float, ...], trials: int, sampler: str, seed: int, tmp: Path
) -> dict[str, Any]:
    space = get_space(SPACE)
    with blamed("--ofa-files"):  # latency.published names its own --tables in its messages
        import_published(load_profile("samsung-note10"), space, files / "note10", tmp / "note10")
        latency = load_predictor(tmp / "note10" / "predictor.json")
        accuracy = load_ofa_accuracy_predictor(files / "acc_predictor.pth", space)
    counted = _Counted(latency)
    problem = SearchProblem(
        space,
        accuracy.predict_many,
        # Every budget is the device's: the trials are held to the largest.
        (
            DeviceTarget(
                "samsung-note10",
                cast(LatencyPredictor, counted),
                max(budgets),
                tuple(sorted(budgets)[:-1]),
            ),
        ),
        accuracy_resolutions=accuracy.resolutions,
        accuracy_name="OFA's accuracy predictor",
    )
    log(f"edgenas search: {trials} trials, {sampler} ...")
    started = time.perf_counter()
    run = SearchRun(
        problem,
        storage=f"journal:{tmp / 'study.log'}",
        study_name="ofa",
        sampler=sampler,
        seed=seed,
    )
    run.run(trials)
    seconds = time.perf_counter() - started
    trials_done = run.completed()
    per_budget = []
    for budget in budgets:
        feasible = [t for t in trials_done if t.values[1] <= budget]
        best = max(feasible, key=lambda t: t.values[0]) if feasible else None
        per_budget.append(
            {
                "budget_ms": budget,
                "top1": best.values[0] if best else None,
                "latency_ms": best.values[1] if best else None,
                "subnet": subnet_from_params(space, best.params).key if best else None,
            }
        )
    log(f"  {len(trials_done)} trials in {seconds:.1f} s")
    return {
        "sampler": sampler,
        # Every trial is one accuracy evaluation; the latency predictor is counted as asked
        # (once per trial, plus the budget check before the search).
        "accuracy_evaluations": len(trials_done),
        "latency_evaluations": counted.latency_calls,
        "seconds": round(seconds, 2),
        "budgets": per_budget,
        "rescore": (accuracy, latency),
    }


def check_ofa_files(files: Path) -> None:
    """Refuse a --ofa-files folder without OFA's published predictor and Note10 tables, in
    this script's terms (latency.published's errors name ``edgenas profile --tables``)."""
    fix = (
        "give the folder holding OFA's acc_predictor.pth and note10/ tables "
        "(--ofa-files DIR, or $EDGENAS_OFA_FILES)"
    )
    if not files.is_dir():
        raise Refused(f"--ofa-files {files}: no such folder; {fix}")
    if not (files / "acc_predictor.pth").is_file():
        raise Refused(f"--ofa-files {files}: no file acc_predictor.pth in it; {fix}")
    if not (files / "note10").is_dir():
        raise Refused(f"--ofa-files {files}: no folder note10 in it; {fix}")


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m benchmarks.ofa_search", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--ofa-files",
        type=Path,
        default=default_ofa_files(),
        help="OFA's acc_predictor.pth and note10/ tables (default: $EDGENAS_OFA_FILES, "
        "../shared/ofa or /work/shared/ofa)",
    )
    p.add_argument(
        "--trials",
        type=at_least(1),
        default=TARGET_EVALUATIONS,
        help=f"edgenas's search: subnets evaluated (default {TARGET_EVALUATIONS})",
    )
    p.add_argument(
        "--sampler", choices=SAMPLERS, default="nsga2", help="edgenas's sampler (default nsga2)"
    )
    p.add_argument("--seed", type=int, default=0, help="both searches' seed (default 0)")
    p.add_argument(
        "--budgets",
        type=number_list(),
        default=BUDGETS_MS,
        help="latency budgets in ms, comma-separated (default "
        f"{','.join(f'{b:g}' for b in BUDGETS_MS)}; OFA's evolution takes "
        f"{OFA_BUDGET_RANGE_MS[0]:g}-{OFA_BUDGET_RANGE_MS[1]:g})",
    )
    p.add_argument("--skip-ofa", action="store_true", help="edgenas's side only")
    args = p.parse_args(argv)
    budgets: tuple[float, ...] = args.budgets
    check_ofa_files(args.ofa_files)
    if not args.skip_ofa:
        low, high = OFA_BUDGET_RANGE_MS
        outside = [b for b in budgets if not low <= b <= high]
        if outside:
            raise Refused(
                f"--budgets {outside[0]:g}: OFA's evolution takes {low:g} to {high:g} ms (it "
                "asks on stdin for another); give budgets in that range, or --skip-ofa"
            )
        if importlib.util.find_spec("ofa") is None:
            raise Refused(
                "OFA's reference package (ofa) is not installed: 'make setup' installs it; or "
                "give --skip-ofa"
            )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="edgenas-bench-ofa-") as tmp:
        ours = run_edgenas(args.ofa_files, budgets, args.trials, args.sampler, args.seed, Path(tmp))
    accuracy, latency = ours.pop("rescore")
    theirs = [] if args.skip_ofa else run_ofa(args.ofa_files, budgets, args.seed)
    space = get_space(SPACE)
    for row in theirs:  # OFA's pick, scored by edgenas's predictors: the same figures
        subnet = space.validate(as_subnet(row.pop("subnet"), space.id))
        row["rescored_by_edgenas"] = {
            "top1": float(accuracy.predict_many([subnet])[0]),
            "latency_ms": float(latency.predict_many([subnet])[0]),
        }
    out: dict[str, Any] = {
        "benchmark": "ofa_search",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "space": SPACE,
        "predictors": "OFA's published acc_predictor.pth and Note10 tables",
        "counting": "evaluations are accuracy-predictor calls, one per subnet scored, on both "
        "sides; latency-predictor calls are listed apart and not limited",
        "edgenas": ours,
        "ofa_evolution": theirs,
    }
    if theirs:
        ofa_seconds = sum(r["seconds"] for r in theirs)
        out["ofa_evolution_total_seconds"] = round(ofa_seconds, 2)
        out["targets_met"] = {
            "evaluations": ours["accuracy_evaluations"] <= TARGET_EVALUATIONS,
            "top1_at_every_budget": all(
                mine["top1"] is not None and mine["top1"] >= row["top1"]
                for mine, row in zip(ours["budgets"], theirs, strict=True)
            ),
            "faster_than_ofas_four_runs": ours["seconds"] < ofa_seconds,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
