"""The layers an NPU runs: SCALE-Sim topology ``.csv`` files and ONNX graphs as layer lists.

A ``Layer`` is one row of a SCALE-Sim topology: ifmap height and width, filter height and
width, channels, number of filters and strides, no padding (the ifmap is the padded one). A
depthwise layer is marked as SCALE-Sim marks it, by ``DP`` in its name in the ``.csv``; it is
simulated channel by channel, each channel a convolution of one input channel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devices.npu_sim.errors import NpuSimError
from once_for_all.errors import one_line
from once_for_all.files import write_text

if TYPE_CHECKING:
    import onnx

CSV_HEADER = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
    "Num Filter, Strides,"
)
DEPTHWISE_MARK = "DP"  # SCALE-Sim expands a row whose name contains this channel by channel
# Elements of one operand matrix the memory model builds (a config with a DRAM bandwidth):
# 1 GiB of int32 addresses, and twice that in the int64 indices that make them. An edge
# model's layers hold far fewer: the im2col of a 3x3 conv of 64 channels on a 512x512 map
# has 1.5 x 10^8. The cycle model alone (bandwidth CALC) builds none, and takes any layer.
MAX_OPERAND = 1 << 28


@dataclass(frozen=True)
class Layer:
    """One convolution (a GEMM is a 1x1 convolution) as SCALE-Sim sees it.

    For a depthwise layer ``channels`` is the number of channels, each convolved on its own,
    and ``num_filters`` the filters per channel (the depthwise multiplier, 1 in MobileNets), as
    in SCALE-Sim's ``DP`` rows.
    """

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    num_filters: int
    stride_h: int = 1
    stride_w: int = 1
    depthwise: bool = False

    def __post_init__(self) -> None:
        for key in (
            "ifmap_h",
            "ifmap_w",
            "filter_h",
            "filter_w",
            "channels",
            "num_filters",
            "stride_h",
            "stride_w",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NpuSimError(f"layer {self.name!r}: {key}={value!r}: expected an integer >= 1")
        if self.filter_h > self.ifmap_h or self.filter_w > self.ifmap_w:
            raise NpuSimError(
                f"layer {self.name!r}: filter {self.filter_h}x{self.filter_w} is larger than "
                f"its ifmap {self.ifmap_h}x{self.ifmap_w}; give the padded ifmap size"
            )
        # The cycle model counts in int64: larger layers overflowed it with a traceback.
        for what, elements in self.operand_sizes(per_channel=False).items():
            if elements * max(self.num_filters, self.channels) >= 1 << 62:
                raise NpuSimError(
                    f"layer {self.name!r}: its {what} operand has {elements:,} elements, more "
                    "than the simulator counts; check the layer's sizes"
                )

    def operand_sizes(self, *, per_channel: bool) -> dict[str, int]:
        """Elements of each operand matrix SCALE-Sim's memory model builds for this layer
        (``per_channel``: of one channel of a depthwise layer, which it simulates so)."""
        one = per_channel and self.depthwise
        channels = 1 if one else self.channels
        window = self.filter_h * self.filter_w * (1 if self.depthwise else self.channels)
        pixels = self.ofmap_h * self.ofmap_w
        return {
            "ifmap": self.ifmap_h * self.ifmap_w * channels,
            "im2col (ofmap pixels x window)": pixels * window,
            "filter": window * self.num_filters,
            "ofmap": pixels * self.num_filters,
        }

    # SCALE-Sim rounds up: a last window that hangs over the ifmap's edge still counts.
    @property
    def ofmap_h(self) -> int:
        return -(-(self.ifmap_h - self.filter_h) // self.stride_h) + 1

    @property
    def ofmap_w(self) -> int:
        return -(-(self.ifmap_w - self.filter_w) // self.stride_w) + 1

    @property
    def out_channels(self) -> int:
        return self.channels * self.num_filters if self.depthwise else self.num_filters

    @property
    def macs(self) -> int:
        per_channel_in = 1 if self.depthwise else self.channels
        return (
            self.ofmap_h * self.ofmap_w * self.filter_h * self.filter_w * per_channel_in
        ) * self.out_channels

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ifmap_h": self.ifmap_h,
            "ifmap_w": self.ifmap_w,
            "filter_h": self.filter_h,
            "filter_w": self.filter_w,
            "channels": self.channels,
            "num_filters": self.num_filters,
            "stride_h": self.stride_h,
            "stride_w": self.stride_w,
            "depthwise": self.depthwise,
        }


def parse_topology_csv(text: str, *, source: str = "topology") -> list[Layer]:
    """Layers of a SCALE-Sim conv topology (first line a header, one layer per row).

    Columns: name, ifmap height, ifmap width, filter height, filter width, channels, number of
    filters, stride (both directions), then optionally a sparsity ratio ``N:M`` (only ``1:1``,
    dense, is accepted). Fields starting with ``#`` are comments.
    """
    layers: list[Layer] = []
    for lineno, row in enumerate(text.splitlines(), start=1):
        cells = [c.strip() for c in row.split(",")]
        cells = [c for c in cells if c and not c.startswith("#")]
        where = f"{source} line {lineno}"
        if lineno == 1:
            if len(cells) >= 8 and all(c.isdigit() for c in cells[1:8]):
                raise NpuSimError(
                    f"{where} is a layer, but SCALE-Sim reads the first line as the header; "
                    f"add one: {CSV_HEADER}"
                )
            continue
        if not cells:
            continue
        if len(cells) < 8:
            raise NpuSimError(
                f"{where}: {len(cells)} columns, expected 8: name, ifmap height, ifmap width, "
                "filter height, filter width, channels, num filter, stride"
            )
        extra = cells[8:]
        if extra and extra != ["1:1"]:
            raise NpuSimError(
                f"{where}: unexpected {','.join(extra)!r} after the stride; only dense "
                "layers (sparsity 1:1) are modelled"
            )
        name = cells[0]
        try:
            h, w, r, s, c, k, stride = (int(x) for x in cells[1:8])
        except ValueError:
            raise NpuSimError(f"{where}: {','.join(cells[1:8])!r}: expected 7 integers") from None
        try:
            layers.append(
                Layer(name, h, w, r, s, c, k, stride, stride, depthwise=DEPTHWISE_MARK in name)
            )
        except NpuSimError as exc:
            raise NpuSimError(f"{where}: {exc}") from None
    if not layers:
        raise NpuSimError(f"{source}: no layers (the first line is the header)")
    return layers


def format_topology_csv(layers: Iterable[Layer]) -> str:
    """SCALE-Sim topology text; a depthwise layer's name gets ``_DP`` unless it has ``DP``."""
    lines = [CSV_HEADER]
    for layer in layers:
        name = layer.name
        if any(ch in name for ch in ",\n\r#"):
            raise NpuSimError(f"layer {name!r}: a topology name cannot hold ',', '#' or a newline")
        if layer.depthwise and DEPTHWISE_MARK not in name:
            name = f"{name}_{DEPTHWISE_MARK}"
        elif not layer.depthwise and DEPTHWISE_MARK in name:
            raise NpuSimError(
                f"layer {name!r}: SCALE-Sim reads a name with {DEPTHWISE_MARK!r} as depthwise; "
                "rename the layer"
            )
        if layer.stride_h != layer.stride_w:
            raise NpuSimError(
                f"layer {name!r}: strides {layer.stride_h}x{layer.stride_w}; a SCALE-Sim "
                "topology has one stride for both directions"
            )
        lines.append(
            f"{name},{layer.ifmap_h},{layer.ifmap_w},{layer.filter_h},{layer.filter_w},"
            f"{layer.channels},{layer.num_filters},{layer.stride_h},"
        )
    return "\n".join(lines) + "\n"


def read_topology_csv(path: str | os.PathLike[str]) -> list[Layer]:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise NpuSimError(f"topology {path}: {reason}") from None
    return parse_topology_csv(text, source=str(path))


def write_topology_csv(layers: Iterable[Layer], path: str | os.PathLike[str]) -> None:
    write_text(Path(path), format_topology_csv(layers))


# Operators that run on the array, by (domain, type): where the data and weight inputs sit,
# and which kind. QGemm is onnxruntime's, from quantize_static's QOperator format.
_ARRAY_OPS: dict[tuple[str, str], tuple[int, int, str]] = {
    ("", "Conv"): (0, 1, "conv"),
    ("", "ConvInteger"): (0, 1, "conv"),
    ("", "QLinearConv"): (0, 3, "conv"),
    ("", "Gemm"): (0, 1, "gemm"),
    ("com.microsoft", "QGemm"): (0, 3, "gemm"),
    ("", "MatMul"): (0, 1, "matmul"),
    ("", "MatMulInteger"): (0, 1, "matmul"),
    ("", "QLinearMatMul"): (0, 3, "matmul"),
}


# Matrix work the model does not map onto the array. Everything else outside _ARRAY_OPS
# (activations, pooling, additions, reshapes) runs off the array and is left out.
_UNMODELLED_ARRAY_OPS = frozenset(
    {"ConvTranspose", "QLinearConvTranspose", "LSTM", "GRU", "RNN", "Einsum", "Attention"}
)


def layers_from_onnx(model: str | os.PathLike[str] | onnx.ModelProto) -> list[Layer]:
    """The array's layers of an ONNX model (a path or an ``onnx.ModelProto``), in graph order.

    Conv (2-D or 1-D; depthwise when ``group`` equals the channels; other groups as one layer
    per group), Gemm and MatMul (as 1x1 convolutions: one ofmap pixel per row) and their
    quantized forms (QDQ models and onnxruntime's QOperator ones). Shapes come from ``onnx.shape_inference``; a symbolic batch counts as 1.
    Everything else (activations, pooling, additions) is not run on the array and is left out.
    """
    import onnx  # here: importing onnx takes a while and most callers never need it

    source = "ONNX model"
    if isinstance(model, str | os.PathLike):
        source = f"ONNX model {model}"
        try:
            model = onnx.load(os.fspath(model))
        except Exception as exc:  # onnx raises DecodeError, OSError, ...
            raise NpuSimError(f"{source}: cannot be read: {one_line(exc, limit=300)}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # InferenceError and friends
        raise NpuSimError(f"{source}: shape inference failed: {one_line(exc, limit=300)}") from None
    graph = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            ]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)

    layers: list[Layer] = []
    for index, node in enumerate(graph.node):
        op = ("" if node.domain == "ai.onnx" else node.domain, node.op_type)
        if node.op_type in _UNMODELLED_ARRAY_OPS:
            # Work that would run on the array: leaving it out would under-count silently.
            name = node.name or f"{node.op_type}_{index}"
            raise NpuSimError(
                f"{source}: node {name!r} ({node.op_type}) would run on the array but is not "
                "modelled (Conv, Gemm, MatMul and their quantized forms are): export the model "
                "without it, or measure it on a device"
            )
        if op not in _ARRAY_OPS:
            continue
        x_at, w_at, kind = _ARRAY_OPS[op]
        name = node.name or f"{node.op_type}_{index}"
        where = f"{source}: node {name!r} ({node.op_type})"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

        x = _input_shape(shapes, node.input, x_at, where)
        w = _input_shape(shapes, node.input, w_at, where)
        if kind == "conv":
            layers.extend(_conv_layers(name, where, x, w, shapes.get(node.output[0]), attrs))
        elif kind == "gemm":
            layers.append(_gemm_layer(name, where, x, w, attrs))
        else:
            layers.extend(_matmul_layers(name, where, x, w))
    return layers


def _input_shape(
    shapes: dict[str, list[int | None]], inputs: Sequence[str], position: int, where: str
) -> list[int | None]:
    tensor = inputs[position] if position < len(inputs) else ""
    if tensor not in shapes:
        raise NpuSimError(f"{where}: shape of input {tensor!r} unknown after shape inference")
    return shapes[tensor]


def _conv_layers(
    name: str,
    where: str,
    x: Sequence[int | None],
    w: Sequence[int | None],
    out: Sequence[int | None] | None,
    attrs: dict[str, Any],
) -> list[Layer]:
    if len(x) == 3:  # 1-D convolution: a height of 1
        x, w = [x[0], x[1], 1, x[2]], [w[0], w[1], 1, w[2]]
        out = None if out is None or len(out) != 3 else [out[0], out[1], 1, out[2]]
        for key in ("strides", "dilations"):
            if key in attrs:
                attrs[key] = [1, *attrs[key]]
        if "pads" in attrs:
            attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
    if len(x) != 4 or len(w) != 4:
        raise NpuSimError(f"{where}: {len(x) - 2}-D convolution; only 1-D and 2-D are modelled")
    batch, channels, height, width = x
    filters, _, kh, kw = w
    _check_batch(where, batch)
    known = _known(where, channels=channels, height=height, width=width)
    channels, height, width = known["channels"], known["height"], known["width"]
    k = _known(where, filters=filters, kernel_h=kh, kernel_w=kw)
    filters, kh, kw = k["filters"], k["kernel_h"], k["kernel_w"]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    if out is not None and len(out) == 4 and out[2] and out[3]:
        oh, ow = int(out[2]), int(out[3])
    else:
        oh, ow = _conv_out_size(height, width, kh, kw, sh, sw, dh, dw, attrs)
    # The ifmap that gives exactly these output pixels with this window and stride: the
    # operand matrices (and so the cycles) are those of the padded, dilated convolution.
    ih, iw = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    group = int(attrs.get("group", 1))
    if group == 1:
        return [Layer(name, ih, iw, kh, kw, channels, filters, sh, sw)]
    if channels % group or filters % group:
        raise NpuSimError(f"{where}: group={group} does not divide {channels} channels")
    if group == channels:
        return [Layer(name, ih, iw, kh, kw, channels, filters // group, sh, sw, depthwise=True)]
    per_group = Layer(name, ih, iw, kh, kw, channels // group, filters // group, sh, sw)
    return [replace(per_group, name=f"{name}/group{g}") for g in range(group)]


def _conv_out_size(
    height: int,
    width: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    attrs: dict[str, Any],
) -> tuple[int, int]:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return math.ceil(height / sh), math.ceil(width / sw)
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0] * 4
    oh = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    return oh, ow


def _gemm_layer(
    name: str, where: str, a: Sequence[int | None], b: Sequence[int | None], attrs: dict[str, Any]
) -> Layer:
    if len(a) != 2 or len(b) != 2:
        raise NpuSimError(f"{where}: Gemm inputs of rank {len(a)} and {len(b)}, expected 2")
    rows, depth = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
    cols = b[0] if attrs.get("transB", 0) else b[1]
    # Every row of A is one ofmap pixel of the GEMM, as MatMul's leading rows are: a classifier
    # at batch 1 has one; a batched network was refused at its first convolution already.
    k = _known(where, inner=depth, outputs=cols)
    return Layer(name, rows or 1, 1, 1, 1, k["inner"], k["outputs"])


def _matmul_layers(
    name: str, where: str, a: Sequence[int | None], b: Sequence[int | None]
) -> list[Layer]:
    if not a or not b:
        raise NpuSimError(f"{where}: MatMul of a scalar")
    k = _known(where, inner=a[-1], outputs=b[-1] if len(b) >= 2 else 1)
    if len(b) <= 2:  # one weight matrix: every leading row of ``a`` is one ofmap pixel
        rows = math.prod(d or 1 for d in a[:-1])
        return [Layer(name, rows, 1, 1, 1, k["inner"], k["outputs"])]
    rows = (a[-2] or 1) if len(a) >= 2 else 1
    batch_a = [d or 1 for d in a[:-2]]
    batch_b = [d or 1 for d in b[:-2]]
    batches = math.prod(_broadcast(batch_a, batch_b, where))
    layer = Layer(name, rows, 1, 1, 1, k["inner"], k["outputs"])
    if batches == 1:
        return [layer]
    return [replace(layer, name=f"{name}/batch{i}") for i in range(batches)]


def _broadcast(a: list[int], b: list[int], where: str) -> list[int]:
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise NpuSimError(f"{where}: batch dimensions {a} and {b} do not broadcast")
        out.append(max(x, y))
    return out


def _check_batch(where: str, batch: int | None) -> None:
    if batch is not None and batch > 1:
        raise NpuSimError(
            f"{where}: batch {batch}; the NPU model simulates one image, export with batch 1"
        )


def _known(where: str, **dims: int | None) -> dict[str, int]:
    for key, value in dims.items():
        if not value:
            raise NpuSimError(
                f"{where}: {key} is not a fixed number after shape inference; export with "
                "static shapes"
            )
    return {key: int(value or 0) for key, value in dims.items()}
