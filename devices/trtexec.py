"""NVIDIA's ``trtexec``: what its log and exported JSON files say, and the Measurement of them.

The on-device runner (``devices/runner.py``, ``trtexec_args``) runs ``trtexec --onnx=MODEL
[--fp16|--int8] --warmUp=MS --iterations=N --duration=0 --avgRuns=1 --exportTimes=T
[--separateProfileRun --dumpProfile --exportProfile=P]`` on the board and sends back its log
and files as they are. edgenas computes its own statistics from the raw per-query times of
the ``--exportTimes`` file (one object per timed query, warmup excluded: ``startEnqMs``,
``endEnqMs``, ``startH2dMs``, ..., ``h2dMs``, ``computeMs``, ``d2hMs``, ``latencyMs``; the
names TensorRT's samples/common/sampleReporting.cpp writes). Per-layer times come from the
``--exportProfile`` file (``[{"count": N}, {"name", "timeMs", "averageMs", ["medianMs"],
"percentage"}, ...]``), the engine build time and the TensorRT version from the log.

``--warmUp`` is in milliseconds (trtexec has no warmup-run count); ``--duration=0`` makes
``--iterations`` the exact number of timed queries. ``--separateProfileRun`` keeps the layer
profiler out of the timed runs (TensorRT 11 always does this and ignores the flag).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from devices.base import DeviceError
from devices.measurement import Measurement, OperatorTime
from devices.runner import iqr_ratio

Precision = Literal["fp32", "fp16", "int8"]
# JetPack installs trtexec here (package libnvinfer-bin), not on PATH.
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"

_LOG_PREFIX = re.compile(r"^\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] \[([VIWEF])\] ")
_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_BUILT = re.compile(rf"^Engine built in ({_NUMBER}) sec\.")
_DESERIALIZED = re.compile(rf"^Engine deserialized in ({_NUMBER}) sec\.")
_VERSION = re.compile(r"^TensorRT version: (\S+)")
_DEVICE = re.compile(r"^Selected Device: (.+)$")
_FAILED = re.compile(r"^&&&& FAILED TensorRT\.trtexec")
# Lines trtexec prints after the ONNX parser's own errors; they say nothing about the cause.
_GENERIC = (
    "Failed to parse onnx file",
    "Parsing model failed",
    "Failed to create engine from model or file.",
    "Engine set up failed",
)


@dataclass(frozen=True)
class LayerTime:
    """One layer of the ``--exportProfile`` file; times in ms over ``count`` profiled runs."""

    name: str
    time_ms: float  # total over the profiled runs
    average_ms: float
    percentage: float


@dataclass(frozen=True)
class TrtexecLog:
    """What trtexec's log says; ``None`` for what it did not print."""

    version: str | None = None
    device: str | None = None
    build_s: float | None = None  # "Engine built in X sec." (parse + build + serialize)
    deserialize_s: float | None = None
    passed: bool = False
    errors: list[str] = field(default_factory=list)  # [E] lines and their continuations


def parse_times(text: str) -> list[float]:
    """The per-query latencies (``latencyMs``, ms) of an ``--exportTimes`` file, in order.

    ``latencyMs`` is h2d + compute + d2h of one query, what trtexec's own "Latency" line
    summarises; ``computeMs`` alone is the GPU compute time."""
    return [float(entry["latencyMs"]) for entry in _entries(text, "exportTimes")]


def parse_compute_times(text: str) -> list[float]:
    """The per-query GPU compute times (``computeMs``, ms) of an ``--exportTimes`` file."""
    return [float(entry["computeMs"]) for entry in _entries(text, "exportTimes")]


def parse_profile(text: str) -> tuple[int, list[LayerTime]]:
    """(profiled runs, layers) of an ``--exportProfile`` file, in execution order."""
    entries = _entries(text, "exportProfile")
    if not entries or "count" not in entries[0]:
        raise ValueError('trtexec profile: the first entry must be {"count": N}')
    layers = [
        LayerTime(
            name=str(e["name"]),
            time_ms=float(e["timeMs"]),
            average_ms=float(e["averageMs"]),
            percentage=float(e["percentage"]),
        )
        for e in entries[1:]
    ]
    return int(entries[0]["count"]), layers


def parse_log(text: str) -> TrtexecLog:
    """The figures and errors in trtexec's log (stdout and stderr together)."""
    found: dict[str, Any] = {}
    errors: list[str] = []
    in_error = False
    passed = False
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        prefix = _LOG_PREFIX.match(line)
        if prefix is None:
            if line.startswith("&&&& PASSED TensorRT.trtexec"):
                passed = True
            elif _FAILED.match(line):
                in_error = False
            elif in_error and line.strip():
                errors[-1] += " " + line.strip()  # a message that runs over several lines
            continue
        body = line[prefix.end() :]
        in_error = prefix[1] in "EF"
        if in_error:
            errors.append(body.strip())
        elif match := _BUILT.match(body):
            found["build_s"] = float(match[1])
        elif match := _DESERIALIZED.match(body):
            found["deserialize_s"] = float(match[1])
        elif match := _VERSION.match(body):
            found["version"] = match[1]
        elif match := _DEVICE.match(body):
            found["device"] = match[1].strip()
    return TrtexecLog(**found, passed=passed, errors=errors)


def failure_reason(log: TrtexecLog) -> str | None:
    """The error that says why trtexec failed: the ONNX parser's or builder's own ``ERROR``
    line rather than trtexec's generic "Failed to parse onnx file"; ``None`` without errors."""
    if not log.errors:
        return None
    specific = [e for e in log.errors if not e.startswith(_GENERIC) and "--- " not in e]
    pointed = [e for e in specific if "ERROR" in e or "Assertion failed" in e]
    reason = (pointed or specific or log.errors)[-1]
    return re.sub(r"^\[TRT\] ", "", reason)


def rejected_model(log: TrtexecLog) -> bool:
    """Whether the ONNX parser or the builder rejected the model (rather than trtexec failing
    for another reason: no GPU, a bad flag)."""
    return any(
        e.startswith(("Failed to parse onnx file", "Parsing model failed"))
        or "ModelImporter" in e
        or "Engine could not be created" in e
        for e in log.errors
    )


def layer_ops(layers: Sequence[LayerTime]) -> tuple[OperatorTime, ...]:
    """The profiled layers as operators, in execution order: mean ms per inference, run on
    the GPU (no DLA is asked for). TensorRT names no op type: a layer fuses ONNX nodes
    (``/conv/Conv + /act/HardSwish``), and its name says which."""
    return tuple(OperatorTime(layer.name, "", layer.average_ms, "gpu") for layer in layers)


def to_measurement(
    device: str,
    label: str,
    *,
    status: int,
    log: str,
    times: str | None,
    profile: str | None = None,
    precision: str = "fp16",
    spread_threshold: float = 0.1,
    warnings: Sequence[str] = (),
) -> Measurement:
    """The Measurement of one trtexec run (exit status, log, the exported files' text), with
    edgenas's own statistics of the per-query latencies; a failed run is a one-line
    ``DeviceError`` that names the cause and the fix."""
    parsed = parse_log(log)
    if status != 0 or not times:
        raise DeviceError(f"device {device!r}: {_failure(label, status, parsed)}")
    try:
        latencies = parse_times(times)
        computes = parse_compute_times(times)
        layers = parse_profile(profile)[1] if profile else None
    except (KeyError, TypeError, ValueError) as exc:
        raise DeviceError(
            f"device {device!r}: trtexec's exported files for {label} are malformed ({exc}); "
            "is trtexec from TensorRT 8.6 or newer?"
        ) from None
    if not latencies:
        raise DeviceError(f"device {device!r}: trtexec timed no queries for {label}")
    extra: dict[str, Any] = {
        "runtime": "trtexec",
        "statistics": "edgenas's, of trtexec's per-query latencyMs (--exportTimes)",
        "compute_median_ms": statistics.median(computes) if computes else None,
        "precision": precision,
    }
    if parsed.version:
        extra["tensorrt_version"] = parsed.version
    if parsed.device:
        extra["gpu"] = parsed.device
    if precision == "int8":
        extra["int8_scales"] = "random calibration (no cache): valid for latency only"
    if warnings:
        extra["warnings"] = list(warnings)
    measured = Measurement.from_times(
        label,
        latencies,
        ops=layer_ops(layers) if layers else None,
        extra=extra,
        init_ms=parsed.build_s * 1e3 if parsed.build_s is not None else None,
    )
    # spread_threshold is IQR over median, as the runner flags its measurements
    return replace(measured, flagged=iqr_ratio(latencies) > spread_threshold)


def _failure(label: str, status: int, log: TrtexecLog) -> str:
    reason = failure_reason(log)
    if rejected_model(log):
        return (
            f"TensorRT rejects {label}: {reason}; export it with another opset or simplify it "
            "(onnxsim), or measure it with runtime onnxruntime"
        )
    if status in (126, 127):
        return f"trtexec cannot run (exit status {status}); check tensorrt.trtexec in the profile"
    detail = reason or (log.errors[-1] if log.errors else "no error in its log")
    return f"trtexec failed on {label} (exit status {status}): {detail}"


def _entries(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"trtexec {what} file is not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ValueError(f"trtexec {what} file must be a list of objects")
    return data
