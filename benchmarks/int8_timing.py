"""int8 against fp32 on another machine: time the files that `python -m benchmarks.export
--speed --keep DIR` kept, with only the Python standard library, numpy and onnxruntime.

    python benchmarks/int8_timing.py DIR                    # on the machine to measure
    python benchmarks/int8_timing.py DIR --rounds 20 --op-profile
    .venv-openvino/bin/python benchmarks/int8_timing.py DIR --provider OpenVINOExecutionProvider \
        --provider-option device_type=CPU --provider-option num_of_threads=1
    .venv-openvino/bin/python benchmarks/int8_timing.py DIR --openvino CPU
    python benchmarks/int8_timing.py DIR --refuse-amx       # Intel AMX refused (x86_amx: false)

Run it from a copy of the repository (it needs this file and devices/runner.py) on a machine
that lacks edgenas's dependencies: it imports no edgenas package, and loads the device runner
(standard library only) by its path, so the timing is the runner's: each row's files are
loaded, warmed up and timed side by side in interleaved rounds, one thread, as
benchmarks/export.py times them. TFLite files are timed too where ai-edge-litert or
tflite-runtime imports, and reported as skipped otherwise. ``--provider`` runs the ONNX files on
another execution provider of the onnxruntime build at hand (OpenVINO's in
onnxruntime-openvino); a file it takes none of the nodes of is refused, not timed on the CPU.
``--openvino DEVICE`` runs them on the OpenVINO Runtime itself instead (the openvino package),
compiled as the runner compiles them: fp32 files at fp32 inference precision on the CPU.

Prints one JSON object: the CPU model and its int8 instruction flags (/proc/cpuinfo), runtime
versions, and per row the fp32 and int8 medians with p10/p90, where each file ran (the
runner's placement: nodes per execution provider, XNNPACK partitions) and each int8 file
over its format's fp32 (``onnx``, ``tflite``, and ``onnx_unaligned`` for the file that
``--speed --unaligned`` keeps: channel alignment measured where the files run); with
--op-profile, ms per run per op type of each ONNX file, from onnxruntime's profiler or, with
--openvino, OpenVINO's performance counters (its types name the kernel that ran them:
"GroupConvolution (brgconv_avx512_dw_I8)"). ``x86_amx`` says, where the CPU offers Intel AMX, "refused"
with --refuse-amx (the runner refuses the process AMX's tiles before any runtime loads, as a
profile's ``x86_amx: false`` does), and "available" without it. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

ROWS_FILE = "rows.json"
ROWS_FORMAT = "edgenas.speed-files/1"
FORMATS = ("onnx", "tflite")
RUNS_PER_ROUND = 5
WARMUP_RUNS = 5
PROFILE_WARMUP, PROFILE_RUNS = 5, 30
# x86: VNNI dot products and AMX tiles; Arm: the SDOT/UDOT and I8MM int8 matrix instructions.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
RUNNER = Path(__file__).resolve().parents[1] / "devices" / "runner.py"


class Refused(Exception):
    """Bad input: printed as one line, exit status 2."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_runner() -> ModuleType:
    """devices/runner.py loaded by its path: ``import devices`` would import the devices
    package, and with it edgenas's dependencies (pydantic)."""
    spec = importlib.util.spec_from_file_location("edgenas_device_runner", RUNNER)
    if spec is None or spec.loader is None:
        raise Refused(f"cannot load the device runner {RUNNER}: run from a copy of the repository")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> dict[str, bool]:
    """Which of CPU_FLAGS the CPU has ("flags" on x86, "Features" on Arm); all False where
    there is no cpuinfo."""
    try:
        with open(cpuinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    present: set[str] = set()
    for line in lines:
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            break
    return {flag: flag in present for flag in CPU_FLAGS}


def measure_side_by_side(
    runner: ModuleType, backends: Mapping[str, Any], paths: Mapping[str, Path], *, rounds: int
) -> dict[str, dict[str, Any]]:
    """Median, p10 and p90 (ms) of each file (``paths``: name such as ``onnx_int8`` -> file),
    run by the backend of its format (the name's first part), with the runner's interleaved
    rounds: every round runs each file RUNS_PER_ROUND times, in a fresh random order (seeded,
    so that reruns measure the same thing). ``placement`` is the runner's: the nodes each
    execution provider ran (ONNX), the delegate's partitions and the ops it left (TFLite)."""
    names = list(paths)
    models = [backends[name.split("_")[0]].load(str(paths[name])) for name in names]
    for name, model in zip(names, models, strict=True):
        backend = backends[name.split("_")[0]]
        if backend.accelerated_ops(model.placement) == 0:
            # Every node on the CPU provider: its time, under the provider's name.
            raise runner.RunnerError(
                "fallback",
                f"{backend.accelerator} took none of the nodes of {paths[name]}: they all ran "
                f"on {', '.join(model.placement['nodes'])}; time it "
                + ("with --openvino CPU" if backend.name == "openvino" else "without --provider"),
                status=3,
            )
    for model in models:
        for _ in range(WARMUP_RUNS):
            model.run()
    times, _ = runner.measure_interleaved(
        models, range(len(models)), RUNS_PER_ROUND * rounds, rounds, random.Random(0)
    )
    out = {}
    for i, name in enumerate(names):
        st = runner.stats(times[i])
        out[name] = {k: st[k] for k in ("median_ms", "p10_ms", "p90_ms", "n")}
        out[name]["placement"] = models[i].placement
    return out


def op_profile(backend: Any, path: Path) -> dict[str, Any]:
    """The runtime's per-op times of one file: ms per run per op type (largest first), as its
    graph runs after the runtime's optimizations (fused nodes count once)."""
    model = backend.load(str(path))
    profile = model.profile(PROFILE_WARMUP, PROFILE_RUNS)
    per_type: dict[str, float] = {}
    for op in profile["ops"]:
        per_type[op["op_type"]] = per_type.get(op["op_type"], 0.0) + op["ms"]
    return {
        "run_ms": round(profile["run_ms"], 3),
        "nodes": len(profile["ops"]),
        "ms_per_op_type": {
            k: round(v, 3) for k, v in sorted(per_type.items(), key=lambda kv: -kv[1])
        },
    }


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``folder/rows.json``, each file checked to exist."""
    if not folder.is_dir():
        raise Refused(f"{folder}: no such folder; give the --keep folder of benchmarks.export")
    try:
        data = json.loads((folder / ROWS_FILE).read_text())
    except FileNotFoundError:
        raise Refused(
            f"{folder}: no {ROWS_FILE}; write the folder with "
            f"'python -m benchmarks.export --speed --keep {folder}'"
        ) from None
    except (OSError, ValueError) as exc:
        raise Refused(f"{folder / ROWS_FILE}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != ROWS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise Refused(
            f"{folder / ROWS_FILE}: format {found!r} is not {ROWS_FORMAT!r}; "
            "rewrite it with the benchmarks/export.py of this copy"
        )
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise Refused(f"{folder / ROWS_FILE}: no list of rows")
    for row in rows:
        for name in row["files"].values():
            if not (folder / name).is_file():
                raise Refused(f"{folder / name}: listed in {ROWS_FILE} but missing")
    return rows


def time_row(
    runner: ModuleType,
    backends: Mapping[str, Any],
    skipped: Mapping[str, str],
    folder: Path,
    row: dict[str, Any],
    *,
    rounds: int,
    profile_ops: bool,
) -> dict[str, Any]:
    files = {name: folder / file for name, file in row["files"].items()}
    timed = {name: path for name, path in files.items() if name.split("_")[0] in backends}
    latency = measure_side_by_side(runner, backends, timed, rounds=rounds)
    # Per int8 file over its format's fp32: "onnx" for onnx_int8, and for a variant such as
    # onnx_int8_unaligned (benchmarks.export --unaligned) "onnx_unaligned".
    ratio = {
        name.replace("_int8", ""): round(
            entry["median_ms"] / latency[f"{fmt}_fp32"]["median_ms"], 3
        )
        for name, entry in latency.items()
        if (fmt := name.split("_")[0]) in FORMATS
        and name.startswith(f"{fmt}_int8")
        and f"{fmt}_fp32" in latency
    }
    out: dict[str, Any] = {
        **{k: row[k] for k in ("label", "space", "r", "macs", "subnet")},
        "latency": {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
            for name, entry in latency.items()
        },
        "int8_over_fp32": ratio,
        "skipped": {
            name: skipped[name.split("_")[0]] for name in files if name.split("_")[0] in skipped
        },
    }
    if profile_ops and "onnx" in backends:
        out["op_profile"] = {
            name: op_profile(backends["onnx"], path)
            for name, path in timed.items()
            if name.startswith("onnx_")
        }
    return out


def machine(runner: ModuleType, np_: ModuleType) -> dict[str, Any]:
    return {
        "cpu_model": runner.cpu_model(),
        "cpu_flags": cpu_flags(),
        "machine": platform.machine(),
        # Shared machines: a load near the core count widens the p10-p90 spread.
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np_.__version__,
    }


def run(
    runner: ModuleType,
    folder: Path,
    rows: list[dict[str, Any]],
    *,
    rounds: int,
    profile_ops: bool,
    providers: list[str] | None = None,
    provider_options: dict[str, str] | None = None,
    openvino: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``providers``: onnxruntime's execution providers for the ONNX files, in priority
    order (None: the CPU provider); ``provider_options`` are the first one's. ``openvino``
    ({"device": ..., "properties": {...}}, the runner's job section) runs the ONNX files on
    the OpenVINO Runtime instead of onnxruntime."""
    np_ = runner.import_numpy()
    job = {"threads": 1}
    onnx_job: dict[str, Any] = {}
    onnx_backend, onnx_runtime = runner.OnnxRuntimeBackend, "onnxruntime"
    if providers:
        onnx_job = {"providers": providers, "provider_options": {providers[0]: provider_options}}
    if openvino is not None:
        onnx_job = {"openvino": openvino}
        onnx_backend, onnx_runtime = runner.OpenVinoBackend, "openvino"
    backends: dict[str, Any] = {}
    runtimes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for fmt, cls, runtime in (
        ("onnx", onnx_backend, onnx_runtime),
        ("tflite", runner.TfliteBackend, "tflite"),
    ):
        try:
            extra = onnx_job if fmt == "onnx" else {}
            backends[fmt] = cls(np_, runner.Job({**job, "runtime": runtime, **extra}))
            version = backends[fmt].version
            runtimes[fmt] = f"openvino {version}" if runtime == "openvino" else version
        except runner.RunnerError as exc:
            if exc.status != 3 or (fmt == "onnx" and onnx_job):
                raise  # a runtime or provider asked for and missing is an error, not a skip
            what = "LiteRT" if fmt == "tflite" else "onnxruntime"
            skipped[fmt] = runtimes[fmt] = f"skipped: no {what} ({exc.message})"
            log(f"{fmt} files {skipped[fmt]}")
    try:
        results = []
        for i, row in enumerate(rows):
            log(f"[{i + 1}/{len(rows)}] {row['label']} ({row['space']} r{row['r']})")
            result = time_row(
                runner, backends, skipped, folder, row, rounds=rounds, profile_ops=profile_ops
            )
            log(
                "  ms: "
                + ", ".join(f"{k} {v['median_ms']:.3f}" for k, v in result["latency"].items())
                + "; int8/fp32: "
                + ", ".join(f"{k} {v:.2f}" for k, v in result["int8_over_fp32"].items())
            )
            results.append(result)
    finally:
        for backend in backends.values():
            backend.close()
    return {
        "benchmark": "int8-timing",
        "folder": str(folder),
        "machine": machine(runner, np_),
        "runtimes": runtimes,
        "onnx_providers": ([] if openvino is not None else providers or ["CPUExecutionProvider"]),
        "onnx_openvino": openvino,
        "threads": 1,
        "x86_amx": runner.x86_amx_state(),
        "rounds": rounds,
        "runs_per_file": rounds * RUNS_PER_ROUND,
        "rows": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/int8_timing.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folder", type=Path, help="the --keep folder of benchmarks.export --speed")
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help=f"interleaved rounds; each runs every file {RUNS_PER_ROUND} times (default 10)",
    )
    parser.add_argument(
        "--op-profile",
        action="store_true",
        help="ms per run per op type of each ONNX file (onnxruntime's profiler, or OpenVINO's "
        "performance counters with --openvino)",
    )
    parser.add_argument(
        "--provider",
        action="append",
        metavar="NAME",
        help="onnxruntime execution provider for the ONNX files, by its full name "
        "(repeatable, in priority order; default CPUExecutionProvider), e.g. "
        "OpenVINOExecutionProvider under onnxruntime-openvino",
    )
    parser.add_argument(
        "--provider-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the first --provider (repeatable), e.g. num_of_threads=1",
    )
    parser.add_argument(
        "--openvino",
        metavar="DEVICE",
        help="time the ONNX files on the OpenVINO Runtime (the openvino package) on DEVICE, "
        "e.g. CPU, instead of onnxruntime",
    )
    parser.add_argument(
        "--refuse-amx",
        action="store_true",
        help="refuse this process Intel AMX's tiles before any runtime loads (x86-64 Linux), "
        "as a device profile's x86_amx: false does",
    )
    parser.add_argument(
        "--openvino-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an OpenVINO compile property over the runner's (repeatable), e.g. "
        "INFERENCE_PRECISION_HINT=bf16",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more (10 makes 50 runs per file)")
    bad = [text for text in args.provider or [] if not text.endswith("ExecutionProvider")]
    if bad:
        parser.error(f"--provider {bad[0]}: give onnxruntime's full name (...ExecutionProvider)")
    if args.provider_option and not args.provider:
        parser.error("--provider-option is for the first --provider: give one")
    if args.openvino is not None and args.provider:
        parser.error("--provider is onnxruntime's: leave it out with --openvino")
    if args.openvino_property and args.openvino is None:
        parser.error("--openvino-property is for --openvino: give one")
    options = _key_values(parser, "--provider-option", args.provider_option)
    openvino = None
    if args.openvino is not None:
        properties = _key_values(parser, "--openvino-property", args.openvino_property)
        openvino = {"device": args.openvino, "properties": properties}
    try:
        rows = read_rows(args.folder)
        runner = load_runner()
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.refuse_amx:
        try:
            runner.refuse_x86_amx(fix="leave out --refuse-amx")  # before any runtime loads
        except runner.RunnerError as exc:
            print(f"error: --refuse-amx: {exc.message}", file=sys.stderr)
            sys.exit(exc.status)
    if args.op_profile and openvino is not None and not runner.openvino_per_op(args.openvino):
        parser.error(
            f"--op-profile with --openvino {args.openvino}: per-op times are read on "
            "OpenVINO's CPU device only (--openvino CPU)"
        )
    try:
        result = run(
            runner,
            args.folder,
            rows,
            rounds=args.rounds,
            profile_ops=args.op_profile,
            providers=args.provider,
            provider_options=options,
            openvino=openvino,
        )
    except runner.RunnerError as exc:  # a model that does not load, numpy or onnxruntime missing
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.status)
    print(json.dumps(result, indent=1))


def _key_values(parser: argparse.ArgumentParser, flag: str, texts: list[str]) -> dict[str, str]:
    out = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not (sep and key):
            parser.error(f"{flag} {text}: give KEY=VALUE")
        out[key] = value
    return out


if __name__ == "__main__":
    # Run as a file, this folder comes first on sys.path, where latency.py, devices.py and
    # export.py would stand in for packages of those names.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    main()
