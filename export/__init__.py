"""ONNX and TFLite export of extracted subnets, and their static int8 quantization.

Every function writes its file atomically and raises ExportError with a one-line reason.
litert-torch and ai-edge-quantizer are imported only when a TFLite function runs: they take
seconds to import.
"""

from __future__ import annotations

from export.errors import ExportError
from export.onnx_export import export_onnx, read_onnx_metadata
from export.quantize import (
    IOQuantization,
    TensorQuantization,
    quantize_onnx_int8,
    quantize_tflite_int8,
    tflite_io_quantization,
)
from export.tflite_export import export_tflite

__all__ = [
    "ExportError",
    "IOQuantization",
    "TensorQuantization",
    "export_onnx",
    "export_tflite",
    "quantize_onnx_int8",
    "quantize_tflite_int8",
    "read_onnx_metadata",
    "tflite_io_quantization",
]
