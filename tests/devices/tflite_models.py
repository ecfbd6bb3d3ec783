"""A small int8 CNN for the Vela tests, written with ``devices.tflite_writer``.

The float fully connected and int8 ADD models are ``devices.sanity_models``'
``tflite_fully_connected`` and ``tflite_int8_add``. Needs ``ai_edge_litert`` and
``flatbuffers``; tests that use it skip where LiteRT is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devices.tflite_writer import Operator, buffer, schema, tensor, write_graph


def int8_cnn(path: Path, *, cpu_op: bool = False, seed: int = 0) -> Path:
    """A fully int8 CNN that Vela maps to the Ethos-U NPU.

    int8 [1, 16, 16, 3] -> CONV_2D 3x3 to 16 channels (ReLU) -> DEPTHWISE_CONV_2D 3x3 stride 2
    (ReLU) -> FULLY_CONNECTED -> int8 [1, 10]. Weights int8 with per-channel scales, biases
    int32 with scale input scale x weight scale, as a real int8 export has them.

    ``cpu_op`` puts a SPACE_TO_DEPTH (a valid int8 TFLite operator that Vela cannot map to the
    Ethos-U55/U65) between the depthwise and the fully connected layer; it then runs on the CPU.
    """
    s = schema()
    rng = np.random.default_rng(seed)  # of the weights
    i8, i32 = s.TensorType.INT8, s.TensorType.INT32
    x_scale, act_scale, y_scale = 1 / 128, 0.05, 0.1
    c = 16

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(-127, 128, shape, dtype=np.int8)

    def qtensor(
        name: str,
        shape: list[int],
        buf: int,
        ttype: int,
        scale: list[float],
        zp: int,
        axis: int = 0,
    ) -> object:
        """A quantized tensor whose static shape is also written as its signature."""
        return tensor(
            name, shape, buf, ttype, signature=shape, scale=scale, zero_point=zp, axis=axis
        )

    conv_w, conv_ws = weights((c, 3, 3, 3)), [0.01 + 0.001 * k for k in range(c)]
    dw_w, dw_ws = weights((1, 3, 3, c)), [0.02 + 0.001 * k for k in range(c)]
    fc_w, fc_ws = weights((10, 8 * 8 * c)), [0.002] * 10
    conv_b = rng.integers(-500, 500, c, dtype=np.int32)
    dw_b = rng.integers(-500, 500, c, dtype=np.int32)
    fc_b = rng.integers(-500, 500, 10, dtype=np.int32)
    tensors = [
        qtensor("x", [1, 16, 16, 3], 1, i8, [x_scale], 0),
        qtensor("conv/w", [c, 3, 3, 3], 2, i8, conv_ws, 0, 0),
        qtensor("conv/b", [c], 3, i32, [x_scale * w for w in conv_ws], 0),
        qtensor("conv", [1, 16, 16, c], 4, i8, [act_scale], -128),
        qtensor("dw/w", [1, 3, 3, c], 5, i8, dw_ws, 0, 3),
        qtensor("dw/b", [c], 6, i32, [act_scale * w for w in dw_ws], 0),
        qtensor("dw", [1, 8, 8, c], 7, i8, [act_scale], -128),
        qtensor("fc/w", [10, 8 * 8 * c], 8, i8, fc_ws, 0, 0),
        qtensor("fc/b", [10], 9, i32, [act_scale * w for w in fc_ws], 0),
        qtensor("y", [1, 10], 10, i8, [y_scale], 0),
    ]
    buffers = [buffer(), buffer()]
    buffers += [buffer(conv_w), buffer(conv_b), buffer()]
    buffers += [buffer(dw_w), buffer(dw_b), buffer()]
    buffers += [buffer(fc_w), buffer(fc_b), buffer()]
    conv = s.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = s.Padding.SAME, 1, 1
    conv.fusedActivationFunction = s.ActivationFunctionType.RELU
    dw = s.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier = s.Padding.SAME, 2, 2, 1
    dw.fusedActivationFunction = s.ActivationFunctionType.RELU
    ops = [
        Operator(s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions, conv, [0, 1, 2], [3]),
        Operator(
            s.BuiltinOperator.DEPTHWISE_CONV_2D,
            s.BuiltinOptions.DepthwiseConv2DOptions,
            dw,
            [3, 4, 5],
            [6],
        ),
    ]
    fc_in = 6
    if cpu_op:
        tensors.append(qtensor("s2d", [1, 4, 4, 4 * c], len(buffers), i8, [act_scale], -128))
        buffers.append(buffer())
        s2d = s.SpaceToDepthOptionsT()
        s2d.blockSize = 2
        ops.append(
            Operator(
                s.BuiltinOperator.SPACE_TO_DEPTH,
                s.BuiltinOptions.SpaceToDepthOptions,
                s2d,
                [6],
                [10],
            )
        )
        fc_in = 10
    fc = s.FullyConnectedOptionsT()
    ops.append(
        Operator(
            s.BuiltinOperator.FULLY_CONNECTED,
            s.BuiltinOptions.FullyConnectedOptions,
            fc,
            [fc_in, 7, 8],
            [9],
        )
    )
    return write_graph(path, ops, tensors, buffers, [0], [9])


def float_cnn(path: Path, *, input_name: str = "x", seed: int = 0) -> Path:
    """float32 [1, 16, 16, 3] (named ``input_name``) -> CONV_2D 3x3 stride 2 to 8 channels
    (ReLU) -> FULLY_CONNECTED -> float32 [1, 10]: an image classifier in float."""
    s = schema()
    rng = np.random.default_rng(seed)
    f32 = s.TensorType.FLOAT32
    tensors = [
        tensor(input_name, [1, 16, 16, 3], 1, f32),
        tensor("conv/w", [8, 3, 3, 3], 2, f32),
        tensor("conv/b", [8], 3, f32),
        tensor("conv", [1, 8, 8, 8], 4, f32),
        tensor("fc/w", [10, 8 * 8 * 8], 5, f32),
        tensor("fc/b", [10], 6, f32),
        tensor("y", [1, 10], 7, f32),
    ]
    buffers = [
        buffer(),
        buffer(),
        buffer(rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
        buffer(rng.standard_normal(8).astype(np.float32)),
        buffer(),
        buffer(rng.standard_normal((10, 8 * 8 * 8)).astype(np.float32) / 16),
        buffer(np.zeros(10, np.float32)),
        buffer(),
    ]
    conv = s.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = s.Padding.SAME, 2, 2
    conv.fusedActivationFunction = s.ActivationFunctionType.RELU
    ops = [
        Operator(s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions, conv, [0, 1, 2], [3]),
        Operator(
            s.BuiltinOperator.FULLY_CONNECTED,
            s.BuiltinOptions.FullyConnectedOptions,
            s.FullyConnectedOptionsT(),
            [3, 4, 5],
            [6],
        ),
    ]
    return write_graph(path, ops, tensors, buffers, [0], [6])


def float_mean(path: Path, *, channels: int = 3) -> Path:
    """float32 [1, H, W, C] of any H and W (-1 in the signature; C too with ``channels``
    -1) -> MEAN over H and W -> [1, C]: its class is the channel of the largest mean."""
    s = schema()
    f32, i32 = s.TensorType.FLOAT32, s.TensorType.INT32
    mean = s.ReducerOptionsT()
    mean.keepDims = False
    return write_graph(
        path,
        [Operator(s.BuiltinOperator.MEAN, s.BuiltinOptions.ReducerOptions, mean, [0, 1], [2])],
        [
            tensor("x", [1, 1, 1, 3], 1, f32, signature=[1, -1, -1, channels]),
            tensor("axes", [2], 2, i32),
            tensor("y", [1, 3], 3, f32),
        ],
        [buffer(), buffer(), buffer(np.array([1, 2], np.int32)), buffer()],
        [0],
        [2],
    )


def float_split(path: Path) -> Path:
    """float32 [1, 8] -> FULLY_CONNECTED -> h; ZEROS_LIKE(h) -> z; ADD(h, z) -> [1, 4].

    XNNPACK takes the FULLY_CONNECTED and the ADD, not the ZEROS_LIKE: two partitions, with
    one op left to TFLite's builtin kernels between them.
    """
    s = schema()
    f32 = s.TensorType.FLOAT32
    weights = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    tensors = [
        tensor("x", [1, 8], 1, f32),
        tensor("w", [4, 8], 2, f32),
        tensor("b", [4], 3, f32),
        tensor("h", [1, 4], 4, f32),
        tensor("z", [1, 4], 5, f32),
        tensor("y", [1, 4], 6, f32),
    ]
    buffers = [buffer(), buffer(), buffer(weights), buffer(np.zeros(4, np.float32))]
    buffers += [buffer(), buffer(), buffer()]
    ops = [
        Operator(
            s.BuiltinOperator.FULLY_CONNECTED,
            s.BuiltinOptions.FullyConnectedOptions,
            s.FullyConnectedOptionsT(),
            [0, 1, 2],
            [3],
        ),
        Operator(
            s.BuiltinOperator.ZEROS_LIKE,
            s.BuiltinOptions.ZerosLikeOptions,
            s.ZerosLikeOptionsT(),
            [3],
            [4],
        ),
        Operator(s.BuiltinOperator.ADD, s.BuiltinOptions.AddOptions, s.AddOptionsT(), [3, 4], [5]),
    ]
    return write_graph(path, ops, tensors, buffers, [0], [5])
