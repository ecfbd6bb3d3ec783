"""Exporting one extracted subnet in every requested format and precision, each file checked
in its own runtime on real images: fp32 parity with PyTorch, int8 top-1 agreement with fp32
and accuracy on the test split."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.card import CardFile
from export.errors import ExportError
from export.formats import (
    AUTO_SPLIT_GROUPS,
    DEVICE_CHECK_IMAGES,
    INT8_AGREEMENT_TARGET,
    INT8_MIN_OPSET,
    MODEL_FORMATS,
    ONNX_OPSETS,
    STEM_GROUPS,
    ChannelAlignment,
    GraphForm,
    ModelFormat,
    Precision,
    StemGroups,
)
from export.onnx_export import (
    ACCURACY_KEY,
    export_onnx,
    onnx_input_shape,
    update_onnx_metadata,
)
from export.quantize import quantize_onnx_int8, quantize_tflite_int8, tflite_io_quantization
from export.runtime_graph import onnx_float_nodes, tflite_delegation
from export.stem_split import split_stem, splittable
from export.tflite_export import export_tflite
from export.verify import agreement, max_abs_diff, run_onnx, run_tflite, top1
from once_for_all.data import DataBundle, ImageSplit
from once_for_all.data.batches import normalize, resize_batch
from once_for_all.data.splits import eval_head, spread_head
from once_for_all.quant_aware import check_stem_groups, stem_groups
from once_for_all.static_net import MobileNetV3

FILE_NAMES: dict[tuple[str, str], str] = {
    ("onnx", "fp32"): "model.onnx",
    ("onnx", "int8"): "model_int8.onnx",
    ("tflite", "fp32"): "model.tflite",
    ("tflite", "int8"): "model_int8.tflite",
}
CALIBRATION_SEED = 4321  # which training images calibrate int8; fixed so exports repeat


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[ModelFormat, ...] = MODEL_FORMATS
    int8: bool = False
    calibration_images: int = 256  # training images for int8 ranges
    parity_images: int = 32  # validation images for fp32 parity
    test_images: int | None = None  # test images for int8 agreement and accuracy (None: all)
    # The first this many of them are classified again on each device that can (the files
    # as the device runs them: its runtime, delegate, kernels); 0: none.
    device_check_images: int = DEVICE_CHECK_IMAGES
    # fp32 parity: max |runtime - torch| over all logits, times the largest |logit| where that
    # is above 1 (float32 rounds relative to the size: logits in the thousands differed by 3e-3)
    tolerance: float = 1e-4
    # An int8 file is worth shipping (and may be recommended over fp32) at this top-1
    # agreement with fp32 or above.
    min_int8_agreement: float = INT8_AGREEMENT_TARGET
    # TFLite layout: "xnnpack" for CPUs (LiteRT's default delegate), "plain" for NPU compilers
    # such as Vela (export.formats.graph_form).
    graph_form: GraphForm = "xnnpack"
    opset: int = 17
    dynamic_batch: bool = False
    verify: bool = True
    # int8 files write the stem as this many groups of channels by range, each with its own
    # scale (export.stem_split); 1 keeps it whole; "auto" splits it in 2 when the whole
    # stem's file agrees with fp32 less than min_int8_agreement and the split's agrees more.
    stem_groups: StemGroups = STEM_GROUPS
    # int8 ONNX channel counts padded to onnxruntime's int8 conv kernels on this kind of CPU,
    # every output the same (export.onnx_channel_alignment), or "none".
    align_channels: ChannelAlignment = "x86"


@dataclass
class ExportedFile:
    name: str
    format: ModelFormat
    precision: Precision
    bytes: int
    sha256: str
    seconds: float  # conversion (and quantization) time
    checks: dict[str, float] = field(default_factory=dict)
    # How the runtime runs it (export.runtime_graph): XNNPACK partitions and ops left to
    # LiteRT for TFLite, ops still computed in float for int8 ONNX.
    execution: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> CardFile:
        return CardFile(
            name=self.name,
            format=self.format,
            precision=self.precision,
            bytes=self.bytes,
            sha256=self.sha256,
            export_seconds=round(self.seconds, 3),
            checks=self.checks,
            execution=self.execution,
        )

    @classmethod
    def from_dict(cls, d: CardFile) -> ExportedFile:
        return cls(
            name=d["name"],
            format=d["format"],
            precision=d["precision"],
            bytes=d["bytes"],
            sha256=d["sha256"],
            seconds=d["export_seconds"],
            checks=dict(d["checks"]),
            execution=dict(d["execution"]),
        )


@dataclass(frozen=True)
class TestImages:
    """The test images the files were checked on (float NCHW, as the models take them), with
    PyTorch fp32's top-1 class and the label of each: what devices check the files on."""

    x: np.ndarray
    fp32_top1: np.ndarray
    labels: np.ndarray


@dataclass
class ExportResult:
    files: list[ExportedFile]
    accuracy_fp32: float | None  # PyTorch, on the test split
    test_images: int
    inputs: dict[str, dict[str, Any]]  # per file: how to feed it
    test_set: TestImages | None = None  # None: not verified
    calibration_images: int | None = None  # training images the int8 files calibrated on


def model_images(split: ImageSplit, data: DataBundle, resolution: int, n: int | None) -> np.ndarray:
    """``n`` images of ``split`` (``eval_head``'s, spread over the classes) as the model takes
    them: float32 NCHW, normalised with the data's mean and std and resized to
    ``resolution``."""
    chosen = eval_head(split, n).images
    out = [
        resize_batch(normalize(chosen[i : i + 500], data.spec), resolution)
        for i in range(0, len(chosen), 500)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0,), np.float32)


def calibration_images(data: DataBundle, resolution: int, n: int) -> np.ndarray:
    """``n`` training images picked at random with a fixed seed (a class-balanced mix)."""
    if n < 1:
        raise ExportError(f"calibration_images={n}: int8 calibration needs at least 1 image")
    g = torch.Generator().manual_seed(CALIBRATION_SEED)
    picked = torch.randperm(len(data.train), generator=g)[: min(n, len(data.train))]
    return model_images(data.split_at("train", resolution).select(picked), data, resolution, None)


def check_options(options: ExportOptions, *, stem_channels: int | None = None) -> None:
    """Refuse options the export cannot honour, before any work: an opset the exporter cannot
    write failed after minutes with a 321-line graph dump, and both this and more stem groups
    than the stem's channels (``stem_channels``, where known) after a fine-tuning."""
    if options.int8 and options.stem_groups != "auto":
        check_stem_groups(options.stem_groups, stem_channels)
    if "onnx" not in options.formats:
        return
    low, high = ONNX_OPSETS
    if not low <= options.opset <= high:
        raise ExportError(
            f"--opset {options.opset}: torch's ONNX exporter writes opsets {low} to {high}"
        )
    if options.int8 and options.opset < INT8_MIN_OPSET:
        raise ExportError(
            f"--opset {options.opset}: int8 ONNX files need opset {INT8_MIN_OPSET} or later "
            "(per-channel QuantizeLinear); raise it, or leave out --int8"
        )


def export_subnet(
    model: MobileNetV3,
    data: DataBundle,
    folder: Path,
    *,
    options: ExportOptions,
    metadata: Mapping[str, str] | None = None,
    file_metadata: FileMetadata | None = None,
    log: Any = None,
    finished: Finished | None = None,
    on_file: Callable[[ExportedFile, dict[str, Any]], None] | None = None,
) -> ExportResult:
    """Write ``model`` (eval mode, BN statistics final) into ``folder`` as the requested
    formats, fp32 and with ``options.int8`` also int8, and check every file.

    fp32 files must reproduce PyTorch within ``options.tolerance`` on real validation images
    (an ExportError otherwise: the file would compute something else). int8 files report
    their top-1 agreement with PyTorch fp32 and their accuracy on the test split.
    ``metadata`` goes into every ONNX file; ``file_metadata(precision, stem_groups)`` adds
    what differs between them (a latency predicted for that kind of file).
    ``log(message)`` is told what is being done. A file that ``finished(name)`` returns
    (its description and input spec) was written and checked by an interrupted export of
    the same inputs and is taken as it is; ``on_file`` is told each file once checked.
    """
    say = log or (lambda message: None)
    check_options(options)
    bad = [f for f in options.formats if f not in MODEL_FORMATS]
    if bad or not options.formats:
        raise ExportError(
            f"format {bad[0] if bad else '(none)'!r}: choose from {', '.join(MODEL_FORMATS)}"
        )
    model.eval()
    r = int(model.resolution)
    shape = (1, data.spec.channels, r, r)
    parity_x = model_images(data.split_at("val", r), data, r, options.parity_images)
    # In spread order: a device checks the first of them (the split is in class order).
    test = spread_head(data.split_at("test", r), options.test_images) if options.verify else None
    test_x = model_images(test, data, r, None) if test is not None else None
    test_y = test.labels.numpy() if test is not None else np.zeros(0, np.int64)
    with torch.no_grad():
        parity_ref = model(torch.from_numpy(parity_x)).numpy()
        test_ref = _logits(model, test_x) if test_x is not None else None
    if not np.isfinite(parity_ref).all():
        raise ExportError(
            "the subnet's PyTorch outputs are not finite numbers (NaN or infinity): its weights "
            "are broken; retrain the supernet, or fine-tune again with a lower learning rate"
        )
    calib = calibration_images(data, r, options.calibration_images) if options.int8 else None
    requested = options.stem_groups
    groups: list[list[int]] = []
    if calib is not None:
        groups = stem_groups(
            model, torch.from_numpy(calib), 1 if requested == "auto" else requested
        )
    accuracy_fp32 = top1(test_ref, test_y) if test_ref is not None else None
    metadata = {
        **(metadata or {}),
        ACCURACY_KEY: json.dumps({"split": "test", "images": len(test_y), "fp32": accuracy_fp32}),
    }
    files: list[ExportedFile] = []
    inputs: dict[str, dict[str, Any]] = {}
    tell = on_file or (lambda file, spec: None)

    def kept(fmt: ModelFormat, precision: Precision) -> bool:
        """Whether an interrupted export finished this file (then taken as it is)."""
        name = FILE_NAMES[(fmt, precision)]
        done = finished(name) if finished is not None else None
        if done is not None:
            say(f"{fmt} {precision}: kept from the interrupted export")
            files.append(done[0])
            inputs[name] = done[1]
        return done is not None

    for fmt in options.formats:
        path = folder / FILE_NAMES[(fmt, "fp32")]
        if not kept(fmt, "fp32"):
            files.append(
                _write_fp32(
                    model,
                    fmt,
                    path,
                    shape,
                    options,
                    metadata,
                    file_metadata,
                    parity_x,
                    parity_ref,
                    inputs,
                    say,
                )
            )
            tell(files[-1], inputs[path.name])
        if calib is None:
            continue
        q_path = folder / FILE_NAMES[(fmt, "int8")]
        if kept(fmt, "int8"):
            continue
        say(f"{fmt} int8 (calibrating on {len(calib)} training images)")
        int8 = Int8Writer(
            model, fmt, path, calib, options, metadata, file_metadata, test_x, test_ref, test_y, say
        )
        q = int8.write(q_path, groups)
        agreed = q.checks.get("top1_agreement")
        if (
            requested == "auto"
            and agreed is not None
            and agreed < options.min_int8_agreement
            and splittable(model)
        ):
            # One scale for the stem missed the target: two groups cost speed, so they are
            # made only now, and kept only if they agree better (export.formats.STEM_GROUPS).
            say(
                f"{fmt} int8 agrees {agreed:.2%} with fp32: trying the stem in "
                f"{AUTO_SPLIT_GROUPS} groups"
            )
            candidate = folder / f"stem-groups-{q_path.name}"
            try:
                split = int8.write(
                    candidate, stem_groups(model, torch.from_numpy(calib), AUTO_SPLIT_GROUPS)
                )
                better = split.checks["top1_agreement"] > agreed
                say(
                    f"{fmt} int8 with the stem in {AUTO_SPLIT_GROUPS} groups agrees "
                    f"{split.checks['top1_agreement']:.2%}: "
                    + ("kept" if better else "not kept, the whole stem's file stays")
                )
                if better:
                    os.replace(candidate, q_path)
                    q = replace(
                        _described(q_path, fmt, "int8", q.seconds + split.seconds),
                        checks=split.checks,
                        execution=split.execution,
                    )
            finally:
                candidate.unlink(missing_ok=True)
        inputs[q_path.name] = _input_spec(q_path, fmt, shape, options.dynamic_batch)
        files.append(q)
        tell(q, inputs[q_path.name])
    return ExportResult(
        files=files,
        accuracy_fp32=accuracy_fp32,
        test_images=0 if test_x is None else len(test_x),
        inputs=inputs,
        calibration_images=None if calib is None else len(calib),
        test_set=(
            TestImages(test_x, np.argmax(test_ref, axis=1), test_y)
            if test_x is not None and test_ref is not None
            else None
        ),
    )


# (precision, stem groups) -> the ONNX metadata entries of that file alone
FileMetadata = Callable[[Precision, int], Mapping[str, str]]
# file name -> (its description, its input spec) where an interrupted export finished it
Finished = Callable[[str], "tuple[ExportedFile, dict[str, Any]] | None"]


def _write_fp32(
    model: MobileNetV3,
    fmt: ModelFormat,
    path: Path,
    shape: tuple[int, int, int, int],
    options: ExportOptions,
    metadata: Mapping[str, str],
    file_metadata: FileMetadata | None,
    parity_x: np.ndarray,
    parity_ref: np.ndarray,
    inputs: dict[str, dict[str, Any]],
    say: Any,
) -> ExportedFile:
    """The fp32 file of ``fmt`` at ``path``, checked against PyTorch on ``parity_x``; its
    input spec goes into ``inputs``."""
    say(f"{fmt} fp32")
    started = time.perf_counter()
    if fmt == "onnx":
        export_onnx(
            model,
            path,
            input_shape=shape,
            opset=options.opset,
            dynamic_batch=options.dynamic_batch,
            metadata={**metadata, **(file_metadata("fp32", 1) if file_metadata else {})},
        )
    else:
        export_tflite(model, path, input_shape=shape, form=options.graph_form)
    fp32 = _described(path, fmt, "fp32", time.perf_counter() - started)
    fp32.execution = _execution(path, fmt, "fp32", options.graph_form)
    inputs[path.name] = _input_spec(path, fmt, shape, options.dynamic_batch)
    if options.verify:
        diff = max_abs_diff(_run(fmt, path, parity_x), parity_ref)
        scale = max(1.0, float(np.abs(parity_ref).max(initial=0.0)))
        fp32.checks = {"parity_images": float(len(parity_x)), "max_abs_diff": diff}
        if scale > 1.0:
            fp32.checks["logit_scale"] = scale
        if not diff <= options.tolerance * scale:  # NaN fails too
            # Float32 runtimes sum in their own order: below the default tolerance, a
            # difference is their rounding, not a wrong conversion.
            default = ExportOptions.tolerance
            why = (
                f"a float32 runtime's rounding, which the default {default:g} allows: "
                "raise --tolerance"
                if diff <= default * scale
                else "the conversion is wrong for this subnet, or the checkpoint's weights are "
                "damaged (train or restore it); report it, or pass --tolerance to accept it"
            )
            of = f" x the largest logit {scale:.3g}" if scale > 1.0 else ""
            raise ExportError(
                f"{path.name} differs from PyTorch by up to {diff:.3g} on {len(parity_x)} "
                f"images (tolerance {options.tolerance:g}{of}): {why}"
            )
    return fp32


@dataclass
class Int8Writer:
    """Writes one format's int8 file of ``model`` from its fp32 file ``fp32`` (calibrated on
    ``calibration``), the stem in given groups of channels, and checks it on the test images
    (when given) against PyTorch's logits ``test_ref``."""

    model: MobileNetV3
    fmt: ModelFormat
    fp32: Path
    calibration: np.ndarray
    options: ExportOptions
    metadata: Mapping[str, str]
    file_metadata: FileMetadata | None
    test_x: np.ndarray | None
    test_ref: np.ndarray | None
    test_y: np.ndarray
    say: Any

    def write(self, path: Path, groups: list[list[int]]) -> ExportedFile:
        fmt, options, calib = self.fmt, self.options, self.calibration
        started = time.perf_counter()
        split = len(groups) > 1
        # what differs from the fp32 file's metadata, which the int8 one carries over
        own = self.file_metadata("int8", max(1, len(groups))) if self.file_metadata else {}
        if fmt == "onnx" and not split:
            quantize_onnx_int8(
                self.fp32,
                path,
                calibration=calib,
                align_channels=options.align_channels,
                metadata=own,
            )
        elif fmt == "tflite" and options.graph_form == "plain" and not split:
            # The plain form converts the model as it is for int8 too: the fp32 file is the
            # quantizable one (a second conversion would take seconds to write the same).
            quantize_tflite_int8(self.fp32, path, calibration=calib.transpose(0, 2, 3, 1))
        else:
            shape = tuple(self.model.input_shape)
            # Beside the file (export's staging folder), not in /tmp: a kill left it in /tmp
            # for good, where the next export clears its staging folder.
            with tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as work:
                # The float model as its int8 version is written: the stem in groups, and
                # for TFLite in the form whose int8 version XNNPACK runs in one piece.
                quantizable = Path(work) / f"quantizable.{fmt}"
                if fmt == "onnx":
                    export_onnx(
                        split_stem(self.model, groups),
                        quantizable,
                        input_shape=shape,
                        opset=options.opset,
                        dynamic_batch=options.dynamic_batch,
                        metadata=self.metadata,
                    )
                    quantize_onnx_int8(
                        quantizable,
                        path,
                        calibration=calib,
                        align_channels=options.align_channels,
                        metadata=own,
                    )
                else:
                    export_tflite(
                        self.model,
                        quantizable,
                        input_shape=shape,
                        for_int8=True,
                        form=options.graph_form,
                        stem_groups=groups,
                    )
                    quantize_tflite_int8(quantizable, path, calibration=calib.transpose(0, 2, 3, 1))
        seconds = time.perf_counter() - started
        execution = _execution(path, fmt, "int8", options.graph_form)
        if fmt == "onnx" and options.align_channels != "none":
            # for onnxruntime's int8 kernels on that kind of CPU
            execution["channels_aligned"] = options.align_channels
        if split:
            execution["stem_groups"] = groups  # channels with an int8 scale of their own
        checks: dict[str, float] = {}
        if self.test_x is not None and self.test_ref is not None:
            self.say(f"{fmt} int8: checking on {len(self.test_x)} test images")
            logits = _run(fmt, path, self.test_x)
            checks = {
                "test_images": float(len(self.test_x)),
                "top1_agreement": agreement(logits, self.test_ref),
                "accuracy": top1(logits, self.test_y),
                "max_abs_diff": max_abs_diff(logits, self.test_ref),
            }
            if fmt == "onnx" and ACCURACY_KEY in self.metadata:
                # The file says how it scored itself, not only how its fp32 original did.
                accuracy = json.loads(self.metadata[ACCURACY_KEY])
                accuracy |= {"int8": checks["accuracy"], "top1_agreement": checks["top1_agreement"]}
                update_onnx_metadata(path, {ACCURACY_KEY: json.dumps(accuracy)})
        q = _described(path, fmt, "int8", seconds)  # its bytes as they are now
        q.execution, q.checks = execution, checks
        return q


def _logits(model: MobileNetV3, x: np.ndarray) -> np.ndarray:
    chunks = [model(torch.from_numpy(x[i : i + 500])).numpy() for i in range(0, len(x), 500)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _run(fmt: ModelFormat, path: Path, x: np.ndarray) -> np.ndarray:
    return run_onnx(path, x) if fmt == "onnx" else run_tflite(path, x)


def _execution(
    path: Path, fmt: ModelFormat, precision: Precision, form: GraphForm
) -> dict[str, Any]:
    if fmt == "tflite":
        return {"graph_form": form, **tflite_delegation(path)}
    if precision == "int8":
        return {"runtime": "onnxruntime", "float_nodes": onnx_float_nodes(path)}
    return {}


def _described(path: Path, fmt: ModelFormat, precision: Precision, seconds: float) -> ExportedFile:
    content = path.read_bytes()
    return ExportedFile(
        name=path.name,
        format=fmt,
        precision=precision,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        seconds=seconds,
    )


def _input_spec(
    path: Path, fmt: ModelFormat, nchw: tuple[int, ...], dynamic: bool
) -> dict[str, Any]:
    """How a user feeds this file: shape and layout, dtype, and for int8 inputs the
    quantization that maps the normalised float image to int8."""
    if fmt == "onnx":
        shape = onnx_input_shape(nchw, dynamic)
        return {"name": "input", "layout": "NCHW", "shape": shape, "dtype": "float32"}
    io = tflite_io_quantization(path)
    first = io["inputs"][0]
    spec: dict[str, Any] = {
        "name": first["name"],
        "layout": "NHWC",
        "shape": first["shape"],
        "dtype": first["dtype"],
    }
    if first["scale"] is not None:
        spec["quantization"] = {"scale": first["scale"], "zero_point": first["zero_point"]}
        out = io["outputs"][0]
        spec["output_quantization"] = {"scale": out["scale"], "zero_point": out["zero_point"]}
    return spec
