"""The ONNX graph form that quantizes into onnxruntime's fused int8 kernels end to end.

onnxruntime's quantizer has int8 kernels for Conv, Gemm, Add, Mul and GlobalAveragePool,
not for ReduceMean or HardSigmoid: those stay float, each wrapped in DequantizeLinear and
QuantizeLinear. A MobileNetV3 has both in every squeeze-excite and every hard-swish
(``quant_pre_process`` writes HardSwish as x·HardSigmoid(x)). ``int8_form`` rewrites them
exactly before quantization:

- ReduceMean over the spatial axes of a 4-D tensor, keeping them → GlobalAveragePool;
- HardSigmoid(x) = clip(αx + β, 0, 1) → Mul(Clip(Add(x, β/α), 0, 1/α), α) for α > 0.
  The Clip then disappears into the preceding QuantizeLinear's range. Where a Conv alone
  feeds the hard-sigmoid (squeeze-excite's gate), β/α goes into that Conv's bias instead of
  an Add, as the TFLite form does (``export.xnnpack_form``): onnxruntime runs one
  QLinearAdd fewer per squeeze-excite, and the gate's input is quantized once, on the grid
  of 0…1/α, where it was quantized on −β/α…(1 − β)/α and then requantized on that same
  grid shifted by β/α (mean output error on a test stem unchanged, within 0.1%). Measured
  side by side on an AVX512-VNNI EPYC (1 thread, 2×40 interleaved rounds), the demo's
  int8 subnet ran 2.6% faster (0.2237 → 0.2178 ms).
- The input of a hard-swish x·HardSigmoid(x) is clipped from below at −β/α (−3), where the
  function is 0 and stays 0 for every smaller x; the input of a lone hard-sigmoid whose
  shift did not go into a bias at −β/α and (1 − β)/α, where it saturates. The functions
  are unchanged, and onnxruntime's quantizer merges the Clip into the conv before it, whose
  int8 output then spends no steps on values that all give the same result. In a
  MobileNetV3 stem the batch norm's output spans −90…55 and only −3…55 matters: min/max calibration of the unclipped
  tensor gave it a 2.5× coarser step, the largest loss of agreement with fp32 of any tensor.

Measured on the largest mbv3-imagenet subnet at 160 px (AVX2 x86, 1 thread): 53 float
islands → none, int8 latency 0.87× → 0.79× of fp32. Dropping hard-sigmoid's Mul by 1/6 into
its readers' weights before quantizing was 9-17% faster still, but it moved the quantization
points away from the ones quantization-aware training simulates (their errors' correlation
with onnxruntime's fell from 0.10 to 0.02, test_quant_aware), so it is not done.

``fold_rescales`` drops that Mul after quantizing instead, where it changes no integer: in
the QDQ graph it reads its input's integers at scale s and writes them, requantized, at scale
s/6, and min/max calibration gives its output exactly that scale (and the same zero point),
so the requantization maps every integer to itself. The readers take the input's integers at
the output's scale and onnxruntime runs one QLinearMul fewer per hard-swish and per
squeeze-excite: measured side by side on an AVX512-VNNI EPYC (1 thread, the same files,
outputs bit for bit the same), the demo's int8 subnet went from 1.58-1.61× to 1.34-1.39× of
fp32 and mbv3-imagenet min at 160 px from 0.92× to 0.84×.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def int8_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (shape-inferred, e.g. by ``quant_pre_process``) with the rewrites above;
    nodes that do not match exactly are left as they are. Modifies and returns ``model``."""
    graph = model.graph
    ranks = _ranks(model)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    readers = _readers(graph)
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {out.name for out in graph.output}
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if node.op_type == "ReduceMean" and _spatial_mean(node, ranks, constants):
            nodes.append(
                helper.make_node(
                    "GlobalAveragePool", [node.input[0]], list(node.output), name=node.name
                )
            )
        elif node.op_type == "HardSigmoid" and _attr(node, "alpha", 0.2) > 0:
            prefix = f"int8_form_{index}"
            shifted = _shift_into_bias(graph, node, producer, readers, constants, outputs, prefix)
            if not shifted:  # a shifted gate's Clip to 0…1/α already bounds its range
                nodes.extend(_clip_dead_range(graph, node, readers, outputs, prefix))
            nodes.extend(_hard_sigmoid(graph, node, prefix, shifted=shifted))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def fold_rescales(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (QDQ, from ``quantize_static``) without its integer-preserving rescales:
    DequantizeLinear(q; s, z) → Mul(k > 0, a constant) → QuantizeLinear(s', z) where s·k = s'
    closely enough that every integer maps to itself. The Mul and its QuantizeLinear go, and
    the readers' DequantizeLinear (scale s') read q directly: the same integers, the same
    values. Anything else is left as it is. Modifies and returns ``model``."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    outputs = {out.name for out in graph.output}
    dropped: set[int] = set()
    for mul in graph.node:
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        factors = [_dequantized_constant(producer.get(name), constants) for name in mul.input]
        if (factors[0] is None) == (factors[1] is None):
            continue
        k = factors[1] if factors[1] is not None else factors[0]
        source = producer.get(mul.input[0] if factors[1] is not None else mul.input[1])
        quant = readers.get(mul.output[0], [])
        if (
            k is None
            or k <= 0
            or source is None
            or source.op_type != "DequantizeLinear"
            or len(quant) != 1
            or quant[0].op_type != "QuantizeLinear"
            or mul.output[0] in outputs
            or quant[0].output[0] in outputs
        ):
            continue
        dequants = readers.get(quant[0].output[0], [])
        if not dequants or any(
            d.op_type != "DequantizeLinear" or list(d.input[1:]) != list(quant[0].input[1:])
            for d in dequants
        ):
            continue
        if not _maps_integers_to_themselves(source, quant[0], k, constants):
            continue
        for dequant in dequants:
            dequant.input[0] = source.input[0]
        dropped.update((id(mul), id(quant[0])))
    if dropped:
        kept = [node for node in graph.node if id(node) not in dropped]
        del graph.node[:]
        graph.node.extend(_live(kept, outputs))
        used = {name for node in graph.node for name in node.input}
        initializers = [init for init in graph.initializer if init.name in used]
        del graph.initializer[:]
        graph.initializer.extend(initializers)
    return model


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """The nodes that read each tensor."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _clip_dead_range(
    graph: onnx.GraphProto,
    hard_sigmoid: onnx.NodeProto,
    readers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
    prefix: str,
) -> list[onnx.NodeProto]:
    """A Clip of ``hard_sigmoid``'s input x to the range where x changes the result, with x's
    readers rewired to it, when every reader is the hard-sigmoid or a Mul(x, hard-sigmoid(x))
    (a hard-swish); none otherwise. Hard-swish is 0 for all x below −β/α and grows without
    bound above; a lone hard-sigmoid is flat beyond (1 − β)/α too."""
    x = hard_sigmoid.input[0]
    gate = hard_sigmoid.output[0]
    users = readers.get(x, [])
    products = [n for n in users if n is not hard_sigmoid]
    if x in outputs or any(
        n.op_type != "Mul" or sorted(n.input) != sorted([x, gate]) for n in products
    ):
        return []
    alpha, beta = _attr(hard_sigmoid, "alpha", 0.2), _attr(hard_sigmoid, "beta", 0.5)
    bounds = [_constant(graph, f"{prefix}_floor", -beta / alpha)]
    if not products:
        bounds.append(_constant(graph, f"{prefix}_ceiling", (1 - beta) / alpha))
    clipped = f"{prefix}_live"
    for node in users:
        node.input[list(node.input).index(x)] = clipped
    return [helper.make_node("Clip", [x, *bounds], [clipped], name=f"{prefix}_live_range")]


def _dequantized_constant(
    node: onnx.NodeProto | None, constants: dict[str, np.ndarray]
) -> float | None:
    """The scalar that ``node`` dequantizes from constants, or None."""
    if node is None or node.op_type != "DequantizeLinear":
        return None
    if not all(name in constants for name in node.input) or constants[node.input[0]].size != 1:
        return None
    q = float(constants[node.input[0]].ravel()[0])
    zero = float(constants[node.input[2]].ravel()[0]) if len(node.input) > 2 else 0.0
    return (q - zero) * float(constants[node.input[1]].ravel()[0])


def _maps_integers_to_themselves(
    dequant: onnx.NodeProto, quant: onnx.NodeProto, k: float, constants: dict[str, np.ndarray]
) -> bool:
    """Whether requantizing ``dequant``'s integers, multiplied by ``k``, at ``quant``'s per-tensor
    scale and zero point gives back every integer: same zero point and dtype, and a scale
    ratio whose error stays under half a step over the whole integer range."""
    params = [list(dequant.input[1:3]), list(quant.input[1:3])]
    if any(len(p) != 2 or not all(n in constants for n in p) for p in params):
        return False
    (s_in, z_in), (s_out, z_out) = ([constants[n] for n in p] for p in params)
    if any(a.size != 1 for a in (s_in, z_in, s_out, z_out)) or z_in.dtype != z_out.dtype:
        return False
    if z_in.item() != z_out.item() or not np.issubdtype(z_in.dtype, np.integer):
        return False
    info = np.iinfo(z_in.dtype)
    reach = max(int(z_in.item()) - info.min, info.max - int(z_in.item()))
    ratio = float(s_in.item()) * k / float(s_out.item())
    return reach * abs(ratio - 1) < 0.5


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those whose outputs nothing reads (repeatedly)."""
    while True:
        used = {name for node in nodes for name in node.input} | outputs
        live = [node for node in nodes if any(out in used for out in node.output)]
        if len(live) == len(nodes):
            return live
        nodes = live


def _shift_into_bias(
    graph: onnx.GraphProto,
    hard_sigmoid: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    readers: dict[str, list[onnx.NodeProto]],
    constants: dict[str, np.ndarray],
    outputs: set[str],
    prefix: str,
) -> bool:
    """Add the hard-sigmoid's shift β/α to the bias of the Conv that alone feeds it, when
    nothing else reads that Conv's output (squeeze-excite's gate); False, and nothing
    changed, otherwise. A bias that another node reads too is copied, not changed."""
    x = hard_sigmoid.input[0]
    conv = producer.get(x)
    if (
        conv is None
        or conv.op_type != "Conv"
        or len(conv.input) < 3
        or conv.input[2] not in constants
        or x in outputs
        or readers.get(x) != [hard_sigmoid]
    ):
        return False
    alpha, beta = _attr(hard_sigmoid, "alpha", 0.2), _attr(hard_sigmoid, "beta", 0.5)
    name = conv.input[2]
    bias = constants[name]
    shifted = (bias.astype(np.float64) + beta / alpha).astype(bias.dtype)
    if readers.get(name) == [conv]:
        (initializer,) = [init for init in graph.initializer if init.name == name]
        initializer.CopyFrom(numpy_helper.from_array(shifted, name))
    else:
        conv.input[2] = f"{prefix}_shifted_bias"
        graph.initializer.append(numpy_helper.from_array(shifted, conv.input[2]))
    constants[conv.input[2]] = shifted
    return True


def _hard_sigmoid(
    graph: onnx.GraphProto, node: onnx.NodeProto, prefix: str, *, shifted: bool = False
) -> list[onnx.NodeProto]:
    """clip(αx + β, 0, 1) as Mul(Clip(Add(x, β/α), 0, 1/α), α); with ``shifted``, x already
    holds x + β/α (``_shift_into_bias``) and the Add is left out."""
    alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
    top, low, scale = (
        _constant(graph, f"{prefix}_{name}", value)
        for name, value in (("top", 1 / alpha), ("low", 0.0), ("scale", alpha))
    )
    add: list[onnx.NodeProto] = []
    added, clipped = node.input[0], f"{prefix}_clipped"
    if not shifted:
        shift, added = _constant(graph, f"{prefix}_shift", beta / alpha), f"{prefix}_added"
        add.append(helper.make_node("Add", [node.input[0], shift], [added], name=f"{prefix}_add"))
    return [
        *add,
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
