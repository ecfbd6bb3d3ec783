"""devices.tflite_writer: the models it writes load and run in LiteRT's interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")

from ai_edge_litert.interpreter import Interpreter

from devices.tflite_writer import Operator, buffer, schema, tensor, write_graph
from tests.devices.tflite_models import int8_cnn


def _run(path: Path) -> tuple[Interpreter, np.ndarray]:
    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
    interp.invoke()
    return interp, interp.get_tensor(interp.get_output_details()[0]["index"])


def test_float_fully_connected(tmp_path: Path) -> None:
    s = schema()
    f32 = s.TensorType.FLOAT32
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = [
        tensor("x", [2, 4], 1, f32, signature=[-1, 4]),
        tensor("w", [3, 4], 2, f32),
        tensor("b", [3], 3, f32),
        tensor("y", [2, 3], 4, f32, signature=[-1, 3]),
    ]
    buffers = [buffer(), buffer(), buffer(weights), buffer(np.ones(3, np.float32)), buffer()]
    fc = Operator(
        s.BuiltinOperator.FULLY_CONNECTED,
        s.BuiltinOptions.FullyConnectedOptions,
        s.FullyConnectedOptionsT(),
        [0, 1, 2],
        [3],
    )
    path = write_graph(tmp_path / "fc.tflite", [fc], tensors, buffers, [0], [3])
    interp, y = _run(path)
    assert interp.get_input_details()[0]["shape_signature"].tolist() == [-1, 4]
    assert y.dtype == np.float32 and y.shape == (2, 3)
    np.testing.assert_allclose(y, np.tile(weights.sum(axis=1) + 1, (2, 1)))


@pytest.mark.parametrize("cpu_op", [False, True])
def test_int8_cnn(tmp_path: Path, cpu_op: bool) -> None:
    interp, y = _run(int8_cnn(tmp_path / "cnn.tflite", cpu_op=cpu_op))
    assert y.dtype == np.int8 and y.shape == (1, 10)
    ops = [op["op_name"] for op in interp._get_ops_details()]
    expected = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"]
    if cpu_op:
        expected.insert(2, "SPACE_TO_DEPTH")
    assert [op for op in ops if op != "DELEGATE"] == expected
    weights = next(d for d in interp.get_tensor_details() if d["name"] == "dw/w")
    quant = weights["quantization_parameters"]
    assert quant["quantized_dimension"] == 3 and len(quant["scales"]) == 16
