"""Tiny TFLite models written with LiteRT's own flatbuffer schema (no converter needed).

Needs ``ai_edge_litert`` (its ``schema_py_generated`` module) and ``flatbuffers``; tests that
use it skip where LiteRT is not installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np


def _schema() -> Any:
    return importlib.import_module("ai_edge_litert.schema_py_generated")


def _tensor(
    s: Any,
    name: str,
    shape: list[int],
    signature: list[int],
    buffer: int,
    ttype: int,
    quant: tuple[float, int] | None = None,
) -> Any:
    t = s.TensorT()
    t.name = name.encode()
    t.shape = shape
    t.shapeSignature = signature
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
    op_code: int,
    options_type: int,
    options: Any,
    tensors: list[Any],
    buffers: list[Any],
    inputs: list[int],
    op_inputs: list[int],
    outputs: list[int],
) -> Path:
    """A one-operator model."""
    return _write_graph(
        s,
        path,
        [(op_code, options_type, options, op_inputs, outputs)],
        tensors,
        buffers,
        inputs,
        outputs,
    )


# (builtin operator, builtin options type, options, input tensor indices, output tensor indices)
_Op = tuple[int, int, Any, list[int], list[int]]


def _write_graph(
    s: Any,
    path: Path,
    ops: list[_Op],
    tensors: list[Any],
    buffers: list[Any],
    inputs: list[int],
    outputs: list[int],
) -> Path:
    flatbuffers = importlib.import_module("flatbuffers")
    op_codes: list[int] = []
    operators = []
    for op_code, options_type, options, op_inputs, op_outputs in ops:
        if op_code not in op_codes:
            op_codes.append(op_code)
        op = s.OperatorT()
        op.opcodeIndex = op_codes.index(op_code)
        op.inputs = op_inputs
        op.outputs = op_outputs
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        operators.append(op)
    codes = []
    for op_code in op_codes:
        code = s.OperatorCodeT()
        code.builtinCode = op_code
        # Codes above 127 live only in builtinCode; the deprecated byte holds the placeholder.
        code.deprecatedBuiltinCode = min(
            op_code, s.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
        )
        code.version = 1
        codes.append(code)
    graph = s.SubGraphT()
    graph.name = b"main"
    graph.tensors = tensors
    graph.inputs = inputs
    graph.outputs = outputs
    graph.operators = operators
    model = s.ModelT()
    model.version = 3
    model.operatorCodes = codes
    model.buffers = buffers
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def fully_connected(path: Path) -> Path:
    """float32 [batch, 8] -> [batch, 4], batch dynamic."""
    s = _schema()
    weights = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    f32 = s.TensorType.FLOAT32
    tensors = [
        _tensor(s, "x", [1, 8], [-1, 8], 1, f32),
        _tensor(s, "w", [4, 8], [4, 8], 2, f32),
        _tensor(s, "b", [4], [4], 3, f32),
        _tensor(s, "y", [1, 4], [-1, 4], 4, f32),
    ]
    buffers = [
        _buffer(s),
        _buffer(s),
        _buffer(s, weights),
        _buffer(s, np.zeros(4, np.float32)),
        _buffer(s),
    ]
    op = s.BuiltinOperator.FULLY_CONNECTED
    options = s.FullyConnectedOptionsT()
    return _write(
        s,
        path,
        op,
        s.BuiltinOptions.FullyConnectedOptions,
        options,
        tensors,
        buffers,
        [0],
        [0, 1, 2],
        [3],
    )


def int8_add(path: Path) -> Path:
    """int8 [1, 16] + int8 [1, 16] -> int8 [1, 16], quantized with scale 0.1."""
    s = _schema()
    i8 = s.TensorType.INT8
    tensors = [
        _tensor(s, "a", [1, 16], [1, 16], 1, i8, (0.1, 0)),
        _tensor(s, "b", [1, 16], [1, 16], 2, i8, (0.1, 0)),
        _tensor(s, "y", [1, 16], [1, 16], 3, i8, (0.2, 0)),
    ]
    buffers = [_buffer(s) for _ in range(4)]
    options = s.AddOptionsT()
    return _write(
        s,
        path,
        s.BuiltinOperator.ADD,
        s.BuiltinOptions.AddOptions,
        options,
        tensors,
        buffers,
        [0, 1],
        [0, 1],
        [2],
    )


def _qtensor(
    s: Any,
    name: str,
    shape: list[int],
    buffer: int,
    ttype: int,
    scales: list[float],
    zero_points: list[int],
    axis: int = 0,
) -> Any:
    """A quantized tensor; more than one scale makes it per-channel along ``axis``."""
    t = _tensor(s, name, shape, shape, buffer, ttype)
    q = s.QuantizationParametersT()
    q.scale = scales
    q.zeroPoint = zero_points
    q.quantizedDimension = axis
    t.quantization = q
    return t


def int8_cnn(path: Path, *, cpu_op: bool = False) -> Path:
    """A fully int8 CNN that Vela maps to the Ethos-U NPU.

    int8 [1, 16, 16, 3] -> CONV_2D 3x3 to 16 channels (ReLU) -> DEPTHWISE_CONV_2D 3x3 stride 2
    (ReLU) -> FULLY_CONNECTED -> int8 [1, 10]. Weights int8 with per-channel scales, biases
    int32 with scale input scale x weight scale, as a real int8 export has them.

    ``cpu_op`` puts a SPACE_TO_DEPTH (a valid int8 TFLite operator that Vela cannot map to the
    Ethos-U55/U65) between the depthwise and the fully connected layer; it then runs on the CPU.
    """
    s = _schema()
    rng = np.random.default_rng(0)
    i8, i32 = s.TensorType.INT8, s.TensorType.INT32
    x_scale, act_scale, y_scale = 1 / 128, 0.05, 0.1
    c = 16

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(-127, 128, shape, dtype=np.int8)

    conv_w, conv_ws = weights((c, 3, 3, 3)), [0.01 + 0.001 * k for k in range(c)]
    dw_w, dw_ws = weights((1, 3, 3, c)), [0.02 + 0.001 * k for k in range(c)]
    fc_w, fc_ws = weights((10, 8 * 8 * c)), [0.002] * 10
    conv_b = rng.integers(-500, 500, c, dtype=np.int32)
    dw_b = rng.integers(-500, 500, c, dtype=np.int32)
    fc_b = rng.integers(-500, 500, 10, dtype=np.int32)
    zeros = [0] * c
    tensors = [
        _qtensor(s, "x", [1, 16, 16, 3], 1, i8, [x_scale], [0]),
        _qtensor(s, "conv/w", [c, 3, 3, 3], 2, i8, conv_ws, zeros, 0),
        _qtensor(s, "conv/b", [c], 3, i32, [x_scale * w for w in conv_ws], zeros),
        _qtensor(s, "conv", [1, 16, 16, c], 4, i8, [act_scale], [-128]),
        _qtensor(s, "dw/w", [1, 3, 3, c], 5, i8, dw_ws, zeros, 3),
        _qtensor(s, "dw/b", [c], 6, i32, [act_scale * w for w in dw_ws], zeros),
        _qtensor(s, "dw", [1, 8, 8, c], 7, i8, [act_scale], [-128]),
        _qtensor(s, "fc/w", [10, 8 * 8 * c], 8, i8, fc_ws, [0] * 10, 0),
        _qtensor(s, "fc/b", [10], 9, i32, [act_scale * w for w in fc_ws], [0] * 10),
        _qtensor(s, "y", [1, 10], 10, i8, [y_scale], [0]),
    ]
    buffers = [_buffer(s), _buffer(s)]
    buffers += [_buffer(s, conv_w), _buffer(s, conv_b), _buffer(s)]
    buffers += [_buffer(s, dw_w), _buffer(s, dw_b), _buffer(s)]
    buffers += [_buffer(s, fc_w), _buffer(s, fc_b), _buffer(s)]
    conv = s.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = s.Padding.SAME, 1, 1
    conv.fusedActivationFunction = s.ActivationFunctionType.RELU
    dw = s.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier = s.Padding.SAME, 2, 2, 1
    dw.fusedActivationFunction = s.ActivationFunctionType.RELU
    ops: list[_Op] = [
        (s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions, conv, [0, 1, 2], [3]),
        (
            s.BuiltinOperator.DEPTHWISE_CONV_2D,
            s.BuiltinOptions.DepthwiseConv2DOptions,
            dw,
            [3, 4, 5],
            [6],
        ),
    ]
    fc_in = 6
    if cpu_op:
        tensors.append(_qtensor(s, "s2d", [1, 4, 4, 4 * c], len(buffers), i8, [act_scale], [-128]))
        buffers.append(_buffer(s))
        s2d = s.SpaceToDepthOptionsT()
        s2d.blockSize = 2
        ops.append(
            (s.BuiltinOperator.SPACE_TO_DEPTH, s.BuiltinOptions.SpaceToDepthOptions, s2d, [6], [10])
        )
        fc_in = 10
    fc = s.FullyConnectedOptionsT()
    ops.append(
        (
            s.BuiltinOperator.FULLY_CONNECTED,
            s.BuiltinOptions.FullyConnectedOptions,
            fc,
            [fc_in, 7, 8],
            [9],
        )
    )
    return _write_graph(s, path, ops, tensors, buffers, [0], [9])
