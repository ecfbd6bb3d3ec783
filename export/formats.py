"""The model file formats and precisions edgenas exports, measures and ships: one vocabulary
for the exporter, the latency tables, the recipes and the CLI. Imports nothing."""

from __future__ import annotations

from typing import Literal, get_args

ModelFormat = Literal["onnx", "tflite"]
Precision = Literal["fp32", "int8"]
MODEL_FORMATS: tuple[ModelFormat, ...] = get_args(ModelFormat)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

# The top-1 agreement with fp32 from which an int8 file is worth shipping: the target
# benchmarks/export.py checks, and the default for recommending int8 over fp32.
INT8_AGREEMENT_TARGET = 0.98
