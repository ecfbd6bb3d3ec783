"""ONNX and TFLite export of extracted subnets, and their static int8 quantization.

Every function writes its file atomically and raises ExportError with a one-line reason.
litert-torch and ai-edge-quantizer are imported only when a TFLite function runs: they take
seconds to import. ``export.formats`` (the model formats and precisions) imports nothing, and
the CLI reads it at startup: so that importing it does not load torch, the names below are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from once_for_all.lazy_names import lazy_names

if TYPE_CHECKING:
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

_WHERE = {
    "ExportError": "errors",
    "IOQuantization": "quantize",
    "TensorQuantization": "quantize",
    "export_onnx": "onnx_export",
    "export_tflite": "tflite_export",
    "quantize_onnx_int8": "quantize",
    "quantize_tflite_int8": "quantize",
    "read_onnx_metadata": "onnx_export",
    "tflite_io_quantization": "quantize",
}
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


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
