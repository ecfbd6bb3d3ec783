"""The host's side of the on-device runner: build its job, read its results, explain its errors.

Every backend that runs ``runner.py`` (local subprocess, SSH) goes through these functions, so
that a job means the same thing and results are read the same way on every target.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from devices.base import DeviceError, Runtime
from devices.measurement import Fingerprint, MeasuredWith, Measurement, OperatorTime
from devices.runner import (
    MIN_PYTHON,
    PYTHON_KEYS,
    openvino_defaults,
    openvino_per_op,
    openvino_value,
)
from devices.trtexec import JETPACK_TRTEXEC, Precision, to_measurement

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

JOB_FORMAT = "edgenas.runner-job/1"
RESULTS_FORMAT = "edgenas.runner-results/1"
RUNNER_PATH = Path(__file__).with_name("runner.py")
"""The runner file to copy to a target and run there with the target's Python."""


class RunnerJob(TypedDict):
    """What ``runner.py`` is asked to do (it reads this JSON on its stdin or from a file)."""

    format: str
    runtime: Runtime
    threads: int
    warmup: int
    runs: int
    profile_ops: bool
    spread_threshold: float
    cores: list[int] | None
    seed: int
    # false: the runner refuses itself Intel AMX's tiles before the runtime loads; absent: true.
    x86_amx: NotRequired[bool]
    models: list[str]  # model paths as the target sees them; none: a fingerprint only
    # tflite: "xnnpack" | "none" | "external:PATH" (+ its options); absent: XNNPACK.
    delegate: NotRequired[str]
    delegate_options: NotRequired[dict[str, str]]
    # onnxruntime: execution provider names in priority order; absent: CPUExecutionProvider.
    providers: NotRequired[list[str]]
    provider_options: NotRequired[dict[str, dict[str, str]]]
    # tensorrt: {"path": trtexec on the target, "precision": ..., "warmup_ms": ..., and for
    # classify "engines": a folder that keeps the engines it builds for the next jobs}.
    trtexec: NotRequired[dict[str, Any]]
    # openvino: {"device": "CPU" | "GPU" | ..., "properties": {KEY: value text}}.
    openvino: NotRequired[dict[str, Any]]
    # A .npy file of float NCHW images on the target: the models classify them, untimed.
    classify: NotRequired[str]


Options = tuple[tuple[str, str], ...]
"""Options of a delegate or provider as (key, value text) pairs: hashable in settings."""


@dataclass(frozen=True)
class RunSettings:
    """How a target measures: the profile's values, or a call's overrides of them."""

    runtime: Runtime = "onnxruntime"
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    spread_threshold: float = 0.1
    cores: tuple[int, ...] | None = None
    # False: refuse the runtime Intel AMX's tiles (x86-64 Linux), so that its int8 kernels are
    # the AVX512-VNNI ones; on some CPUs they beat the AMX ones for a mobile model's layers.
    x86_amx: bool = True
    seed: int = 0  # of the interleaving order and the random inputs
    # Where the runtime runs the model; each applies to its runtime only (see RunnerJob).
    delegate: str | None = None
    delegate_options: Options = ()
    providers: tuple[str, ...] | None = None
    provider_options: tuple[tuple[str, Options], ...] = ()
    # runtime tensorrt: trtexec on the target, the engine's precision, warmup in ms.
    trtexec: str = JETPACK_TRTEXEC
    precision: Precision = "fp16"
    warmup_ms: int = 500
    # runtime openvino: OpenVINO's device and the compile properties given over the runner's.
    openvino_device: str = "CPU"
    openvino_properties: Options = ()

    def override(
        self,
        *,
        runtime: Runtime | None = None,
        threads: int | None = None,
        warmup: int | None = None,
        runs: int | None = None,
    ) -> RunSettings:
        """These settings with a ``measure`` call's arguments; ``None`` keeps a value."""
        return replace(
            self,
            runtime=runtime if runtime is not None else self.runtime,
            threads=threads if threads is not None else self.threads,
            warmup=warmup if warmup is not None else self.warmup,
            runs=runs if runs is not None else self.runs,
        )

    def per_op_times(self) -> bool:
        """Whether the runner times each op under these settings: onnxruntime's profiler,
        trtexec's layer profile, and OpenVINO's performance counters on its CPU device (the
        counters of other devices are not verified to mean what the CPU plugin's do)."""
        if self.runtime == "openvino":
            return openvino_per_op(self.openvino_device)
        return self.runtime in ("onnxruntime", "tensorrt")

    def measured_with(self) -> MeasuredWith:
        """The settings that change what a latency means besides the fingerprint's (runtime,
        threads, delegate or providers): pinned ``cores``, AMX refused, the warmup, and the
        options of the delegate or providers the job applies. ``runs`` and
        ``spread_threshold`` are not among them: they make a figure steadier or not, and each
        measurement keeps its own ``n`` and ``flagged``."""
        out = {}
        if self.cores is not None:
            out["cores"] = "[{}]".format(", ".join(map(str, self.cores)))
        if not self.x86_amx:
            out["x86_amx"] = "false"
        if self.runtime == "tensorrt":
            out["tensorrt.warmup_ms"] = str(self.warmup_ms)  # trtexec counts no warmup runs
        else:
            out["warmup"] = str(self.warmup)
        if self.runtime == "tflite" and self.delegate is not None:
            out.update((f"delegate_options.{k}", v) for k, v in self.delegate_options)
        if self.runtime == "onnxruntime" and self.providers is not None:
            out.update(
                (f"provider_options.{name}.{k}", v)
                for name, options in self.provider_options
                for k, v in options
            )
        if self.runtime == "openvino":
            # A property that repeats the runner's own value changes nothing measured.
            runner = openvino_defaults(self.openvino_device, self.threads)
            # Values as OpenVINO means them: "BF16" and "bf16" are one setting.
            out.update(
                (f"openvino.properties.{k}", openvino_value(k, v))
                for k, v in self.openvino_properties
                if k not in runner or openvino_value(k, v) != openvino_value(k, runner[k])
            )
        return tuple(sorted(out.items()))


class RunnerWarnings:
    """The runner's warnings to log for one device, each about a model said once: one (a
    delegate that took none of its ops, as of every int8 file on tflite-runtime 2.14) came
    for every block of a table, 78 lines (walk-through). Warnings that differ only in the
    model and numbers are of one kind; the first of a kind names its model and says so."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def new(self, warnings: Sequence[str]) -> list[str]:
        """Those of ``warnings`` not said before, in order: one about a model, unless one of
        its kind was; any other, unless the same words were (a governor that is not
        "performance" is said by every call; a throttled CPU's count of times changes)."""
        out = []
        for warning in warnings:
            about_a_model = re.search(_MODEL_FILE, warning) is not None
            kind = re.sub(rf"{_MODEL_FILE}|\d+", "#", warning) if about_a_model else warning
            if kind not in self._said:
                self._said.add(kind)
                out.append(
                    f"{warning} (not repeated for other models)" if about_a_model else warning
                )
        return out


_MODEL_FILE = r"'[^']*\.(?:onnx|tflite)'"  # as the runner quotes a model's path


@dataclass(frozen=True)
class RunnerResults:
    """What one runner call returned; ``order`` lists the model indices of each round."""

    fingerprint: Fingerprint
    warnings: tuple[str, ...]
    measurements: list[Measurement]
    order: list[list[int]]


@dataclass(frozen=True)
class ClassifyResults:
    """What one classify call returned: per model, the top-1 class of each image."""

    warnings: tuple[str, ...]
    top1: list[list[int]]


def build_job(
    model_paths: Sequence[str],
    settings: RunSettings,
    *,
    profile_ops: bool = False,
    classify: str | None = None,
    engines: str | None = None,
) -> RunnerJob:
    """The job for ``runner.py``; ``model_paths`` (and ``classify``, a .npy of images the
    models then classify instead of being timed) are as the target sees them.

    No models means a fingerprint-only job. Only the delegate (tflite) or the providers
    (onnxruntime) of the job's runtime go into it.
    """
    job = RunnerJob(
        format=JOB_FORMAT,
        runtime=settings.runtime,
        threads=settings.threads,
        warmup=settings.warmup,
        runs=settings.runs,
        profile_ops=profile_ops,
        spread_threshold=settings.spread_threshold,
        cores=list(settings.cores) if settings.cores is not None else None,
        seed=settings.seed,
        models=[str(p) for p in model_paths],
    )
    if not settings.x86_amx:
        job["x86_amx"] = False
    if settings.runtime == "tflite" and settings.delegate is not None:
        job["delegate"] = settings.delegate
        if settings.delegate_options:
            job["delegate_options"] = dict(settings.delegate_options)
    if settings.runtime == "onnxruntime" and settings.providers is not None:
        job["providers"] = list(settings.providers)
        if settings.provider_options:
            job["provider_options"] = {
                name: dict(options) for name, options in settings.provider_options
            }
    if settings.runtime == "openvino":
        job["openvino"] = {
            "device": settings.openvino_device,
            "properties": dict(settings.openvino_properties),
        }
    if settings.runtime == "tensorrt":
        job["trtexec"] = {
            "path": settings.trtexec,
            "precision": settings.precision,
            "warmup_ms": settings.warmup_ms,
        }
        if engines is not None:
            job["trtexec"]["engines"] = engines
    if classify is not None:
        job["classify"] = classify
    return job


def parse_results(
    device: str, payload: str | Mapping[str, Any], labels: Sequence[str]
) -> RunnerResults:
    """Measurements in job order, each named by ``labels`` (the caller's names for the models).

    Raises ``DeviceError`` for an error payload or results that do not match the job.
    """
    data = _decode(device, payload)
    if "error" in data:
        raise DeviceError(f"device {device!r}: {_error_message(data)}")
    try:
        fingerprint = Fingerprint.from_dict(data["fingerprint"])
        warnings = tuple(str(w) for w in data.get("warnings", []))
        entries = data["models"]
        if len(entries) != len(labels) or [e["index"] for e in entries] != list(range(len(labels))):
            raise DeviceError(
                f"device {device!r}: the runner returned {len(entries)} results for "
                f"{len(labels)} models; is runner.py from another edgenas version?"
            )
        measurements = [
            trtexec_measurement(device, label, entry["trtexec"], fingerprint, warnings)
            if "trtexec" in entry
            else _measurement(label, entry, warnings)
            for label, entry in zip(labels, entries, strict=True)
        ]
        order = [[int(i) for i in visit] for visit in data.get("order", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise DeviceError(
            f"device {device!r}: runner results are malformed ({type(exc).__name__}: {exc}); "
            "is runner.py from another edgenas version?"
        ) from None
    return RunnerResults(fingerprint, warnings, measurements, order)


def save_images(path: Path, images: npt.NDArray[np.floating]) -> None:
    """``images`` as the runner reads a classify job's: float32 .npy, N x C x H x W."""
    import numpy as np

    x = np.asarray(images)
    if x.ndim != 4 or x.dtype.kind != "f" or not len(x):
        raise ValueError(f"images must be float N x C x H x W with N >= 1, not {x.dtype} {x.shape}")
    np.save(path, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)


def classify_refusal(settings: RunSettings) -> str | None:
    """Why the runner's device with these settings does not classify images, or None: a
    TensorRT int8 engine is calibrated on random data by trtexec (no calibration cache), so
    its classes say nothing of a calibrated engine's."""
    if settings.runtime == "tensorrt" and settings.precision == "int8":
        return (
            "its TensorRT int8 engine is calibrated on random data (trtexec without a "
            "calibration cache): right for latency, not for accuracy; check the file on a "
            "profile with tensorrt.precision fp16 or fp32"
        )
    return None


def parse_classes(
    device: str, payload: str | Mapping[str, Any], models: int, images: int
) -> ClassifyResults:
    """The top-1 classes a classify job returned for ``models`` models of ``images`` images;
    a ``DeviceError`` for an error payload or results that do not match the job."""
    data = _decode(device, payload)
    if "error" in data:
        raise DeviceError(f"device {device!r}: {_error_message(data)}")
    try:
        classes = [[int(c) for c in entry["top1"]] for entry in data["models"]]
        result = ClassifyResults(tuple(str(w) for w in data.get("warnings", [])), classes)
    except (KeyError, TypeError, ValueError) as exc:
        raise DeviceError(
            f"device {device!r}: runner results are malformed ({type(exc).__name__}: {exc}); "
            "is runner.py from another edgenas version?"
        ) from None
    if len(classes) != models or any(len(c) != images for c in classes):
        raise DeviceError(
            f"device {device!r}: the runner classified {[len(c) for c in classes]} images "
            f"with {len(classes)} models, asked {images} with {models}; is runner.py from "
            "another edgenas version?"
        )
    return result


def parse_fingerprint(device: str, payload: str | Mapping[str, Any]) -> Fingerprint:
    return parse_results(device, payload, []).fingerprint


def runner_failure(device: str, *, returncode: int, output: str, stderr: str) -> DeviceError:
    """The error for a runner that exited with ``returncode``: its own JSON message if it
    wrote one to ``output``, else the last line of its stderr."""
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return DeviceError(f"device {device!r}: {_error_message(data)}")
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no output"
    if last.startswith("SyntaxError"):  # Python 3.6 or 2 cannot even read runner.py
        return DeviceError(
            f"device {device!r}: its Python cannot read the runner ({last}): the runner needs "
            f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; set {PYTHON_KEYS} to one"
        )
    return DeviceError(f"device {device!r}: the runner failed (exit status {returncode}): {last}")


def no_results(device: str, python: str, key: str) -> DeviceError:
    """The error for a runner call that exited 0 without writing results: ``python`` (the
    profile's ``key``) did not run ``runner.py``, as ``/bin/true`` or a wrapper that drops
    its arguments would not."""
    return DeviceError(
        f"device {device!r}: {python!r} exited without running the runner (exit status 0, "
        f"no results), so it is not a Python interpreter; set {key} in the device profile "
        "to one (python3, or a virtual environment's bin/python) that has the runtime"
    )


def _decode(device: str, payload: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(payload, str):
        try:
            data = json.loads(payload)
        except ValueError:
            raise DeviceError(
                f"device {device!r}: the runner's output is not JSON: {payload[:200]!r}"
            ) from None
    else:
        data = payload
    if not isinstance(data, Mapping) or data.get("format") != RESULTS_FORMAT:
        fmt = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise DeviceError(
            f"device {device!r}: runner results have format {fmt!r}, expected {RESULTS_FORMAT!r}"
        )
    return data


def _error_message(data: Mapping[str, Any]) -> str:
    error = data["error"]
    return str(error.get("message") or error.get("kind") or "the runner failed")


def _measurement(label: str, entry: Mapping[str, Any], warnings: tuple[str, ...]) -> Measurement:
    extra: dict[str, Any] = {
        "iqr_ratio": float(entry["iqr_ratio"]),
        "remeasured": bool(entry["remeasured"]),
    }
    if entry.get("profile"):
        extra["profile"] = dict(entry["profile"])
    if warnings:
        extra["warnings"] = list(warnings)
    ops = entry.get("ops")
    peak = entry.get("peak_memory_bytes")
    placement = entry.get("placement")
    init, first = entry.get("init_ms"), entry.get("first_inference_ms")
    return Measurement.from_times(
        label,
        [float(t) for t in entry["times_ms"]],
        flagged=bool(entry["flagged"]),
        peak_memory_bytes=int(peak) if peak is not None else None,
        ops=tuple(OperatorTime.from_dict(op) for op in ops) if ops is not None else None,
        placement=dict(placement) if placement is not None else None,
        extra=extra,
        init_ms=float(init) if init is not None else None,
        first_inference_ms=float(first) if first is not None else None,
    )


def trtexec_measurement(
    device: str,
    label: str,
    run: Mapping[str, Any],
    fingerprint: Fingerprint,
    warnings: tuple[str, ...],
) -> Measurement:
    """The Measurement of one trtexec run the runner returned, or the DeviceError that says
    why trtexec failed on the model."""
    return to_measurement(
        device,
        label,
        status=int(run["status"]),
        log=str(run.get("log") or ""),
        times=run.get("times"),
        profile=run.get("profile"),
        precision=fingerprint.accelerator.removeprefix("gpu ") or "fp32",
        spread_threshold=float(run.get("spread_threshold", 0.1)),
        warnings=warnings,
    )
