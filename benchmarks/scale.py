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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from benchmarks.scale_search import (
    ACCURACY_PREDICTOR,
    LATENCY_PREDICTOR,
    STORAGE_KINDS,
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
    for kind in args.storage.split(","):
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


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--part", choices=("training", "search", "all"), default="all")
    p.add_argument("--steps", type=int, default=12, help="timed training steps per run")
    p.add_argument("--storage", default=",".join(STORAGE_KINDS), help="journal,postgresql")
    p.add_argument("--accuracy-predictor", type=Path, default=ACCURACY_PREDICTOR)
    p.add_argument("--latency-predictor", type=Path, default=LATENCY_PREDICTOR)
    args = p.parse_args()
    out: dict[str, Any] = {
        "benchmark": "scale",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if args.part in ("training", "all"):
        out["training"] = training_part(args.steps)
    if args.part in ("search", "all"):
        out["search"] = search_part(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
