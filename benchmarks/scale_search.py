"""Search scale-out benchmark: trials/s of 1 vs 2 search workers sharing one study.

    python -m benchmarks.scale_search --accuracy-predictor runs/search/accuracy_predictor.pt \\
        --latency-predictor runs/profiles/local-cpu/predictor.json [--storage journal,postgresql]

Each worker is its own process (a fresh interpreter, as on another machine) running the
search as ``edgenas search`` does with a predictor (``SearchRun``, NSGA-II, 100 trials per
sync, batches of 25) on the same accuracy and latency predictors and one latency budget (the
median latency of random subnets). The clock starts once every worker has loaded its
predictors and opened the storage, and stops when the last worker returns. A worker returns
when, at one of its syncs, the study holds the asked number of trials (``SearchRun.run``):
workers that sync at the same moment each finish the batch they started, so with 2 workers
the study can hold up to one sync (100 trials, or all of a smaller ``--trials``) more than
asked. ``trials_stored`` is what it holds, and trials/s counts those. Storages: a journal
file in a temporary folder, and PostgreSQL (``--postgres-url``, or else a throwaway local
cluster of Debian's ``postgresql`` with fsync off, see tests/edgenas/search/postgres.py).

The predictors are loaded once before any worker starts: a missing or unreadable one is
refused in one line naming its option. A worker that stops (an error, a crash) ends the
benchmark at once, in one line with its exit code.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import queue
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import optuna

from benchmarks.command_line import (
    ArgumentParser,
    Refused,
    at_least,
    names_from,
    run_main,
)
from benchmarks.search import search_problem
from edgenas.search.study_runner import SearchRun, open_storage
from once_for_all.errors import EdgenasError, one_line
from once_for_all.stop_signals import held_stop_signals

STORAGE_KINDS = ("journal", "postgresql")
# Optuna's RDB storage writes a trial in tens of queries: PostgreSQL gets fewer trials.
DEFAULT_TRIALS = {"journal": 2000, "postgresql": 200}
ACCURACY_PREDICTOR = Path("runs/search/accuracy_predictor.pt")
LATENCY_PREDICTOR = Path("runs/profiles/local-cpu/predictor.json")
START_TIMEOUT_S = 600.0  # loading the predictors and opening the storage
RESULT_TIMEOUT_S = 3600.0
POLL_S = 0.5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_inputs(
    storages: Sequence[str], accuracy_predictor: Path, latency_predictor: Path, url: str | None
) -> None:
    """Refuse, before any worker starts, what a worker would fail on: a predictor that is
    missing or does not load (``search_problem``), or PostgreSQL without a server."""
    search_problem(accuracy_predictor, latency_predictor)
    if "postgresql" in storages and not url:
        from tests.edgenas.search.postgres import PostgresMissing, postgres_bin

        try:
            postgres_bin()
        except PostgresMissing as exc:
            raise Refused(
                f"--storage postgresql: {exc}; or give --postgres-url, or --storage journal"
            ) from None


def _worker(
    paths: tuple[Path, Path],
    storage: str,
    study: str,
    trials: int,
    seed: int,
    go: Event,
    messages: queue.Queue[dict[str, Any]],
) -> None:
    """One search worker: says "ready" once its predictors are loaded and the storage is
    open, waits for ``go``, searches, says "result". A user's error is sent as one line and
    ends the process with exit code 2; any other exception keeps its traceback."""
    # Ctrl-C reaches the whole process group: the parent says it once and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        search = SearchRun(
            search_problem(*paths)[0], storage=storage, study_name=study, seed=seed, sync_every=100
        )
        messages.put({"kind": "ready", "seed": seed})
        if not go.wait(timeout=START_TIMEOUT_S):  # the parent is gone
            sys.exit(3)
        started = time.perf_counter()
        search.run(trials)
    except EdgenasError as exc:
        messages.put({"kind": "error", "seed": seed, "message": one_line(exc, limit=2000)})
        sys.exit(2)
    messages.put(
        {
            "kind": "result",
            "seed": seed,
            "worker": search.worker,
            "stored": search.stored,
            "seconds": time.perf_counter() - started,
        }
    )


class WorkerStopped(EdgenasError):
    """A search worker ended without its result: one line, with its exit code (a crash's
    traceback is the worker's own, above it)."""


def collect(
    procs: Sequence[BaseProcess],
    messages: queue.Queue[dict[str, Any]],
    kind: str,
    *,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """One message of ``kind`` from every worker (worker i sends ``seed`` i). Ends at once
    with ``WorkerStopped`` when a worker sends an error or exits without sending one: the
    parent used to wait out a 600 s barrier instead."""
    got: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            message = messages.get(timeout=POLL_S)
        except queue.Empty:
            # A worker's messages reach the queue before it exits: read any left first.
            gone = [i for i, p in enumerate(procs) if i not in got and p.exitcode is not None]
            if gone and messages.empty():
                i = gone[0]
                raise WorkerStopped(
                    f"search worker {i} exited with code {procs[i].exitcode} before its "
                    f"{kind} (see its output above)"
                ) from None
            if time.monotonic() > deadline:
                raise WorkerStopped(
                    f"search workers {sorted(set(range(len(procs))) - set(got))} sent no "
                    f"{kind} within {timeout_s:.0f} s"
                ) from None
            continue
        if message["kind"] == "error":
            raise WorkerStopped(f"search worker {message['seed']}: {message['message']}")
        if message["kind"] == kind:
            got[message["seed"]] = message
    return [got[i] for i in range(len(procs))]


def start_workers(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]]
) -> tuple[list[BaseProcess], queue.Queue[dict[str, Any]], Event]:
    """One spawned process per ``args`` entry, running ``target(*args[i], go, messages)``:
    a fresh interpreter each, as on another machine. Daemons: they end with this process."""
    ctx = multiprocessing.get_context("spawn")
    messages: queue.Queue[dict[str, Any]] = ctx.Queue()  # type: ignore[assignment]
    go = ctx.Event()
    procs: list[BaseProcess] = [
        ctx.Process(target=target, args=(*a, go, messages), daemon=True) for a in args
    ]
    try:
        # Interrupted inside start(), a child would read half its start-up data and print a
        # traceback ("Ran out of input"): the interrupt waits for the starts (milliseconds).
        with held_stop_signals():
            for p in procs:
                p.start()
    except BaseException:
        stop_workers([p for p in procs if p.pid is not None])
        raise
    return procs, messages, go


def stop_workers(procs: Sequence[BaseProcess]) -> None:
    """End the workers still running (after an error or an interruption) and reap them."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()


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
    started) until it holds at least ``trials`` completed trials; returns trials/s and
    details. Check the inputs first (``check_inputs``): a worker that fails raises
    ``WorkerStopped``."""
    trials = trials or DEFAULT_TRIALS[storage_kind]
    with _storage_url(storage_kind, url) as storage:
        study = f"scale-{workers}-{uuid.uuid4().hex[:8]}"
        paths = (accuracy_predictor, latency_predictor)
        procs, messages, go = start_workers(
            _worker, [(paths, storage, study, trials, i) for i in range(workers)]
        )
        try:
            collect(procs, messages, "ready", timeout_s=START_TIMEOUT_S)
            go.set()
            started = time.perf_counter()
            reports = collect(procs, messages, "result", timeout_s=RESULT_TIMEOUT_S)
            wall = time.perf_counter() - started
            for i, p in enumerate(procs):
                p.join()
                if p.exitcode != 0:
                    raise WorkerStopped(f"search worker {i} exited with code {p.exitcode}")
        finally:
            stop_workers(procs)
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


def add_predictor_options(parser: ArgumentParser) -> None:
    """--accuracy-predictor and --latency-predictor, as this script and benchmarks.scale
    take them."""
    parser.add_argument(
        "--accuracy-predictor",
        type=Path,
        default=ACCURACY_PREDICTOR,
        help=f"an accuracy_predictor.pt of 'edgenas search' (default {ACCURACY_PREDICTOR})",
    )
    parser.add_argument(
        "--latency-predictor",
        type=Path,
        default=LATENCY_PREDICTOR,
        help=f"a predictor.json of 'edgenas profile' (default {LATENCY_PREDICTOR})",
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(
        prog="python -m benchmarks.scale_search", description=__doc__.split("\n\n")[0]
    )
    add_predictor_options(p)
    p.add_argument(
        "--storage",
        type=names_from(STORAGE_KINDS),
        default=list(STORAGE_KINDS),
        help=f"comma-separated, of {','.join(STORAGE_KINDS)} (default both)",
    )
    p.add_argument("--postgres-url", help="an existing server (default: a throwaway cluster)")
    p.add_argument(
        "--trials",
        type=at_least(1),
        help="per measurement (default: 2000 journal, 200 postgresql)",
    )
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_inputs(args.storage, args.accuracy_predictor, args.latency_predictor, args.postgres_url)
    storages: dict[str, Any] = {}
    for kind in args.storage:
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
    run_main(main)
