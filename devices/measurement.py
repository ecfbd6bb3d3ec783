"""What a device reports: timing statistics per model, and who measured them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

MEASUREMENT_FORMAT = "edgenas.measurement/1"
# Fingerprint fields that are left out of its dict when empty.
_UNSET_LEFT_OUT = ("accelerator", "machine", "x86_amx")

MeasuredWith = tuple[tuple[str, str], ...]
"""The settings that change what a device's latency means besides its ``Fingerprint``
(pinned cores, warmup, a delegate's or providers' options), as sorted (setting, value text)
pairs named as the device profile names them; a setting left unset is left out."""


@dataclass(frozen=True)
class Fingerprint:
    """Identifies the thing that produced a measurement; lookup tables are refused on another."""

    host: str
    cpu_model: str
    cores: int
    governor: str  # "performance", "ondemand", ... or "unknown"; "n/a" for simulators
    runtime: str  # "onnxruntime", "tflite", "openvino", "tensorrt", "npu-sim", "vela", ...
    runtime_version: str
    threads: int
    # The delegate (tflite) or execution providers (onnxruntime) the runner was asked for
    # when they are not the runtime's default ("none", "CUDAExecutionProvider,..."); "" for
    # the default, and then left out of the dict, so that older files read and compare alike.
    accelerator: str = ""
    # The runner's platform.machine() ("x86_64", "aarch64", ...): which kernels the runtime's
    # CPU code picks. "" where no runner reports it (simulators, benchmark_model, older
    # files), and then left out of the dict like an empty accelerator.
    machine: str = ""
    # Intel AMX, where the CPU and kernel offer it: "available" to the runtime, or "refused"
    # (the profile's x86_amx: false); "" without AMX, for other runners and in older files.
    # Not part of same_target: the refusal is in the table's measured_with.
    x86_amx: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in _UNSET_LEFT_OUT:
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k not in _UNSET_LEFT_OUT}
        values.update({k: str(data.get(k) or "") for k in _UNSET_LEFT_OUT})
        return cls(**values)

    def same_target(self, other: Fingerprint) -> bool:
        """Same machine and runtime setup (the version may differ only if the caller allows)."""
        return (
            self.host,
            self.cpu_model,
            self.cores,
            self.runtime,
            self.threads,
            self.accelerator,
        ) == (
            other.host,
            other.cpu_model,
            other.cores,
            other.runtime,
            other.threads,
            other.accelerator,
        )


@dataclass(frozen=True)
class OperatorTime:
    """One operator of a profiled run: ``ms`` per inference (mean over the profiled runs).

    ``op_type`` is the runtime's name for it (onnxruntime's op type, TFLite's or XNNPACK's
    node type); "" where the runtime names none (TensorRT's layers fuse several ONNX nodes:
    their names say which). ``where`` is what ran it (an execution provider, a delegate,
    "cpu" for TFLite's builtin kernels, "gpu", "npu"); "" where unknown.
    """

    name: str
    op_type: str
    ms: float
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatorTime:
        return cls(
            name=str(data["name"]),
            op_type=str(data.get("op_type") or ""),
            ms=float(data["ms"]),
            where=str(data.get("where") or ""),
        )


# The statistics every measurement has, in ms.
_TIMES = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "min_ms")


@dataclass(frozen=True)
class Measurement:
    """Latency of one model in milliseconds over ``n`` timed runs (after warmup).

    ``flagged`` marks a measurement whose spread stayed above the threshold after a repeat;
    simulators report ``n=1`` and zero spread. ``placement`` (the on-device runner's) says
    where the runtime ran the model's nodes: for onnxruntime ``{"providers": [requested],
    "nodes": {provider: count}, "fallback": {op type: count}}``, for TFLite ``{"delegate":
    "xnnpack", "delegated_nodes": n, "cpu_nodes": m, "partitions": k, "fallback": {op: count}}``,
    for OpenVINO ``{"device": "CPU", "inference_precision": "f32", "nodes": {device: kernels},
    "kernel_precisions": {"u8": n, "f32": m}, "fallback": {}}`` (kernels by the precision they
    compute in); ``fallback`` counts the nodes not run by the requested provider or delegate.

    ``init_ms`` (loading the model and applying delegates: benchmark_model's Init, the
    runner's session or interpreter creation, trtexec's engine build) and
    ``first_inference_ms`` (the first run after it; onnxruntime's is profiled, to learn the
    placement) are known where the target reports them; ``None`` otherwise, and then left out
    of the dict so that older files read and compare alike.

    ``ops`` (asked for with ``profile_ops``) lists the operators in the order they ran, each
    with its type, ms per inference and where it ran; ``None`` when not profiled (and then
    left out of the dict). Files written before ``ops`` hold ``per_op_ms`` (name -> ms); they
    read as ops of unknown type.
    """

    model: str
    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    n: int
    flagged: bool = False
    peak_memory_bytes: int | None = None
    ops: tuple[OperatorTime, ...] | None = None
    placement: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # simulator figures: cycles, utilisation...
    init_ms: float | None = None
    first_inference_ms: float | None = None

    @property
    def per_op_ms(self) -> dict[str, float] | None:
        """ms per inference by operator name (operators of one name added up)."""
        if self.ops is None:
            return None
        out: dict[str, float] = {}
        for op in self.ops:
            out[op.name] = out.get(op.name, 0.0) + op.ms
        return out

    @property
    def spread(self) -> float:
        """Robust relative spread: (p90 - p10) / median."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {"format": MEASUREMENT_FORMAT, **asdict(self)}
        out["ops"] = [op.to_dict() for op in self.ops] if self.ops is not None else None
        for key in _OPTIONAL:
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        if data.get("format", MEASUREMENT_FORMAT) != MEASUREMENT_FORMAT:
            raise ValueError(
                f"not a measurement: format {data.get('format')!r}, expected {MEASUREMENT_FORMAT!r}"
            )
        required = (
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        )
        if (missing := next((k for k in required if k not in data), None)) is not None:
            raise KeyError(missing)  # not __init__'s TypeError, which reads as Python's words
        for key in _TIMES:  # an edited file failed later, in a sum or a fit, as Python's words
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} is {value!r}, not a number")
            if not 0 <= value < math.inf:
                raise ValueError(f"{key} is {value!r}: a time is a finite number, 0 or more")
        if isinstance(data["n"], bool) or not isinstance(data["n"], int) or data["n"] < 1:
            raise ValueError(f"n is {data['n']!r}, not a count of runs")
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "ops"}
        ops = data.get("ops")
        if ops is not None:
            values["ops"] = tuple(OperatorTime.from_dict(op) for op in ops)
        elif data.get("per_op_ms") is not None:  # written before ops had types
            values["ops"] = tuple(
                OperatorTime(str(name), "", float(ms)) for name, ms in data["per_op_ms"].items()
            )
        return cls(**values)

    @classmethod
    def from_times(cls, model: str, times_ms: Sequence[float], **kwargs: Any) -> Measurement:
        """Statistics of raw per-run times."""
        if not times_ms:
            raise ValueError(f"no timed runs for {model}")
        ordered = sorted(times_ms)
        return cls(
            model=model,
            median_ms=statistics.median(ordered),
            mean_ms=statistics.fmean(ordered),
            std_ms=statistics.pstdev(ordered),
            p10_ms=_quantile(ordered, 0.10),
            p90_ms=_quantile(ordered, 0.90),
            min_ms=ordered[0],
            n=len(ordered),
            **kwargs,
        )


_OPTIONAL = ("init_ms", "first_inference_ms", "ops")  # left out of dicts when unknown


def placement_summary(placement: Mapping[str, Any]) -> str:
    """One line for a Measurement's ``placement``: "xnnpack 2 ops in 2 partitions, builtin
    kernels 1 (fell back: ZEROS_LIKE 1)" or "CUDAExecutionProvider 118, CPUExecutionProvider 4
    nodes (fell back: Shape 4)"."""
    fallback = placement.get("fallback") or {}
    fell = (
        " (fell back: {})".format(", ".join(f"{op} {n}" for op, n in sorted(fallback.items())))
        if fallback
        else ""
    )
    if "delegate" in placement:
        if placement["delegate"] == "none":
            return f"no delegate: builtin kernels {placement['cpu_nodes']} ops"
        return (
            f"{placement['delegate']} {placement['delegated_nodes']} ops in "
            f"{placement['partitions']} partitions, builtin kernels {placement['cpu_nodes']}{fell}"
        )
    if "kernel_precisions" in placement:
        return _openvino_summary(placement)
    nodes = placement.get("nodes") or {}
    counts = ", ".join(f"{provider} {n}" for provider, n in nodes.items())
    return f"{counts} nodes{fell}" if counts else "no nodes"


def _openvino_summary(placement: Mapping[str, Any]) -> str:
    """ "OpenVINO CPU 113 kernels (u8 108, f32 5), inference precision f32"."""
    text = f"OpenVINO {placement['device']}"
    kernels = placement.get("kernel_precisions")
    if kernels:
        by = ", ".join(
            f"{where} {n}" for where, n in sorted(kernels.items(), key=lambda kv: -kv[1])
        )
        text += f" {sum(kernels.values())} kernels ({by})"
    if placement.get("inference_precision"):
        text += f", inference precision {placement['inference_precision']}"
    return text


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
