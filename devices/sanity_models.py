"""Tiny built-in models for ``edgenas devices check``: a sanity measurement on any device.

Written with the ONNX helper API and with LiteRT's own TFLite flatbuffer schema, so that no
exporter (and no torch) is needed. Each one runs in well under a millisecond.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from devices import tflite_writer


def sanity_model(folder: Path, *, kind: str, runtime: str) -> Path:
    """The model a device of this ``kind`` and ``runtime`` can run, written into ``folder``."""
    if kind == "vela":
        return tflite_int8_add(folder / "sanity_int8.tflite")
    if runtime == "tflite":
        return tflite_fully_connected(folder / "sanity.tflite")
    return onnx_conv(folder / "sanity.onnx")


def onnx_conv(path: Path) -> Path:
    """float32 [1, 3, 16, 16] -> Conv 3x3 to 8 channels -> Relu."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        "sanity_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by onnxruntime releases of the last few years
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tflite_fully_connected(path: Path, *, dynamic_batch: bool = False) -> Path:
    """float32 [1, 8] -> FULLY_CONNECTED -> [1, 4]; ``dynamic_batch`` marks the batch as -1."""
    s = tflite_writer.schema()
    f32 = s.TensorType.FLOAT32
    weights = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    x_sig, y_sig = ([-1, 8], [-1, 4]) if dynamic_batch else (None, None)
    tensors = [
        tflite_writer.tensor("x", [1, 8], 1, f32, signature=x_sig),
        tflite_writer.tensor("w", [4, 8], 2, f32),
        tflite_writer.tensor("b", [4], 3, f32),
        tflite_writer.tensor("y", [1, 4], 4, f32, signature=y_sig),
    ]
    buffers = [tflite_writer.buffer(), tflite_writer.buffer(), tflite_writer.buffer(weights)]
    buffers += [tflite_writer.buffer(np.zeros(4, np.float32)), tflite_writer.buffer()]
    fc = tflite_writer.Operator(
        s.BuiltinOperator.FULLY_CONNECTED,
        s.BuiltinOptions.FullyConnectedOptions,
        s.FullyConnectedOptionsT(),
        [0, 1, 2],
        [3],
    )
    return tflite_writer.write_graph(path, [fc], tensors, buffers, [0], [3])


def tflite_int8_add(path: Path) -> Path:
    """int8 [1, 16] + int8 [1, 16] -> int8 [1, 16]: an operator the Ethos-U NPU runs."""
    s = tflite_writer.schema()
    i8 = s.TensorType.INT8
    tensors = [
        tflite_writer.tensor("a", [1, 16], 1, i8, scale=0.1),
        tflite_writer.tensor("b", [1, 16], 2, i8, scale=0.1),
        tflite_writer.tensor("y", [1, 16], 3, i8, scale=0.2),
    ]
    buffers = [tflite_writer.buffer() for _ in range(4)]
    add = tflite_writer.Operator(
        s.BuiltinOperator.ADD, s.BuiltinOptions.AddOptions, s.AddOptionsT(), [0, 1], [2]
    )
    return tflite_writer.write_graph(path, [add], tensors, buffers, [0, 1], [2])
