"""Small TFLite models written directly with LiteRT's own flatbuffer schema (no converter).

Needs ``ai_edge_litert`` (its ``schema_py_generated`` module) and ``flatbuffers``, both
imported on first use. A model is a list of tensors, a list of buffers and a list of
operators wired by tensor index; :func:`write_graph` packs them into a ``.tflite`` file.
Enum values (tensor types, builtin operators, options) come from :func:`schema`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from once_for_all.files import write_bytes


@functools.cache
def schema() -> ModuleType:
    """LiteRT's generated TFLite schema: ``TensorType``, ``BuiltinOperator``, ``*OptionsT``."""
    return importlib.import_module("ai_edge_litert.schema_py_generated")


def tensor(
    name: str,
    shape: Sequence[int],
    buffer: int,
    ttype: int,
    *,
    signature: Sequence[int] | None = None,
    scale: float | Sequence[float] | None = None,
    zero_point: int | Sequence[int] = 0,
    axis: int = 0,
) -> Any:
    """A tensor whose data (if constant) is ``buffers[buffer]``; ``ttype`` is a ``TensorType``.

    Activations point at a buffer of their own that stays empty. ``signature`` is the shape
    with ``-1`` for dynamic dimensions (none written when omitted: a static shape).
    ``scale`` makes the tensor quantized: one scale is per-tensor, several are per-channel
    along ``axis``; a single ``zero_point`` then applies to every channel.
    """
    t = schema().TensorT()
    t.name = name.encode()
    t.shape = list(shape)
    if signature is not None:
        t.shapeSignature = list(signature)
    t.buffer = buffer
    t.type = ttype
    if scale is not None:
        scales = [scale] if isinstance(scale, float | int) else list(scale)
        if isinstance(zero_point, int):
            zero_points = [zero_point] * len(scales)
        else:
            zero_points = list(zero_point)
        q = schema().QuantizationParametersT()
        q.scale = scales
        q.zeroPoint = zero_points
        q.quantizedDimension = axis
        t.quantization = q
    return t


def buffer(data: np.ndarray | None = None) -> Any:
    """A buffer holding ``data``'s raw bytes (in its own dtype), or an empty one.

    ``buffers[0]`` of every model must be an empty one: TFLite reserves it as the sentinel
    that no tensor uses.
    """
    b = schema().BufferT()
    if data is not None:
        b.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
    return b


class Operator(NamedTuple):
    """One builtin operator: e.g. ``BuiltinOperator.ADD``, ``BuiltinOptions.AddOptions``,
    an ``AddOptionsT()``, and the indices of its input and output tensors."""

    code: int
    options_type: int
    options: Any
    inputs: list[int]
    outputs: list[int]


def write_graph(
    path: Path,
    operators: Sequence[Operator],
    tensors: Sequence[Any],
    buffers: Sequence[Any],
    inputs: list[int],
    outputs: list[int],
) -> Path:
    """Write a one-subgraph model running ``operators`` in order; return ``path``.

    ``inputs`` and ``outputs`` are the model's tensor indices. Every builtin operator gets
    one operator code (version 1), in order of first use.
    """
    s = schema()
    flatbuffers = importlib.import_module("flatbuffers")
    op_codes: list[int] = []
    ops = []
    for operator in operators:
        if operator.code not in op_codes:
            op_codes.append(operator.code)
        op = s.OperatorT()
        op.opcodeIndex = op_codes.index(operator.code)
        op.inputs = operator.inputs
        op.outputs = operator.outputs
        op.builtinOptionsType = operator.options_type
        op.builtinOptions = operator.options
        ops.append(op)
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
    graph.tensors = list(tensors)
    graph.inputs = inputs
    graph.outputs = outputs
    graph.operators = ops
    model = s.ModelT()
    model.version = 3
    model.operatorCodes = codes
    model.buffers = list(buffers)
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    write_bytes(path, bytes(builder.Output()))
    return path
