"""A stand-in for NVIDIA's trtexec that classifies: it runs the ONNX file with onnxruntime
and reads and writes trtexec's files as TensorRT's own samples/common sources do (read at
NVIDIA/TensorRT release/8.5, 8.6, 10.3, 10.16 and a892d22):

- ``--saveEngine``/``--loadEngine`` (both at once: "Incompatible load and save engine options
  selected"); the "engine" here is a JSON note of the ONNX file's bytes (as built: a stale
  engine runs the old file), precision and shape profile;
- ``--shapes``, ``--minShapes``, ``--optShapes``, ``--maxShapes``: ``--shapes`` alone sets
  the build profile to itself (``AllOptions::parse``); a model without dynamic dimensions
  refuses explicit build shapes ("Static model does not take explicit shapes ...",
  sampleEngines.cpp); a dynamic dimension without ``--shapes`` at inference becomes 1;
- ``--loadInputs=name:file``: names split from the file at the last ':' or wrapped in single
  quotes (``splitNameAndValue``); the file is the binding's raw bytes, its size checked as
  TensorRT 10 does ("Unexpected file size for input file ...", sampleUtils.cpp);
- ``--exportOutput``: ``exportJSONOutput`` of sampleReporting.cpp, character for character,
  values as C++'s ``operator<<`` prints floats (6 significant digits).

A timing run (``--exportTimes``) replays recorded files instead, as test_trtexec's stand-in
does: the ``--exportTimes`` file is a copy of ``TRTEXEC_TIMES`` and the log that of
``TRTEXEC_LOG``.

``TRTEXEC_FAIL_ON`` (a process number, from 1) makes that process fail with an ``[E]`` line,
``TRTEXEC_NO_OUTPUT`` (one too) has it skip ``--exportOutput``, and ``TRTEXEC_NAN`` writes
"nan" and "-inf" among the values. Each call's arguments are appended to ``calls.jsonl`` beside this file's
wrapper (``TRTEXEC_CALLS``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]

VERSION = "[TensorRT v100300]"


def _log(level: str, message: str) -> None:
    print(f"[12/07/2026-10:00:00] [{level}] {message}")


def _fail(message: str) -> None:
    _log("E", message)
    print(f"&&&& FAILED TensorRT.trtexec {VERSION} # trtexec")
    sys.exit(1)


def _split(spec: str) -> tuple[str, str]:
    """splitNameAndValue: 'name':value, else split at the last ':'."""
    parts = spec.split("'")
    if len(parts) != 1:
        if len(parts) != 3:
            _fail(f"Found invalid number of 's when parsing {spec}. Expected: 2")
        return parts[0] + parts[1], parts[2][1:]
    name, _, value = spec.rpartition(":")
    return name, value


def _dims(value: str) -> list[int]:
    return [int(d) for d in value.split("x")]


def main(args: list[str]) -> None:
    with open(os.environ["TRTEXEC_CALLS"], "a") as f:
        f.write(json.dumps(args) + "\n")
    if "--help" in args:
        print(f"&&&& RUNNING TensorRT.trtexec {VERSION} # trtexec --help")
        return
    options: dict[str, str] = {}
    for arg in args:
        key, _, value = arg.partition("=")
        options[key] = value
    with open(os.environ["TRTEXEC_CALLS"]) as f:
        calls = len(f.readlines())
    if os.environ.get("TRTEXEC_FAIL_ON") == str(calls):
        _fail(
            "[TRT] 1: [defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)"
        )
    if "--exportTimes" in options:  # a timing run: recorded output
        shutil.copyfile(os.environ["TRTEXEC_TIMES"], options["--exportTimes"])
        with open(os.environ["TRTEXEC_LOG"]) as f:
            sys.stdout.write(f.read())
        return
    if "--loadEngine" in options and "--saveEngine" in options:
        _fail("Incompatible load and save engine options selected")
    build = {
        k: dict(_split(s) for s in options[f"--{k}Shapes"].split(","))
        for k in ("min", "opt", "max")
        if f"--{k}Shapes" in options
    }
    shapes = (
        dict(_split(s) for s in options["--shapes"].split(",")) if "--shapes" in options else {}
    )
    if "--loadEngine" in options:
        with open(options["--loadEngine"]) as f:
            engine = json.load(f)
    else:
        model = onnx.load(options["--onnx"])
        dynamic = any(
            not d.HasField("dim_value")
            for i in model.graph.input
            for d in i.type.tensor_type.shape.dim
        )
        if not build and shapes:
            build = {k: dict(shapes) for k in ("min", "opt", "max")}
        if not dynamic and build:
            _fail(
                "Static model does not take explicit shapes since the shape of inference tensors "
                "will be determined by the model itself"
            )
        with open(options["--onnx"], "rb") as f:
            onnx_bytes = f.read()
        engine = {
            "onnx": base64.b64encode(onnx_bytes).decode(),
            "precision": "fp16"
            if "--fp16" in options
            else "int8"
            if "--int8" in options
            else "fp32",
            "profile": {k: {n: _dims(v) for n, v in d.items()} for k, d in build.items()},
        }
        _log("I", "Engine built in 1.5 sec.")
        if "--saveEngine" in options:
            with open(options["--saveEngine"], "w") as f:
                json.dump(engine, f)
    session = ort.InferenceSession(
        base64.b64decode(engine["onnx"]), providers=["CPUExecutionProvider"]
    )
    (given,) = session.get_inputs()
    shape = []
    for i, d in enumerate(given.shape):
        if isinstance(d, int):
            shape.append(d)
        elif given.name in shapes:
            shape.append(_dims(shapes[given.name])[i])
        else:
            shape.append(1)
    profile = engine["profile"]
    if profile and not all(
        lo <= v <= hi
        for lo, v, hi in zip(
            profile["min"][given.name], shape, profile["max"][given.name], strict=True
        )
    ):
        _fail("Inference set up failed")
    size = int(np.prod(shape)) * 4
    loads = (
        dict(_split(s) for s in options["--loadInputs"].split(","))
        if "--loadInputs" in options
        else {}
    )
    for name in loads:
        if name != given.name:
            _fail(f'Cannot find input tensor with name "{name}" in the engine bindings! ')
    if given.name in loads:
        with open(loads[given.name], "rb") as f:
            data = f.read()
        if len(data) != size:
            _fail(
                f"Unexpected file size for input file: {loads[given.name]}. Note: Input binding "
                f"size is: {size} bytes but the file size is {len(data)} bytes. Double check the "
                "size and datatype of the provided data."
            )
        x = np.frombuffer(data, dtype=np.float32).reshape(shape)
    else:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outputs = session.run(None, {given.name: x})
    _log("I", "Average on 1 runs - GPU latency: 0.1 ms")
    if "--exportOutput" in options and os.environ.get("TRTEXEC_NO_OUTPUT") != str(calls):
        with open(options["--exportOutput"], "w") as f:
            f.write(_export_json(session, outputs))
    print(f"&&&& PASSED TensorRT.trtexec {VERSION} # trtexec")


def _export_json(session: ort.InferenceSession, outputs: list[np.ndarray]) -> str:
    """exportJSONOutput's text (sampleReporting.cpp)."""
    text, sep = "[\n", "  "
    for info, value in zip(session.get_outputs(), outputs, strict=True):
        values = [format(float(v), "g") for v in value.ravel()]
        if os.environ.get("TRTEXEC_NAN"):
            values[:2] = ["nan", "-inf"]
        text += f'{sep}{{ "name" : "{info.name}"\n'
        sep = ", "
        text += f'  {sep}"dimensions" : "{"x".join(str(d) for d in value.shape)}"\n'
        text += f'  {sep}"values" : [ {sep.join(values)} ]\n  }}\n'
    return text + "]\n"


if __name__ == "__main__":
    main(sys.argv[1:])
