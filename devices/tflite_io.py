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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.base import DeviceError
from devices.runner import RunnerError, tflite_input

# The name given to benchmark_model for an input whose own name its flags cannot carry (a
# comma splits --input_layer; an empty one is no name): the tool matches inputs by position
# and only warns that the names differ.
_PLAIN_NAME = "input"


@dataclass(frozen=True)
class TfliteInput:
    """A TFLite file's one input, and how an image becomes the file benchmark_model reads."""

    name: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    type: str  # numpy's name: float32, int8, uint8
    quantization: tuple[float, int]

    @property
    def layout(self) -> tuple[object, ...]:
        """What the input files depend on: files of the same layout take the same ones."""
        return (self.shape, self.type, self.quantization)

    def flags(self, value_file: str) -> list[str]:
        """benchmark_model's flags feeding the input from ``value_file`` (a path without a
        ``,`` or a ``:``; a ``:`` in the name is written ``::``, as the tool reads it)."""
        name = self.name if self.name and "," not in self.name else _PLAIN_NAME
        return [
            f"--input_layer={name}",
            f"--input_layer_shape={','.join(str(d) for d in self.shape)}",
            f"--input_layer_value_files={name.replace(':', '::')}:{value_file}",
        ]

    def file(self, image: npt.NDArray[np.floating], *, device: str, model: str) -> npt.NDArray[Any]:
        """One NCHW float image (C x H x W) as this input takes it: NHWC where the file is,
        int8 or uint8 with the file's own scale and zero point where it is quantized."""
        x = np.asarray(image, np.float32)[None]
        try:
            return np.ascontiguousarray(
                tflite_input(
                    np, x, list(self.shape), self.type, self.quantization, f"model {model!r}"
                )
            )
        except RunnerError as exc:
            raise DeviceError(f"device {device!r}: {exc.message}") from None


@dataclass(frozen=True)
class TfliteIO:
    """What feeding images to a TFLite file and reading its classes back takes."""

    input: TfliteInput  # its shape the images' (dynamic dimensions set)
    output_type: str
    output_size: int  # elements of the first output, the class scores
    outputs_bytes: int  # all outputs together, as benchmark_model writes them


def read_io(path: Path, image: npt.NDArray[np.floating], device: str) -> TfliteIO:
    """The input and outputs of the TFLite file at ``path`` for images such as ``image``
    (C x H x W), read here with LiteRT; a file that cannot take them is refused in one line
    before anything runs on the phone."""
    try:
        from ai_edge_litert.interpreter import (  # type: ignore[import-untyped]
            Interpreter,
            OpResolverType,
        )
    except ImportError:
        raise DeviceError(
            f"device {device!r}: reading {path.name}'s input needs LiteRT on this machine; "
            "install ai-edge-litert (make setup does)"
        ) from None
    try:
        # Builtin kernels only: reading tensors needs no delegate (nor its log line).
        interpreter = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
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
    scale, zero_point = inp["quantization"]
    signature = TfliteInput(
        name=str(inp["name"]),
        shape=tuple(int(d) for d in inp.get("shape_signature", inp["shape"])),
        type=np.dtype(inp["dtype"]).name,
        quantization=(float(scale), int(zero_point)),
    )
    shape = tuple(int(d) for d in signature.file(image, device=device, model=path.name).shape)
    if list(shape) != [int(d) for d in inp["shape"]]:
        # A dynamic dimension: the outputs' sizes follow the images'.
        try:
            interpreter.resize_tensor_input(inp["index"], list(shape))
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DeviceError(
                f"device {device!r}: {path.name} does not run on images of "
                f"{list(image.shape)} (NCHW) ({_first_line(exc)}): export the model for batch "
                "1 at the images' resolution"
            ) from None
        outputs = interpreter.get_output_details()
    return TfliteIO(
        input=replace(signature, shape=shape),
        output_type=np.dtype(outputs[0]["dtype"]).name,
        output_size=int(np.prod(outputs[0]["shape"])),
        outputs_bytes=sum(
            int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize for o in outputs
        ),
    )


def classes_from_outputs(io: TfliteIO, data: bytes, count: int) -> list[int]:
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
