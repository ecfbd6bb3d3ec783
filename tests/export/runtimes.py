"""Running exported models in the real runtimes, one image at a time as on a device, and
measuring how close two sets of outputs are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]


def run_onnx(path: Path, inputs: np.ndarray, *, batch: int = 1) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]
    return np.concatenate([session.run(None, {name: chunk})[0] for chunk in chunks])


def tflite_interpreter(path: Path) -> Any:
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(path: Path, inputs_nchw: np.ndarray) -> np.ndarray:
    """Feed NCHW images to an NHWC .tflite, quantizing and dequantizing int8 ends."""
    interpreter = tflite_interpreter(path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for x in inputs_nchw.transpose(0, 2, 3, 1):
        x = x[None]
        if inp["dtype"] == np.int8:
            scale, zero_point = inp["quantization"]
            x = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        results.append(y)
    return np.concatenate(results)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute error as a fraction of the range the expected outputs span."""
    return float(np.abs(actual - expected).mean() / np.ptp(expected))


def correlation(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.corrcoef(actual.ravel(), expected.ravel())[0, 1])
