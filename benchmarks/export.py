"""Export benchmark: how long each format and precision takes, how faithful the files are,
and how their latency on this machine compares with the prediction; with --speed, how fast
each format's int8 file runs against its fp32 original (issue 20's table).

    python -m benchmarks.export                                    # runs/fmnist, max and min
    python -m benchmarks.export --supernet runs/fmnist/supernet.pt --subnet runs/search/pareto.json
    python -m benchmarks.export --speed                            # the speed table, ~15 min
    python -m benchmarks.export --speed --resolutions 160 --rounds 2 --subnets min   # quick
    python -m benchmarks.export --speed --keep speed-files   # and keep the files to time elsewhere

Accuracy (the default mode):

For each subnet: ONNX and TFLite, fp32 and int8 (calibrated on 256 training images), each
checked in its runtime: fp32 max |difference| to PyTorch on 32 validation images, int8 top-1
agreement with fp32 and accuracy drop on the whole test split (target agreement >= 98%);
--qat-epochs N fine-tunes with int8-simulated activations first (as edgenas export does).
The files are then measured on --device (default local-cpu: onnxruntime, fp32 and int8 ONNX)
and compared with the device's latency predictor under --profiles, when there is one.

Speed (--speed): no trained supernet, because latency depends on the ops, not the values.
Subnets: the demo's (--demo-subnet, an mbv3-tiny subnet: max, min, a subnet JSON or
pareto.json#K; default max) and, at each of --resolutions (default 160 and 224), the
mbv3-imagenet min, max and three random subnets (seeds 0-2, the same three architectures at
every resolution). Each is built with seeded random weights and BN statistics from a few
random batches, then written as ONNX fp32, ONNX int8, TFLite fp32 and TFLite int8 (both int8
files calibrated on a few random samples). The four files are timed side by side in this
process with one thread (onnxruntime, and LiteRT with its default XNNPACK delegate) by the
device runner's interleaved rounds: every round runs each file RUNS_PER_ROUND times, in a
fresh random order, so drift of a shared machine spreads over all four. Each row reports the
medians with p10/p90, int8/fp32 per format, the TFLite files' XNNPACK partitions, the int8
ONNX nodes that onnxruntime runs in float, and issue 20's targets: at 160-224 px TFLite int8
<= 0.7x and ONNX int8 <= 0.8x fp32, the demo's int8 no slower than fp32, and TFLite int8 in
one partition. --unaligned adds a fifth file per row, the int8 ONNX without channel
alignment (export.onnx_channel_alignment), timed in the same rounds: ``int8_over_fp32`` then
has ``onnx_unaligned`` beside ``onnx``, and ``alignment_speedup`` is unaligned / aligned.
The table goes to stderr as Markdown too. --keep DIR keeps every row's files in DIR, named
after the row (``min-224_onnx_int8.onnx``), with ``rows.json`` (label, space, r, subnet,
MACs, files): ``python benchmarks/int8_timing.py DIR`` times them on a machine that has only
numpy and onnxruntime (and LiteRT, if any). --refuse-amx refuses this process Intel AMX's
tile registers before any runtime loads (a device profile's ``x86_amx: false``), so that
XNNPACK and onnxruntime time their AVX512-VNNI int8 kernels instead of their AMX ones; the
JSON's ``x86_amx`` says "refused", or "available" without it, where the CPU offers AMX.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.command_line import (
    ArgumentParser,
    Refused,
    at_least,
    blamed,
    require_file,
    require_folder,
    run_main,
)
from benchmarks.int8_timing import (
    ROWS_FILE,
    ROWS_FORMAT,
    RUNS_PER_ROUND,
    cpu_flags,
    measure_side_by_side,
)
from edgenas.stages.export import ExportJob, FinetuneSettings, run_export
from export.formats import INT8_AGREEMENT_TARGET, STEM_GROUPS, StemGroups, parse_stem_groups
from export.subnet_export import ExportOptions

if TYPE_CHECKING:
    import numpy as np

    from once_for_all import MobileNetV3, SearchSpace, Subnet

FILES = ("onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8")
UNALIGNED = "onnx_int8_unaligned"  # --unaligned: the int8 ONNX without channel alignment
BN_BATCHES, BN_BATCH_SIZE = 4, 16
CALIBRATION_SAMPLES = 8
RANDOM_SEEDS = (0, 1, 2)
# Issue 20's targets: int8 / fp32 latency at 160-224 px; the demo's int8 no slower than fp32.
TARGET_RESOLUTIONS = range(160, 225)
TARGET_RATIO = {"tflite": 0.7, "onnx": 0.8}
DEFAULT_SUPERNET = Path("runs/fmnist/supernet.pt")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_subnet(args: argparse.Namespace, subnet: str, out: Path) -> dict[str, Any]:
    job = ExportJob(
        supernet=args.supernet,
        subnet=subnet,
        out=out,
        options=ExportOptions(
            int8=True, calibration_images=args.calibration_images, stem_groups=args.stem_groups
        ),
        devices=tuple(args.device),
        profiles=args.profiles,
        finetune=FinetuneSettings(qat_epochs=args.qat_epochs),
    )
    started = time.perf_counter()
    card = run_export(job, say=lambda message: log(f"  {message}"))
    total = time.perf_counter() - started
    files = {
        f["name"]: {
            "format": f["format"],
            "precision": f["precision"],
            "export_s": f["export_seconds"],
            "kib": round(f["bytes"] / 1024, 1),
            **f["checks"],
        }
        for f in card["files"]
    }
    latency: dict[str, Any] = {}
    for device, entry in card["latency"].items():
        for name, value in entry["files"].items():
            measured, predicted = value["measured"]["median_ms"], value["predicted"]
            latency.setdefault(device, {})[name] = {
                "measured_ms": measured,
                "p10_ms": value["measured"]["p10_ms"],
                "p90_ms": value["measured"]["p90_ms"],
                "predicted_ms": predicted,
                "error_pct": None if predicted is None else 100 * (predicted / measured - 1),
            }
    int8 = card["accuracy"]["int8"]
    return {
        "subnet": card["name"],
        "macs": card["macs"],
        "params": card["params"],
        "total_s": round(total, 1),
        "test_images": card["accuracy"]["images"],
        "accuracy_fp32": card["accuracy"]["fp32"],
        "int8": int8,
        "int8_agreement_target_met": all(
            v["top1_agreement"] >= INT8_AGREEMENT_TARGET for v in int8.values()
        ),
        "files": files,
        "latency": latency,
    }


def speed_subnets(
    demo: str, resolutions: list[int], which: list[str]
) -> list[tuple[str, SearchSpace, Subnet]]:
    """(label, space, subnet) for each row of the speed table, in table order."""
    from edgenas.subnet_choice import choose_subnet
    from once_for_all import get_space

    rows = []
    if "demo" in which:
        tiny = get_space("mbv3-tiny")
        with blamed("--demo-subnet"):
            rows.append((f"demo ({demo})", tiny, choose_subnet(demo, tiny)))
    imagenet = get_space("mbv3-imagenet")
    for r in resolutions:
        with blamed("--resolutions"):
            if "min" in which:
                rows.append(("min", imagenet, imagenet.min_subnet(r=r)))
            if "max" in which:
                rows.append(("max", imagenet, imagenet.max_subnet(r=r)))
            if "random" in which:
                rows += [
                    (f"random{s}", imagenet, imagenet.sample(random.Random(s), r=(r,)))
                    for s in RANDOM_SEEDS
                ]
    return rows


def random_model(space: SearchSpace, subnet: Subnet, *, seed: int = 0) -> MobileNetV3:
    """``subnet`` with seeded random weights and BN statistics from random batches: without
    them the activations grow block by block and the int8 ranges would be meaningless."""
    import torch

    from once_for_all import build_from_config, recalibrate_bn
    from once_for_all.network_config import network_config

    torch.manual_seed(seed)
    model = build_from_config(network_config(space, subnet))
    shape = (BN_BATCH_SIZE, *model.input_shape[1:])
    recalibrate_bn(model, (torch.randn(shape) for _ in range(BN_BATCHES)))
    return model


def file_name(name: str) -> str:
    """The file of one of FILES or UNALIGNED: ``onnx_int8`` -> ``onnx_int8.onnx``."""
    return f"{name}.{name.split('_')[0]}"


def write_files(
    model: MobileNetV3,
    work: Path,
    calibration: np.ndarray,
    *,
    stem_groups: StemGroups,
    unaligned: bool = False,
) -> dict[str, Path]:
    """The four files of issue 20's table, written as ``edgenas export`` writes them: the
    int8 ones with the stem in ``stem_groups`` groups of channels; with ``unaligned``, also
    UNALIGNED, quantized from the same graph and calibration."""
    import numpy as np
    import torch

    from export import export_onnx, export_tflite, quantize_onnx_int8, quantize_tflite_int8
    from export.stem_split import split_stem
    from once_for_all.quant_aware import stem_groups as groups_by_range

    shape = model.input_shape
    paths = {name: work / file_name(name) for name in FILES + ((UNALIGNED,) if unaligned else ())}
    # "auto" chooses by the files' accuracy, which random weights do not have: whole.
    count = 1 if stem_groups == "auto" else stem_groups
    groups = groups_by_range(model, torch.from_numpy(calibration), count)
    export_onnx(model, paths["onnx_fp32"], input_shape=shape)
    onnx_to_quantize = work / "onnx_for_int8.onnx"
    export_onnx(split_stem(model, groups), onnx_to_quantize, input_shape=shape)
    quantize_onnx_int8(onnx_to_quantize, paths["onnx_int8"], calibration=calibration)
    if unaligned:
        quantize_onnx_int8(
            onnx_to_quantize, paths[UNALIGNED], calibration=calibration, align_channels="none"
        )
    export_tflite(model, paths["tflite_fp32"], input_shape=shape)
    # The int8 TFLite starts from the float model in the form its int8 version runs in.
    to_quantize = work / "tflite_for_int8.tflite"
    export_tflite(model, to_quantize, input_shape=shape, for_int8=True, stem_groups=groups)
    nhwc = np.ascontiguousarray(np.moveaxis(calibration, 1, -1))
    quantize_tflite_int8(to_quantize, paths["tflite_int8"], calibration=nhwc)
    return paths


def measure_files(paths: dict[str, Path], *, rounds: int) -> dict[str, dict[str, Any]]:
    """Median, p10 and p90 (ms) of each file, one thread, timed by the device runner's
    interleaved rounds in this process (seeded random inputs; the int8 TFLite takes int8),
    as benchmarks/int8_timing.py times them elsewhere."""
    import numpy as np

    from devices import runner

    backends = {
        "onnx": runner.OnnxRuntimeBackend(np, runner.Job({"runtime": "onnxruntime"})),
        "tflite": runner.TfliteBackend(np, runner.Job({"runtime": "tflite"})),
    }
    try:
        return measure_side_by_side(runner, backends, paths, rounds=rounds)
    finally:
        for backend in backends.values():
            backend.close()


def speed_row(
    label: str,
    space: SearchSpace,
    subnet: Subnet,
    work: Path,
    *,
    rounds: int,
    stem_groups: StemGroups,
    unaligned: bool = False,
) -> dict[str, Any]:
    """One row of the table; its files stay in ``work`` (see ``file_name``)."""
    import numpy as np

    from export.runtime_graph import onnx_float_nodes, tflite_delegation
    from latency.proxies import subnet_costs

    model = random_model(space, subnet)
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal(
        (CALIBRATION_SAMPLES, *model.input_shape[1:]), dtype=np.float32
    )
    started = time.perf_counter()
    paths = write_files(model, work, calibration, stem_groups=stem_groups, unaligned=unaligned)
    export_s = time.perf_counter() - started
    latency = measure_files(paths, rounds=rounds)
    for name, path in paths.items():
        latency[name]["kib"] = round(path.stat().st_size / 1024, 1)
    ratio = {
        fmt: latency[f"{fmt}_int8"]["median_ms"] / latency[f"{fmt}_fp32"]["median_ms"]
        for fmt in ("onnx", "tflite")
    }
    structure: dict[str, Any] = {
        "tflite_fp32": tflite_delegation(paths["tflite_fp32"]),
        "tflite_int8": tflite_delegation(paths["tflite_int8"]),
        "onnx_int8_float_nodes": onnx_float_nodes(paths["onnx_int8"]),
    }
    extra: dict[str, Any] = {}
    if unaligned:
        onnx_fp32, onnx_int8 = latency["onnx_fp32"]["median_ms"], latency["onnx_int8"]["median_ms"]
        ratio["onnx_unaligned"] = latency[UNALIGNED]["median_ms"] / onnx_fp32
        extra["alignment_speedup"] = latency[UNALIGNED]["median_ms"] / onnx_int8
        structure["onnx_int8_unaligned_float_nodes"] = onnx_float_nodes(paths[UNALIGNED])
    return {
        "label": label,
        "space": space.name,
        "r": subnet.r,
        "subnet": subnet.to_dict(),
        "macs": subnet_costs(space, subnet).macs,
        "export_s": round(export_s, 1),
        "latency": latency,
        "int8_over_fp32": ratio,
        "structure": structure,
        **extra,
        "targets": targets(space.name, subnet.r, ratio, structure["tflite_int8"]["partitions"]),
    }


def targets(space: str, r: int, ratio: dict[str, float], partitions: int) -> dict[str, bool]:
    """Issue 20's targets that apply to this row: on the files export ships (``ratio``'s
    "onnx" and "tflite"; an --unaligned file is there to compare with)."""
    met = {"tflite_int8_one_partition": partitions == 1}
    if space == "mbv3-tiny":
        met |= {f"{fmt}_int8_no_slower": ratio[fmt] <= 1.0 for fmt in TARGET_RATIO}
    elif r in TARGET_RESOLUTIONS:
        met |= {
            f"{fmt}_int8_le_{limit}x": ratio[fmt] <= limit for fmt, limit in TARGET_RATIO.items()
        }
    return met


def keep_row(
    row: dict[str, Any], paths: dict[str, Path], keep: Path, rows: list[dict[str, Any]]
) -> None:
    """Copy a row's files (``paths``: ``onnx_int8`` -> its file, ...) into ``keep`` under the
    row's label (``min-224_onnx_int8.onnx``, from the table's "min" at 224 px) and rewrite
    ``keep/rows.json`` with ``rows`` and this row, so that an interrupted run keeps what it
    finished. benchmarks/int8_timing.py reads the folder."""
    label = f"{row['label'].split()[0]}-{row['r']}"
    files = {}
    for name, path in paths.items():
        files[name] = f"{label}_{file_name(name)}"
        shutil.copyfile(path, keep / files[name])
    rows.append(
        {"label": label, **{k: row[k] for k in ("space", "r", "subnet", "macs")}, "files": files}
    )
    partial = keep / f".{ROWS_FILE}.partial"
    partial.write_text(json.dumps({"format": ROWS_FORMAT, "rows": rows}, indent=1) + "\n")
    partial.replace(keep / ROWS_FILE)


def machine() -> dict[str, Any]:
    from devices.runner import cpu_model

    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        # Shared machines: a load near the core count widens the p10-p90 spread.
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            p: version(p)
            for p in ("onnxruntime", "ai-edge-litert", "torch", "litert-torch", "ai-edge-quantizer")
        },
    }


def speed_table(rows: list[dict[str, Any]]) -> str:
    """The rows as Markdown: median [p10-p90] per file, int8/fp32 (with --unaligned, the
    unaligned file's too), partitions, float nodes."""

    def ms(entry: dict[str, Any]) -> str:
        return f"{entry['median_ms']:.3g} [{entry['p10_ms']:.3g}-{entry['p90_ms']:.3g}]"

    lines = [
        "| model | MMACs | ONNX fp32 ms | ONNX int8 ms | TFLite fp32 ms | TFLite int8 ms "
        "| ONNX int8/fp32 | TFLite int8/fp32 | TFLite partitions fp32/int8 | ONNX int8 float nodes "
        "| targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lat, ratio, st = row["latency"], row["int8_over_fp32"], row["structure"]
        floats = ", ".join(f"{k} {v}" for k, v in st["onnx_int8_float_nodes"].items()) or "none"
        missed = [k for k, ok in row["targets"].items() if not ok]
        unaligned = (
            f" (unaligned {ratio['onnx_unaligned']:.2f}x)" if "onnx_unaligned" in ratio else ""
        )
        lines.append(
            f"| {row['label']} {row['space']} r{row['r']} | {row['macs'] / 1e6:.1f} | "
            + " | ".join(ms(lat[name]) for name in FILES)
            + f" | {ratio['onnx']:.2f}x{unaligned} | {ratio['tflite']:.2f}x"
            + f" | {st['tflite_fp32']['partitions']}/{st['tflite_int8']['partitions']}"
            + f" | {floats} | {'yes' if not missed else 'no: ' + ', '.join(missed)} |"
        )
    return "\n".join(lines)


def speed_main(args: argparse.Namespace) -> None:
    from devices.runner import x86_amx_state

    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    subnets = speed_subnets(args.demo_subnet, args.resolutions, args.subnets)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgenas-bench-speed-") as work:
        for i, (label, space, subnet) in enumerate(subnets):
            log(f"[{i + 1}/{len(subnets)}] {label} {space.name} {subnet.key}")
            folder = Path(work) / str(i)
            folder.mkdir()
            row = speed_row(
                label,
                space,
                subnet,
                folder,
                rounds=args.rounds,
                stem_groups=args.stem_groups,
                unaligned=args.unaligned,
            )
            log(
                "  ms: " + ", ".join(f"{k} {v['median_ms']:.3f}" for k, v in row["latency"].items())
            )
            rows.append(row)
            if args.keep is not None:
                paths = {name: folder / file_name(name) for name in row["latency"]}
                keep_row(row, paths, args.keep, kept)
    log(speed_table(rows))
    print(
        json.dumps(
            {
                "benchmark": "export-speed",
                "machine": machine(),
                "threads": 1,
                "x86_amx": x86_amx_state(),
                "stem_groups": args.stem_groups,
                "unaligned": args.unaligned,
                "rounds": args.rounds,
                "runs_per_file": args.rounds * RUNS_PER_ROUND,
                "weights": "random (torch seed 0), BN statistics from "
                f"{BN_BATCHES}x{BN_BATCH_SIZE} random images",
                "calibration_samples": CALIBRATION_SAMPLES,
                "targets_met": all(all(r["targets"].values()) for r in rows),
                "subnets": rows,
            },
            indent=1,
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m benchmarks.export",
        description="How long each export format and precision takes, how faithful the files "
        "are and how their latency here compares with the prediction; with --speed, how fast "
        "each format's int8 file runs against its fp32 original.",
    )
    parser.add_argument(
        "--supernet",
        type=Path,
        default=DEFAULT_SUPERNET,
        help=f"a finished training's supernet.pt (default {DEFAULT_SUPERNET})",
    )
    parser.add_argument(
        "--subnet", action="append", help="as for edgenas export (default: max and min)"
    )
    parser.add_argument("--device", action="append", help="device profile (default local-cpu)")
    parser.add_argument(
        "--profiles",
        type=Path,
        default=Path("runs/profiles"),
        help="where device predictors are (default runs/profiles)",
    )
    parser.add_argument(
        "--calibration-images",
        type=at_least(1),
        default=256,
        help="int8 calibration images (default 256)",
    )
    parser.add_argument(
        "--qat-epochs",
        type=at_least(0),
        default=0,
        help="quantization-aware fine-tuning before export",
    )
    parser.add_argument(
        "--stem-groups",
        type=parse_stem_groups,
        default=STEM_GROUPS,
        help=f"int8 files: the stem in this many groups of channels, or auto (default "
        f"{STEM_GROUPS})",
    )
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch threads")
    speed = parser.add_argument_group("speed table (--speed)")
    speed.add_argument(
        "--speed", action="store_true", help="the int8 vs fp32 speed table, random weights"
    )
    speed.add_argument(
        "--demo-subnet",
        default="max",
        help="the demo's mbv3-tiny subnet: max, min, a subnet JSON or pareto.json#K",
    )
    speed.add_argument(
        "--resolutions",
        type=at_least(1),
        nargs="+",
        default=[160, 224],
        help="mbv3-imagenet px (default 160 224)",
    )
    speed.add_argument(
        "--subnets",
        nargs="+",
        choices=["demo", "min", "max", "random"],
        default=["demo", "min", "max", "random"],
        help="which rows (default all)",
    )
    speed.add_argument(
        "--rounds",
        type=at_least(1),
        default=10,
        help=f"interleaved rounds; each runs every file {RUNS_PER_ROUND} times (default 10)",
    )
    speed.add_argument(
        "--unaligned",
        action="store_true",
        help="also time each row's int8 ONNX without channel alignment, side by side",
    )
    speed.add_argument(
        "--refuse-amx",
        action="store_true",
        help="refuse this process Intel AMX's tiles (x86-64 Linux), as a profile's x86_amx: false",
    )
    speed.add_argument(
        "--keep",
        type=Path,
        help="an empty folder to keep every row's files in, with rows.json, for "
        "benchmarks/int8_timing.py to time on another machine",
    )
    args = parser.parse_args(argv)
    if args.keep is not None and not args.speed:
        raise Refused("--keep keeps the files of the --speed table: give --speed too")
    if args.unaligned and not args.speed:
        raise Refused("--unaligned adds a file to the --speed table: give --speed too")
    if args.refuse_amx and not args.speed:
        raise Refused("--refuse-amx is for the --speed table: give --speed too")
    if args.keep is not None:
        require_folder("--keep", args.keep)
        if args.keep.exists() and any(args.keep.iterdir()):
            raise Refused(f"--keep {args.keep}: the folder is not empty; give an empty or new one")
    if args.refuse_amx:
        from devices.runner import RunnerError, refuse_x86_amx

        try:
            # Every thread takes the refusal; runtimes loaded already would hold the tiles.
            refuse_x86_amx(fix="leave out --refuse-amx")
        except RunnerError as exc:
            raise Refused(f"--refuse-amx: {exc.message}") from None
    import torch

    torch.set_num_threads(args.threads)
    if args.speed:
        speed_main(args)
    else:
        accuracy_main(args)


def check_accuracy_inputs(args: argparse.Namespace) -> None:
    """Refuse, before the first subnet's export (minutes), a supernet, subnet or device the
    export would refuse: the second subnet's was refused after the first had been exported."""
    from devices.profiles import load_profile
    from edgenas.subnet_choice import choose_subnet
    from once_for_all import load_supernet
    from once_for_all.checkpoint import require_complete

    require_file(
        "--supernet",
        args.supernet,
        "give a finished training's supernet.pt (edgenas train, or edgenas run RECIPE)",
    )
    with blamed("--supernet"):
        supernet, _, payload = load_supernet(args.supernet)
        require_complete(payload, args.supernet)
    for subnet in args.subnet:
        with blamed("--subnet"):
            choose_subnet(subnet, supernet.space)
    for device in args.device:
        with blamed("--device"):
            load_profile(device)


def accuracy_main(args: argparse.Namespace) -> None:
    args.device = args.device or ["local-cpu"]
    args.subnet = args.subnet or ["max", "min"]
    check_accuracy_inputs(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgenas-bench-export-") as work:
        for i, subnet in enumerate(args.subnet):
            log(f"subnet {subnet}")
            results.append(bench_subnet(args, subnet, Path(work) / str(i)))
    print(
        json.dumps(
            {
                "benchmark": "export",
                "machine": platform.processor() or platform.machine(),
                "supernet": str(args.supernet),
                "devices": args.device,
                "calibration_images": args.calibration_images,
                "qat_epochs": args.qat_epochs,
                "stem_groups": args.stem_groups,
                "target_int8_agreement": INT8_AGREEMENT_TARGET,
                "subnets": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    run_main(main)
