"""How a runtime actually runs an exported file: which ops LiteRT's default XNNPACK delegate
takes, and which nodes of an int8 ONNX model onnxruntime still computes in float.

Structure, not timing: a TFLite file in more than one XNNPACK partition, or an int8 ONNX
file with float islands, is slower than it has to be. The model card shows both.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, TypedDict

from export.errors import ExportError
from export.verify import tflite_interpreter
from once_for_all.errors import one_line

# Ops that compute nothing in float, or only move data: not counted as float islands.
_INT8_ONNX_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QGemm", "Flatten", "Reshape", "Identity"}
    | {"Squeeze", "Unsqueeze", "Transpose", "Concat", "Slice", "Pad"}
)


class TfliteDelegation(TypedDict):
    """Where a .tflite runs under LiteRT's default CPU delegate."""

    delegate: str  # "XNNPACK"
    partitions: int  # delegated subgraphs: 1 when XNNPACK takes the whole graph
    not_delegated: dict[str, int]  # op (and its input type) -> count, run by LiteRT itself


def tflite_delegation(path: Path) -> TfliteDelegation:
    """How many XNNPACK partitions the .tflite at ``path`` falls into, and which ops XNNPACK
    leaves to LiteRT's own kernels (e.g. ``"HARD_SWISH int8"``)."""
    interpreter = tflite_interpreter(path)
    ops: list[dict[str, Any]] = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    producer.update({int(t): op for op in delegates for t in op["outputs"]})
    # Walk the executed graph back from the outputs: a tensor comes from a delegate node or
    # from an op LiteRT runs itself; the ops replaced by a delegate are never reached.
    seen: set[int] = set()
    not_delegated: Counter[str] = Counter()
    pending = [int(t) for t in interpreter._interpreter.OutputIndices()]
    while pending:
        tensor = pending.pop()
        op = producer.get(tensor)
        if op is None or op["index"] in seen:
            continue
        seen.add(op["index"])
        if op["op_name"] != "DELEGATE":
            dtype = op["operand_types"][0].__name__ if op["operand_types"] else "?"
            not_delegated[f"{op['op_name']} {dtype}"] += 1
        pending.extend(int(t) for t in op["inputs"] if int(t) >= 0)
    return TfliteDelegation(
        delegate="XNNPACK", partitions=len(delegates), not_delegated=dict(not_delegated)
    )


def onnx_float_nodes(path: Path) -> dict[str, int]:
    """The op types (with counts) that onnxruntime's CPU provider computes in float in the
    int8 ONNX model at ``path``, after its own QDQ fusions: empty when every compute op runs
    on a quantized kernel. The input QuantizeLinear and output DequantizeLinear are expected
    and not counted."""
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    # EXTENDED: the QDQ fusions, without the CPU-specific layout changes of ALL, so the
    # answer is the same on every x86 and Arm machine.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3
    try:
        with tempfile.TemporaryDirectory(prefix="edgenas-ort-") as work:
            optimized = Path(work) / "optimized.onnx"
            options.optimized_model_filepath = str(optimized)
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            graph = onnx.load(str(optimized)).graph
    except Exception as exc:
        raise ExportError(
            f"{path} is not a loadable ONNX model ({one_line(exc)}): re-export it"
        ) from exc
    return dict(
        Counter(
            node.op_type
            for node in graph.node
            if node.op_type not in _INT8_ONNX_OPS and not node.op_type.startswith("QLinear")
        )
    )
