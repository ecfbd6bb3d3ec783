"""Static int8 quantization of exported models: ONNX (QDQ, onnxruntime) and TFLite
(full integer, ai-edge-quantizer), both calibrated on real inputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import onnx

from export._quiet import quiet_converters
from export.deferred_interrupt import interrupt_after_step
from export.errors import ExportError, conversion_error
from export.formats import ChannelAlignment
from export.onnx_export import set_metadata_props
from once_for_all.errors import one_line
from once_for_all.files import atomic_path, write_bytes


class TensorQuantization(TypedDict):
    """One model input or output: its dtype and, when quantized, real = scale * (q - zero_point)."""

    name: str
    dtype: str
    shape: list[int]
    scale: float | None
    zero_point: int | None


class IOQuantization(TypedDict):
    inputs: list[TensorQuantization]
    outputs: list[TensorQuantization]


def quantize_onnx_int8(
    src: Path,
    dst: Path,
    *,
    calibration: np.ndarray,
    align_channels: ChannelAlignment = "x86",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a QDQ int8 copy of the fp32 ONNX model ``src`` to ``dst``.

    Weights are int8 per output channel, activations uint8 per tensor (asymmetric), ranges by
    min/max over ``calibration``: float32 NCHW samples stacked on axis 0, fed one image at a
    time. The graph's input and output stay float32 (QDQ keeps the interface), so the int8
    model is a drop-in replacement. ``src``'s metadata_props are carried over, ``metadata``'s
    entries replacing theirs of the same key. Returns ``dst``.

    QDQ is the form deployment runtimes take (onnxruntime, TensorRT, QNN, OpenVINO), and the
    graph is prepared so that onnxruntime's CPU provider fuses all of it into quantized
    kernels (QLinearConv, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm): see
    ``export.onnx_int8_form``; ``onnx_float_nodes`` lists whatever still runs in float. The
    quantized graph's channel counts are then padded to what onnxruntime's symmetric int8
    conv kernels take on the CPU ``align_channels`` names ("x86", "arm64"), with no integer
    changed (``export.onnx_channel_alignment``); "none" leaves the model's channel counts:
    for runtimes with kernels of their own, and to measure what the padding buys
    (``python -m benchmarks.export --speed --unaligned``).
    """
    src, dst = Path(src), Path(dst)
    # Lazy like the TFLite tools: onnxruntime.quantization adds ~0.4 s to `import export`.
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import (  # type: ignore[import-untyped]
        quant_pre_process,
    )

    from export import onnx_channel_alignment
    from export.onnx_int8_form import fold_rescales, int8_form

    proto = _load_onnx(src)
    input_name, input_shape = _onnx_input(proto, src)
    samples = _check_calibration(calibration, input_shape, what=f"ONNX model {src}")
    carried = {**{p.key: p.value for p in proto.metadata_props}, **(metadata or {})}
    with (
        tempfile.TemporaryDirectory(prefix="edgenas-quant-") as work,
        atomic_path(dst, error=ExportError) as tmp,
    ):
        prepared = Path(work) / "prepared.onnx"
        try:
            # Shape inference and graph fusions first, as onnxruntime recommends: quantization
            # then sees every tensor's shape and fewer, larger ops.
            quant_pre_process(str(src), str(prepared))
            onnx.save(int8_form(onnx.load(str(prepared))), str(prepared))
            quantize_static(
                str(prepared),
                str(tmp),
                _calibration_reader(input_name, samples),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                # uint8 activations: onnxruntime fuses int8-activation QDQ convs into
                # QLinearConv only on some CPUs; on x86 (AVX2) half of them stayed
                # DequantizeLinear -> float Conv -> QuantizeLinear, 2.1x slower than uint8.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # 7-bit weights: x86 CPUs without VNNI (AVX2 only) add uint8 x int8 products
                # in int16 and saturate; measured on an AVX2 EPYC, full-range weights gave a
                # mean logit error 2.3x that of 7-bit ones, at the same speed.
                reduce_range=True,
                calibrate_method=CalibrationMethod.MinMax,
            )
            quantized = fold_rescales(onnx.load(str(tmp)))
            if align_channels != "none":
                quantized = onnx_channel_alignment.align_channels(quantized, align_channels)
            set_metadata_props(quantized, carried)
            onnx.checker.check_model(quantized)
            onnx.save(quantized, str(tmp))
        except Exception as exc:
            raise conversion_error(
                dst,
                exc,
                f"int8 quantization of {src} failed ({one_line(exc)}): re-export the fp32 model "
                "and check the calibration data",
            ) from exc
    return dst


def quantize_tflite_int8(src: Path, dst: Path, *, calibration: np.ndarray) -> Path:
    """Write a full-integer int8 copy of the fp32 .tflite ``src`` to ``dst``.

    ai-edge-quantizer's ``static_wi8_ai8`` recipe: int8 weights (per channel), int8
    activations whose ranges come from ``calibration`` (float32 samples in the model's own
    input layout, NHWC for an NHWC model, stacked on axis 0, fed one at a time), narrowed to
    where they matter by ``export.tflite_int8_ranges.clip_dead_ranges``.
    The model's input and output tensors are int8 too (no float QUANTIZE/DEQUANTIZE at the
    edges), as Ethos-U/Vela and int8-only NPUs need: callers quantize inputs and dequantize
    outputs with the scales and zero points from ``tflite_io_quantization``. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    # Slow to import, and only needed here.
    from ai_edge_quantizer import (  # type: ignore[import-untyped]
        calibrator,
        quantizer,
        recipe,
        recipe_manager,
    )
    from ai_edge_quantizer.utils import qsv_utils  # type: ignore[import-untyped]

    from export.tflite_int8_ranges import clip_dead_ranges

    interpreter = _interpreter(src)
    signatures = interpreter.get_signature_list()
    details = interpreter.get_input_details()
    if len(signatures) != 1 or len(details) != 1:
        raise ExportError(
            f"{src} has {len(signatures)} signatures and {len(details)} inputs: int8 quantization "
            "supports single-signature, single-input models such as export_tflite writes"
        )
    if details[0]["dtype"] != np.float32:
        raise ExportError(
            f"{src} takes {np.dtype(details[0]['dtype']).name} input, not float32: quantize "
            "the fp32 model from export_tflite, not an already quantized one"
        )
    samples = _check_calibration(
        calibration, tuple(int(d) for d in details[0]["shape"]), what=f"TFLite model {src}"
    )
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    try:
        # The calibrator keeps every intermediate tensor on purpose (LiteRT warns about that)
        # and shows a progress bar of its own.
        with interrupt_after_step(), quiet_converters():
            quant_recipe = recipe.static_wi8_ai8()
            manager = recipe_manager.RecipeManager()
            manager.load_quantization_recipe(quant_recipe)
            # Global min/max over all samples, as onnxruntime's MinMax and the TFLite converter do:
            # the default moving average (0.95) of per-sample ranges clips whatever the first
            # samples did not reach, e.g. most of the logit range.
            calib = calibrator.Calibrator(
                str(src),
                num_threads=min(os.cpu_count() or 1, 8),
                qsv_update_func=qsv_utils.min_max_update,
            )
            calib.calibrate({key: [{input_name: s} for s in samples]}, manager)
            qsvs = calib.get_model_qsvs()
            clip_dead_ranges(src.read_bytes(), qsvs)
            q = quantizer.Quantizer(str(src), quant_recipe)
            result = q.quantize(qsvs, enable_progress_report=False)
            content = bytes(result.quantized_model)
    except Exception as exc:
        raise conversion_error(
            dst,
            exc,
            f"int8 quantization of {src} failed ({one_line(exc)}): re-export the fp32 model "
            "and check the calibration data",
        ) from exc
    quantized = _interpreter_from_bytes(content, dst)
    io = _io_quantization(quantized)
    not_int8 = [t["name"] for t in io["inputs"] + io["outputs"] if t["dtype"] != "int8"]
    if not_int8:
        raise ExportError(
            f"ai-edge-quantizer left {', '.join(not_int8)} of {src} in float: an int8-only NPU "
            "cannot run it; check the model for ops the quantizer does not support"
        )
    float_ops = sorted(_float_ops(quantized))
    if float_ops:
        raise ExportError(
            f"ai-edge-quantizer has no int8 kernel for {', '.join(float_ops)} in {src} and left "
            "it in float: a full-integer model cannot hold it; replace the op in the model, or "
            "export fp32 only"
        )
    write_bytes(dst, content, error=ExportError)
    return dst


def tflite_io_quantization(path: Path) -> IOQuantization:
    """The dtype, shape, scale and zero point of each input and output of the .tflite at
    ``path``; scale and zero_point are None for float tensors."""
    return _io_quantization(_interpreter(Path(path)))


def _calibration_reader(input_name: str, samples: Sequence[np.ndarray]) -> Any:
    """An onnxruntime CalibrationDataReader feeding ``samples`` one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._it, None)
            return None if sample is None else {input_name: sample}

        def rewind(self) -> None:
            self._it = iter(samples)

    return ArrayReader()


def _check_calibration(
    calibration: np.ndarray, model_shape: tuple[int | None, ...], *, what: str
) -> list[np.ndarray]:
    """Split ``calibration`` into batch-1 float32 samples matching ``model_shape`` (None = any)."""
    data = np.asarray(calibration)
    if data.ndim != len(model_shape) or len(data) == 0:
        raise ExportError(
            f"calibration has shape {data.shape} but {what} takes {_fmt(model_shape)}: stack "
            "at least one sample of that shape on axis 0"
        )
    if not np.issubdtype(data.dtype, np.floating) or not np.isfinite(data).all():
        raise ExportError(
            f"calibration must be finite float data (preprocessed as for inference), got "
            f"{data.dtype} with non-finite or integer values"
        )
    if model_shape[0] not in (None, 1):
        raise ExportError(
            f"{what} has a fixed batch of {model_shape[0]} but calibration feeds one sample at a "
            "time: export it with batch 1 (or dynamic_batch=True for ONNX)"
        )
    mismatched = [
        i for i, d in enumerate(model_shape[1:], start=1) if d is not None and d != data.shape[i]
    ]
    if mismatched:
        hint = "; preprocess the images to that shape (size and channels) as for inference"
        if data.ndim == 4 and data.shape[1:] == (model_shape[3], model_shape[1], model_shape[2]):
            hint = "; the model is NHWC: transpose with x.transpose(0, 2, 3, 1)"
        elif data.ndim == 4 and data.shape[1:] == (model_shape[2], model_shape[3], model_shape[1]):
            hint = "; the model is NCHW: transpose with x.transpose(0, 3, 1, 2)"
        raise ExportError(
            f"calibration samples have shape {data.shape[1:]} but {what} takes "
            f"{_fmt(model_shape[1:])}{hint}"
        )
    return [data[i : i + 1].astype(np.float32) for i in range(len(data))]


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _load_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ExportError(f"ONNX model {path} not found: export it with export_onnx first")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ExportError(
            f"{path} is not a readable ONNX model ({one_line(exc)}): re-export it"
        ) from exc


def _onnx_input(proto: onnx.ModelProto, path: Path) -> tuple[str, tuple[int | None, ...]]:
    """The name and shape (None for a symbolic dimension) of the model's one input."""
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ExportError(
            f"{path} has {len(inputs)} inputs: int8 quantization supports single-input models "
            "such as export_onnx writes"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _interpreter(path: Path) -> Any:
    if not path.is_file():
        raise ExportError(f"TFLite model {path} not found: export it with export_tflite first")
    return _interpreter_from_bytes(path.read_bytes(), path)


def _interpreter_from_bytes(content: bytes, path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

    try:
        with quiet_converters():  # LiteRT announces its XNNPACK delegate on stderr
            interpreter = Interpreter(model_content=content)
            interpreter.allocate_tensors()
    except Exception as exc:
        raise ExportError(
            f"{path} is not a loadable TFLite model ({one_line(exc)}): re-export it"
        ) from exc
    return interpreter


def _float_ops(interpreter: Any) -> set[str]:
    """The ops that compute in float (DEQUANTIZE/QUANTIZE around them aside)."""
    return {
        op["op_name"]
        for op in interpreter._get_ops_details()
        if op["op_name"] not in ("DEQUANTIZE", "QUANTIZE", "DELEGATE")
        and any(np.dtype(t) == np.float32 for t in op["operand_types"])
    }


def _io_quantization(interpreter: Any) -> IOQuantization:
    def describe(d: dict[str, Any]) -> TensorQuantization:
        scale, zero_point = d["quantization"]
        quantized = scale != 0.0
        return TensorQuantization(
            name=str(d["name"]),
            dtype=np.dtype(d["dtype"]).name,
            shape=[int(x) for x in d["shape"]],
            scale=float(scale) if quantized else None,
            zero_point=int(zero_point) if quantized else None,
        )

    return IOQuantization(
        inputs=[describe(d) for d in interpreter.get_input_details()],
        outputs=[describe(d) for d in interpreter.get_output_details()],
    )
