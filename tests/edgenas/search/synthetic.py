"""A search problem with a synthetic accuracy and a lut-sum predictor over a synthetic table:
real Optuna studies and storages without a trained supernet or a device. Run as a script it
is one search worker (used by the kill/resume and shared-storage tests)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from devices.measurement import Fingerprint, Measurement
from edgenas.search.problem import DeviceTarget, SearchProblem
from edgenas.search.study_runner import SearchRun
from export.formats import Precision
from latency.blocks import enumerate_blocks
from latency.predictors import LutSumPredictor
from latency.profiler import split_stems
from latency.table import LatencyTable, TableHeader
from once_for_all import Subnet, get_space

SPACE = get_space("mbv3-tiny")
FP = Fingerprint("board", "Cortex-A72", 4, "performance", "onnxruntime", "1.32.0", 1)


def predictor(
    name: str = "board",
    *,
    seed: int = 0,
    scale: float = 1.0,
    precision: Precision = "fp32",
    fingerprint: Fingerprint = FP,
    resolutions: tuple[int, ...] = SPACE.resolutions,
) -> LutSumPredictor:
    """A lut-sum predictor over a synthetic ONNX table of ``resolutions``, as if measured on
    ``fingerprint``; int8 has the split stem's entries as profile writes them."""
    rng = np.random.default_rng(seed)
    header = TableHeader(SPACE.id, name, fingerprint, "onnx", precision, resolutions)
    table = LatencyTable(header)
    splits = split_stems(precision, ())
    for spec in enumerate_blocks(SPACE, resolutions=resolutions, split_stems=splits):
        c, h, w = spec.input_shape
        ms = scale * (0.01 + 1e-6 * c * h * w * float(rng.uniform(0.5, 1.5)))
        if spec.kind == "mbconv":
            ms *= 1 + spec.config["mid_channels"] / spec.config["in_channels"] / 3
        table.add(spec.key, Measurement.from_times(spec.key, [ms]))
    return LutSumPredictor.from_table(SPACE, table)


def accuracy(subnets: list[Subnet]) -> np.ndarray:
    """Bigger subnets are more accurate, with diminishing returns."""
    x = SPACE.encode_many(subnets)
    size = np.array([sum(s.d) + 0.1 * sum(s.e) + 0.05 * sum(s.ks) + 0.1 * s.r for s in subnets])
    return 0.7 + 0.25 * (1 - np.exp(-size / 15)) + 0.001 * x[:, :5].sum(1)


def problem(budget_ms: float | None = None, *, devices: int = 1) -> SearchProblem:
    targets = tuple(
        DeviceTarget(f"board{i}", predictor(f"board{i}", seed=i, scale=1 + i), budget_ms)
        for i in range(devices)
    )
    return SearchProblem(SPACE, accuracy, targets)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--sync-every", type=int, default=20)
    parser.add_argument("--budget-ms", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peers", type=int, default=1, help="wait until this many workers started")
    parser.add_argument(
        "--sleep", type=float, default=0.0, help="seconds per batch (to be killable)"
    )
    parser.add_argument(
        "--mark", type=Path, help="exists while a batch is evaluated, once trials were stored"
    )
    parser.add_argument("--worker", help="this worker's id in the study (default: random)")
    parser.add_argument("--report", type=Path, help="also write the final report here")
    args = parser.parse_args(argv)
    prob = problem(args.budget_ms)
    if args.sleep:
        inner = prob.accuracy

        def slow(subnets: list[Subnet]) -> np.ndarray:
            mark = args.mark if args.mark and run.stored else None
            if mark:
                mark.touch()
            time.sleep(args.sleep)
            if mark:
                mark.unlink()
            return inner(subnets)

        prob = SearchProblem(prob.space, slow, prob.devices)
    run = SearchRun(
        prob,
        storage=args.storage,
        study_name="s",
        seed=args.seed,
        sync_every=args.sync_every,
        batch=5,
        worker=args.worker,
    )
    # A start barrier: a worker that imports faster must not finish the study alone.
    run.persistent.set_user_attr(f"ready:{run.worker}", True)
    deadline = time.monotonic() + 120
    while sum(k.startswith("ready:") for k in run.persistent.user_attrs) < args.peers:
        if time.monotonic() > deadline:
            raise SystemExit("the other workers did not start")
        time.sleep(0.05)
    run.run(args.trials)
    report = json.dumps({"worker": run.worker, "stored": run.stored})
    if args.report:
        args.report.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
