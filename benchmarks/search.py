"""Search benchmark: hypervolume reached and wall time per sampler, same predictors.

    python -m benchmarks.search --accuracy-predictor runs/search/accuracy_predictor.pt \\
        --latency-predictor runs/profiles/local-cpu/predictor.json

For each sampler (NSGA-II, TPE, random, OFA's evolution) the same number of evaluations
(2,000) on the same accuracy predictor and latency predictor, with the default storage (a
journal file) and one latency budget (the median latency of random subnets, so that the
evolutionary baseline works as OFA's does: maximise accuracy under a budget). The
hypervolume of each feasible front is computed against one reference point shared by all
samplers (worst accuracy and the budget). Targets: the default sampler's hypervolume >= the
evolutionary baseline's and > random's; 2,000 evaluations in <= 15 s.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
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
    at_least,
    blamed,
    names_from,
    require_file,
    run_main,
)
from edgenas.search.problem import DeviceTarget, SearchProblem
from edgenas.search.sampler_names import SAMPLERS
from edgenas.search.study_runner import SearchRun
from latency.predictors import load_predictor
from once_for_all.accuracy_predictor import load_accuracy_predictor

TARGET_SECONDS = 15.0
# Where the predictors come from, for the line that refuses a missing one.
ACCURACY_FIX = (
    "give the accuracy_predictor.pt that 'edgenas search' leaves in its --out folder "
    "(runs/quickstart/search/ after 'make demo')"
)
LATENCY_FIX = (
    "give a device's predictor.json: 'edgenas profile local-cpu --out runs/profiles/local-cpu' "
    "writes one (runs/quickstart/devices/<device>/ after 'make demo')"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy up, latency down) points, bounded by ``ref``
    (worst accuracy, worst latency)."""
    acc_ref, lat_ref = ref
    pts = sorted((lat, acc) for acc, lat in points if acc > acc_ref and lat < lat_ref)
    area, best = 0.0, acc_ref
    for i, (lat, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else lat_ref
        area += (nxt - lat) * (best - acc_ref)
    return area


def search_problem(
    accuracy_predictor: Path, latency_predictor: Path
) -> tuple[SearchProblem, float]:
    """The benchmark's problem: accuracy up, latency down under one budget, the median
    latency of 2,000 random subnets; and the hypervolume's reference accuracy, the lowest
    predicted among them. A file that is missing or does not load is refused naming its
    option. benchmarks/scale_search.py searches the same problem."""
    require_file("--accuracy-predictor", accuracy_predictor, ACCURACY_FIX)
    require_file("--latency-predictor", latency_predictor, LATENCY_FIX)
    with blamed("--accuracy-predictor"):
        acc = load_accuracy_predictor(accuracy_predictor)
    with blamed("--latency-predictor"):
        lat = load_predictor(latency_predictor)
        rng = random.Random(0)
        sample = [acc.space.sample(rng, r=lat.header.resolutions) for _ in range(2000)]
        budget = float(np.median(lat.predict_many(sample)))
        problem = SearchProblem(
            acc.space, acc.predict_many, (DeviceTarget(lat.header.device, lat, budget),)
        )
    return problem, float(acc.predict_many(sample).min())


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m benchmarks.search", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--accuracy-predictor",
        type=Path,
        required=True,
        help="an accuracy_predictor.pt of 'edgenas search'",
    )
    p.add_argument(
        "--latency-predictor",
        type=Path,
        required=True,
        help="a predictor.json of 'edgenas profile'",
    )
    p.add_argument(
        "--trials", type=at_least(1), default=2000, help="per sampler and seed (default 2000)"
    )
    p.add_argument(
        "--samplers",
        type=names_from(SAMPLERS),
        default=list(SAMPLERS),
        help=f"comma-separated, of {','.join(SAMPLERS)} (default all)",
    )
    p.add_argument(
        "--seeds", type=at_least(1), default=1, help="repeats with seeds 0..N-1 (default 1)"
    )
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem, acc_ref = search_problem(args.accuracy_predictor, args.latency_predictor)
    space, target = problem.space, problem.devices[0]
    lat, budget = target.predictor, float(cast(float, target.budget_ms))
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="edgenas-bench-search-") as tmp:
        for seed in range(args.seeds):
            for name in args.samplers:
                log(f"{name} (seed {seed}): {args.trials} trials ...")
                started = time.perf_counter()
                run = SearchRun(
                    problem,
                    storage=f"journal:{Path(tmp) / f'{name}-{seed}.log'}",
                    study_name=name,
                    sampler=name,
                    seed=seed,
                )
                run.run(args.trials)
                wall = time.perf_counter() - started
                feasible = [
                    (t.values[0], t.values[1])
                    for t in run.completed()
                    if all(v <= 0 for v in t.constraints.values())
                ]
                hv = hypervolume(feasible, (acc_ref, budget))
                results.setdefault(name, []).append(
                    {
                        "seed": seed,
                        "seconds": round(wall, 2),
                        "hypervolume": hv,
                        "feasible": len(feasible),
                    }
                )
                log(f"  {wall:.1f} s, hypervolume {hv:.6g}, {len(feasible)} feasible")
    summary: dict[str, dict[str, Any]] = {
        name: {
            "hypervolume_mean": statistics.fmean(r["hypervolume"] for r in runs),
            "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
            "runs": runs,
        }
        for name, runs in results.items()
    }
    default = summary.get("nsga2")
    out: dict[str, Any] = {
        "benchmark": "search",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "trials": args.trials,
        "storage": "journal file (the default)",
        "space": space.id,
        "device": lat.header.device,
        "latency_predictor": lat.kind,
        "budget_ms": budget,
        "reference_point": {"accuracy": acc_ref, "latency_ms": budget},
        "samplers": summary,
    }
    if default and "evolution" in summary and "random" in summary:
        out["targets_met"] = {
            "hypervolume_vs_evolution": default["hypervolume_mean"]
            >= summary["evolution"]["hypervolume_mean"],
            "hypervolume_vs_random": default["hypervolume_mean"]
            > summary["random"]["hypervolume_mean"],
            "seconds": default["seconds_mean"] <= TARGET_SECONDS,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
