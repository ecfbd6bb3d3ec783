"""Scale-out benchmark: images/s of 1 vs 2 training processes (torchrun, gloo) and trials/s
of 1 vs 2 search workers sharing one study (journal file, PostgreSQL).

    python -m benchmarks.scale                                   # both parts (a few minutes)
    python -m benchmarks.scale --part training
    python -m benchmarks.scale --part search --storage journal \\
        --accuracy-predictor runs/search/accuracy_predictor.pt \\
        --latency-predictor runs/profiles/local-cpu/predictor.json

The parts live in ``benchmarks/scale_training.py`` and ``benchmarks/scale_search.py`` (each
also runs alone, with more options); this script runs both with their defaults and prints
one JSON object on stdout. Progress goes to stderr.

The search part needs an accuracy predictor (an ``accuracy_predictor.pt`` that ``edgenas
search`` leaves in its --out folder) and a latency predictor (a ``predictor.json`` of
``edgenas profile``); both are checked before either part starts, and ``--part training``
needs neither.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.command_line import ArgumentParser, at_least, names_from, run_main
from benchmarks.scale_search import (
    STORAGE_KINDS,
    add_predictor_options,
    check_inputs,
    search_throughput,
)
from benchmarks.scale_training import training_throughput


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_part(steps: int) -> dict[str, Any]:
    runs = []
    for processes in (1, 2):
        log(f"training: {processes} process(es) ...")
        runs.append(training_throughput(processes, steps=steps))
        log(f"  {runs[-1]['images_per_s']} images/s")
    return {
        "runs": runs,
        "speedup_2_vs_1": round(runs[1]["images_per_s"] / runs[0]["images_per_s"], 2),
    }


def search_part(args: argparse.Namespace) -> dict[str, Any]:
    storages: dict[str, Any] = {}
    for kind in args.storage:
        runs = []
        for workers in (1, 2):
            log(f"search on {kind}: {workers} worker(s) ...")
            runs.append(
                search_throughput(
                    workers,
                    kind,
                    accuracy_predictor=args.accuracy_predictor,
                    latency_predictor=args.latency_predictor,
                )
            )
            log(f"  {runs[-1]['trials_per_second']} trials/s")
        storages[kind] = {
            "runs": runs,
            "speedup_2_vs_1": round(runs[1]["trials_per_second"] / runs[0]["trials_per_second"], 2),
        }
    return storages


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("training", "search", "all"), default="all")
    p.add_argument("--steps", type=at_least(1), default=12, help="timed training steps per run")
    p.add_argument(
        "--storage",
        type=names_from(STORAGE_KINDS),
        default=list(STORAGE_KINDS),
        help=f"search part: comma-separated, of {','.join(STORAGE_KINDS)} (default both)",
    )
    add_predictor_options(p)
    args = p.parse_args(argv)
    # The search part's inputs, before the training part's minutes.
    if args.part in ("search", "all"):
        check_inputs(args.storage, args.accuracy_predictor, args.latency_predictor, None)
    out: dict[str, Any] = {
        "benchmark": "scale",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if args.part in ("training", "all"):
        try:
            out["training"] = training_part(args.steps)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # torchrun's own failure
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.part in ("search", "all"):
        out["search"] = search_part(args)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
