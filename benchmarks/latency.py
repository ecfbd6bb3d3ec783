"""Latency predictor benchmark: how long profiling takes and how good the predictors are.

    python benchmarks/latency.py                          # both devices, both spaces
    python benchmarks/latency.py --device local --space mbv3-tiny

For each device (this host's CPU, and the same CPU over SSH through a throwaway sshd on
127.0.0.1 with the "device" Python) with onnxruntime fp32, and each space (mbv3-tiny at every
resolution with 100 validation subnets; mbv3-imagenet at 224 px with 50): the wall time to
build the table and the calibrated predictor (40 calibration subnets) from an empty model
cache, and the validation figures of lut-sum and calibrated on held-out subnets measured
end to end. Targets for the calibrated predictor: within ±10% >= 95% and Spearman >= 0.95;
the whole mbv3-tiny profile in <= 10 minutes.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.insert(0, str(_here.parent))  # for benchmarks._sshd

from benchmarks._sshd import sshd_missing, start_sshd  # noqa: E402
from devices import Device, create_device, open_device  # noqa: E402
from devices.profiles import validate_profile  # noqa: E402
from latency import (  # noqa: E402
    LutSumPredictor,
    MeasuredSubnets,
    ModelCache,
    calibrate,
    enumerate_blocks,
    profile_blocks,
    random_subnets,
    settings_for,
    validation_figures,
)
from once_for_all import get_space  # noqa: E402

TARGET_WITHIN_10PCT = 0.95
TARGET_SPEARMAN = 0.95
TARGET_TINY_PROFILE_S = 600.0
CASES = {"mbv3-tiny": (None, 100), "mbv3-imagenet": ((224,), 50)}
MEASURE: dict[str, Any] = {"threads": 1, "warmup": 10, "runs": 50}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def device_python() -> str:
    default = _here.parent / ".venv-device" / "bin" / "python"
    return str(default) if default.exists() else sys.executable


@contextlib.contextmanager
def open_target(kind: str, folder: Path) -> Iterator[Device]:
    if kind == "local":
        profile = validate_profile(
            {"name": "bench-local", "kind": "local", "runtime": "onnxruntime", **MEASURE}
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
            runtime="onnxruntime",
            **MEASURE,
        )
        with open_device(path) as device:
            yield device
    finally:
        server.stop()


def bench_case(device: Device, space_name: str, folder: Path, calibrate_n: int) -> dict[str, Any]:
    space = get_space(space_name)
    resolutions, n_val = CASES[space_name]
    cache = ModelCache(folder / "cache")  # empty: the time includes every export
    out = folder / f"{device.name}-{space_name}"
    started = time.perf_counter()
    table = profile_blocks(device, space, out / "lut.json", cache=cache, resolutions=resolutions)
    table_s = time.perf_counter() - started
    base = LutSumPredictor.from_table(space, table)
    settings = settings_for(device.fingerprint(), device.name)
    train = random_subnets(space, calibrate_n, seed=0, resolutions=resolutions, extremes=True)
    measured_train = MeasuredSubnets(out / "calibration.json", table.header).measure(
        device, space, train, cache=cache, settings=settings
    )
    predictor = calibrate(base, train, measured_train)
    total_s = time.perf_counter() - started
    log(f"  {device.name} {space_name}: table {table_s:.0f} s, with calibration {total_s:.0f} s")
    held_out = random_subnets(space, n_val, seed=1, resolutions=resolutions, exclude=train)
    measured = MeasuredSubnets(out / "validation.json", table.header).measure(
        device, space, held_out, cache=cache, settings=settings
    )
    lut = validation_figures(base.predict_many(held_out), measured)
    cal = validation_figures(predictor.predict_many(held_out), measured)
    return {
        "blocks": len(enumerate_blocks(space, resolutions=resolutions)),
        "resolutions": list(resolutions or space.resolutions),
        "profile_s": round(total_s, 1),
        "table_s": round(table_s, 1),
        "calibration_subnets": calibrate_n,
        "calibration_model": predictor.model.name,
        "lut_sum": lut,
        "calibrated": cal,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("local", "ssh"), action="append")
    parser.add_argument("--space", choices=tuple(CASES), action="append")
    parser.add_argument("--calibrate", type=int, default=40)
    args = parser.parse_args()
    devices = args.device or ["local", "ssh"]
    spaces = args.space or list(CASES)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "settings": {"runtime": "onnxruntime", "precision": "fp32", **MEASURE},
        "targets": {
            "within_10pct": TARGET_WITHIN_10PCT,
            "spearman": TARGET_SPEARMAN,
            "tiny_profile_s": TARGET_TINY_PROFILE_S,
        },
    }
    with tempfile.TemporaryDirectory(prefix="edgenas-bench-latency-") as tmp:
        for kind in devices:
            if kind == "ssh" and (reason := sshd_missing()):
                result[kind] = {"skipped": reason}
                continue
            folder = Path(tmp) / kind
            folder.mkdir()
            with open_target(kind, folder) as device:
                fp = device.fingerprint()
                entry: dict[str, Any] = {"fingerprint": fp.to_dict()}
                for space_name in spaces:
                    log(f"{kind}: profiling {space_name} ...")
                    entry[space_name] = bench_case(device, space_name, folder, args.calibrate)
                result[kind] = entry
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
