"""Calibrated ranges of a TFLite model, narrowed to where they change the result.

A hard-swish in the int8 TFLite form (``export.xnnpack_form``) is x·relu6(x + 3), or
(x/6)·relu6(x + 3): its value is 0 for every x ≤ −3. Min/max calibration gives x the range
it happens to reach: −90…55 for a MobileNetV3 stem's batch norm output, where only −3…55
matters, so 2.5× coarser steps than needed (the largest loss of int8 agreement of any tensor
measured on the fmnist recipe's subnets). ``clip_dead_ranges`` raises such a tensor's
calibrated minimum to −3 before ai-edge-quantizer turns it into a scale: the int8 tensor then
saturates where the function is already flat, which changes nothing the function outputs.
A lone relu6(x + c) is flat above 6 − c as well. The ONNX export does the same with a Clip
that onnxruntime's quantizer merges into the conv (``export.onnx_int8_form``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_ADD, _MUL = "ADD", "MUL"


@dataclass(frozen=True)
class _Op:
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    relu6: bool


def clip_dead_ranges(model: bytes, qsvs: dict[str, dict[str, Any]]) -> list[str]:
    """Narrow, in place, the calibrated ``qsvs`` (ai-edge-quantizer's tensor name → {"min",
    "max"}) of ``model``'s tensors that only a hard-swish or relu6(x + c) reads, to where
    that function is not flat. Returns the names of the tensors narrowed."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils  # type: ignore[import-untyped]

    flat = tfl_flatbuffer_utils.read_model(bytearray(model))
    graph = flat.subgraphs[0]
    constants = {
        i: data.astype(np.float64).ravel()
        for i, tensor in enumerate(graph.tensors)
        if (data := tfl_flatbuffer_utils.get_tensor_data(tensor, flat.buffers)) is not None
        and data.dtype.kind == "f"
    }
    ops = [_op(flat, op) for op in graph.operators]
    readers: dict[int, list[_Op]] = {}
    for op in ops:
        for i in op.inputs:
            readers.setdefault(i, []).append(op)
    graph_outputs = set(graph.outputs)
    narrowed = []
    for tensor, users in readers.items():
        for index, (floor, ceiling) in _live_ranges(tensor, users, readers, constants).items():
            name = graph.tensors[index].name.decode()
            if index in graph_outputs or name not in qsvs:
                continue
            qsv = qsvs[name]
            qsv["min"] = np.minimum(np.maximum(qsv["min"], floor), 0.0)
            qsv["max"] = np.maximum(np.minimum(qsv["max"], ceiling), 0.0)
            narrowed.append(name)
    return narrowed


def _live_ranges(
    x: int, users: list[_Op], readers: dict[int, list[_Op]], constants: dict[int, np.ndarray]
) -> dict[int, tuple[float, float]]:
    """Where the function that ``users`` compute of tensor ``x`` is not flat, for x and for
    x·k, when ``users`` are one relu6(x + c) and, for a hard-swish, the products of x (or of
    x·k, k > 0) with it; empty for anything else."""
    gates = [
        op
        for op in users
        if op.kind == _ADD and op.relu6 and _other_scalar(op, x, constants) is not None
    ]
    if len(gates) != 1 or x in constants:
        return {}
    gate = gates[0]
    shift = _other_scalar(gate, x, constants)
    assert shift is not None
    (g,) = gate.outputs
    scaled: dict[int, float] = {}  # x·k: k
    for op in users:
        if op is gate:
            continue
        if op.kind != _MUL or op.relu6 or len(op.inputs) != 2:
            return {}
        if sorted(op.inputs) == sorted((x, g)):
            continue
        k = _other_scalar(op, x, constants)
        products = readers.get(op.outputs[0], [])
        if k is None or k <= 0 or not products:
            return {}
        for product in products:
            if product.kind != _MUL or sorted(product.inputs) != sorted((op.outputs[0], g)):
                return {}
        scaled[op.outputs[0]] = k
    # relu6(x + c) is 0 below −c and 6 above 6 − c: a hard-swish (x·gate) only the former.
    ceiling = float("inf") if len(users) > 1 else 6.0 - shift
    return {x: (-shift, ceiling), **{y: (-shift * k, ceiling) for y, k in scaled.items()}}


def _other_scalar(op: _Op, x: int, constants: dict[int, np.ndarray]) -> float | None:
    """The single-valued constant that ``op`` combines with ``x``, if that is its other input."""
    if len(op.inputs) != 2 or list(op.inputs).count(x) != 1:
        return None
    other = op.inputs[1] if op.inputs[0] == x else op.inputs[0]
    values = constants.get(other)
    if values is None or values.size == 0 or not np.all(values == values[0]):
        return None
    return float(values[0])


def _op(flat: Any, op: Any) -> _Op:
    from ai_edge_litert import schema_py_generated as schema  # type: ignore[import-untyped]

    code = flat.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    kind = {schema.BuiltinOperator.ADD: _ADD, schema.BuiltinOperator.MUL: _MUL}.get(builtin, "")
    activation = getattr(op.builtinOptions, "fusedActivationFunction", None)
    return _Op(
        kind=kind,
        inputs=tuple(int(i) for i in op.inputs if i >= 0),
        outputs=tuple(int(i) for i in op.outputs),
        relu6=activation == schema.ActivationFunctionType.RELU6,
    )
