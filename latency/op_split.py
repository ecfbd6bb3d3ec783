"""A block's per-op times (``Measurement.ops``) split by kind of operator: where its time goes.

Runtimes name operators differently: onnxruntime's op types (``Conv``, ``FusedConv``,
``HardSwish``) under node names that keep the module path (``/depthwise/conv/Conv``), TFLite's
node types (``DEPTHWISE_CONV_2D``) and XNNPACK's (``Convolution (NHWC, F32) DWConv``),
OpenVINO's with their kernel (``GroupConvolution (brgconv_avx512_dw_I8)``), and TensorRT's
fused layers, named only (``/expand/conv/Conv + /expand/act/HardSwish``). The kinds are read
from the type where it says what the op computes and from the name otherwise (TensorRT's
layers, OpenVINO's ``Subgraph`` of fused element-wise ops, named after one of them):

- ``SE``: squeeze-excite, every op under a module path with an ``se`` part, and hard-sigmoid
  gates (MobileNetV3 has them only there);
- ``HardSwish``: the activation, where it runs as its own op;
- ``depthwise``: depthwise convolutions (by type, or a conv under a ``depthwise`` path);
- ``Conv``: other convolutions and matrix products (1x1 expand and project, stem, head);
- ``other``: the rest (residual adds, ReLU, pooling, layout changes, quantization).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from devices.measurement import OperatorTime

KINDS = ("Conv", "depthwise", "HardSwish", "SE", "other")

_PARTS = re.compile(r"[/.:\[\]\s]+")
# OpenVINO's own op types are HSigmoid and HSwish.
_SE_GATES = ("hardsigmoid", "hard_sigmoid", "hsigmoid")
_HARD_SWISH = ("hardswish", "hard_swish", "hswish")
# OpenVINO's depthwise convs are GroupConvolution (MobileNetV3 has no other grouped conv).
_DEPTHWISE = ("depthwise", "dwconv", "groupconvolution")
# Types that say nothing of what the op computes: the name does.
_FUSED_TYPES = ("subgraph",)
# OpenVINO's kernel after its type ("Reorder (reorder_brgemm_f32)"): it says how, not what.
# XNNPACK's types keep their words after the parenthesis ("Convolution (NHWC, F32) DWConv").
_KERNEL = re.compile(r"\s*\([^()]*\)$")
# Convolutions and matrix products; not XNNPACK's "Convert (NC, F32, QD8)".
_MATRIX = re.compile(r"conv(?!ert)|gemm|matmul|fully_?connected")


def op_kind(op: OperatorTime) -> str:
    """The kind (one of ``KINDS``) of one operator."""
    name = op.name.lower()
    # TensorRT names no type: the first ONNX node of a fused layer says what it computes.
    op_type = _KERNEL.sub("", op.op_type)
    op_type = "" if op_type.lower().startswith(_FUSED_TYPES) else op_type
    described = (op_type or op.name.split(" + ")[0].rsplit("/", 1)[-1]).lower()
    if "se" in _PARTS.split(name) or any(g in described for g in _SE_GATES):
        return "SE"
    if any(h in described for h in _HARD_SWISH):
        return "HardSwish"
    if _MATRIX.search(described):
        depthwise = any(d in described for d in _DEPTHWISE) or "depthwise" in name
        return "depthwise" if depthwise else "Conv"
    return "other"


def split_by_kind(ops: Iterable[OperatorTime]) -> dict[str, float]:
    """ms per inference of each kind that occurs, in ``KINDS`` order."""
    totals: dict[str, float] = {}
    for op in ops:
        kind = op_kind(op)
        totals[kind] = totals.get(kind, 0.0) + op.ms
    return {kind: totals[kind] for kind in KINDS if kind in totals}
