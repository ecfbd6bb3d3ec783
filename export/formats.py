"""The model file formats and precisions edgenas exports, measures and ships: one vocabulary
for the exporter, the latency tables, the recipes and the CLI. Imports nothing."""

from __future__ import annotations

from typing import Literal, get_args

ModelFormat = Literal["onnx", "tflite"]
Precision = Literal["fp32", "int8"]
MODEL_FORMATS: tuple[ModelFormat, ...] = get_args(ModelFormat)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

# How a TFLite file is laid out for the runtime that runs it (export.xnnpack_form): "xnnpack"
# for LiteRT's CPU delegate; "plain" (as converted) for NPU compilers such as Vela, which run
# hard-swish and 7x7 depthwise convs natively and are slowed down by XNNPACK's rewrites
# (measured with Vela on ethos-u55-128: 1.9x the cycles on an mbv3-tiny subnet of 7x7 kernels).
GraphForm = Literal["xnnpack", "plain"]
NPU_COMPILERS = frozenset({"vela"})  # runtimes (and device kinds) that take the plain form


def graph_form(runtime: str) -> GraphForm:
    """The TFLite graph form for a runtime (a device fingerprint's runtime or profile kind)."""
    return "plain" if runtime in NPU_COMPILERS else "xnnpack"


# Which CPU's int8 conv kernels an int8 ONNX file's channel counts are padded for
# (export.onnx_channel_alignment): onnxruntime's x86 or Arm64 rules, or none (the channels as
# the model has them). The padding changes no output, only which kernels run.
KernelIsa = Literal["x86", "arm64"]
ChannelAlignment = Literal["x86", "arm64", "none"]
# What a user asks for (--align-channels, recipe export.align_channels): "auto" takes the CPU
# kind of the devices that run the file (edgenas.stages.export.resolve_channel_alignment).
ChannelAlignmentChoice = Literal["auto", "x86", "arm64", "none"]


def kernel_isa(machine: str) -> ChannelAlignment:
    """The alignment for a CPU by its ``platform.machine()``: "none" where onnxruntime has no
    symmetric int8 conv kernels (32-bit x86 and Arm, anything else)."""
    name = machine.lower()
    if name in ("x86_64", "amd64", "x64"):
        return "x86"
    if name in ("aarch64", "arm64"):
        return "arm64"
    return "none"


# The ONNX opsets torch.onnx's TorchScript exporter writes (its ONNX_MIN_OPSET and
# ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET; a test keeps them in step), and the first opset with
# per-channel QuantizeLinear/DequantizeLinear, which int8 files need.
ONNX_OPSETS = (7, 20)
INT8_MIN_OPSET = 13

# The top-1 agreement with fp32 from which an int8 file is worth shipping: the target
# benchmarks/export.py checks, and the default for recommending int8 over fp32.
INT8_AGREEMENT_TARGET = 0.98
# Test images each device classifies with the files: agreement to 0.1 pp, and few enough to
# copy to a board (1,000 ImageNet images at 224 px are 600 MB as float32).
DEVICE_CHECK_IMAGES = 1000

# How many groups of channels by range the stem's int8 tensors are split into, each with a
# scale of its own (export.stem_split), or "auto": whole, and 2 groups only for a file whose
# agreement with fp32 then misses the target and the split's is higher (export_subnet). The
# split costs speed (mbv3-imagenet min at 160 px: int8 1.2-1.4x slower in ONNX, its groups'
# channels aligned, and 1.5x in TFLite), and wins agreement where the stem's channels span
# very different ranges (fmnist min subnet, post-training: 97.9% -> 98.6% ONNX).
StemGroups = int | Literal["auto"]
STEM_GROUPS: StemGroups = "auto"
AUTO_SPLIT_GROUPS = 2  # the groups "auto" splits a stem into (int8 latency tables time it so)


def parse_stem_groups(value: str) -> StemGroups:
    """``--stem-groups`` from its text: "auto" or a whole number, 1 or more (ValueError)."""
    if value == "auto":
        return "auto"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--stem-groups {value!r}: give auto or a number of groups, 1 or more")
    return int(value)
