"""The ONNX graph form that quantizes into onnxruntime's fused int8 kernels end to end.

onnxruntime's quantizer has int8 kernels for Conv, Gemm, Add, Mul and GlobalAveragePool,
not for ReduceMean or HardSigmoid: those stay float, each wrapped in DequantizeLinear and
QuantizeLinear. A MobileNetV3 has both in every squeeze-excite and every hard-swish
(``quant_pre_process`` writes HardSwish as x·HardSigmoid(x)). ``int8_form`` rewrites them
exactly before quantization:

- ReduceMean over the spatial axes of a 4-D tensor, keeping them → GlobalAveragePool;
- HardSigmoid(x) = clip(αx + β, 0, 1) → Mul(Clip(Add(x, β/α), 0, 1/α), α) for α > 0.
  The Clip then disappears into the preceding QuantizeLinear's range.
- That Mul by α is then dropped where every reader of its result is linear in it: the
  readers' weights take the α instead. Through products, pooling, Flatten and Relu the
  search goes on to the convs and Gemms that read the scaled tensor; at an Add the other
  term is made 1/α times as large by its Conv's weight and bias, and the search follows the
  sum (a MobileNetV3's stem feeds residual blocks). hard-swish, x·HardSigmoid(x), becomes
  x·Clip(x + 3, 0, 6): one QLinearMul fewer per activation.
- An Add of a constant to a Conv's output that nothing else reads goes into the Conv's
  bias: squeeze-excite's gate becomes Conv → Clip → Mul.

Measured on the largest mbv3-imagenet subnet at 160 px (AVX2 x86, 1 thread): 53 float
islands → none, int8 latency 0.87× → 0.79× of fp32. Dropping the Mul by 1/6 (timed against
the file without it, side by side, 3 runs on a shared AVX2 EPYC): int8 median 9-11% faster
on the mbv3-imagenet min subnet at 160 px, 12-17% on the demo's mbv3-tiny subnet.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def int8_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (shape-inferred, e.g. by ``quant_pre_process``) with the rewrites above;
    nodes that do not match exactly are left as they are. Modifies and returns ``model``."""
    graph = model.graph
    ranks = _ranks(model)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if node.op_type == "ReduceMean" and _spatial_mean(node, ranks, constants):
            nodes.append(
                helper.make_node(
                    "GlobalAveragePool", [node.input[0]], list(node.output), name=node.name
                )
            )
        elif node.op_type == "HardSigmoid" and _attr(node, "alpha", 0.2) > 0:
            nodes.extend(_hard_sigmoid(graph, node, f"int8_form_{index}"))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _fold(graph)
    return model


def _fold(graph: onnx.GraphProto) -> None:
    """The two folds of the module doc's last items, wherever they are exact."""
    weights = {init.name: init for init in graph.initializer}
    for node in list(graph.node):
        if node.op_type == "Mul" and node.name.startswith("int8_form_"):  # α of _hard_sigmoid
            alpha = float(numpy_helper.to_array(weights[node.input[1]]))
            plan = _plan(graph, node.output[0], 1 / alpha, set())
            if plan is not None and _sole_uses(graph, [name for name, _ in plan]):
                for name, factor in plan:
                    _scale(weights[name], factor)
                _bypass(graph, node)
    for node in list(graph.node):
        if node.op_type == "Add" and node.input[1] in weights:
            conv = _producer(graph, node.input[0])
            if (
                conv is not None
                and conv.op_type == "Conv"
                and len(conv.input) == 3
                and conv.input[2] in weights
                and len(_readers(graph, node.input[0])) == 1
                and _sole_uses(graph, [conv.input[2]])
                and list(weights[node.input[1]].dims) in ([], [1])
            ):
                shift = float(numpy_helper.to_array(weights[node.input[1]]).ravel()[0])
                _shift(weights[conv.input[2]], shift)
                _bypass(graph, node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name.startswith("int8_form_")]:
        if init.name not in used:
            graph.initializer.remove(init)


def _plan(
    graph: onnx.GraphProto, tensor: str, scale: float, seen: set[str]
) -> list[tuple[str, float]] | None:
    """How to undo ``tensor`` becoming ``scale`` times as large: (initializer, factor) pairs,
    or None where a reader is not linear in it (or is the graph's output)."""
    if tensor in {o.name for o in graph.output} or tensor in seen:
        return None
    seen.add(tensor)
    initializers = {init.name for init in graph.initializer}
    plan: list[tuple[str, float]] = []
    for node, index in _readers(graph, tensor):
        if (node.op_type == "Conv" and index == 0 and node.input[1] in initializers) or (
            node.op_type == "Gemm"
            and index == 0
            and node.input[1] in initializers
            and _attr(node, "transA", 0) == 0
        ):
            plan.append((node.input[1], 1 / scale))
        elif node.op_type in ("Mul", "GlobalAveragePool", "Flatten", "Relu") or (
            node.op_type == "Reshape" and index == 0
        ):
            rest = _plan(graph, node.output[0], scale, seen)
            if rest is None:
                return None
            plan += rest
        elif node.op_type == "Add" and node.input[0] != node.input[1]:
            other = _producer(graph, node.input[1 - index])
            if (
                other is None
                or other.op_type != "Conv"
                or len(other.input) != 3
                or not {other.input[1], other.input[2]} <= initializers
                or len(_readers(graph, other.output[0])) != 1
            ):
                return None
            rest = _plan(graph, node.output[0], scale, seen)
            if rest is None:
                return None
            plan += [(other.input[1], scale), (other.input[2], scale), *rest]
        else:
            return None
    return plan


def _readers(graph: onnx.GraphProto, tensor: str) -> list[tuple[onnx.NodeProto, int]]:
    return [
        (node, index)
        for node in graph.node
        for index, name in enumerate(node.input)
        if name == tensor
    ]


def _producer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    return next((node for node in graph.node if tensor in node.output), None)


def _sole_uses(graph: onnx.GraphProto, names: list[str]) -> bool:
    """Whether each initializer in ``names`` is read by one node input only (and is no graph
    input), so scaling it changes nothing else."""
    uses = Counter(name for node in graph.node for name in node.input)
    inputs = {i.name for i in graph.input}
    return all(uses[name] == 1 and name not in inputs for name in names)


def _scale(init: onnx.TensorProto, factor: float) -> None:
    array = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((array * factor).astype(array.dtype), init.name))


def _shift(init: onnx.TensorProto, shift: float) -> None:
    array = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((array + shift).astype(array.dtype), init.name))


def _bypass(graph: onnx.GraphProto, node: onnx.NodeProto) -> None:
    """Remove ``node`` (one input that matters, one output); its readers read its input."""
    for reader, index in _readers(graph, node.output[0]):
        reader.input[index] = node.input[0]
    graph.node.remove(node)


def _hard_sigmoid(
    graph: onnx.GraphProto, node: onnx.NodeProto, prefix: str
) -> list[onnx.NodeProto]:
    alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
    shift, top, low, scale = (
        _constant(graph, f"{prefix}_{name}", value)
        for name, value in (
            ("shift", beta / alpha),
            ("top", 1 / alpha),
            ("low", 0.0),
            ("scale", alpha),
        )
    )
    added, clipped = f"{prefix}_added", f"{prefix}_clipped"
    return [
        helper.make_node("Add", [node.input[0], shift], [added], name=f"{prefix}_add"),
        helper.make_node("Clip", [added, low, top], [clipped], name=f"{prefix}_clip"),
        helper.make_node("Mul", [clipped, scale], list(node.output), name=f"{prefix}_mul"),
    ]


def _spatial_mean(
    node: onnx.NodeProto, ranks: dict[str, int], constants: dict[str, np.ndarray]
) -> bool:
    """Whether ``node`` averages a 4-D tensor over axes 2 and 3 and keeps them."""
    if ranks.get(node.input[0]) != 4 or _attr(node, "keepdims", 1) != 1:
        return False
    axes_attr = [a for a in node.attribute if a.name == "axes"]
    if axes_attr:
        axes = list(helper.get_attribute_value(axes_attr[0]))
    elif len(node.input) > 1 and node.input[1] in constants:  # opset 18: axes is an input
        axes = [int(a) for a in constants[node.input[1]].ravel()]
    else:
        return False
    return sorted(a % 4 for a in axes) == [2, 3]


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    infos = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    return {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in infos
        if info.type.tensor_type.HasField("shape")
    }


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for attribute in node.attribute:
        if attribute.name == name:
            return float(helper.get_attribute_value(attribute))
    return default


def _constant(graph: onnx.GraphProto, name: str, value: float) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    return name
