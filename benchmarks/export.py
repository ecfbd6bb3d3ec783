"""Export benchmark: how long each format and precision takes, how faithful the files are,
and how their latency on this machine compares with the prediction.

    python -m benchmarks.export                                    # runs/fmnist, max and min
    python -m benchmarks.export --supernet runs/fmnist/supernet.pt --subnet runs/search/pareto.json

For each subnet: ONNX and TFLite, fp32 and int8 (calibrated on 256 training images), each
checked in its runtime: fp32 max |difference| to PyTorch on 32 validation images, int8 top-1
agreement with fp32 and accuracy drop on the whole test split (target agreement >= 98%);
--qat-epochs N fine-tunes with int8-simulated activations first (as edgenas export does).
The files are then measured on --device (default local-cpu: onnxruntime, fp32 and int8 ONNX)
and compared with the device's latency predictor under --profiles, when there is one.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgenas.stages.export import ExportJob, FinetuneSettings, run_export
from export.formats import INT8_AGREEMENT_TARGET
from export.subnet_export import ExportOptions


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_subnet(args: argparse.Namespace, subnet: str, out: Path) -> dict[str, Any]:
    job = ExportJob(
        supernet=args.supernet,
        subnet=subnet,
        out=out,
        options=ExportOptions(int8=True, calibration_images=args.calibration_images),
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


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--supernet", type=Path, default=Path("runs/fmnist/supernet.pt"))
    parser.add_argument(
        "--subnet", action="append", help="as for edgenas export (default: max and min)"
    )
    parser.add_argument("--device", action="append", help="device profile (default local-cpu)")
    parser.add_argument("--profiles", type=Path, default=Path("runs/profiles"))
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument(
        "--qat-epochs", type=int, default=0, help="quantization-aware fine-tuning before export"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    args.device = args.device or ["local-cpu"]
    import torch

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgenas-bench-export-") as work:
        for i, subnet in enumerate(args.subnet or ["max", "min"]):
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
                "target_int8_agreement": INT8_AGREEMENT_TARGET,
                "subnets": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
