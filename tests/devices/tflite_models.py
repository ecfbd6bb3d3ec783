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
    flatbuffers = importlib.import_module("flatbuffers")
    code = s.OperatorCodeT()
    code.builtinCode = op_code
    code.deprecatedBuiltinCode = op_code
    code.version = 1
    op = s.OperatorT()
    op.opcodeIndex = 0
    op.inputs = op_inputs
    op.outputs = outputs
    op.builtinOptionsType = options_type
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
