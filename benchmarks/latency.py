"""Latency predictor benchmark: how long profiling takes and how good the predictors are.

    python -m benchmarks.latency                          # both devices, both spaces
    python -m benchmarks.latency --device local --space mbv3-tiny
    python -m benchmarks.latency --device local --space mbv3-tiny --runtime tflite --precision int8
    python -m benchmarks.latency --device local --space mbv3-tiny --precision int8 --split-stem

For each device (this host's CPU, and the same CPU over SSH through a throwaway sshd on
127.0.0.1 with the "device" Python) with ``--runtime`` (onnxruntime, the default, or tflite)
and ``--precision`` (fp32, the default, or int8), and each space (mbv3-tiny at every
resolution with 100 validation subnets; mbv3-imagenet at 224 px with 50): the wall time to
build the table and the calibrated predictor (40 calibration subnets) from an empty model
cache, and the validation figures of lut-sum and calibrated on held-out subnets measured
end to end. Targets for the calibrated predictor: within ±10% >= 95% and Spearman >= 0.95;
the whole mbv3-tiny profile in <= 10 minutes.

The blocks of the table and the calibration and validation subnets are all models of that
runtime's format at that precision, made as ``edgenas profile --precision`` makes them
(``latency.settings_for``): int8 ones quantized as export quantizes them. The JSON's
``settings`` says which, and each case's ``model`` the files measured.

Every device call also measures the table's reference model and the figures use latencies
normalised to its baseline (``latency.reference``). ``raw`` gives, from the same
measurements, what the predictors score without that normalisation, and ``reference`` how
much the machine's speed drifted (the scales applied: min, median, max per stage).

Each calibration and validation subnet is measured in ``--passes`` device calls (default:
the device's, 3 here) and its latency is the median of the passes (``latency.end_to_end``).
``single_pass`` gives, from the same measurements, what the predictors score when fitted
on and compared with the first pass alone, as one pass per subnet used to be.
``repeatability`` compares the validation subnets' passes with each other (every pair,
averaged): how well one pass of the measurement predicts another. A predictor compared
with noisy measurements cannot score much above it, so a miss there is the measurement's,
not the predictor's (a median of several passes is less noisy than one pass, so the
calibrated figures may exceed it). With one pass, a second is measured for it afterwards.

``--split-stem [N]`` (int8 only) measures the validation subnets again with their stem in N
groups of channels (default 2, as export's auto splits it; another N is profiled into the
table as ``edgenas profile --stem-groups N`` does), as the int8 files whose stem export
splits, and gives under ``split_stem`` the calibrated predictor's figures against them with
the table's split-stem entry (``predictor.split_stem(N)``, what the card predicts now) and
with the whole stem's (what it predicted before int8 tables timed the split), and the split
files' latency over the whole ones', measured and predicted (quartiles).

``--load N`` runs N competing training processes (2 threads each, OpenMP waiting passively
as edgenas sets it: ``benchmarks.contention``'s workload) for the whole benchmark, so the
table, the calibration and the validation are all measured on shared cores. Issue 24's
target: the figures still meet the quiet machine's targets with one competing process.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.command_line import ArgumentParser, Refused, at_least, require_folder, run_main
from benchmarks.contention import start_training
from devices import Device, create_device, open_device
from devices.measurement import Measurement
from devices.profiles import validate_profile
from export.formats import PRECISIONS, Precision
from latency import (
    CalibratedPredictor,
    LutSumPredictor,
    MeasuredSubnets,
    ModelCache,
    ProfileSettings,
    calibrate,
    profile_blocks,
    random_subnets,
    settings_for,
    validation_figures,
)
from latency.predictors import MIN_CALIBRATION
from latency.reference import normalised_ms, reference_scale
from latency.table import LatencyTable
from once_for_all import get_space
from once_for_all.subnet import Subnet
from tests.support.sshd import sshd_missing, start_sshd

REPO = Path(__file__).resolve().parents[1]
TARGET_WITHIN_10PCT = 0.95
TARGET_SPEARMAN = 0.95
TARGET_TINY_PROFILE_S = 600.0
CASES = {"mbv3-tiny": (None, 100), "mbv3-imagenet": ((224,), 50)}
MEASURE: dict[str, Any] = {"threads": 1, "warmup": 10, "runs": 50}
RUNTIMES = ("onnxruntime", "tflite")  # the runtimes both devices run here


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def device_python() -> str:
    default = REPO / ".venv-device" / "bin" / "python"
    return str(default) if default.exists() else sys.executable


@contextlib.contextmanager
def open_target(kind: str, folder: Path, runtime: str) -> Iterator[Device]:
    """The local device or the throwaway-sshd one, running ``runtime``."""
    if kind == "local":
        profile = validate_profile(
            {"name": "bench-local", "kind": "local", "runtime": runtime, **MEASURE}
        )
        with create_device(profile.kind, profile.name, profile.model_dump()) as device:
            yield device
        return
    server = start_sshd(folder / "sshd")
    try:
        path = server.write_profile(
            folder / "ssh.yaml",
            "bench-ssh",
            python=device_python(),
            runtime=runtime,
            **MEASURE,
        )
        with open_device(path) as device:
            yield device
    finally:
        server.stop()


def bench_case(
    device: Device,
    space_name: str,
    folder: Path,
    calibrate_n: int,
    passes: int | None,
    *,
    precision: Precision = "fp32",
    split_stem: int | None = None,
) -> dict[str, Any]:
    space = get_space(space_name)
    resolutions, n_val = CASES[space_name]
    cache = ModelCache(folder / "cache")  # empty: the time includes every export
    out = folder / f"{device.name}-{space_name}"
    # The table's blocks and the measured subnets share one format, precision and graph form.
    settings = settings_for(device.fingerprint(), device.name, precision=precision)
    started = time.perf_counter()
    table = profile_blocks(
        device,
        space,
        out / "lut.json",
        cache=cache,
        model_format=settings.model_format,
        precision=settings.precision,
        resolutions=resolutions,
        stem_groups=(split_stem,) if split_stem else (),
    )
    table_s = time.perf_counter() - started
    base = LutSumPredictor.from_table(space, table)
    train = random_subnets(space, calibrate_n, seed=0, resolutions=resolutions, extremes=True)
    train_store = MeasuredSubnets(out / "calibration.json", table.header)
    measured_train = train_store.measure(
        device, space, train, cache=cache, settings=settings, passes=passes
    )
    predictor = calibrate(base, train, measured_train)
    total_s = time.perf_counter() - started
    log(f"  {device.name} {space_name}: table {table_s:.0f} s, with calibration {total_s:.0f} s")
    held_out = random_subnets(space, n_val, seed=1, resolutions=resolutions, exclude=train)
    val_store = MeasuredSubnets(out / "validation.json", table.header)
    measured = val_store.measure(
        device, space, held_out, cache=cache, settings=settings, passes=passes
    )
    lut = validation_figures(base.predict_many(held_out), measured)
    cal = validation_figures(predictor.predict_many(held_out), measured)
    used = len(val_store.passes(held_out[0]))
    single = _first_pass(base, train_store, train, val_store, held_out) if used > 1 else None
    if used < 2:  # a second pass, for repeatability only (the figures above are done)
        val_store.measure(device, space, held_out, cache=cache, settings=settings, passes=2)
    # The same measurements without the reference normalisation.
    raw_base = LutSumPredictor(
        space, table.header, {k: m.median_ms for k, m in table.entries.items()}
    )
    raw_cal = calibrate(raw_base, train, _raw(train_store, train))
    raw_val = _raw(val_store, held_out)
    split = (
        _split_stem(
            table, predictor, val_store, held_out, device, cache, settings, passes, out, split_stem
        )
        if split_stem
        else None
    )
    return {
        "model": {
            "format": table.header.model_format,
            "precision": table.header.precision,
            "graph_form": settings.graph_form,
            "channels_aligned": settings.align_channels,
        },
        "blocks": len(table),  # an int8 table's split stems too
        "resolutions": list(resolutions or space.resolutions),
        "profile_s": round(total_s, 1),
        "table_s": round(table_s, 1),
        "calibration_subnets": calibrate_n,
        "calibration_model": predictor.model.name,
        "passes": used,
        "lut_sum": lut,
        "calibrated": cal,
        "repeatability": _repeatability(val_store, held_out),
        "single_pass": single,
        "raw": {
            "lut_sum": validation_figures(raw_base.predict_many(held_out), raw_val),
            "calibrated": validation_figures(raw_cal.predict_many(held_out), raw_val),
        },
        "reference": _drift(table, train_store, train, val_store, held_out),
        **({"split_stem": split} if split is not None else {}),
        "targets_met": {
            "within_10pct": cal["within_10pct"] >= TARGET_WITHIN_10PCT,
            "spearman": cal["spearman"] >= TARGET_SPEARMAN,
            **(
                {"profile_time": total_s <= TARGET_TINY_PROFILE_S}
                if space_name == "mbv3-tiny"
                else {}
            ),
        },
    }


def _split_stem(
    table: LatencyTable,
    predictor: CalibratedPredictor,
    whole_store: MeasuredSubnets,
    held_out: list[Subnet],
    device: Device,
    cache: ModelCache,
    settings: ProfileSettings,
    passes: int | None,
    out: Path,
    groups: int,
) -> dict[str, Any]:
    """The validation subnets measured again with their stem in ``groups`` groups, as int8
    files whose stem export split, against the predictions with the table's split entry
    (``split_stem``) and with the whole stem's (what the card predicted before int8 tables
    timed the split)."""
    space = predictor.space
    store = MeasuredSubnets(out / f"validation-split{groups}.json", table.header)
    measured = store.measure(
        device, space, held_out, cache=cache, settings=settings, passes=passes, stem_groups=groups
    )
    whole = [normalised_ms(m) for m in (whole_store.get(s) for s in held_out) if m is not None]
    with_split = predictor.split_stem(groups)
    assert with_split is not None  # an int8 table has the split entries
    ratios = sorted(s / w for s, w in zip(measured, whole, strict=True))
    predicted = sorted(
        float(s / w)
        for s, w in zip(
            with_split.predict_many(held_out), predictor.predict_many(held_out), strict=True
        )
    )
    return {
        "groups": groups,
        "measured_split_over_whole": _quartiles(ratios),
        "predicted_split_over_whole": _quartiles(predicted),
        "calibrated_with_split_entry": validation_figures(
            with_split.predict_many(held_out), measured
        ),
        "calibrated_with_whole_stem": validation_figures(
            predictor.predict_many(held_out), measured
        ),
    }


def _quartiles(values: list[float]) -> list[float]:
    """min, lower quartile, median, upper quartile, max of sorted ``values``."""
    n = len(values) - 1
    return [round(values[round(q * n)], 4) for q in (0, 0.25, 0.5, 0.75, 1)]


def _first_pass(
    base: LutSumPredictor,
    train_store: MeasuredSubnets,
    train: list[Subnet],
    val_store: MeasuredSubnets,
    held_out: list[Subnet],
) -> dict[str, Any]:
    """The predictors fitted on and compared with the first pass of each subnet alone."""
    cal = calibrate(base, train, [normalised_ms(train_store.passes(s)[0]) for s in train])
    measured = [normalised_ms(val_store.passes(s)[0]) for s in held_out]
    return {
        "lut_sum": validation_figures(base.predict_many(held_out), measured),
        "calibrated": validation_figures(cal.predict_many(held_out), measured),
    }


def _repeatability(store: MeasuredSubnets, subnets: list[Subnet]) -> dict[str, Any]:
    """One pass against another (normalised latencies), averaged over every pair of passes."""
    passes = [[normalised_ms(m) for m in store.passes(s)] for s in subnets]
    n = min(len(p) for p in passes)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    figures = [validation_figures([p[i] for p in passes], [p[j] for p in passes]) for i, j in pairs]
    keys = ("rmspe", "within_5pct", "within_10pct", "spearman", "kendall")
    return {
        "pairs": len(pairs),
        **{k: round(sum(f[k] for f in figures) / len(figures), 4) for k in keys},
        "spearman_min": round(min(f["spearman"] for f in figures), 4),
        "within_10pct_min": round(min(f["within_10pct"] for f in figures), 4),
    }


def _raw(store: MeasuredSubnets, subnets: list[Subnet]) -> list[float]:
    return [m.median_ms for m in (store.get(s) for s in subnets) if m is not None]


def _drift(
    table: LatencyTable,
    train_store: MeasuredSubnets,
    train: list[Subnet],
    val_store: MeasuredSubnets,
    held_out: list[Subnet],
) -> dict[str, Any] | None:
    """The reference baseline and the scales applied (min, median, max) per stage."""
    ref = table.header.reference
    if ref is None:
        return None

    def spread(measurements: list[Any]) -> list[float]:
        scales = sorted(reference_scale(m) for m in measurements if m is not None)
        return [round(scales[0], 4), round(scales[len(scales) // 2], 4), round(scales[-1], 4)]

    every = [*table.entries.values(), *(train_store.get(s) for s in train)]
    every += [val_store.get(s) for s in held_out]
    retried = sum(1 for m in every if m is not None and _attempts(m) > 1)
    return {
        "retried_entries": retried,
        "subnet": dict(ref.subnet),
        "baseline_ms": ref.baseline_ms,
        "scale_table": spread(list(table.entries.values())),
        "scale_calibration": spread([train_store.get(s) for s in train]),
        "scale_validation": spread([val_store.get(s) for s in held_out]),
    }


@contextlib.contextmanager
def competing(processes: int) -> Iterator[None]:
    """``processes`` training processes that run until the block ends."""
    running = [start_training(10**9, 2, passive=True) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in running:
            proc.kill()
            proc.wait()


def _attempts(m: Measurement) -> int:
    return int(m.extra.get("reference", {}).get("attempts", 1))


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--device", choices=("local", "ssh"), action="append", help="repeatable (default both)"
    )
    parser.add_argument(
        "--space", choices=tuple(CASES), action="append", help="repeatable (default both)"
    )
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default="onnxruntime", help="what both devices run"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="of every model measured (int8: quantized as export quantizes)",
    )
    parser.add_argument(
        "--calibrate",
        type=at_least(MIN_CALIBRATION, why=" subnets, what a calibrated predictor is fitted on"),
        default=40,
        help=f"subnets measured end to end to calibrate (default 40, at least {MIN_CALIBRATION})",
    )
    parser.add_argument(
        "--passes",
        type=at_least(1),
        help="device calls measuring each end-to-end subnet (default: the device's, 3)",
    )
    parser.add_argument(
        "--keep", type=Path, help="an empty folder to keep tables and measurements in"
    )
    parser.add_argument(
        "--load",
        type=at_least(0),
        default=0,
        help="competing 2-thread training processes meanwhile (default 0)",
    )
    parser.add_argument(
        "--split-stem",
        nargs="?",
        type=at_least(2, why=" groups (1 is the whole stem)"),
        const=2,
        metavar="GROUPS",
        help="int8: also measure the validation subnets with their stem in GROUPS groups "
        "(default 2)",
    )
    args = parser.parse_args(argv)
    if args.split_stem is not None and args.precision != "int8":
        raise Refused("--split-stem: only int8 files split their stem; add --precision int8")
    if args.keep is not None:
        require_folder("--keep", args.keep)
        if args.keep.exists() and any(args.keep.iterdir()):
            raise Refused(f"--keep {args.keep}: the folder is not empty; give an empty or new one")
    devices = args.device or ["local", "ssh"]
    spaces = args.space or list(CASES)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "settings": {"runtime": args.runtime, "precision": args.precision, **MEASURE},
        "competing_processes": args.load,
        "targets": {
            "within_10pct": TARGET_WITHIN_10PCT,
            "spearman": TARGET_SPEARMAN,
            "tiny_profile_s": TARGET_TINY_PROFILE_S,
        },
    }
    with (
        (
            contextlib.nullcontext(str(args.keep))
            if args.keep is not None
            else tempfile.TemporaryDirectory(prefix="edgenas-bench-latency-")
        ) as tmp,
        competing(args.load),
    ):
        for kind in devices:
            if kind == "ssh" and (reason := sshd_missing()):
                result[kind] = {"skipped": reason}
                continue
            folder = Path(tmp) / kind
            folder.mkdir(parents=True)
            with open_target(kind, folder, args.runtime) as device:
                fp = device.fingerprint()
                entry: dict[str, Any] = {"fingerprint": fp.to_dict()}
                for space_name in spaces:
                    log(f"{kind}: profiling {space_name} ...")
                    entry[space_name] = bench_case(
                        device,
                        space_name,
                        folder,
                        args.calibrate,
                        args.passes,
                        precision=args.precision,
                        split_stem=args.split_stem,
                    )
                result[kind] = entry
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run_main(main)
