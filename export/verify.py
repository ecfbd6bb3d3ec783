"""Running exported models in their real runtimes (onnxruntime, the LiteRT interpreter) on
real images, and the figures that say whether an export is right: parity with PyTorch,
top-1 agreement and accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export._quiet import quiet_converters
from export.errors import ExportError
from once_for_all.errors import one_line


def run_onnx(path: Path, inputs: np.ndarray, *, batch: int = 1) -> np.ndarray:
    """Outputs of the ONNX model at ``path`` for float32 NCHW ``inputs``, ``batch`` at a time
    (1 for a fixed-batch model), on one CPU thread."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"onnxruntime cannot load {path} ({one_line(exc)}): re-export it"
        ) from exc
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    chunks = [x[i : i + batch] for i in range(0, len(x), batch)]
    return np.concatenate([session.run(None, {name: chunk})[0] for chunk in chunks])


def tflite_interpreter(path: Path) -> Any:
    """A LiteRT interpreter for ``path`` with its tensors allocated, on one CPU thread."""
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

    try:
        with quiet_converters():  # LiteRT announces its XNNPACK delegate on stderr
            interpreter = Interpreter(model_path=str(path), num_threads=1)
            interpreter.allocate_tensors()
    except Exception as exc:
        raise ExportError(
            f"the LiteRT interpreter cannot load {path} ({one_line(exc)}): re-export it"
        ) from exc
    return interpreter


def run_tflite(path: Path, inputs_nchw: np.ndarray) -> np.ndarray:
    """Outputs of the .tflite at ``path`` for float32 NCHW ``inputs_nchw``, one image at a time
    as on a device. A 4-D input of the model is taken as NHWC (what export_tflite writes);
    int8 inputs are quantized and int8 outputs dequantized with the model's own parameters."""
    interpreter = tflite_interpreter(path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = np.asarray(inputs_nchw, dtype=np.float32)
    if x.ndim == 4 and tuple(inp["shape"][1:]) != x.shape[1:]:
        x = x.transpose(0, 2, 3, 1)
    if tuple(inp["shape"][1:]) != x.shape[1:]:
        raise ExportError(
            f"{path} takes inputs of shape {tuple(inp['shape'])}, got images of shape "
            f"{np.shape(inputs_nchw)[1:]}: export the model for this resolution"
        )
    results = []
    for sample in x:
        feed = sample[None]
        if inp["dtype"] == np.int8:
            scale, zero_point = inp["quantization"]
            feed = np.clip(np.round(feed / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        results.append(np.asarray(y, dtype=np.float32))
    return np.concatenate(results)


def max_abs_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(actual) - np.asarray(expected)).max())


def agreement(actual: np.ndarray, expected: np.ndarray) -> float:
    """The fraction of inputs whose top-1 class is the same in both sets of logits."""
    return float((np.argmax(actual, axis=1) == np.argmax(expected, axis=1)).mean())


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.argmax(logits, axis=1) == np.asarray(labels)).mean())


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute error as a fraction of the range the expected outputs span."""
    return float(np.abs(actual - expected).mean() / np.ptp(expected))


def correlation(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(actual), np.ravel(expected))[0, 1])
