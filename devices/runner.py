#!/usr/bin/env python3
"""edgenas on-device runner: time model files with onnxruntime or LiteRT and write JSON.

This one file is copied to target devices as is. It needs the Python standard library
(Python 3.8 or newer), numpy (1.x or 2.x) and one inference runtime (or NVIDIA's trtexec),
and imports nothing of edgenas.

    python runner.py --job job.json --out results.json
    python runner.py < job.json > results.json

Job: {"format": "edgenas.runner-job/1", "runtime": "onnxruntime" | "tflite" | "openvino" |
"tensorrt",
"threads": 1, "warmup": 10, "runs": 50, "rounds": null, "profile_ops": false, "spread_threshold": 0.1,
"cores": null | [2, 3], "x86_amx": true, "seed": 0, "models": ["a.onnx", ...], "delegate": null | "xnnpack" |
"none" | "external:/path/lib.so", "delegate_options": {"key": "value"}, "providers": null |
["CUDAExecutionProvider", ...], "provider_options": {"CUDAExecutionProvider": {"key": "value"}}}.
``delegate`` is for tflite (null: the runtime's default, XNNPACK), ``providers`` for
onnxruntime (null: CPUExecutionProvider). ``"x86_amx": false`` refuses the process Intel
AMX's tile registers before the runtime loads (x86-64 Linux; other architectures have none to
refuse), so that XNNPACK's and onnxruntime's int8 kernels are the AVX512-VNNI ones instead of
the AMX ones. Where the CPU and kernel offer AMX, the fingerprint's ``x86_amx`` says "refused",
or "available" without the refusal. Runtime "openvino" is Intel's OpenVINO runtime itself, not
through onnxruntime ("openvino": {"device": "CPU" | "GPU" | "NPU" | ..., "properties": {"KEY":
"value"}}, given properties over the runner's, see OpenVinoBackend); it reads the ONNX files.
Runtime "tensorrt" runs NVIDIA's trtexec once per model ("trtexec": {"path": ...,
"precision": "fp32" | "fp16" | "int8", "warmup_ms": 500}) and returns its raw log and
exported times ("models": [{"trtexec": {...}}]) for the host to read; timing needs no numpy.
A job without models reports only the fingerprint and warnings.
A job with ``"classify": "images.npy"`` (float images, N x C x H x W, as numpy saves them)
times nothing: each model runs once per image and its entry gives the top-1 class of each
("top1": [...]), with its placement; a 4-D model input in NHWC (TFLite's) is fed the images
transposed, and a TFLite int8 or uint8 input quantized with the model's own scale (ONNX
files take float inputs and quantize inside). Runtime tensorrt classifies with trtexec
(``--loadInputs``, ``--exportOutput``; it then needs numpy): it builds the engine once
(``--saveEngine``) and runs one trtexec process per image, or per ``TRTEXEC_IMAGES`` images
where the file's batch size is dynamic.

Results: {"format": "edgenas.runner-results/1", "fingerprint": {...}, "warnings": [...],
"order": [[model indices in the order measured, one list per round], ...],
"models": [one entry per job model, in job order: raw "times_ms" and their statistics,
"placement": which delegate or provider ran how many nodes, "init_ms" (session or
interpreter creation), "first_inference_ms", and with profile_ops (onnxruntime, openvino) "ops":
[{"name", "op_type", "ms", "where"}, ...] in the order they ran]}.
On failure: {"format": ..., "error": {"kind": ..., "message": ...}} and exit status
2 (bad job or model), 3 (numpy, the runtime, or the requested execution provider or delegate
missing on this device) or 1 (a bug).
"""

from __future__ import annotations

import argparse
import errno
import glob
import hashlib
import importlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


JOB_FORMAT = "edgenas.runner-job/1"
RESULTS_FORMAT = "edgenas.runner-results/1"
RUNTIMES = ("onnxruntime", "tflite", "openvino", "tensorrt")
# runtime "tensorrt" runs NVIDIA's trtexec per model; JetPack installs it here, off PATH.
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
TRTEXEC_PRECISIONS = ("fp32", "fp16", "int8")
TRTEXEC_LOG_MAX = 256 * 1024  # the log's tail that goes back to the host
# Images per trtexec process when classifying with a file of dynamic batch size: one engine
# built for 1 to this many, its input 38 MB at 224 px (a Jetson's GPU shares its memory).
TRTEXEC_IMAGES = 64
# Tried in this order for runtime "tflite": LiteRT, the old standalone wheel, full TensorFlow.
TFLITE_MODULES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)
# Profiled runs per model when profile_ops is set: enough for stable per-op means, while
# profiling overhead stays out of the timed runs (they use a separate session). OpenVINO's
# counters cannot leave out warmup runs after the first: it averages those too.
PROFILE_RUNS_MAX = 20
DEFAULT_ROUNDS_MAX = 5
# A model whose runs spread more than the job's threshold is measured again, at most this many
# times, and keeps its steadiest measurement (the least spread): on shared cores a burst of
# other work can spoil one window of runs, rarely every one.
REMEASURES_MAX = 2
DELEGATES = ("xnnpack", "none", "external:PATH")
# Delegates of TFLite's benchmark_model on phones, which this runner cannot load by name.
BENCHMARK_MODEL_DELEGATES = ("gpu", "nnapi")
# Termux's pip cannot install the manylinux wheels of ai-edge-litert, tflite-runtime or
# onnxruntime; Termux's own packages work (tflite-runtime 2.20 there takes numpy 2).
TERMUX_INSTALL = "pkg install python python-tflite-runtime python-onnxruntime openssh"


class RunnerError(Exception):
    """A failure reported as a JSON error object; ``status`` is the exit status."""

    def __init__(self, kind: str, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _in_termux() -> bool:
    return "com.termux" in sys.prefix


def _install(pip_packages: str) -> str:
    """How to install a missing package here: Termux's own packages in Termux (its pip cannot
    install the wheels), pip elsewhere."""
    if _in_termux():
        return f"in Termux: {TERMUX_INSTALL}"
    return f"pip install {pip_packages} (in Termux on Android: {TERMUX_INSTALL})"


def _interpreter() -> str:
    return f"{sys.executable or 'python'} (Python {platform.python_version()})"


class Job:
    """A checked job; every field has been validated so that later code can trust it."""

    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise RunnerError("bad-job", "the job must be a JSON object")
        fmt = data.get("format", JOB_FORMAT)
        if fmt != JOB_FORMAT:
            raise RunnerError(
                "bad-job",
                f"job format {fmt!r} is not {JOB_FORMAT!r}: run the runner.py of the same edgenas version",
            )
        known = {
            "format",
            "runtime",
            "threads",
            "warmup",
            "runs",
            "rounds",
            "profile_ops",
            "spread_threshold",
            "cores",
            "x86_amx",
            "seed",
            "models",
            "delegate",
            "delegate_options",
            "providers",
            "provider_options",
            "trtexec",
            "openvino",
            "classify",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunnerError("bad-job", f"unknown job keys: {', '.join(unknown)}")
        self.runtime = data.get("runtime", "onnxruntime")
        if self.runtime not in RUNTIMES:
            raise RunnerError(
                "bad-job",
                f"runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}",
            )
        self.threads = _int_field(data, "threads", 1, minimum=1)
        self.warmup = _int_field(data, "warmup", 10, minimum=0)
        self.runs = _int_field(data, "runs", 50, minimum=1)
        rounds = data.get("rounds")
        self.rounds = (
            min(self.runs, DEFAULT_ROUNDS_MAX)
            if rounds is None
            else _int_field(data, "rounds", 1, minimum=1)
        )
        if self.rounds > self.runs:
            raise RunnerError("bad-job", f"rounds={self.rounds} exceeds runs={self.runs}")
        self.seed = _int_field(data, "seed", 0, minimum=0)
        self.profile_ops = data.get("profile_ops", False)
        if not isinstance(self.profile_ops, bool):
            raise RunnerError("bad-job", "profile_ops must be true or false")
        threshold = data.get("spread_threshold", 0.1)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
            raise RunnerError("bad-job", "spread_threshold must be a number >= 0")
        self.spread_threshold = float(threshold)
        cores = data.get("cores")
        if cores is not None and (
            not isinstance(cores, list)
            or not cores
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cores)
        ):
            raise RunnerError("bad-job", "cores must be null or a non-empty list of core numbers")
        self.cores: list[int] | None = cores
        self.x86_amx = data.get("x86_amx", True)
        if not isinstance(self.x86_amx, bool):
            raise RunnerError("bad-job", "x86_amx must be true or false")
        models = data.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise RunnerError("bad-job", "models must be a list of file paths")
        self.models: list[str] = models
        self.delegate = _delegate_field(data, self.runtime)
        self.delegate_options = _options_field(data.get("delegate_options"), "delegate_options")
        if self.delegate_options and not (self.delegate or "").startswith("external:"):
            raise RunnerError("bad-job", "delegate_options are for delegate external:PATH only")
        providers = data.get("providers")
        if providers is not None:
            if self.runtime != "onnxruntime":
                raise RunnerError("bad-job", "providers are for runtime onnxruntime")
            if (
                not isinstance(providers, list)
                or not providers
                or not all(isinstance(p, str) and p for p in providers)
            ):
                raise RunnerError("bad-job", "providers must be a non-empty list of names")
        self.providers: list[str] | None = providers
        raw = data.get("provider_options") or {}
        if not isinstance(raw, dict):
            raise RunnerError("bad-job", "provider_options must be an object")
        self.provider_options = {
            str(name): _options_field(opts, f"provider_options.{name}")
            for name, opts in raw.items()
        }
        stray = sorted(set(self.provider_options) - set(self.providers or []))
        if stray:
            raise RunnerError(
                "bad-job", f"provider_options for providers not requested: {', '.join(stray)}"
            )
        self.trtexec = _trtexec_field(data, self.runtime)
        self.openvino = _openvino_field(data, self.runtime)
        classify = data.get("classify")
        if classify is not None and (not isinstance(classify, str) or not classify):
            raise RunnerError("bad-job", "classify must be the path of a .npy file of images")
        self.classify: str | None = classify


def _runtime_section(
    data: dict[str, Any], key: str, runtime: str, owner: str, keys: Sequence[str]
) -> dict[str, Any] | None:
    """The job's ``key`` object, which only runtime ``owner`` takes (None for the others),
    with no keys but ``keys``."""
    value = data.get(key)
    if runtime != owner:
        if value is not None:
            raise RunnerError("bad-job", f"{key} is for runtime {owner}")
        return None
    if value is None:
        value = {}
    if not isinstance(value, dict) or sorted(set(value) - set(keys)):
        raise RunnerError("bad-job", f"{key} must be an object with {', '.join(keys)}")
    return value


def _openvino_field(data: dict[str, Any], runtime: str) -> dict[str, Any]:
    """runtime openvino: {"device": OpenVINO's device name, "properties": {KEY: value}}."""
    value = _runtime_section(data, "openvino", runtime, "openvino", ("device", "properties"))
    if value is None:
        return {}
    device = value.get("device", "CPU")
    if not isinstance(device, str) or not device:
        raise RunnerError("bad-job", "openvino.device must be a non-empty string")
    properties = _options_field(value.get("properties"), "openvino.properties")
    return {"device": device, "properties": properties}


def _trtexec_field(data: dict[str, Any], runtime: str) -> dict[str, Any]:
    """runtime tensorrt: {"path": trtexec, "precision": fp32|fp16|int8, "warmup_ms": N,
    "engines": a folder where classify keeps the engines it builds for the next jobs}."""
    value = _runtime_section(
        data, "trtexec", runtime, "tensorrt", ("path", "precision", "warmup_ms", "engines")
    )
    if value is None:
        return {}
    path = value.get("path", JETPACK_TRTEXEC)
    precision = value.get("precision", "fp16")
    if not isinstance(path, str) or not path:
        raise RunnerError("bad-job", "trtexec.path must be a non-empty string")
    if precision not in TRTEXEC_PRECISIONS:
        raise RunnerError(
            "bad-job", f"trtexec.precision {precision!r}: expected one of fp32, fp16, int8"
        )
    warmup_ms = _int_field(value, "warmup_ms", 500, minimum=0)
    engines = value.get("engines")
    if engines is not None and (not isinstance(engines, str) or not engines):
        raise RunnerError("bad-job", "trtexec.engines must be the path of a folder")
    return {"path": path, "precision": precision, "warmup_ms": warmup_ms, "engines": engines}


def _delegate_field(data: dict[str, Any], runtime: str) -> str | None:
    delegate = data.get("delegate")
    if delegate is None:
        return None
    if runtime != "tflite":
        raise RunnerError("bad-job", "delegate is for runtime tflite")
    if delegate in BENCHMARK_MODEL_DELEGATES:
        raise RunnerError(
            "bad-job",
            f"delegate {delegate!r} needs an adb device (benchmark_model); this runner "
            "takes xnnpack, none or external:PATH",
        )
    if not isinstance(delegate, str) or not (
        delegate in ("xnnpack", "none")
        or (delegate.startswith("external:") and len(delegate) > len("external:"))
    ):
        raise RunnerError(
            "bad-job", f"delegate {delegate!r}: expected one of {', '.join(DELEGATES)}"
        )
    return delegate


def _options_field(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(v, (str, int, float, bool)) for v in value.values()
    ):
        raise RunnerError("bad-job", f"{what} must map names to strings or numbers")
    return {str(k): _option_text(v) for k, v in value.items()}


def _option_text(value: Any) -> str:
    """Options reach native code as text; booleans as the lowercase words it parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int_field(data: dict[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RunnerError("bad-job", f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def import_numpy() -> Any:
    try:
        import numpy
    except Exception as exc:  # a broken install raises more than ImportError
        _import_failed()
        raise RunnerError(
            "environment",
            f"numpy is not installed for {_interpreter()}: {_install('numpy')} "
            f"({_first_line(exc)})",
            status=3,
        ) from None
    return numpy


def module_version(dist: str, module: Any) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return str(getattr(module, "__version__", "unknown"))


class LoadedModel:
    """A model ready to run with fixed random inputs.

    ``classify(image)``, for a job's images, runs it on one float NCHW image (a batch of
    one) and returns its first output; ``None`` where the runtime cannot.

    ``run`` performs one inference; ``profile(warmup, runs)``, where the runtime supports
    it, returns per-op mean times and the profiled run time, and how many runs they average
    (``runs``, or for OpenVINO every run after the first). ``placement`` says which
    delegate or execution provider ran how many nodes; ``warnings`` are about this model.
    ``init_ms`` is the session's or interpreter's creation (loading, delegates, allocation),
    ``first_inference_ms`` the first run after it (one-off costs: kernel selection, caches).
    """

    def __init__(
        self,
        run: Callable[[], object],
        profile: Callable[[int, int], dict[str, Any]] | None = None,
        placement: dict[str, Any] | None = None,
        warnings: Sequence[str] = (),
        init_ms: float | None = None,
        first_inference_ms: float | None = None,
        classify: Callable[[Any], Any] | None = None,
    ) -> None:
        self.run = run
        self.classify = classify
        self.profile = profile
        self.placement = placement
        self.warnings = list(warnings)
        self.init_ms = init_ms
        self.first_inference_ms = first_inference_ms


def _elapsed_ms(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1e6


class Backend:
    """One inference runtime: its name, version, and how to load a model for timing."""

    name = ""
    package = ""
    version = ""
    # The accelerator the device asked for (a delegate or an execution provider that is not
    # the CPU's own), and how many of a loaded model's ops it took (its placement).
    accelerator: str | None = None
    fallback = "the CPU"  # where the ops it does not take run
    # Why a loaded model has no per-op profile, for the warning profile_ops then gets.
    no_profile = "per-op times are not available for this runtime in this runner"

    def accelerated_ops(self, placement: dict[str, Any] | None) -> int | None:
        return None

    def reason(self, exc: BaseException) -> str:
        """What went wrong, in one line, as the runtime says it."""
        return _first_line(exc)

    def load(self, path: str) -> LoadedModel:
        raise NotImplementedError

    def close(self) -> None:
        """Release temporary files."""


def random_input(np_: Any, rng: Any, shape: Sequence[Any], dtype_name: str, what: str) -> Any:
    """Random data for one input; dynamic dimensions become 1."""
    dims = [_dim(d) for d in shape]
    try:
        dtype = np_.dtype(dtype_name)
    except TypeError:
        raise RunnerError("model", f"{what}: unsupported input type {dtype_name}") from None
    if dtype.kind == "f":
        return rng.standard_normal(dims).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=dims).astype(dtype)
    if dtype.kind in "iu":
        info = np_.iinfo(dtype)
        if dtype.itemsize == 1:  # quantized tensors: the full range
            return rng.integers(int(info.min), int(info.max), size=dims, endpoint=True, dtype=dtype)
        # Wider integers are usually indices or shapes: small values stay valid.
        return rng.integers(0, 2, size=dims, dtype=dtype)
    raise RunnerError("model", f"{what}: unsupported input type {dtype_name}")


def _dim(d: Any) -> int:
    """A static dimension as an int (numpy ints included); symbolic or unknown ones are 1."""
    if d is None or isinstance(d, str):
        return 1
    try:
        value = int(d)
    except (TypeError, ValueError):
        return 1
    return value if value > 0 else 1


def fit_image(
    np_: Any, image: Any, shape: Sequence[Any], what: str, *, channels_last: bool = False
) -> Any:
    """One NCHW image (a batch of one, float32) laid out as an input of ``shape`` takes it:
    NCHW as it is, or NHWC (TFLite's layout; tried first with ``channels_last``, so that an
    input with dynamic channels gets its runtime's layout). A dynamic dimension (None, a
    name, or -1) takes any size. Refused where neither layout fits."""

    def fits(x: Any) -> bool:
        return len(x.shape) == len(shape) and all(
            not _static(d) or _dim(d) == x.shape[i] for i, d in enumerate(shape)
        )

    nhwc = [image.transpose(0, 2, 3, 1)] if len(shape) == 4 else []
    for x in [*nhwc, image] if channels_last else [image, *nhwc]:
        if fits(x):
            return np_.ascontiguousarray(x)
    dims = [_dim(d) if _static(d) else "?" for d in shape]
    raise RunnerError(
        "model",
        f"{what} takes inputs of shape {dims}, and classifying feeds it one image of "
        f"{list(image.shape)[1:]} (NCHW) at a time: export the model for batch 1 at the "
        "images' resolution",
    )


def _static(d: Any) -> bool:
    """Whether a dimension is a size (numpy ints too), not a name, None or -1."""
    if d is None or isinstance(d, str):
        return False
    try:
        return int(d) > 0
    except (TypeError, ValueError):
        return False


def image_type(np_: Any, type_name: str, what: str, *, quantized: bool = False) -> str:
    """The numpy type of a model input that images can be fed to: float, or with
    ``quantized`` (TFLite's int8 and uint8 inputs, fed through ``quantize``) those too.
    Other inputs (token ids, raw bytes, bfloat16) are refused in one line; onnxruntime and
    OpenVINO files take float inputs and quantize inside."""
    try:
        dtype = np_.dtype(type_name)
    except TypeError:
        dtype = None
    if dtype is not None and (
        dtype.kind == "f" or (quantized and dtype.kind in "iu" and dtype.itemsize == 1)
    ):
        return str(dtype.name)
    takes = "a float, int8 or uint8" if quantized else "a float"
    raise RunnerError(
        "model",
        f"{what} takes {type_name} inputs: only a model with {takes} input classifies images here",
    )


def quantize(np_: Any, x: Any, dtype_name: str, scale: float, zero_point: int, what: str) -> Any:
    """Float ``x`` as an int8 or uint8 input with the model's own quantization."""
    if not scale:
        raise RunnerError("model", f"{what} takes an {dtype_name} input without a scale")
    info = np_.iinfo(dtype_name)
    q = np_.round(x / scale) + zero_point
    return np_.clip(q, info.min, info.max).astype(dtype_name)


def tflite_input(
    np_: Any, image: Any, shape: Sequence[Any], type_name: str, quantization: Any, what: str
) -> Any:
    """One NCHW image (a batch of one, float32) as a TFLite input of ``shape`` (its
    signature: -1 for a dynamic dimension) and type takes it: NHWC where the file is, int8
    and uint8 quantized with the file's own scale and zero point. The one layout of a board
    (this runner) and a phone (``devices.tflite_io``)."""
    dtype = image_type(np_, type_name, what, quantized=True)
    x = fit_image(np_, image, shape, what, channels_last=True)
    if np_.dtype(dtype).kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero_point = quantization
    return quantize(np_, x, dtype, scale, zero_point, what)


def _one_input(count: int, path: str) -> None:
    if count != 1:
        raise RunnerError(
            "model", f"model {path!r} has {count} inputs: only a one-input model classifies images"
        )


# The fields of ONNX's protobuf messages (onnx/onnx.proto) that ``onnx_io`` reads: this
# runner has no onnx package.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2
# TensorProto.DataType: float, which trtexec is fed, and the others an image input might be
# given, by name.
_ONNX_FLOAT = 1
_ONNX_TYPES = {2: "uint8", 3: "int8", 7: "int64", 10: "float16", 11: "float64", 16: "bfloat16"}


def onnx_io(path: str) -> tuple[list[tuple[str, int, list[Any]]], list[str]]:
    """An ONNX file's graph inputs, as (name, element type, dims: a size, a name or None),
    leaving out initializers listed as inputs, and its output names, read from the file's
    protobuf encoding."""
    try:
        with open(path, "rb") as f:
            data = memoryview(f.read())
        graph = [v for n, v in _proto_fields(data) if n == _MODEL_GRAPH]
        if not graph:
            raise ValueError("no graph")
        fields = list(_proto_fields(graph[-1]))
        initializers = {
            _proto_string(v, _TENSOR_NAME) for n, v in fields if n == _GRAPH_INITIALIZER
        }
        inputs = [_value_info(v) for n, v in fields if n == _GRAPH_INPUT]
        outputs = [_proto_string(v, _VALUE_NAME) for n, v in fields if n == _GRAPH_OUTPUT]
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise RunnerError(
            "model", f"model {path!r} is not an ONNX file ({_first_line(exc)})"
        ) from None
    return [i for i in inputs if i[0] not in initializers], outputs


def _value_info(data: Any) -> tuple[str, int, list[Any]]:
    """A ValueInfoProto's (name, element type, dims); type 0 where it is not a tensor."""
    name, elem_type, dims = _proto_string(data, _VALUE_NAME), 0, []
    for n, v in _proto_fields(data):
        if n != _VALUE_TYPE:
            continue
        for tn, tensor in _proto_fields(v):
            if tn != _TYPE_TENSOR:
                continue
            for k, value in _proto_fields(tensor):
                if k == _TENSOR_ELEM_TYPE:
                    elem_type = value
                elif k == _TENSOR_SHAPE:
                    dims = [_dim_of(d) for j, d in _proto_fields(value) if j == _SHAPE_DIM]
    return name, elem_type, dims


def _dim_of(data: Any) -> Any:
    """A TensorShapeProto.Dimension: its size, its name, or None (unknown)."""
    for n, v in _proto_fields(data):
        if n == _DIM_VALUE:  # an int64: negative ones (-1, dynamic) are 10-byte varints
            return v - (1 << 64) if v >= 1 << 63 else v
        if n == _DIM_PARAM:
            return bytes(v).decode()
    return None


def _proto_string(data: Any, field: int) -> str:
    found = [v for n, v in _proto_fields(data) if n == field]
    return bytes(found[-1]).decode() if found else ""


def _proto_fields(data: Any) -> Any:
    """(field number, value) of each field of a protobuf message: an int for a varint, a
    memoryview of the bytes otherwise."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire in (1, 2, 5):
            size = {1: 8, 5: 4}.get(wire)
            if size is None:
                size, pos = _varint(data, pos)
            if pos + size > end:
                raise ValueError("truncated")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield key >> 3, value


def _varint(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    package = "onnxruntime"

    def __init__(self, np_: Any, job: Job) -> None:
        try:
            onnxruntime = importlib.import_module("onnxruntime")
        except Exception as exc:  # a broken install raises more than ImportError
            _import_failed()
            raise RunnerError(
                "environment",
                f"onnxruntime is not installed for {_interpreter()}: "
                f"{_install('onnxruntime')} ({_first_line(exc)})",
                status=3,
            ) from None
        self.ort = onnxruntime
        self.np = np_
        self.threads = job.threads
        self.rng = np_.random.default_rng(job.seed)
        self.version = module_version("onnxruntime", onnxruntime)
        self.tmpdir: str | None = None  # for profiling traces
        self.providers = job.providers or ["CPUExecutionProvider"]
        available = list(onnxruntime.get_available_providers())
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise RunnerError(
                "environment",
                f"onnxruntime {self.version} on this device has no {', '.join(missing)} "
                f"(available: {', '.join(available)}): install the onnxruntime build that has "
                "it (onnxruntime-gpu for CUDA and TensorRT, onnxruntime-openvino for OpenVINO), or "
                "leave it out of the profile's providers",
                status=3,
            )
        self.provider_list = [
            (p, job.provider_options[p]) if p in job.provider_options else p for p in self.providers
        ]
        # XNNPACK's provider is the CPU too, as XNNPACK is in TFLite
        if self.providers[0] not in ("CPUExecutionProvider", "XnnpackExecutionProvider"):
            self.accelerator = self.providers[0]
            # onnxruntime adds its CPU provider after the requested ones, asked or not.
            self.fallback = ", ".join(self.providers[1:]) or "CPUExecutionProvider"

    def accelerated_ops(self, placement: dict[str, Any] | None) -> int | None:
        if placement is None or self.accelerator is None:
            return None
        return int(placement["nodes"].get(self.accelerator, 0))

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _session(self, path: str, *, profile: bool) -> Any:
        """A session on the requested providers; with ``profile``, its trace goes to a
        temporary folder (``end_profiling`` ends it)."""
        ort = self.ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if profile:
            if self.tmpdir is None:
                self.tmpdir = tempfile.mkdtemp(prefix="edgenas-ort-")
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(self.tmpdir, "profile")
        try:
            session = ort.InferenceSession(path, sess_options=options, providers=self.provider_list)
        except Exception as exc:
            raise RunnerError(
                "model",
                f"cannot load model {path!r} with onnxruntime {self.version}: {_first_line(exc)}",
            ) from None
        # onnxruntime drops a provider that fails to initialise and carries on without it.
        dropped = [p for p in self.providers if p not in session.get_providers()]
        if dropped:
            raise RunnerError(
                "model",
                f"onnxruntime {self.version} could not start {', '.join(dropped)} for model "
                f"{path!r} (the session has {', '.join(session.get_providers())}); "
                f"available: {', '.join(ort.get_available_providers())}",
            )
        return session

    def load(self, path: str) -> LoadedModel:
        _check_readable(path)
        # The first run is profiled, to learn which provider runs each node; profiling
        # ends before the timed runs.
        start = time.perf_counter_ns()
        session = self._session(path, profile=True)
        init_ms = _elapsed_ms(start)
        feeds = {}
        for inp in session.get_inputs():
            dtype = _ORT_TYPES.get(inp.type, inp.type)
            what = f"model {path!r} input {inp.name!r}"
            feeds[inp.name] = random_input(self.np, self.rng, inp.shape, dtype, what)

        def run() -> object:
            return session.run(None, feeds)

        def profile(warmup: int, runs: int) -> dict[str, Any]:
            return self.profile(path, feeds, warmup, runs)

        try:
            start = time.perf_counter_ns()
            run()
            first_ms = _elapsed_ms(start)
        except Exception as exc:
            raise RunnerError(
                "model", f"model {path!r} failed to run: {_first_line(exc)}"
            ) from None
        placement = ort_placement(self._trace(session), self.providers)
        warnings = []
        first = self.providers[0]
        if not placement["nodes"].get(first):
            warnings.append(f"model {path!r}: {first} ran none of its nodes")

        def classify(image: Any) -> Any:
            inputs = session.get_inputs()
            _one_input(len(inputs), path)
            what = f"model {path!r}"
            dtype = image_type(self.np, _ORT_TYPES.get(inputs[0].type, inputs[0].type), what)
            x = fit_image(self.np, image, inputs[0].shape, what).astype(dtype, copy=False)
            return session.run(None, {inputs[0].name: x})[0]

        return LoadedModel(run, profile, placement, warnings, init_ms, first_ms, classify)

    def _trace(self, session: Any) -> list[dict[str, Any]]:
        """The events of a profiling session so far; profiling stops."""
        trace_path = session.end_profiling()
        try:
            with open(trace_path) as f:
                return json.load(f)
        finally:
            os.remove(trace_path)

    def profile(self, path: str, feeds: dict[str, Any], warmup: int, runs: int) -> dict[str, Any]:
        session = self._session(path, profile=True)
        for _ in range(warmup + runs):
            session.run(None, feeds)
        return summarize_ort_profile(self._trace(session), skip_runs=warmup)


def ort_placement(events: list[dict[str, Any]], providers: Sequence[str]) -> dict[str, Any]:
    """Nodes per execution provider in a profiling trace (``args.provider`` of its kernel
    events), and the op types of the nodes that fell back from the first requested provider.

    Nodes are those onnxruntime executes after its graph optimizations: fused nodes count
    once, and a provider that compiles subgraphs (TensorRT) shows one node per subgraph.
    """
    where: dict[str, tuple[str, str]] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        where[name] = (str(args.get("provider", "?")), str(args.get("op_name", "?")))
    nodes: dict[str, int] = {}
    fallback: dict[str, int] = {}
    for provider, op in where.values():
        nodes[provider] = nodes.get(provider, 0) + 1
        if provider != providers[0]:
            fallback[op] = fallback.get(op, 0) + 1
    return {"providers": list(providers), "nodes": nodes, "fallback": fallback}


def summarize_ort_profile(events: list[dict[str, Any]], skip_runs: int) -> dict[str, Any]:
    """Mean time per node (ms) over the profiled runs after ``skip_runs`` warmup runs:
    ``ops`` lists the nodes in the order they first ran, each as {"name", "op_type", "ms",
    "where" (its execution provider)}.

    Nodes are those of the graph onnxruntime executes, after its optimizations: fused or
    re-laid-out nodes are named after their outputs (``/conv/Conv_output_0_nchwc``).

    Means, not medians, so that the per-op times add up to at most ``run_ms`` (kernels of a
    run lie inside that run's ``model_run`` span and do not overlap in sequential execution).
    """
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[skip_runs:]
    totals: dict[str, float] = {}
    kinds: dict[str, tuple[str, str]] = {}  # node -> (op type, provider)
    peak = 0
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        ts = e["ts"]
        if not any(start <= ts <= end for start, end in runs):
            continue
        args = e.get("args", {})
        op_type = str(args.get("op_name", "?"))
        node = e["name"][: -len("_kernel_time")] or op_type
        totals[node] = totals.get(node, 0.0) + e["dur"] / 1000.0
        kinds.setdefault(node, (op_type, str(args.get("provider", ""))))
        in_use = str(args.get("mem_in_use_peak", ""))
        if in_use.isdigit():
            peak = max(peak, int(in_use))
    n = max(len(runs), 1)
    return {
        "ops": [
            {"name": node, "op_type": kinds[node][0], "ms": total / n, "where": kinds[node][1]}
            for node, total in totals.items()
        ],
        "runs": len(runs),
        "run_ms": sum(end - start for start, end in runs) / 1000.0 / n,
        "peak_in_use_bytes": peak or None,
    }


class TfliteBackend(Backend):
    name = "tflite"
    no_profile = (
        "per-op times are not available for tflite in this runner; use TFLite's "
        "benchmark_model --enable_op_profiling=true"
    )

    def __init__(self, np_: Any, job: Job) -> None:
        failures = []
        interpreter_cls = None
        for module_name, package in TFLITE_MODULES:
            try:
                module = importlib.import_module(module_name)
                interpreter_cls = module.Interpreter
            except Exception as exc:  # a broken install raises more than ImportError
                _import_failed()
                failures.append(f"{module_name.split('.')[0]}: {_first_line(exc)}")
                continue
            self.package = package
            self.version = f"{package} {module_version(package, module)}"
            break
        if interpreter_cls is None:
            hint = ""
            if int(np_.__version__.split(".")[0]) >= 2 and not _in_termux():
                hint = "; PyPI's tflite-runtime (2.14) needs numpy<2"
            install = _install(
                "ai-edge-litert (or tflite-runtime with numpy<2 where LiteRT has no wheel, "
                "or tensorflow)"
            )
            raise RunnerError(
                "environment",
                "no TFLite interpreter for {}: {}{} [{}]".format(
                    _interpreter(), install, hint, "; ".join(failures)
                ),
                status=3,
            )
        self.interpreter_cls = interpreter_cls
        self.module = module
        self.np = np_
        self.threads = job.threads
        self.rng = np_.random.default_rng(job.seed)
        self.delegate = job.delegate or "xnnpack"
        self.delegate_options = job.delegate_options
        self.library: str | None = None
        if self.delegate.startswith("external:"):
            self.accelerator = f"delegate {self.delegate}"
            self.fallback = "TFLite's builtin CPU kernels"
            self.library = self.delegate[len("external:") :]
            if not os.path.isfile(self.library):
                raise RunnerError(
                    "environment",
                    f"delegate library not found on the device: no file {self.library!r} "
                    "there; delegate external:PATH takes the absolute path of a TFLite "
                    "delegate library (.so) on the device: copy it there, fix the path, or "
                    "use delegate xnnpack or none",
                    status=3,
                )

    def accelerated_ops(self, placement: dict[str, Any] | None) -> int | None:
        if placement is None or self.accelerator is None:
            return None
        return int(placement["delegated_nodes"])

    def _interpreter_options(self) -> dict[str, Any]:
        """XNNPACK is LiteRT's default delegate: ``none`` and an external delegate turn it off
        (then the delegate's node count is exact and the rest runs on the builtin kernels)."""
        if self.delegate == "xnnpack":
            return {}
        resolver = _lite_attr(self.module, "OpResolverType")
        if resolver is None:
            raise RunnerError(
                "environment",
                f"{self.version} cannot turn XNNPACK off (no OpResolverType): use delegate "
                "xnnpack, or a newer ai-edge-litert or tflite-runtime",
            )
        options: dict[str, Any] = {
            "experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        }
        if self.library is not None:
            load_delegate = _lite_attr(self.module, "load_delegate")
            try:
                options["experimental_delegates"] = [
                    load_delegate(self.library, self.delegate_options)
                ]
            except Exception as exc:
                raise RunnerError(
                    "environment",
                    f"cannot load delegate {self.library!r}: {_first_line(exc)}",
                    status=3,
                ) from None
        return options

    def load(self, path: str) -> LoadedModel:
        _check_readable(path)
        options = self._interpreter_options()
        start = time.perf_counter_ns()
        try:
            interp = self.interpreter_cls(model_path=path, num_threads=self.threads, **options)
            for d in interp.get_input_details():
                signature = list(d.get("shape_signature", d["shape"]))
                if any(int(s) < 0 for s in signature):
                    interp.resize_tensor_input(d["index"], [max(int(s), 1) for s in signature])
            interp.allocate_tensors()
            init_ms = _elapsed_ms(start)
        except Exception as exc:
            raise RunnerError(
                "model",
                f"cannot load model {path!r} with {self.version}: {_first_line(exc)}",
            ) from None
        run = interp.invoke
        try:
            for d in interp.get_input_details():
                what = f"model {path!r} input {d['name']!r}"
                dtype = self.np.dtype(d["dtype"]).name
                interp.set_tensor(
                    d["index"], random_input(self.np, self.rng, list(d["shape"]), dtype, what)
                )
            start = time.perf_counter_ns()
            run()
            first_ms = _elapsed_ms(start)
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(
                "model", f"model {path!r} failed to run: {_first_line(exc)}"
            ) from None
        placement = tflite_placement(interp, self.delegate)

        def classify(image: Any) -> Any:
            inputs = interp.get_input_details()
            _one_input(len(inputs), path)
            d = inputs[0]
            # The signature keeps a dynamic dimension's -1 (load sized it to 1): the
            # interpreter is resized to the images' size.
            signature = list(d.get("shape_signature", d["shape"]))
            type_name = self.np.dtype(d["dtype"]).name
            x = tflite_input(
                self.np, image, signature, type_name, d["quantization"], f"model {path!r}"
            )
            if list(x.shape) != [int(s) for s in d["shape"]]:
                interp.resize_tensor_input(d["index"], list(x.shape))
                interp.allocate_tensors()
            interp.set_tensor(d["index"], x)
            interp.invoke()
            return interp.get_tensor(interp.get_output_details()[0]["index"])

        warnings = []
        if placement is None:
            warnings.append(f"{self.version} does not list its ops: no placement for {path!r}")
        elif self.delegate != "none" and not placement["delegated_nodes"]:
            warnings.append(
                f"model {path!r}: delegate {self.delegate} took none of its "
                f"{placement['cpu_nodes']} ops; they ran on TFLite's builtin kernels"
            )
        return LoadedModel(
            run,
            placement=placement,
            warnings=warnings,
            init_ms=init_ms,
            first_inference_ms=first_ms,
            classify=classify,
        )


def _lite_attr(module: Any, name: str) -> Any:
    """``name`` of a TFLite interpreter module (full TensorFlow keeps it in ``experimental``)."""
    found = getattr(module, name, None)
    return (
        found if found is not None else getattr(getattr(module, "experimental", None), name, None)
    )


def tflite_placement(interp: Any, delegate: str) -> dict[str, Any] | None:
    """How many of the model's ops a delegate took, and which ops TFLite ran itself.

    After delegation the interpreter lists the model's ops and one ``DELEGATE`` op per
    partition; walking the executed graph back from the outputs reaches the partitions and
    the ops left to TFLite's builtin kernels, never the ops a partition replaced. None where
    the interpreter cannot list its ops.
    """
    try:
        ops = interp._get_ops_details()
    except Exception:
        return None
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    producer.update({int(t): op for op in partitions for t in op["outputs"]})
    seen: set[int] = set()
    fallback: dict[str, int] = {}
    pending = [int(d["index"]) for d in interp.get_output_details()]
    while pending:
        op = producer.get(pending.pop())
        if op is None or op["index"] in seen:
            continue
        seen.add(op["index"])
        if op["op_name"] != "DELEGATE":
            fallback[op["op_name"]] = fallback.get(op["op_name"], 0) + 1
        pending.extend(int(t) for t in op["inputs"] if int(t) >= 0)
    cpu = sum(fallback.values())
    total = len(ops) - len(partitions)
    return {
        "delegate": delegate,
        "delegated_nodes": total - cpu if partitions else 0,
        "cpu_nodes": cpu if partitions else total,
        "partitions": len(partitions),
        "fallback": fallback if delegate != "none" else {},
    }


class OpenVinoBackend(Backend):
    """Intel's OpenVINO runtime on one of its devices, reading ONNX files (or IR .xml).

    The runner's properties come first and the job's override them: the latency hint; on the
    CPU the job's threads, one stream and no pinning of its own (the job's ``cores`` pin the
    runner, as for every runtime); on the CPU and GPU fp32 inference precision, because
    OpenVINO otherwise runs fp32 models in bf16 on CPUs with AMX or AVX512-BF16 and in f16 on
    GPUs: an fp32 file would be timed as a bf16 or f16 one. Other devices (NPU) keep their
    own precision. The precision each model ran at is in its placement, and a precision asked
    for that the device does not apply is refused."""

    name = "openvino"
    package = "openvino"
    no_profile = "per-op times are read on OpenVINO's CPU device only in this runner"
    # Virtual devices choose or split among real ones (AUTO may pick the CPU, HETERO runs what
    # a device lacks elsewhere): a time under the asked device's name could be another's.
    VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
    # Layers that run no kernel of their own.
    NO_KERNEL_LAYERS = ("Const", "Input", "Output", "Parameter", "Result")
    # Properties the job's own fields set (property, field): given again, the fingerprint
    # would be wrong.
    JOB_FIELDS = (("INFERENCE_NUM_THREADS", "threads"),)

    def __init__(self, np_: Any, job: Job) -> None:
        self.device = job.openvino["device"]
        if self.device.split(":")[0].split(".")[0] in self.VIRTUAL_DEVICES:
            raise RunnerError(
                "bad-job",
                f"openvino.device {self.device!r} is a virtual device, which may run the "
                "model on another device than asked: name one device (CPU, GPU, GPU.1, NPU)",
            )
        for key, field in self.JOB_FIELDS:
            if key in job.openvino["properties"]:
                raise RunnerError(
                    "bad-job", f"openvino.properties {key}: give the job's {field} instead"
                )
        try:
            openvino = importlib.import_module("openvino")
            core_cls = getattr(openvino, "Core", None)
            if core_cls is None:  # releases before 2023.1 keep the API in openvino.runtime
                openvino = importlib.import_module("openvino.runtime")
                core_cls = openvino.Core
        except Exception as exc:  # a broken install raises more than ImportError
            _import_failed()
            raise RunnerError(
                "environment",
                f"OpenVINO is not installed for {_interpreter()}: pip install openvino "
                f"({_first_line(exc)})",
                status=3,
            ) from None
        self.ov = openvino
        self.np = np_
        self.rng = np_.random.default_rng(job.seed)
        self.version = module_version("openvino", openvino)
        try:
            self.core = core_cls()
            available = list(self.core.available_devices)
        except Exception as exc:
            raise RunnerError(
                "environment",
                f"OpenVINO {self.version} does not start: {_openvino_reason(exc)}",
                status=3,
            ) from None
        # GPU.0 is GPU where OpenVINO lists one GPU alone.
        names = {*available, *(d.split(".")[0] for d in available)}
        names.update(f"{d}.0" for d in available if "." not in d)
        if self.device not in names:
            raise RunnerError(
                "environment",
                f"OpenVINO {self.version} on this device has no {self.device} device "
                f"(available: {', '.join(available) or 'none'}): install its driver (GPU: "
                "Intel's compute runtime, NPU: Intel's NPU driver), or name one of those "
                "(openvino.device in a profile)",
                status=3,
            )
        if self.device.split(".")[0] != "CPU":
            self.accelerator = f"OpenVINO {self.device}"
            self.fallback = "another device"
        self.properties = openvino_defaults(self.device, job.threads)
        self.properties.update(job.openvino["properties"])
        asked = job.openvino["properties"].get("INFERENCE_PRECISION_HINT")
        self.asked_precision = None if asked is None else _ov_precision(asked)

    def accelerated_ops(self, placement: dict[str, Any] | None) -> int | None:
        if placement is None or self.accelerator is None:
            return None
        return placement["nodes"].get(self.device)

    def reason(self, exc: BaseException) -> str:
        return _openvino_reason(exc)

    def load(self, path: str) -> LoadedModel:
        _check_readable(path)
        start = time.perf_counter_ns()
        try:
            compiled = self.core.compile_model(path, self.device, self.properties)
            request = compiled.create_infer_request()
        except Exception as exc:
            raise RunnerError(
                "model",
                f"cannot load model {path!r} with OpenVINO {self.version} on {self.device}: "
                f"{_openvino_reason(exc)}",
            ) from None
        init_ms = _elapsed_ms(start)
        placement = self.placement(compiled)
        got = placement["inference_precision"]
        warnings = []
        if self.asked_precision is not None and got is None:
            warnings.append(
                f"model {path!r}: OpenVINO on {self.device} does not report its inference "
                "precision: the INFERENCE_PRECISION_HINT asked for is not verified"
            )
        elif self.asked_precision is not None and got != self.asked_precision:
            raise RunnerError(
                "environment",
                f"OpenVINO {self.version} on {self.device} compiled model {path!r} at {got}, "
                f"not the INFERENCE_PRECISION_HINT "
                f"{self.properties['INFERENCE_PRECISION_HINT']} asked for: this device does not "
                "run it; remove the property or ask for a precision it has",
                status=3,
            )
        try:
            inputs = self._inputs(compiled, path)  # kept alive: the tensors share their memory
            for i, x in enumerate(inputs):
                request.set_input_tensor(i, self.ov.Tensor(x))
            run, first_ms = _openvino_run(request)
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(
                "model", f"model {path!r} failed to run: {_openvino_reason(exc)}"
            ) from None

        def profile(warmup: int, runs: int) -> dict[str, Any]:
            return self.profile(path, inputs, warmup, runs)

        per_op = profile if openvino_per_op(self.device) else None

        def classify(image: Any) -> Any:
            _one_input(len(compiled.inputs), path)
            port = compiled.inputs[0]
            what = f"model {path!r}"
            element = port.get_element_type()
            dtype = image_type(self.np, _ov_numpy_type(self.np, element), what)
            shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            x = fit_image(self.np, image, shape, what).astype(dtype, copy=False)
            request.set_input_tensor(0, self.ov.Tensor(x))
            request.infer()
            return self.np.array(request.get_output_tensor(0).data)

        return LoadedModel(
            run,
            profile=per_op,
            placement=placement,
            warnings=warnings,
            init_ms=init_ms,
            first_inference_ms=first_ms,
            classify=classify,
        )

    def _inputs(self, compiled: Any, path: str) -> list[Any]:
        """Random inputs for the compiled model's input ports."""
        inputs = []
        for port in compiled.inputs:
            what = f"model {path!r} input {port.get_any_name()!r}"
            dims = [
                d.get_length() if d.is_static else max(d.get_min_length(), 1)
                for d in port.get_partial_shape()
            ]
            dtype = self.np.dtype(port.get_element_type().to_dtype()).name
            inputs.append(random_input(self.np, self.rng, dims, dtype, what))
        return inputs

    def profile(self, path: str, inputs: list[Any], warmup: int, runs: int) -> dict[str, Any]:
        """OpenVINO's performance counters, in the form of ``summarize_ort_profile``: each node
        of the compiled graph that ran (OpenVINO's fused nodes, named after an ONNX node they
        hold), its type with the kernel that ran it ("GroupConvolution
        (brgconv_avx512_dw_I8)"), and its mean ms over every run after the first;
        ``run_ms`` is the mean wall time of those ``infer()`` calls, counting on.

        The model is compiled again with counting on: counting slows every run, so the timed
        model runs without it. The CPU plugin keeps, per node, a total of whole microseconds
        (each run's time cut to whole µs) and reports the total over the runs so far, divided
        and cut again. After the first run, often many times slower, that is its exact total;
        the mean of the runs after it is taken from the report after the last run, which is
        low by under one microsecond per node, on top of each run's own cut. A node that
        takes under a microsecond reads 0, and it reads as not run then: a node counts as
        run if either report says so."""
        try:
            compiled = self.core.compile_model(path, self.device, {**self.properties, **PERF})
            request = compiled.create_infer_request()
            for i, x in enumerate(inputs):
                request.set_input_tensor(i, self.ov.Tensor(x))
            request.infer()
            first = _ov_counters(request)
            later = max(warmup - 1, 0) + runs
            start = time.perf_counter_ns()
            for _ in range(later):
                request.infer()
            run_ns = time.perf_counter_ns() - start
            after = _ov_counters(request)
        except Exception as exc:
            raise RunnerError(
                "model",
                f"cannot profile model {path!r} with OpenVINO {self.version} on {self.device}: "
                f"{_openvino_reason(exc)}",
            ) from None
        n = max(later, 1)
        ops = []
        for name, (op_type, mean_after, ran) in after.items():
            _, total_first, ran_first = first.get(name, (op_type, 0.0, False))
            if ran or ran_first:
                ms = max(mean_after * (later + 1) - total_first, 0.0) / n
                ops.append({"name": name, "op_type": op_type, "ms": ms, "where": self.device})
        return {"ops": ops, "runs": n, "run_ms": run_ns / 1e6 / n, "peak_in_use_bytes": None}

    def placement(self, compiled: Any) -> dict[str, Any]:
        """The device, the precision OpenVINO ran the model at, and its kernels by the
        precision they compute in (from the compiled model's runtime graph: "u8", "i8" for
        int8 kernels; None where the device does not give the graph)."""
        try:
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
            precision: str | None = hint.get_type_name()
        except Exception:
            precision = None
        kernels: dict[str, int] | None = None
        try:
            ops = compiled.get_runtime_model().get_ordered_ops()
        except Exception:
            ops = None
        if ops is not None:
            kernels = {}
            layers = 0
            for op in ops:
                info = op.get_rt_info()
                layer, kind = _rt_text(info, "layerType"), _rt_text(info, "primitiveType")
                layers += bool(layer)
                if layer in self.NO_KERNEL_LAYERS or kind.startswith("unknown"):
                    continue  # a constant, a port, or a reshape done in place
                where = _rt_text(info, "runtimePrecision")
                kernels[where] = kernels.get(where, 0) + 1
            if not layers:
                kernels = None  # a graph without the attributes: nothing to count
        return {
            "device": self.device,
            "inference_precision": precision,
            "nodes": {self.device: sum(kernels.values())} if kernels is not None else {},
            "kernel_precisions": dict(sorted(kernels.items())) if kernels is not None else None,
            "fallback": {},
        }


def _openvino_run(request: Any) -> tuple[Callable[[], object], float]:
    """One inference that leaves the outputs in OpenVINO's tensors (a copy of each into
    numpy would be timed too; onnxruntime's run returns its outputs without one), and the
    first one's time in ms. Releases before 2023.1 have no ``share_outputs`` and copy."""

    def run() -> object:
        return request.infer(share_outputs=True)

    start = time.perf_counter_ns()
    try:
        run()
    except TypeError:  # before share_outputs: raised before any inference
        start = time.perf_counter_ns()
        request.infer()
        return request.infer, _elapsed_ms(start)
    return run, _elapsed_ms(start)


def openvino_per_op(device: str) -> bool:
    """Whether the runner reads per-op times on OpenVINO's ``device``: on the CPU, whose
    counters ``OpenVinoBackend.profile`` reads as the CPU plugin keeps them; other devices'
    are not verified to mean the same."""
    return device.split(".")[0] == "CPU"


def openvino_defaults(device: str, threads: int) -> dict[str, str]:
    """The compile properties the runner gives OpenVINO on ``device`` before the job's own
    (see ``OpenVinoBackend``)."""
    kind = device.split(".")[0]
    out = {"PERFORMANCE_HINT": "LATENCY"}
    if kind == "CPU":
        out.update(INFERENCE_NUM_THREADS=str(threads), NUM_STREAMS="1", ENABLE_CPU_PINNING="false")
    if kind in ("CPU", "GPU"):
        out["INFERENCE_PRECISION_HINT"] = "f32"
    return out


def openvino_value(key: str, value: str) -> str:
    """A property value as OpenVINO means it, for comparing two spellings: precisions by the
    name OpenVINO compiles at ("FP32" is "f32"), booleans as "true"/"false", the rest as
    written, without case or surrounding space."""
    text = value.strip().lower()
    if key == "INFERENCE_PRECISION_HINT":
        return _ov_precision(text)
    return {"yes": "true", "no": "false"}.get(text, text)


# The compile property that turns on OpenVINO's performance counters.
PERF = {"PERF_COUNT": "true"}


def _ov_counters(request: Any) -> dict[str, tuple[str, float, bool]]:
    """Each node's type, with the kernel that ran it, its performance counter in ms, and
    whether OpenVINO says it ran, by node name, in the order the nodes run."""
    out = {}
    for node in request.profiling_info:
        status = getattr(node.status, "name", str(node.status))
        kind = f"{node.node_type} ({node.exec_type})"
        ran = status.rsplit(".", 1)[-1] == "EXECUTED"
        out[node.node_name] = (kind, node.real_time.total_seconds() * 1e3, ran)
    return out


def _ov_precision(text: str) -> str:
    """An INFERENCE_PRECISION_HINT value as OpenVINO names the precision it compiled at
    (``get_type_name``): it takes "FP32" and "BF16" as well as "f32" and "bf16"."""
    name = text.strip().lower()
    return {"fp32": "f32", "fp16": "f16", "undefined": "dynamic"}.get(name, name)


# OpenVINO's float element types as numpy names them; to_dtype() would give float16 for bf16.
_OV_FLOATS = {"f16": "float16", "f32": "float32", "f64": "float64"}


def _ov_numpy_type(np_: Any, element: Any) -> str:
    """An OpenVINO element type as numpy names it, or as OpenVINO does for any other type
    (bf16, u8, ...), which ``image_type`` then refuses."""
    name = str(element.get_type_name())
    return _OV_FLOATS.get(name, f"OpenVINO {name}")


def _openvino_reason(exc: BaseException) -> str:
    """OpenVINO's own reason for an error: its messages start with the source locations the
    exception passed ("Exception from src/...:132:", "Check '...' failed at ..."), and the
    reason is the last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (reasons or lines or [type(exc).__name__])[-1]


def _rt_text(info: Any, key: str) -> str:
    """One runtime-graph attribute of an OpenVINO op as text ("" when absent)."""
    try:
        return str(info[key].astype(str))
    except Exception:
        return ""


def _check_readable(path: str) -> None:
    if not os.path.isfile(path):
        raise RunnerError("model", f"model file not found: {path!r}")
    if not os.access(path, os.R_OK):
        raise RunnerError("model", f"model file is not readable: {path!r}")


def make_backend(job: Job, np_: Any) -> Backend:
    if job.runtime == "onnxruntime":
        return OnnxRuntimeBackend(np_, job)
    if job.runtime == "openvino":
        return OpenVinoBackend(np_, job)
    return TfliteBackend(np_, job)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def cpu_model(root: str = "/") -> str:
    """The CPU or board name: x86 "model name", ARM "Model"/"Hardware", the device tree."""
    fields: dict[str, str] = {}
    for line in (_read(os.path.join(root, "proc/cpuinfo")) or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware"):
        if key in fields:
            return fields[key]
    tree = _read(os.path.join(root, "sys/firmware/devicetree/base/model"))
    if tree and tree.strip("\x00\n "):
        return tree.strip("\x00\n ")
    return platform.processor() or platform.machine() or "unknown"


def governors(cores: Sequence[int], root: str = "/") -> dict[int, str]:
    out = {}
    for core in cores:
        path = os.path.join(root, f"sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor")
        value = _read(path)
        if value is not None and value.strip():
            out[core] = value.strip()
    return out


def throttle_count(root: str = "/") -> int | None:
    """Thermal throttle events so far (x86 exposes them per core), or None where absent."""
    paths = glob.glob(
        os.path.join(root, "sys/devices/system/cpu/cpu*/thermal_throttle/*_throttle_count")
    )
    counts = [c for c in (_read_int(p) for p in paths) if c is not None]
    return sum(counts) if counts else None


def thermal_warnings(root: str = "/") -> list[str]:
    """Zones at or above their lowest passive (or hot) trip point: the kernel throttles there."""
    out = []
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        temp = _read_int(os.path.join(zone, "temp"))
        if temp is None:
            continue
        trips = []
        for type_path in glob.glob(os.path.join(zone, "trip_point_*_type")):
            if (_read(type_path) or "").strip() in ("passive", "hot"):
                trip = _read_int(type_path[: -len("_type")] + "_temp")
                if trip is not None and trip > 0:
                    trips.append(trip)
        if trips and temp >= min(trips):
            kind = (_read(os.path.join(zone, "type")) or "").strip() or "?"
            out.append(
                f"{os.path.basename(zone)} ({kind}) is at {temp / 1000:.1f} C, at or above its "
                f"trip point {min(trips) / 1000:.1f} C: the CPU is probably being throttled"
            )
    return out


def usable_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin(cores: list[int]) -> None:
    if not hasattr(os, "sched_setaffinity"):
        raise RunnerError(
            "bad-job", f"cannot pin to cores {cores}: this OS has no sched_setaffinity"
        )
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError) as exc:
        raise RunnerError(
            "bad-job",
            f"cannot pin to cores {cores}: {_first_line(exc)} (this device has {os.cpu_count()} cores)",
        ) from None


# Intel AMX on Linux: a process asks for the tile registers with arch_prctl(ARCH_REQ_XCOMP_PERM,
# XFEATURE_XTILEDATA) and may use AMX instructions only once that is granted. XNNPACK and mlas
# ask when they start and fall back to their AVX512-VNNI kernels when refused.
SYS_ARCH_PRCTL = 158  # x86-64
ARCH_GET_XCOMP_SUPP = 0x1021  # what the CPU and kernel offer
ARCH_GET_XCOMP_PERM = 0x1022  # what this process was granted
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
# seccomp: a classic BPF filter that answers EPERM to that one request and allows the rest,
# installed with seccomp(2) and TSYNC so that every thread of the process takes it (AMX
# permission is the process's, and a runtime may already have started threads).
SYS_SECCOMP = 317  # x86-64
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 1, 1
PR_SET_NO_NEW_PRIVS = 38
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
# seccomp_data: nr at 0, arch at 4, then the instruction pointer, args[0]'s low half at 16.
REFUSE_AMX_FILTER = (
    (BPF_LD_W_ABS, 0, 0, 4),
    (BPF_JEQ_K, 0, 5, AUDIT_ARCH_X86_64),
    (BPF_LD_W_ABS, 0, 0, 0),
    (BPF_JEQ_K, 0, 3, SYS_ARCH_PRCTL),
    (BPF_LD_W_ABS, 0, 0, 16),
    (BPF_JEQ_K, 0, 1, ARCH_REQ_XCOMP_PERM),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
)


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _x86_64() -> bool:
    """A 64-bit x86 process: AMX is for those only (a 32-bit Python on a 64-bit kernel has
    other system call numbers)."""
    import struct

    return platform.machine() in ("x86_64", "AMD64") and struct.calcsize("P") == 8


def _xtiledata(option: int) -> bool:
    """Whether arch_prctl(``option``) on x86-64 Linux has AMX's tile data bit set."""
    if platform.system() != "Linux" or not _x86_64():
        return False
    import ctypes

    mask = ctypes.c_ulong(0)
    if _libc().syscall(SYS_ARCH_PRCTL, option, ctypes.byref(mask)) != 0:
        return False  # a kernel before 5.16: no AMX for any process
    return bool(mask.value >> XFEATURE_XTILEDATA & 1)


def x86_amx_granted() -> bool:
    """Whether this process holds AMX's tile registers (a runtime asked for them)."""
    return _xtiledata(ARCH_GET_XCOMP_PERM)


_AMX_REFUSED: list[bool] = []  # one entry once refuse_x86_amx has refused this process the tiles


def x86_amx_state() -> str:
    """The fingerprint's ``x86_amx``: "available" where the CPU and kernel offer AMX to the
    runtime, "refused" where they offer it and refuse_x86_amx refused it, "" where there is
    none. Not whether a runtime took the tiles yet (XNNPACK asks when its delegate starts,
    onnxruntime when it loads): a fingerprint-only job says what a measuring one says."""
    if not _xtiledata(ARCH_GET_XCOMP_SUPP):
        return ""
    return "refused" if _AMX_REFUSED else "available"


def refuse_x86_amx(fix: str = "use a device profile without x86_amx: false") -> None:
    """Refuse this process (every thread, and the processes it starts) AMX's tile registers,
    for good. Nothing to refuse where the CPU and kernel offer no AMX; an x86-64 system but
    Linux cannot refuse it. ``fix`` ends the messages: what the caller should change."""
    if not _x86_64():
        return
    if platform.system() != "Linux":
        raise RunnerError(
            "bad-job",
            f"x86_amx: false needs Linux (a seccomp filter), and this device runs "
            f"{platform.system()}: {fix}",
        )
    if not _xtiledata(ARCH_GET_XCOMP_SUPP):
        return
    if x86_amx_granted():
        raise RunnerError(
            "bad-job",
            "AMX tiles were granted to this Python before they could be refused: it loaded a "
            "runtime as it started (sitecustomize, a .pth file, a wrapper script); remove that, "
            f"or {fix}",
        )
    import ctypes
    import struct

    code = b"".join(struct.pack("HBBI", *op) for op in REFUSE_AMX_FILTER)
    program = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(REFUSE_AMX_FILTER), ctypes.addressof(program))
    libc = _libc()
    installed = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if installed == 0:
        installed = libc.syscall(
            SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)
        )
    if installed != 0:
        # TSYNC returns the id of a thread that could not take the filter.
        why = os.strerror(ctypes.get_errno()) if installed < 0 else f"thread {installed}"
        raise RunnerError(
            "missing",
            f"cannot refuse AMX tiles: the kernel refused the seccomp filter ({why}); {fix}, "
            "or use a kernel with seccomp filters (CONFIG_SECCOMP_FILTER)",
            status=3,
        )
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0:
        raise RunnerError("internal", "the seccomp filter did not refuse AMX tiles", status=1)
    _AMX_REFUSED.append(True)


def fingerprint(
    job: Job, backend: Backend, np_: Any | None, root: str = "/"
) -> tuple[dict[str, Any], list[str]]:
    """Facts identifying this device and setup, and warnings about measurement conditions."""
    warnings = []
    cores = usable_cores()
    govs = governors(cores, root)
    values = sorted(set(govs.values()))
    governor = "/".join(values) if values else "unknown"
    slow = sorted(g for g in values if g != "performance")
    if slow:
        warnings.append(
            "CPU governor is {!r}, not 'performance': timings vary with frequency scaling "
            "(as root: cpupower frequency-set -g performance)".format("/".join(slow))
        )
    if job.threads > len(cores):
        warnings.append(
            f"threads={job.threads} but only {len(cores)} cores are available to the "
            "runner: threads will compete"
        )
    facts = {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(root),
        "cores": os.cpu_count() or len(cores),
        "governor": governor,
        "runtime": backend.name,
        "runtime_version": backend.version,
        "threads": job.threads,
        "runtime_package": backend.package,
        "python": platform.python_version(),
        "numpy": np_.__version__ if np_ is not None else "",
        "machine": platform.machine(),
        "system": platform.system(),
        "usable_cores": cores,
        "pinned": job.cores is not None,
        "accelerator": accelerator(job),
    }
    amx = x86_amx_state()
    if amx:
        facts["x86_amx"] = amx
    return facts, warnings


def accelerator(job: Job) -> str:
    """What the job runs on besides the runtime's default (XNNPACK, the CPU provider): the
    delegate or the providers joined by commas, "" for the default; OpenVINO's device, named
    always (there is no default to leave out)."""
    if job.runtime == "tflite":
        return job.delegate if job.delegate not in (None, "xnnpack") else ""
    if job.runtime == "tensorrt":
        return f"gpu {job.trtexec['precision']}"
    if job.runtime == "openvino":
        return job.openvino["device"]
    if job.providers is None or job.providers == ["CPUExecutionProvider"]:
        return ""
    return ",".join(job.providers)


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far, or None where ``resource`` is missing."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux: KiB


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(times_ms: Sequence[float]) -> dict[str, Any]:
    """The statistics of edgenas's Measurement, computed the same way."""
    ordered = sorted(times_ms)
    return {
        "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered),
        "std_ms": statistics.pstdev(ordered),
        "p10_ms": quantile(ordered, 0.10),
        "p90_ms": quantile(ordered, 0.90),
        "min_ms": ordered[0],
        "n": len(ordered),
    }


def iqr_ratio(times_ms: Sequence[float]) -> float:
    """Relative spread (IQR / median)."""
    ordered = sorted(times_ms)
    median = statistics.median(ordered)
    if median <= 0:
        return 0.0
    return (quantile(ordered, 0.75) - quantile(ordered, 0.25)) / median


def chunk_sizes(runs: int, rounds: int) -> list[int]:
    base, extra = divmod(runs, rounds)
    return [base + 1 if r < extra else base for r in range(rounds)]


def measure_interleaved(
    models: Sequence[LoadedModel],
    indices: Sequence[int],
    runs: int,
    rounds: int,
    rng: random.Random,
) -> tuple[dict[int, list[float]], list[list[int]]]:
    """Timed runs in rounds; each round visits the models in a fresh random order.

    Interleaving spreads slow drift (heat, background load) over all models instead of
    biasing whichever model ran last. Each visit starts with one untimed run, so that the
    first timed run does not pay for the previous model having evicted the caches.
    """
    times: dict[int, list[float]] = {i: [] for i in indices}
    order = []
    clock = time.perf_counter_ns
    for size in chunk_sizes(runs, rounds):
        visit = list(indices)
        rng.shuffle(visit)
        order.append(visit)
        for i in visit:
            run = models[i].run
            run()
            for _ in range(size):
                start = clock()
                run()
                times[i].append((clock() - start) / 1e6)
    return times, order


class TrtexecBackend(Backend):
    """runtime tensorrt: NVIDIA's trtexec. To time, one process per model: it builds an
    engine from the ONNX file and times it on the GPU; its log and exported JSON files go
    back to the host as they are (the host reads them), so timing needs neither numpy nor
    TensorRT's Python bindings. To classify (``classify``), a process per image or per
    ``TRTEXEC_IMAGES`` images, whose input and output files this runner writes and reads
    with numpy."""

    name = "tensorrt"
    package = "trtexec"

    def __init__(self, job: Job) -> None:
        self.settings = job.trtexec
        path = self.settings["path"]
        found = path if os.sep in path else shutil.which(path)
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise RunnerError(
                "runtime",
                f"trtexec not found at {path!r} on this device: on a Jetson it comes with "
                f"JetPack (sudo apt install libnvinfer-bin; {JETPACK_TRTEXEC}); set "
                "tensorrt.trtexec in the device profile to its path",
                status=3,
            )
        self.path = os.path.abspath(found)  # classify runs trtexec in another folder
        self.version = self._version()

    def _version(self) -> str:
        """TensorRT's version from the first line trtexec prints ("[TensorRT v100300]")."""
        try:
            out = subprocess.run(
                [self.path, "--help"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            ).stdout.decode(errors="replace")
        except (OSError, subprocess.SubprocessError) as exc:
            raise RunnerError(
                "runtime", f"cannot run trtexec {self.path!r}: {_first_line(exc)}", status=3
            ) from None
        match = re.search(r"\[TensorRT v(\d+)\]", out)
        return f"v{match[1]}" if match else "unknown"

    def measure(
        self, index: int, path: str, folder: str, profile_ops: bool, runs: int
    ) -> dict[str, Any]:
        """One trtexec run: its exit status, the log's tail and the exported files' text."""
        _check_readable(path)
        times = os.path.join(folder, f"{index}-times.json")
        layers = os.path.join(folder, f"{index}-profile.json")
        args = trtexec_args(
            self.path,
            path,
            self.settings,
            runs=runs,
            times=times,
            layers=layers if profile_ops else None,
        )
        status, log = _run_trtexec(args)
        return {
            "status": status,
            "log": log[-TRTEXEC_LOG_MAX:],
            "times": _read(times),
            "profile": _read(layers) if profile_ops else None,
        }

    def classify(self, path: str, images: Any, np_: Any, folder: str) -> list[int]:
        """The top-1 class of each image as trtexec's engine of ``path`` computes it (the
        engine built as for timing, at the profile's precision). The first process builds
        and saves the engine (kept in the job's ``engines`` folder for its next jobs, if it
        names one), the others load it; each feeds its image(s) from a raw float32 file
        (``--loadInputs``) and reads the outputs trtexec writes (``--exportOutput``)."""
        _check_readable(path)
        path = os.path.abspath(path)  # trtexec runs in ``folder``
        what = f"model {path!r}"
        inputs, outputs = onnx_io(path)
        _one_input(len(inputs), path)
        if not outputs:
            raise RunnerError("model", f"{what} has no outputs: it cannot classify images")
        name, elem_type, dims = inputs[0]
        if elem_type != _ONNX_FLOAT:
            type_name = _ONNX_TYPES.get(elem_type, f"ONNX type {elem_type}")
            raise RunnerError(
                "model",
                f"{what} takes {type_name} inputs: trtexec is fed float32 images here; export "
                "the model with a float32 input",
            )
        if "," in name or "'" in name:  # trtexec splits its specs at commas and quotes
            raise RunnerError(
                "model",
                f"{what}: trtexec cannot be given an input named {name!r} (a comma or a quote "
                "in it); export the model with another input name",
            )
        one = np_.asarray(images[:1], dtype=np_.float32)
        layout = fit_image(np_, one, dims, what).shape[1:]  # NCHW, or NHWC where the file is
        nhwc = layout != one.shape[1:]
        batched = len(dims) == 4 and not _static(dims[0])
        step = TRTEXEC_IMAGES if batched else 1
        dynamic = not all(_static(d) for d in dims)

        def shape(n: int) -> str:
            return f"'{name}':" + "x".join(str(v) for v in (n, *layout))

        engine = self._engine(path, layout, folder)
        part = f"{engine}.part{os.getpid()}"  # whole only once renamed
        top1: list[int] = []
        for first in range(0, len(images), step):
            x = images[first : first + step]
            x = np_.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, dtype=np_.float32)
            _writing(folder, x.tofile, os.path.join(folder, "input.bin"))
            building = not os.path.isfile(engine)
            if building:
                args = [f"--onnx={path}", *_precision_flags(self.settings)]
                args.append(f"--saveEngine={part}")
                if dynamic:  # an engine for 1 to `step` images
                    args += [f"--minShapes={shape(1)}", f"--optShapes={shape(step)}"]
                    args += [f"--maxShapes={shape(step)}"]
            else:
                args = [f"--loadEngine={engine}"]
            if dynamic:
                args.append(f"--shapes={shape(len(x))}")
            args += [
                f"--loadInputs='{name}':input.bin",
                "--exportOutput=output.json",
                "--iterations=1",
                "--warmUp=0",
                "--duration=0",
            ]
            scores = self._outputs(np_, args, folder, outputs[0], f"{what} on image {first}")
            if building:
                _writing(engine, os.replace, part, engine)
            if scores.size % len(x):
                raise RunnerError(
                    "model", f"{what}: trtexec wrote {scores.size} outputs for {len(x)} image(s)"
                )
            top1.extend(int(c) for c in scores.reshape(len(x), -1).argmax(axis=1))
        return top1

    def _engine(self, path: str, layout: Sequence[int], folder: str) -> str:
        """Where the engine of ``path`` goes: in the job's ``engines`` folder, where a
        board's session keeps it between the parts of the images (one build per file, the
        same tactics for every image), else in this job's ``folder``. An engine is the
        file's (its path, size and time), built by this trtexec at this precision for
        images of this size."""
        engines = self.settings.get("engines")
        if not engines:
            return os.path.join(folder, "engine")
        engines = os.path.abspath(engines)
        _writing(engines, _make_folder, engines)
        stat = os.stat(path)
        key = [path, stat.st_size, stat.st_mtime_ns, self.path, self.settings["precision"]]
        key += [TRTEXEC_IMAGES, *layout]
        digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()
        return os.path.join(engines, digest[:16] + ".engine")

    def _outputs(self, np_: Any, args: list[str], folder: str, output: str, where: str) -> Any:
        """One trtexec process in ``folder``: the values of the output named ``output``."""
        written = os.path.join(folder, "output.json")
        if os.path.exists(written):
            os.remove(written)  # a process that writes none must not leave the last one's
        status, log = _run_trtexec([self.path, *args], cwd=folder)
        if status != 0:
            raise RunnerError(
                "model",
                f"trtexec failed on {where} (exit status {status}): {trtexec_error(log)}; run "
                "trtexec on the device with the same file for its whole log",
            )
        try:
            with open(written) as f:
                entries = json.loads(_json_numbers(f.read()))
            values = next(
                (e["values"] for e in entries if isinstance(e, dict) and e.get("name") == output),
                None,
            )
            scores = np_.asarray(values if values else [], dtype=np_.float64)
        except FileNotFoundError:
            raise RunnerError(
                "model", f"trtexec wrote no outputs for {where} (--exportOutput)"
            ) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise RunnerError(
                "model",
                f"trtexec's outputs for {where} are not its --exportOutput JSON: "
                f"{_first_line(exc)}",
            ) from None
        if scores.ndim != 1 or not scores.size:
            raise RunnerError("model", f"trtexec's outputs for {where} have no {output!r}")
        return scores


# trtexec prints output values with C++'s operator<<: "nan", "-nan", "inf" and "-inf" are
# not JSON numbers. Only values: after "[ " or ", ", before "," or " ]" (not in a name).
_NOT_FINITE = re.compile(r"(?<=[\[,] )(-?)(nan|inf)(?=,| \])")


def _json_numbers(text: str) -> str:
    return _NOT_FINITE.sub(lambda m: "NaN" if m[2] == "nan" else f"{m[1]}Infinity", text)


def _run_trtexec(args: list[str], cwd: str | None = None) -> tuple[int, str]:
    """trtexec's exit status and log (stdout and stderr together)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        out, _ = proc.communicate()
    finally:
        # A runner stopped mid-build (the host's command timeout sends SIGTERM) must not
        # leave trtexec holding the GPU.
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace")


def _writing(path: str, write: Callable[..., Any], *args: Any) -> None:
    """``write(*args)``, where a full disk, a missing permission or a path that is not a
    folder is one line."""
    try:
        write(*args)
    except OSError as exc:
        fix = (
            "free space on the device (the runner's temporary folder and ssh.remote_tmpdir)"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the folder and its permissions"
        )
        raise RunnerError(
            "environment", f"cannot write {path!r} on this device: {_first_line(exc)}; {fix}"
        ) from None


def _make_folder(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def trtexec_error(log: str) -> str:
    """Why trtexec failed, from its log: its last ``[E]`` line that is not one of its generic
    ones ("Failed to parse onnx file", ...), else its last ``[E]`` line, else its last line.
    (The host reads a timing run's log more closely: ``devices.trtexec.failure_reason``.)"""
    generic = (
        "Failed to parse onnx file",
        "Parsing model failed",
        "Failed to create engine",
        "Engine set up failed",
    )
    errors = [
        re.sub(r"^.*?\[E\] (\[TRT\] )?", "", line).strip()
        for line in log.splitlines()
        if "[E] " in line
    ]
    specific = [e for e in errors if e and not e.startswith(generic)]
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return (specific or errors or lines or ["no output"])[-1]


def _precision_flags(settings: dict[str, Any]) -> list[str]:
    return [] if settings["precision"] == "fp32" else ["--" + settings["precision"]]


def trtexec_args(
    trtexec: str,
    model: str,
    settings: dict[str, Any],
    *,
    runs: int,
    times: str,
    layers: str | None = None,
) -> list[str]:
    """trtexec's arguments for one model. --warmUp is in ms (trtexec counts no warmup runs);
    --duration=0 makes --iterations the exact number of timed queries; --separateProfileRun
    keeps the layer profiler (``layers``) out of the timed runs. Without a calibration cache
    --int8 calibrates on random data: right for latency, meaningless for accuracy."""
    args = [trtexec, f"--onnx={model}", *_precision_flags(settings)]
    args += [
        f"--warmUp={settings['warmup_ms']}",
        f"--iterations={runs}",
        "--duration=0",
        "--avgRuns=1",
        f"--exportTimes={times}",
    ]
    if layers is not None:
        args += ["--separateProfileRun", "--dumpProfile", f"--exportProfile={layers}"]
    return args


# Set when a stop signal arrives: an import it cuts short can fail as another error (numpy's
# says it is imported from its source folder), which is then the stop, not a missing package.
_stopping = False


def _interrupted(signum: int, frame: Any) -> None:
    global _stopping
    _stopping = True
    raise KeyboardInterrupt


def _import_failed() -> None:
    """Raise the stop that cut an import short, if one did (see ``_stopping``)."""
    if _stopping:
        raise KeyboardInterrupt


def _run_trtexec_job(job: Job, root: str) -> dict[str, Any]:
    # SIGTERM as an exception, so that the trtexec in flight is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupted)
    backend = TrtexecBackend(job)
    facts, warnings = fingerprint(job, backend, None, root)
    entries = []
    if job.models and job.classify is not None:
        np_ = import_numpy()  # only classifying needs numpy here
        images = load_images(np_, job.classify)
        for index, path in enumerate(job.models):
            folder = tempfile.mkdtemp(prefix="edgenas-trtexec-")
            try:
                top1 = backend.classify(path, images, np_, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            entries.append({"index": index, "path": path, "top1": top1})
    elif job.models:
        folder = tempfile.mkdtemp(prefix="edgenas-trtexec-")
        try:
            for index, path in enumerate(job.models):
                run = backend.measure(index, path, folder, job.profile_ops, job.runs)
                run["spread_threshold"] = job.spread_threshold
                entries.append({"index": index, "path": path, "trtexec": run})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        warnings.extend(thermal_warnings(root))
    return {
        "format": RESULTS_FORMAT,
        "fingerprint": facts,
        "warnings": warnings,
        "order": [list(range(len(job.models)))] if job.models and not job.classify else [],
        "models": entries,
    }


def run_job(job: Job, root: str = "/") -> dict[str, Any]:
    if job.cores is not None:
        pin(job.cores)  # before the runtime starts its threads, which inherit the affinity
    if not job.x86_amx:
        refuse_x86_amx()  # before the runtime loads: it asks for the tiles when it starts
    if job.runtime == "tensorrt":
        return _run_trtexec_job(job, root)
    np_ = import_numpy()
    backend = make_backend(job, np_)
    try:
        facts, warnings = fingerprint(job, backend, np_, root)
        result: dict[str, Any] = {
            "format": RESULTS_FORMAT,
            "fingerprint": facts,
            "warnings": warnings,
            "order": [],
            "models": [],
        }
        if job.models and job.classify is not None:
            images = load_images(np_, job.classify)
            result.update(_classify(job, backend, images, np_, warnings))
        elif job.models:
            result.update(_measure(job, backend, warnings, root))
        return result
    finally:
        backend.close()


def _check_accelerated(backend: Backend, loaded: Sequence[LoadedModel]) -> None:
    """Refuse a job whose requested accelerator took none of any model's ops: every time
    would be the CPU's, under the accelerator's name. A model it takes none of among models
    it takes is a warning (an op it lacks, e.g. in a small block)."""
    counts = [backend.accelerated_ops(model.placement) for model in loaded]
    if backend.accelerator is None or not counts or any(c is None or c > 0 for c in counts):
        return
    raise RunnerError(
        "fallback",
        f"{backend.accelerator} took none of the ops of the {len(loaded)} model(s): all of "
        f"them ran on {backend.fallback}, which is not what this device's profile asks to "
        "measure; check that the accelerator is there and supports these ops, or measure "
        "without it (onnxruntime providers: [cpu]; TFLite delegate: xnnpack; OpenVINO "
        "device: CPU)",
        status=3,
    )


def load_images(np_: Any, path: str) -> Any:
    """The job's images: a float array of N x C x H x W (numpy's .npy, no pickles), mapped
    from the file rather than read whole (a board's memory is small)."""
    try:
        images = np_.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RunnerError(
            "bad-job", f"cannot read the images {path!r}: {_first_line(exc)}"
        ) from None
    if not isinstance(images, np_.ndarray):  # an .npz archive
        raise RunnerError(
            "bad-job", f"the images {path!r} are an .npz archive: classify takes one .npy array"
        )
    if images.ndim != 4 or images.dtype.kind != "f" or not len(images):
        raise RunnerError(
            "bad-job",
            f"the images {path!r} are {images.dtype} of shape {list(images.shape)}: classify "
            "takes float images of shape N x C x H x W, N >= 1",
        )
    return images


def _classify(
    job: Job, backend: Backend, images: Any, np_: Any, warnings: list[str]
) -> dict[str, Any]:
    """Each model's top-1 class of each of the job's images, on the job's runtime as it
    times them (one image at a time, as a device runs them)."""
    loaded = [backend.load(path) for path in job.models]  # loads and runs once
    for model in loaded:
        warnings.extend(model.warnings)
    _check_accelerated(backend, loaded)
    entries = []
    for i, path in enumerate(job.models):
        model = loaded[i]
        if model.classify is None:
            raise RunnerError("bad-job", f"{backend.name} in this runner cannot classify images")
        top1 = []
        for k in range(len(images)):
            try:
                out = model.classify(np_.asarray(images[k : k + 1], dtype=np_.float32))
            except RunnerError:
                raise
            except Exception as exc:
                raise RunnerError(
                    "model", f"model {path!r} failed on image {k}: {backend.reason(exc)}"
                ) from None
            top1.append(int(np_.argmax(out)))  # of the first output, flattened
        entries.append({"index": i, "path": path, "top1": top1, "placement": model.placement})
    return {"models": entries, "order": []}


def _measure(job: Job, backend: Backend, warnings: list[str], root: str) -> dict[str, Any]:
    throttled_before = throttle_count(root)
    loaded = []
    peaks: list[int | None] = []
    for path in job.models:
        before = peak_rss_bytes()
        model = backend.load(path)  # loads and runs once
        for _ in range(job.warmup):
            model.run()
        after = peak_rss_bytes()
        loaded.append(model)
        warnings.extend(model.warnings)
        peaks.append(max(after - before, 0) if before is not None and after is not None else None)
    _check_accelerated(backend, loaded)
    rng = random.Random(job.seed)
    indices = list(range(len(job.models)))
    times, order = measure_interleaved(loaded, indices, job.runs, job.rounds, rng)
    ratios = {i: iqr_ratio(times[i]) for i in indices}
    noisy = [i for i in indices if ratios[i] > job.spread_threshold]
    remeasured = set(noisy)
    for _ in range(REMEASURES_MAX):
        if not noisy:
            break
        again, again_order = measure_interleaved(loaded, noisy, job.runs, job.rounds, rng)
        order.extend(again_order)
        for i in noisy:
            ratio = iqr_ratio(again[i])
            if ratio < ratios[i]:
                times[i], ratios[i] = again[i], ratio
        noisy = [i for i in noisy if ratios[i] > job.spread_threshold]
    profiles: dict[int, dict[str, Any] | None] = {}
    if job.profile_ops:
        for i in indices:
            profiler = loaded[i].profile
            if profiler is not None:
                profiles[i] = profiler(max(job.warmup, 1), min(job.runs, PROFILE_RUNS_MAX))
        if any(model.profile is None for model in loaded):
            warnings.append(backend.no_profile)
    throttled_after = throttle_count(root)
    if (
        throttled_before is not None
        and throttled_after is not None
        and throttled_after > throttled_before
    ):
        warnings.append(
            f"the CPU was thermally throttled {throttled_after - throttled_before} times "
            "during the measurement"
        )
    warnings.extend(thermal_warnings(root))
    entries = []
    for i in indices:
        entry: dict[str, Any] = {"index": i, "path": job.models[i], "times_ms": times[i]}
        entry.update(stats(times[i]))
        profile = profiles.get(i)
        entry.update(
            {
                "iqr_ratio": ratios[i],
                "remeasured": i in remeasured,
                "flagged": ratios[i] > job.spread_threshold,
                # Growth of the runner's peak RSS (ru_maxrss) while loading and warming up
                # this model: a lower bound, 0 when it fit in memory already used; the
                # first model also carries the runtime's own start-up.
                "peak_memory_bytes": peaks[i],
                "ops": profile["ops"] if profile else None,
                "placement": loaded[i].placement,
                "init_ms": loaded[i].init_ms,
                "first_inference_ms": loaded[i].first_inference_ms,
                "profile": ({k: v for k, v in profile.items() if k != "ops"} if profile else None),
            }
        )
        entries.append(entry)
    return {"models": entries, "order": order}


def error_payload(kind: str, message: str, detail: str | None = None) -> dict[str, Any]:
    error = {"kind": kind, "message": message}
    if detail:
        error["traceback"] = detail
    return {"format": RESULTS_FORMAT, "error": error}


def read_job(source: str) -> Job:
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source) as f:
                text = f.read()
    except OSError as exc:
        raise RunnerError("bad-job", f"cannot read job {source!r}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RunnerError("bad-job", f"job is not valid JSON: {_first_line(exc)}") from None
    return Job(data)


def write_output(dest: str, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=1, sort_keys=True)
    if dest == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    # A temporary name then a rename: a reader never sees half a file.
    tmp = f"{dest}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, dest)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # a JSON error, not argparse's usage text
        raise RunnerError("bad-job", f"bad arguments: {message}")


MIN_PYTHON = (3, 8)
PYTHON_KEYS = "the device profile's python (local.python, or ssh.python on a board)"


def check_python() -> None:
    """Refuse a Python older than the runner needs, naming it: 3.7 read the whole file and
    then asked for numpy. (3.6 and older cannot read it: the host names that SyntaxError.)"""
    if sys.version_info < MIN_PYTHON:
        raise RunnerError(
            "environment",
            f"Python {platform.python_version()} ({sys.executable}) is older than the runner "
            f"needs ({MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer): set {PYTHON_KEYS} to a newer one",
            status=3,
        )


# The pid of the process that started this runner, where it says (the local device does).
PARENT_ENV = "EDGENAS_RUNNER_PARENT"


def _end_with_parent() -> None:
    """On Linux, be interrupted (SIGTERM, raised as KeyboardInterrupt: cleaned up as after
    Ctrl-C) when the process that started this runner ends. An edgenas killed with SIGKILL,
    or an SSH session cut, left it measuring to the end of its batch, beside the
    measurements of the rerun. The handler is set here, not inherited: a shell's background
    job starts with SIGINT ignored. A parent that ended before this was set (while Python
    started) is caught by its pid, where the local device gives it."""
    if not sys.platform.startswith("linux"):
        return
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        import ctypes

        set_ok = ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) == 0  # PDEATHSIG
    except (ImportError, OSError, AttributeError):
        return  # a Python without ctypes measures as before
    parent = os.environ.get(PARENT_ENV, "")
    if set_ok and parent.isdigit() and not _running(int(parent)):
        raise KeyboardInterrupt


def _running(pid: int) -> bool:
    # once_for_all.processes.alive's twin: this file imports nothing of the project's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and waits for its parent to reap it: a SIGKILLed edgenas
    that its caller has not waited for yet still answers kill(pid, 0), and this runner
    measured its whole batch (Linux; False where /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _ArgumentParser(description="Time model files and write JSON results.")
    parser.add_argument("--job", default="-", help="job JSON file, or - for stdin (default)")
    parser.add_argument("--out", default="-", help="results JSON file, or - for stdout (default)")
    out = "-"
    status = 0
    try:
        args = parser.parse_args(argv)
        out = args.out
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupted)  # Ctrl-C too is noted as a stop
        _end_with_parent()
        check_python()
        payload = run_job(read_job(args.job))
    except RunnerError as exc:
        payload, status = error_payload(exc.kind, exc.message), exc.status
    except KeyboardInterrupt:
        payload, status = error_payload("interrupted", "interrupted"), 130
    except Exception as exc:
        message = f"runner bug: {type(exc).__name__}: {_first_line(exc)}"
        payload, status = error_payload("internal", message, traceback.format_exc()), 1
    try:
        write_output(out, payload)
    except OSError as exc:
        sys.stderr.write(f"runner: cannot write {out!r}: {exc.strerror}\n")
        return 2
    if status:
        sys.stderr.write(f"runner: {payload['error']['message']}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
