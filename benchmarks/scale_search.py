"""Search scale-out benchmark: trials/s of 1 vs 2 search workers sharing one study.

    python -m benchmarks.scale_search --accuracy-predictor runs/search/accuracy_predictor.pt \\
        --latency-predictor runs/profiles/local-cpu/predictor.json [--storage journal,postgresql]

Each worker is its own process (a fresh interpreter, as on another machine) running the
search as ``edgenas search`` does with a predictor (``SearchRun``, NSGA-II, 100 trials per
sync, batches of 25) on the same accuracy and latency predictors and one latency budget (the
median latency of random subnets). The clock starts once every worker has loaded its
predictors and opened the storage, and stops when the last worker returns, i.e. when the
study holds the asked number of trials. Storages: a journal file in a temporary folder, and
PostgreSQL (``--postgres-url``, or else a throwaway local cluster of Debian's ``postgresql``
with fsync off, see tests/edgenas/search/postgres.py).

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np
import optuna

from edgenas.search.problem import DeviceTarget, SearchProblem
from edgenas.search.study_runner import SearchRun, open_storage
from latency.predictors import load_predictor
from once_for_all.accuracy_predictor import load_accuracy_predictor

STORAGE_KINDS = ("journal", "postgresql")
# Optuna's RDB storage writes a trial in tens of queries: PostgreSQL gets fewer trials.
DEFAULT_TRIALS = {"journal": 2000, "postgresql": 200}
ACCURACY_PREDICTOR = Path("runs/search/accuracy_predictor.pt")
LATENCY_PREDICTOR = Path("runs/profiles/local-cpu/predictor.json")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def search_problem(accuracy_predictor: Path, latency_predictor: Path) -> SearchProblem:
    """The problem of benchmarks/search.py: accuracy up, latency down under one budget."""
    acc = load_accuracy_predictor(accuracy_predictor)
    lat = load_predictor(latency_predictor)
    rng = random.Random(0)
    sample = [acc.space.sample(rng, r=lat.header.resolutions) for _ in range(2000)]
    budget = float(np.median(lat.predict_many(sample)))
    return SearchProblem(
        acc.space, acc.predict_many, (DeviceTarget(lat.header.device, lat, budget),)
    )


def _worker(
    paths: tuple[Path, Path],
    storage: str,
    study: str,
    trials: int,
    seed: int,
    start: Barrier,
    results: Queue[dict[str, Any]],
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = SearchRun(
        search_problem(*paths), storage=storage, study_name=study, seed=seed, sync_every=100
    )
    start.wait()
    started = time.perf_counter()
    run.run(trials)
    results.put(
        {"worker": run.worker, "stored": run.stored, "seconds": time.perf_counter() - started}
    )


@contextlib.contextmanager
def _storage_url(kind: str, url: str | None) -> Iterator[str]:
    if kind == "journal":
        with tempfile.TemporaryDirectory(prefix="edgenas-bench-scale-") as tmp:
            yield f"journal:{Path(tmp) / 'study.log'}"
    elif kind == "postgresql":
        if url:
            yield url
            return
        from tests.edgenas.search.postgres import throwaway_postgres

        with throwaway_postgres() as server:
            yield server.create_database("scale")
    else:
        raise ValueError(f"storage kind {kind!r}: use {', '.join(STORAGE_KINDS)}")


def search_throughput(
    workers: int,
    storage_kind: str,
    *,
    trials: int | None = None,
    accuracy_predictor: Path = ACCURACY_PREDICTOR,
    latency_predictor: Path = LATENCY_PREDICTOR,
    url: str | None = None,
) -> dict[str, Any]:
    """``workers`` processes fill one new study on ``storage_kind`` ("journal" or
    "postgresql"; ``url`` names an existing PostgreSQL server, else a throwaway one is
    started) until it holds ``trials`` completed trials; returns trials/s and details."""
    trials = trials or DEFAULT_TRIALS[storage_kind]
    ctx = multiprocessing.get_context("spawn")
    with _storage_url(storage_kind, url) as storage:
        study = f"scale-{workers}-{uuid.uuid4().hex[:8]}"
        start = ctx.Barrier(workers + 1)
        results: Queue[dict[str, Any]] = ctx.Queue()  # type: ignore[assignment]
        paths = (accuracy_predictor, latency_predictor)
        procs = [
            ctx.Process(target=_worker, args=(paths, storage, study, trials, i, start, results))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        start.wait(timeout=600)
        started = time.perf_counter()
        reports = [results.get(timeout=3600) for _ in procs]
        wall = time.perf_counter() - started
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"a search worker exited with {p.exitcode}")
        done = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        )
    return {
        "workers": workers,
        "storage": storage_kind,
        "trials_asked": trials,
        "trials_stored": len(done),
        "seconds": round(wall, 2),
        "trials_per_second": round(len(done) / wall, 1),
        "per_worker": sorted(
            ({"stored": r["stored"], "seconds": round(r["seconds"], 2)} for r in reports),
            key=lambda r: -r["stored"],
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_search", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--accuracy-predictor", type=Path, default=ACCURACY_PREDICTOR)
    p.add_argument("--latency-predictor", type=Path, default=LATENCY_PREDICTOR)
    p.add_argument("--storage", default=",".join(STORAGE_KINDS), help="journal,postgresql")
    p.add_argument("--postgres-url", help="an existing server (default: a throwaway cluster)")
    p.add_argument("--trials", type=int, help="per measurement (default: 2000 journal, 200 pg)")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storages: dict[str, Any] = {}
    for kind in args.storage.split(","):
        runs = []
        for workers in (1, 2):
            log(f"{kind}: {workers} worker(s) ...")
            r = search_throughput(
                workers,
                kind,
                trials=args.trials,
                accuracy_predictor=args.accuracy_predictor,
                latency_predictor=args.latency_predictor,
                url=args.postgres_url,
            )
            log(f"  {r['trials_stored']} trials in {r['seconds']} s: {r['trials_per_second']}/s")
            runs.append(r)
        storages[kind] = {
            "runs": runs,
            "speedup_2_vs_1": round(runs[1]["trials_per_second"] / runs[0]["trials_per_second"], 2),
        }
    out = {
        "benchmark": "scale_search",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "sampler": "nsga2",
        "sync_every": 100,
        "postgresql": "given server" if args.postgres_url else "throwaway local cluster, fsync off",
        "storages": storages,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
