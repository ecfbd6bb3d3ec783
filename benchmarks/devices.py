"""Device benchmarks: how fast and how repeatable the targets measure.

    python benchmarks/devices.py                  # every part
    python benchmarks/devices.py --part npu-sim

``npu-sim``: layers per second of the simulated NPU's cycle model (target >= 10,000) on the
layers of OFA's largest MobileNetV3 (mbv3-imagenet, 224 px) exported to ONNX: one model's
layer list per call, as ``NpuSimDevice.measure`` simulates each model, and the same layers
in one large call; also the time to read the layer list from the ONNX file.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, this file's folder leads sys.path, and this file would shadow the devices
# package.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from devices.npu_sim import DATAFLOWS, Layer, NpuConfig, layers_from_onnx, simulate  # noqa: E402

NPU_LAYERS_PER_S_TARGET = 10_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _best_of(fn: Callable[[], object], *, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mobilenet_v3_onnx(folder: Path) -> Path:
    """OFA's largest mbv3-imagenet subnet at 224 px as ONNX (random weights)."""
    import torch

    from once_for_all import OFAMobileNetV3, build_from_config, get_space

    torch.set_num_threads(1)
    space = get_space("mbv3-imagenet")
    supernet = OFAMobileNetV3(space)
    model = build_from_config(supernet.subnet_config(space.max_subnet())).eval()
    path = folder / "mbv3_max_224.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(*model.input_shape),), str(path), dynamo=False)
    return path


def bench_npu_sim(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log("npu-sim: exporting MobileNetV3 (mbv3-imagenet max, 224 px) to ONNX ...")
        model = mobilenet_v3_onnx(Path(tmp))
        parse_s = _best_of(lambda: layers_from_onnx(model), repeats=5)
        layers = layers_from_onnx(model)
    depthwise = sum(x.depthwise for x in layers)
    per_dataflow: dict[str, Any] = {}
    for dataflow in DATAFLOWS:
        config = NpuConfig(rows=32, cols=32, dataflow=dataflow, dram_bandwidth=10)
        log(f"npu-sim: timing the {dataflow} cycle model ...")
        models = args.npu_models

        def per_model(config: NpuConfig = config, models: int = models) -> None:
            for _ in range(models):
                simulate(layers, config)

        batch: Sequence[Layer] = layers * models

        def batched(config: NpuConfig = config, batch: Sequence[Layer] = batch) -> None:
            simulate(batch, config)

        per_model_s = _best_of(per_model, repeats=args.repeats)
        batched_s = _best_of(batched, repeats=args.repeats)
        per_dataflow[dataflow] = {
            "layers_per_s_per_model_call": round(len(layers) * models / per_model_s),
            "layers_per_s_one_call": round(len(batch) / batched_s),
            "model_latency_ms": round(simulate(layers, config).latency_ms, 4),
        }
    headline = min(v["layers_per_s_per_model_call"] for v in per_dataflow.values())
    return {
        "npu_sim_layers_per_s": headline,
        "npu_sim_layers_per_s_target": NPU_LAYERS_PER_S_TARGET,
        "npu_sim_meets_target": headline >= NPU_LAYERS_PER_S_TARGET,
        "npu_sim_model": "OFA mbv3-imagenet max subnet, 224 px, ONNX (TorchScript exporter)",
        "npu_sim_model_layers": len(layers),
        "npu_sim_model_depthwise_layers": depthwise,
        "npu_sim_models_simulated_per_call_timing": args.npu_models,
        "npu_sim_onnx_layers_ms": round(parse_s * 1000, 2),
        "npu_sim_array": "32x32, 64/64/64 kB SRAM, 10 B/cycle DRAM",
        "npu_sim_by_dataflow": per_dataflow,
    }


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "npu-sim": bench_npu_sim,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per figure")
    parser.add_argument(
        "--npu-models", type=int, default=200, help="model layer lists simulated per timing"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "environment": {
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        }
    }
    for name, bench in PARTS.items():
        if args.part in (name, "all"):
            result.update(bench(args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
