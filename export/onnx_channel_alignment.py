"""Channel counts padded to what onnxruntime's fastest int8 conv kernels take.

onnxruntime's CPU provider runs a QLinearConv on its symmetric kernels (requantization fused
into the convolution, indirect addressing, no int32 buffer) only when the channels line up:
on x86, a depthwise conv needs a multiple of 16 channels, any other conv a multiple of 4
input and 4 (8 on AVX2) output channels, at least 16 of them (``MlasConvSymPackWSize`` in
onnxruntime's mlas/lib/convsym.cpp). Everything else falls back to im2col, a generic int8
GEMM and a separate requantization pass. A MobileNetV3 misses both: the stem reads 3 (RGB)
or 1 (grey) channels, and expand ratio 3 gives 72 and 120 depthwise channels.

``align_channels`` pads them, in the quantized (QDQ) graph so that no calibrated range
moves: the padded channels of a tensor are computed by convolutions with zero weights and
zero bias, read by convolutions with zero weights, and otherwise only meet channel-wise ops
(activations, adds, products, average pools), so no real channel ever sees them and every
output stays the same integer. The input gets its extra channels from a Pad of its integers
with their zero point (0.0) before the stem. A channel Concat's parts pad too (a split
stem's groups, ``export.stem_split``): each part's padding sits right after its channels in
the concatenation, and the tensors joined to its output carry zero channels at those
places, written by zero weights and read by zero weights (OFA's residual first block adds
the concatenated stem to its projection, whose output channels then interleave alike).
Tensors that meet any other op (a Concat of Concats, two Concats joined, the classifier's
Flatten, the graph's input and output) keep their channel count.

Measured by ``python -m benchmarks.export --speed --unaligned`` on an AVX512-VNNI EPYC (1
thread, two runs, outputs bit for bit the same), the padded file against the unpadded one:
mbv3-imagenet min (stem 3 → 4, depthwise 72 → 80 and 120 → 128) 1.12-1.18× faster at
160 px and 1.06-1.15× at 224 px, max (only the stem's input padded) 0.95-1.01×, within the
noise; the demo's mbv3-tiny (stem 1 → 4, 8-channel tensors → 16) 1.03-1.04×; with the stem
in two groups, mbv3-tiny min 1.14-1.17× and mbv3-imagenet min 1.06-1.21×. Depthwise channels
in 32s or 64s, or input channels in 8s or 16s, were slower.

On Arm64 the rules differ (the same function, ``MLAS_TARGET_ARM64``): a depthwise conv needs
a multiple of 8 channels, and other convs run on these kernels only with more than one tap
and 64 or more input channels, which no padding of a MobileNetV3's pointwise convs or stem
reaches. ``align_channels(model, "arm64")`` therefore pads depthwise channels to eights and
nothing else; the x86 padding would only add work there (a stem 3 → 4 channels, depthwise
72 → 80). Not measured on Arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.formats import KernelIsa
from export.onnx_int8_form import _attr, _readers


@dataclass(frozen=True)
class KernelRules:
    """The channel counts onnxruntime's symmetric int8 conv kernels take on one kind of CPU."""

    depthwise: int  # a depthwise conv's channels, in multiples of this
    # Any other conv: input and output channels in multiples of these, at least min_output
    # outputs; 0 where padding cannot bring those convs onto the kernels.
    input: int
    output: int
    min_output: int


KERNEL_RULES: dict[KernelIsa, KernelRules] = {
    # AVX2 asks for output channels in eights, AVX512 in fours.
    "x86": KernelRules(depthwise=16, input=4, output=8, min_output=16),
    "arm64": KernelRules(depthwise=8, input=0, output=0, min_output=0),
}

# Ops that compute each channel from the same channel of their inputs (scalar constants
# aside): a padded channel stays apart from the real ones through them.
_CHANNELWISE = frozenset(
    {
        "Add",
        "Mul",
        "Clip",
        "Relu",
        "HardSigmoid",
        "HardSwish",
        "Sigmoid",
        "GlobalAveragePool",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)


@dataclass(frozen=True)
class _Graph:
    """A QDQ graph's lookups: axis 1 of each 4-D tensor whose shape inference knows it, the
    constants by name, and each tensor's producer and readers."""

    graph: onnx.GraphProto
    channels: dict[str, int]
    constants: dict[str, onnx.TensorProto]
    producer: dict[str, onnx.NodeProto]
    readers: dict[str, list[onnx.NodeProto]]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _Graph:
        graph = model.graph
        inferred = onnx.shape_inference.infer_shapes(model).graph
        channels = {}
        for info in (*inferred.value_info, *inferred.input, *inferred.output):
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                channels[info.name] = dims[1].dim_value
        return cls(
            graph,
            channels,
            {init.name: init for init in graph.initializer},
            {out: node for node in graph.node for out in node.output},
            _readers(graph),
        )

    def size(self, name: str) -> int:
        """How many values the constant ``name`` holds; -1 if it is not a constant."""
        return int(np.prod(self.constants[name].dims)) if name in self.constants else -1


@dataclass
class _Conv:
    """A Conv whose weight (and bias) are DequantizeLinear of constants read by it alone."""

    node: onnx.NodeProto
    weight: onnx.NodeProto
    bias: onnx.NodeProto | None
    depthwise: bool


@dataclass
class _Channels:
    """Tensors that carry the same channels, the convs that write or read them, and the
    channel Concats that write them (whose inputs are classes of their own)."""

    tensors: set[str] = field(default_factory=set)
    writers: list[_Conv] = field(default_factory=list)
    readers: list[_Conv] = field(default_factory=list)
    concats: list[onnx.NodeProto] = field(default_factory=list)
    fixed: bool = False

    @property
    def depthwise(self) -> bool:
        return any(conv.depthwise for conv in (*self.writers, *self.readers))

    @property
    def spliced(self) -> bool:
        """Written by one channel Concat (and maybe convs): zero channels can go between the
        Concat's parts, where the class's writers write zeros and its readers weigh zero."""
        return not self.fixed and len(self.concats) == 1


def align_channels(model: onnx.ModelProto, isa: KernelIsa = "x86") -> onnx.ModelProto:
    """``model`` (QDQ, from ``quantize_static``) with its channel counts padded to ``isa``'s
    kernels as the module doc says; tensors it cannot prove safe to pad are left as they are.
    Modifies and returns ``model``."""
    rules = KERNEL_RULES[isa]
    g = _Graph.of(model)
    classes = _classes(g)
    groups = list({id(c): c for c in classes.values()}.values())
    # The input first: it finds the stem's convs by their weights' unpadded shapes.
    if rules.input:
        _pad_input(g, rules.input)
    # Where each class gets its zero channels (np.insert's places in its own channels): at
    # the end, up to the kernels' multiple; a spliced Concat's output after each part's own.
    places: dict[int, list[int]] = {}
    for group in groups:
        if not group.fixed and not group.concats:
            count = g.channels[next(iter(group.tensors))]
            aligned = aligned_channels(count, rules, depthwise=group.depthwise)
            places[id(group)] = [count] * (aligned - count)
    for group in groups:
        if group.spliced:
            (concat,) = group.concats
            places[id(group)], start = [], 0
            for name in concat.input:
                places[id(group)] += [start + p for p in places.get(id(classes[name]), [])]
                start += g.channels[name]
    for group in groups:
        where = places.get(id(group))
        if not where:
            continue
        for conv in group.writers:
            _widen_outputs(conv, where, g)
        for conv in group.readers:
            if not conv.depthwise:
                _insert_channels(conv.weight, g, axis=1, places=where)
    del model.graph.value_info[:]  # the shapes inferred before padding
    return model


def aligned_channels(count: int, rules: KernelRules, *, depthwise: bool) -> int:
    """``count`` channels padded as ``rules`` ask of a depthwise conv, or of any other."""
    if depthwise:
        return _round_up(count, rules.depthwise)
    if not rules.output:
        return count
    return max(rules.min_output, _round_up(count, rules.output))


def _round_up(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


def _classes(g: _Graph) -> dict[str, _Channels]:
    """Each 4-D tensor's channel class: tensors joined by channel-wise ops and depthwise
    convs, with the convs that write and read them; a class that meets anything else is
    fixed."""
    classes = {name: _Channels(tensors={name}) for name in g.channels}

    def join(a: str, b: str) -> None:
        first, second = classes[a], classes[b]
        if first is second:
            return
        first.tensors |= second.tensors
        first.writers += second.writers
        first.readers += second.readers
        first.concats += second.concats
        first.fixed |= second.fixed
        for name in second.tensors:
            classes[name] = first

    for name in (*(i.name for i in g.graph.input), *(o.name for o in g.graph.output)):
        if name in classes:
            classes[name].fixed = True
    concats: list[onnx.NodeProto] = []
    for node in g.graph.node:
        mapped = [name for name in (*node.input, *node.output) if name in classes]
        conv = _conv(node, g)
        if node.op_type in _CHANNELWISE and _scalar_extras(node, g):
            for name in mapped[1:]:
                join(mapped[0], name)
        elif conv is not None and conv.depthwise:
            join(node.input[0], node.output[0])
            classes[node.output[0]].writers.append(conv)
        elif conv is not None:
            classes[node.input[0]].readers.append(conv)
            classes[node.output[0]].writers.append(conv)
        elif _channel_concat(node, g):
            classes[node.output[0]].concats.append(node)
            concats.append(node)
        else:
            for name in mapped:
                classes[name].fixed = True
    # A Concat's parts may grow only where its output's class can take zeros between them
    # (spliced: nothing fixes it and no other Concat writes it); where it cannot, they keep
    # their counts, and so does the output. A Concat's output that is a part of another
    # Concat keeps its count too (one level of splicing).
    nested = {id(classes[name]) for node in concats for name in node.input}
    for group in {id(c): c for c in classes.values()}.values():
        if group.concats and (not group.spliced or id(group) in nested):
            group.fixed = True
            for name in (n for node in group.concats for n in node.input):
                classes[name].fixed = True
    return classes


def _channel_concat(node: onnx.NodeProto, g: _Graph) -> bool:
    """Whether ``node`` concatenates 4-D tensors of known channels along the channels."""
    names = (*node.input, *node.output)
    return (
        node.op_type == "Concat"
        and int(_attr(node, "axis", 0)) in (1, -3)
        and all(name in g.channels for name in names)
    )


def _scalar_extras(node: onnx.NodeProto, g: _Graph) -> bool:
    """Whether every input of ``node`` that is not a 4-D tensor is a one-value constant (or
    a DequantizeLinear of one), so the op treats all channels alike."""
    for name in node.input:
        if not name or name in g.channels:
            continue
        source = g.producer.get(name)
        if source is not None and source.op_type == "DequantizeLinear":
            if not all(g.size(n) == 1 for n in source.input if n):
                return False
        elif g.size(name) != 1:
            return False
    return True


def _conv(node: onnx.NodeProto, g: _Graph) -> _Conv | None:
    """``node`` as a paddable conv: 2-D, 4-D input and output of known channels, weight and
    bias dequantized from constants that nothing else reads; None otherwise."""
    if node.op_type != "Conv" or not {node.input[0], node.output[0]} <= g.channels.keys():
        return None
    has_bias = len(node.input) > 2 and bool(node.input[2])
    weight = _constant_dequantizer(node.input[1], g)
    bias = _constant_dequantizer(node.input[2], g) if has_bias else None
    if weight is None or (has_bias and bias is None):
        return None
    shape = list(g.constants[weight.input[0]].dims)
    group = int(_attr(node, "group", 1))
    count_in, count_out = g.channels[node.input[0]], g.channels[node.output[0]]
    if len(shape) != 4 or shape[0] != count_out:
        return None
    if group == 1 and shape[1] == count_in:
        return _Conv(node, weight, bias, depthwise=False)
    if group == count_in == count_out and shape[1] == 1:
        return _Conv(node, weight, bias, depthwise=True)
    return None


def _constant_dequantizer(name: str, g: _Graph) -> onnx.NodeProto | None:
    """The DequantizeLinear that writes ``name`` from constants read by it alone, on axis 0."""
    node = g.producer.get(name)
    if node is None or node.op_type != "DequantizeLinear" or len(g.readers.get(name, [])) != 1:
        return None
    if int(_attr(node, "axis", 1)) != 0 and g.size(node.input[1]) != 1:
        return None
    if not all(n in g.constants and len(g.readers[n]) == 1 for n in node.input if n):
        return None
    return node


def _widen_outputs(conv: _Conv, places: list[int], g: _Graph) -> None:
    """Zero output channels inserted at ``places``: zero weights, zero bias."""
    _insert_channels(conv.weight, g, axis=0, places=places)
    if conv.bias is not None:
        _insert_channels(conv.bias, g, axis=0, places=places)
    if conv.depthwise:
        for attribute in conv.node.attribute:
            if attribute.name == "group":
                attribute.i = g.constants[conv.weight.input[0]].dims[0]


def _insert_channels(dequant: onnx.NodeProto, g: _Graph, *, axis: int, places: list[int]) -> None:
    """Zeros inserted along ``axis`` of the integers ``dequant`` reads, at ``places``
    (np.insert's); along axis 0 into its per-channel scales and zero points too. An inserted
    channel repeats the scale of the channel before it: onnxruntime fuses a conv only where
    each bias scale is the input scale times the weight scale, and repeating both keeps
    that true."""
    values, *params = dequant.input
    _insert_constant(g.constants[values], axis=axis, places=places, repeat=False)
    if axis == 0:
        for name, repeat in zip(params, (True, False), strict=False):
            if name and g.size(name) > 1:
                _insert_constant(g.constants[name], axis=0, places=places, repeat=repeat)


def _insert_constant(
    tensor: onnx.TensorProto, *, axis: int, places: list[int], repeat: bool
) -> None:
    """``tensor`` with zeros, or (1-D, ``repeat``) copies of the value before each place,
    inserted along ``axis`` at ``places``."""
    array = numpy_helper.to_array(tensor)
    fill = array[np.maximum(np.array(places) - 1, 0)] if repeat else 0
    inserted = np.insert(array, places, fill, axis=axis)
    tensor.CopyFrom(numpy_helper.from_array(inserted, tensor.name))


def _pad_input(g: _Graph, multiple: int) -> None:
    """The graph input's integers padded with its zero point to a multiple of ``multiple``
    channels, when its QuantizeLinear feeds DequantizeLinears that only plain convs read."""
    for graph_input in g.graph.input:
        count = g.channels.get(graph_input.name)
        quantizers = g.readers.get(graph_input.name, [])
        if count is None or count % multiple == 0 or len(quantizers) != 1:
            continue
        quantize = quantizers[0]
        if quantize.op_type != "QuantizeLinear" or len(quantize.input) < 3:
            continue
        dequants = g.readers.get(quantize.output[0], [])
        if not dequants or any(d.op_type != "DequantizeLinear" for d in dequants):
            continue
        found = [_conv(node, g) for d in dequants for node in g.readers.get(d.output[0], [])]
        convs = [c for c in found if c is not None and not c.depthwise]
        if not convs or len(convs) != len(found):
            continue
        target = _round_up(count, multiple)
        padded = f"{quantize.output[0]}_aligned"
        pads = f"{padded}_pads"
        g.graph.initializer.append(
            numpy_helper.from_array(np.array([0, 0, 0, 0, 0, target - count, 0, 0]), pads)
        )
        pad = helper.make_node(
            "Pad", [quantize.output[0], pads, quantize.input[2]], [padded], name=f"{padded}_pad"
        )
        g.graph.node.insert(list(g.graph.node).index(quantize) + 1, pad)
        for dequant in dequants:
            dequant.input[0] = padded
        for conv in convs:
            _insert_channels(conv.weight, g, axis=1, places=[count] * (target - count))
