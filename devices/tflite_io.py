"""A TFLite file's input and output as TFLite's ``benchmark_model`` reads and writes them.

``benchmark_model`` (a current LiteRT build) feeds an input from a file of the tensor's raw
bytes (``--input_layer_value_files=NAME:FILE``, exactly the tensor's size) and writes every
output's raw bytes, one after another, after its last run (``--output_filepath=FILE``;
``OutputSaver`` in ``benchmark_tflite_model.cc``). This module reads the file's tensors on
this machine with LiteRT's interpreter, lays images out as those input files and reads the
top-1 class back from the output files. The images are fed as the runner feeds them
(``fit_image``, ``quantize``), so a phone is checked on the same inputs as a board.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.base import DeviceError
from devices.runner import RunnerError, fit_image, image_type, quantize


@dataclass(frozen=True)
class TfliteIO:
    """What feeding one image to a TFLite file and reading its class back takes."""

    input_name: str
    input_shape: tuple[Any, ...]  # the file's shape signature: -1 for a dynamic dimension
    input_type: str  # numpy's name: float32, int8, uint8
    input_quantization: tuple[float, int]
    output_type: str
    output_size: int  # elements of the first output, the class scores
    outputs_bytes: int  # all outputs together, as benchmark_model writes them

    def flags(self, image_shape: tuple[int, ...]) -> list[str]:
        """benchmark_model's flags naming the input and its shape for one image."""
        return [f"--input_layer={self.input_name}", f"--input_layer_shape={_csv(image_shape)}"]

    def value_file_flag(self, folder: str) -> str:
        """``--input_layer_value_files=NAME:FOLDER/`` without the file name: the caller's
        shell adds it. A ``:`` in the name is written ``::``, as the tool reads it."""
        return f"--input_layer_value_files={self.input_name.replace(':', '::')}:{folder}/"


def read_io(path: Path, device: str) -> TfliteIO:
    """The input and outputs of the TFLite file at ``path``, read here with LiteRT."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
    except ImportError:
        raise DeviceError(
            f"device {device!r}: reading {path.name}'s input needs LiteRT on this machine; "
            "install ai-edge-litert (make setup does)"
        ) from None
    try:
        interpreter = Interpreter(model_path=str(path))
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
    except (ValueError, RuntimeError) as exc:
        raise DeviceError(
            f"device {device!r}: cannot read {path.name} with LiteRT ({_first_line(exc)}); "
            "check on the phone only files that LiteRT loads"
        ) from None
    if len(inputs) != 1 or not outputs:
        raise DeviceError(
            f"device {device!r}: {path.name} has {len(inputs)} inputs and {len(outputs)} "
            "outputs: only a one-input model with class scores classifies images"
        )
    (inp,) = inputs
    name = str(inp["name"])
    if "," in name:  # benchmark_model splits --input_layer at commas
        raise DeviceError(
            f"device {device!r}: {path.name}'s input is named {name!r}, and benchmark_model "
            "cannot be given a name with a comma; rename the input when exporting"
        )
    scale, zero_point = inp["quantization"]
    signature = inp.get("shape_signature", inp["shape"])
    return TfliteIO(
        input_name=name,
        input_shape=tuple(int(d) for d in signature),
        input_type=np.dtype(inp["dtype"]).name,
        input_quantization=(float(scale), int(zero_point)),
        output_type=np.dtype(outputs[0]["dtype"]).name,
        output_size=int(np.prod(outputs[0]["shape"])),
        outputs_bytes=sum(
            int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize for o in outputs
        ),
    )


def input_file(
    io: TfliteIO, image: npt.NDArray[np.floating], *, device: str, model: str
) -> npt.NDArray[Any]:
    """One NCHW float image (C x H x W) as the file's input tensor takes it: NHWC where the
    file is, int8 or uint8 with its own scale and zero point where it is quantized."""
    what = f"model {model!r}"
    try:
        dtype = image_type(np, io.input_type, what, quantized=True)
        x = fit_image(np, np.asarray(image, np.float32)[None], list(io.input_shape), what)
        if np.dtype(dtype).kind == "f":
            return np.ascontiguousarray(x, dtype=dtype)
        scale, zero_point = io.input_quantization
        return np.ascontiguousarray(quantize(np, x, dtype, scale, zero_point, what))
    except RunnerError as exc:
        raise DeviceError(f"device {device!r}: {exc.message}") from None


def top1(io: TfliteIO, data: bytes, count: int) -> list[int]:
    """The top-1 class of each of ``count`` images from their outputs, written one image
    after another. Quantized scores keep their order: argmax needs no dequantizing."""
    if len(data) != count * io.outputs_bytes:
        raise ValueError(
            f"{len(data)} bytes of outputs, not {count} x {io.outputs_bytes} for {count} images"
        )
    per_image = np.frombuffer(data, np.uint8).reshape(count, io.outputs_bytes)
    itemsize = np.dtype(io.output_type).itemsize
    scores = per_image[:, : io.output_size * itemsize].copy().view(io.output_type)
    return [int(i) for i in scores.argmax(axis=1)]


def _csv(shape: tuple[int, ...]) -> str:
    return ",".join(str(int(d)) for d in shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
