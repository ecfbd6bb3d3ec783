"""Tiny built-in models for ``edgenas devices check``: a sanity measurement on any device.

Written with the ONNX helper API and with LiteRT's own TFLite flatbuffer schema, so that no
exporter (and no torch) is needed. Each one runs in well under a millisecond.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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


def tflite_fully_connected(path: Path) -> Path:
    """float32 [1, 8] -> FULLY_CONNECTED -> [1, 4]."""
    s = _schema()
    f32 = s.TensorType.FLOAT32
    weights = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    tensors = [
        _tensor(s, "x", [1, 8], 1, f32),
        _tensor(s, "w", [4, 8], 2, f32),
        _tensor(s, "b", [4], 3, f32),
        _tensor(s, "y", [1, 4], 4, f32),
    ]
    buffers = [_buffer(s), _buffer(s), _buffer(s, weights), _buffer(s, np.zeros(4, np.float32))]
    buffers.append(_buffer(s))
    options = s.FullyConnectedOptionsT()
    operator = (s.BuiltinOperator.FULLY_CONNECTED, s.BuiltinOptions.FullyConnectedOptions)
    return _write(s, path, operator, options, tensors, buffers, [0, 1, 2], [0], [3])


def tflite_int8_add(path: Path) -> Path:
    """int8 [1, 16] + int8 [1, 16] -> int8 [1, 16]: an operator the Ethos-U NPU runs."""
    s = _schema()
    i8 = s.TensorType.INT8
    tensors = [
        _tensor(s, "a", [1, 16], 1, i8, (0.1, 0)),
        _tensor(s, "b", [1, 16], 2, i8, (0.1, 0)),
        _tensor(s, "y", [1, 16], 3, i8, (0.2, 0)),
    ]
    buffers = [_buffer(s) for _ in range(4)]
    operator = (s.BuiltinOperator.ADD, s.BuiltinOptions.AddOptions)
    return _write(s, path, operator, s.AddOptionsT(), tensors, buffers, [0, 1], [0, 1], [2])


def _schema() -> Any:
    return importlib.import_module("ai_edge_litert.schema_py_generated")


def _tensor(
    s: Any,
    name: str,
    shape: list[int],
    buffer: int,
    ttype: int,
    quant: tuple[float, int] | None = None,
) -> Any:
    t = s.TensorT()
    t.name = name.encode()
    t.shape = shape
    t.buffer = buffer
    t.type = ttype
    if quant is not None:
        q = s.QuantizationParametersT()
        q.scale = [quant[0]]
        q.zeroPoint = [quant[1]]
        t.quantization = q
    return t


def _buffer(s: Any, data: np.ndarray | None = None) -> Any:
    b = s.BufferT()
    if data is not None:
        b.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
    return b


def _write(
    s: Any,
    path: Path,
    operator: tuple[int, int],
    options: Any,
    tensors: list[Any],
    buffers: list[Any],
    op_inputs: list[int],
    inputs: list[int],
    outputs: list[int],
) -> Path:
    """A one-operator model (buffer 0 is the empty sentinel TFLite expects)."""
    flatbuffers = importlib.import_module("flatbuffers")
    code = s.OperatorCodeT()
    code.builtinCode = operator[0]
    code.deprecatedBuiltinCode = operator[0]
    code.version = 1
    op = s.OperatorT()
    op.opcodeIndex = 0
    op.inputs = op_inputs
    op.outputs = outputs
    op.builtinOptionsType = operator[1]
    op.builtinOptions = options
    graph = s.SubGraphT()
    graph.name = b"main"
    graph.tensors = tensors
    graph.inputs = inputs
    graph.outputs = outputs
    graph.operators = [op]
    model = s.ModelT()
    model.version = 3
    model.operatorCodes = [code]
    model.buffers = buffers
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
