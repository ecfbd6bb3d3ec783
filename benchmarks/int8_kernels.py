"""Where an int8 ONNX file gains or loses against fp32, node by node (issue 20): for each kind
of conv in a subnet, what one more node of it costs in onnxruntime, fp32 and int8, as
edgenas export writes them.

    python -m benchmarks.int8_kernels                  # the demo's subnet: mbv3-tiny max, 32 px
    python -m benchmarks.int8_kernels --space mbv3-imagenet --subnet min --resolution 160

A kind is a conv with the activation after it (ReLU, hard-swish, squeeze-excite's
hard-sigmoid, or none), its channels, kernel and input size. Each kind is written as two chains
of that conv and activation, one node and CHAIN (17) nodes long, exported and quantized as
edgenas export does (int8 ONNX with its channels aligned for this CPU, export.formats'
``kernel_isa``), and the four files are timed side by side, one thread, by the device runner's
interleaved rounds (as benchmarks/export.py times its files). A node costs the difference of
the chains over the difference of their lengths: the session's fixed work cancels. A 1x1 conv
with more outputs than inputs chains with its mirror (cin -> cout -> cin ...), so its row is
the mean of the two directions. Strided convs and the stem change the input size along a
chain and are counted, not timed (``not_timed``). A residual sum (an Add, which onnxruntime's
fp32 NCHWc convs can take in; a QLinearAdd in int8) costs the difference of two chains of
CHAIN linear 1x1 convs, with and without a sum after each, per node.

Each row has the subnet's count of that kind and count x (int8 - fp32); ``accounted_us`` sums
them beside the whole subnet's measured int8 - fp32 (``model``). The rest is what no row
covers: the untimed convs, squeeze-excite's pooling and product, the graph's edges.

``--encodings`` asks whether another quantization than export's would run onnxruntime's
depthwise convs faster: for each depthwise kind, chains of bare QLinearConv nodes (no
activation, no export, written node by node) in each activation and weight encoding that
onnxruntime's CPU provider has a kernel for (``ENCODINGS``) against the same chains of float
Conv nodes, timed as above (``encodings`` in the JSON, µs per node). The channels are padded
as export pads an int8 file's for this CPU (``export.onnx_channel_alignment``: 72 → 80 on
x86), since onnxruntime runs its symmetric depthwise kernel only on such counts, and the float
chains have as many.

Prints one JSON object on stdout, a Markdown table and progress on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.command_line import ArgumentParser, at_least, blamed, run_main
from benchmarks.int8_timing import cpu_flags

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from once_for_all import MobileNetV3

CHAIN = 17  # nodes in the long chain
CALIBRATION_SAMPLES = 8
ACTIVATIONS = {"ReLU": "relu", "Hardswish": "hswish", "Hardsigmoid": "hsigmoid"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True, order=True)
class Kind:
    """A conv and the activation after it, at one input size; ``channels`` is (cin, cout)
    for a 1x1 conv, sorted (a chain alternates them), and (c, c) for a depthwise one."""

    depthwise: bool
    channels: tuple[int, int]
    kernel: int
    size: int  # input height and width
    act: str  # relu | hswish | hsigmoid | none

    @property
    def label(self) -> str:
        a, b = self.channels
        what = (
            f"depthwise {self.kernel}x{self.kernel} {a}ch" if self.depthwise else f"1x1 {a}<->{b}"
        )
        return f"{what} at {self.size}x{self.size}, {self.act}"


def conv_kinds(model: MobileNetV3) -> tuple[Counter[Kind], Counter[str]]:
    """The model's convs by kind, and those a chain cannot repeat (strided, the stem's full
    conv), by a short description."""
    import torch

    convs: dict[nn.Conv2d, str] = {}  # each conv → the activation after it
    for module in model.modules():
        conv, act = getattr(module, "conv", None), getattr(module, "act", None)
        if isinstance(conv, torch.nn.Conv2d):
            convs[conv] = ACTIVATIONS.get(type(act).__name__, "none")
        reduce, expand = getattr(module, "reduce", None), getattr(module, "expand", None)
        if isinstance(reduce, torch.nn.Conv2d) and isinstance(expand, torch.nn.Conv2d):
            convs[reduce], convs[expand] = "relu", "hsigmoid"  # squeeze-excite
    sizes = {conv: shapes[0][-1] for conv, shapes in _shapes(model, list(convs)).items()}
    kinds: Counter[Kind] = Counter()
    untimed: Counter[str] = Counter()
    for conv, act in convs.items():
        cin, cout, k = conv.in_channels, conv.out_channels, conv.kernel_size[0]
        depthwise = conv.groups == cin == cout > 1
        if conv.stride != (1, 1) or (not depthwise and k != 1):
            what = "depthwise" if depthwise else "conv"
            untimed[f"{what} {k}x{k} {cin}->{cout} stride {conv.stride[0]}"] += 1
            continue
        channels = (cin, cout) if depthwise else (min(cin, cout), max(cin, cout))
        kinds[Kind(depthwise, channels, k, sizes[conv], act)] += 1
    return kinds, untimed


def residual_sums(model: MobileNetV3) -> Counter[tuple[int, int]]:
    """The model's residual sums by (channels, height and width)."""
    blocks = [m for m in model.modules() if getattr(m, "residual", False) is True]
    return Counter((out[1], out[-1]) for _, out in _shapes(model, blocks).values())


def _shapes(
    model: MobileNetV3, modules: list[nn.Module]
) -> dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each of ``modules``' input and output shapes in one forward pass of ``model``."""
    import torch

    shapes: dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = [
        m.register_forward_hook(
            lambda m, inputs, out: shapes.__setitem__(m, (tuple(inputs[0].shape), tuple(out.shape)))
        )
        for m in modules
    ]
    with torch.no_grad():
        model(torch.zeros(model.input_shape))
    for handle in handles:
        handle.remove()
    return shapes


def summed_chain(channels: int, length: int, *, summed: bool) -> nn.Module:
    """``length`` linear 1x1 convs of ``channels`` channels, each added to its input when
    ``summed``: a residual block's sum after its projection."""
    import torch
    from torch import nn

    class Node(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if summed else self.conv(x)

    return nn.Sequential(*(Node() for _ in range(length))).eval()


def chain(kind: Kind, length: int) -> nn.Module:
    """``length`` convs of ``kind``, each followed by its activation."""
    from torch import nn

    layers: list[nn.Module] = []
    a, b = kind.channels
    for i in range(length):
        if kind.depthwise:
            layers.append(nn.Conv2d(a, a, kind.kernel, padding=kind.kernel // 2, groups=a))
        else:
            cin, cout = (a, b) if i % 2 == 0 else (b, a)
            layers.append(nn.Conv2d(cin, cout, 1))
        act = {"relu": nn.ReLU(), "hswish": nn.Hardswish(), "hsigmoid": nn.Hardsigmoid()}
        layers.append(act.get(kind.act, nn.Identity()))
    return nn.Sequential(*layers).eval()


def write_pair(model: nn.Module, shape: tuple[int, ...], work: Path, name: str) -> list[Path]:
    """``model``'s ONNX fp32 file and its int8 file, written as edgenas export writes them."""
    import numpy as np

    from export import export_onnx, quantize_onnx_int8
    from export.formats import kernel_isa

    fp32 = export_onnx(model, work / f"{name}_fp32.onnx", input_shape=shape)
    calibration = np.random.default_rng(0).standard_normal(
        (CALIBRATION_SAMPLES, *shape[1:]), dtype=np.float32
    )
    int8 = quantize_onnx_int8(
        fp32,
        work / f"{name}_int8.onnx",
        calibration=calibration,
        align_channels=kernel_isa(platform.machine()),
    )
    return [fp32, int8]


def time_files(paths: dict[str, Path], rounds: int) -> dict[str, float]:
    """Median ms of each file, timed side by side as benchmarks/export.py times its files."""
    from benchmarks.export import measure_files

    return {name: m["median_ms"] for name, m in measure_files(paths, rounds=rounds).items()}


def kind_row(kind: Kind, count: int, work: Path, rounds: int) -> dict[str, Any]:
    """What one more node of ``kind`` costs, from its chains of 1 and CHAIN nodes."""
    import torch

    a = kind.channels[0]
    shape = (1, a, kind.size, kind.size)
    paths: dict[str, Path] = {}
    for length in (1, CHAIN):
        torch.manual_seed(0)
        fp32, int8 = write_pair(chain(kind, length), shape, work, f"chain{length}")
        paths[f"onnx_fp32_{length}"], paths[f"onnx_int8_{length}"] = fp32, int8
    per_node = chain_cost(time_files(paths, rounds), ["fp32", "int8"])
    return _row(kind.label, count, per_node)


def chain_cost(ms: dict[str, float], names: list[str]) -> dict[str, float]:
    """µs per node of each of ``names``: its CHAIN-node file's ms less its 1-node one's
    (files ``onnx_{name}_{length}``), over the nodes between."""
    return {
        name: 1000 * (ms[f"onnx_{name}_{CHAIN}"] - ms[f"onnx_{name}_1"]) / (CHAIN - 1)
        for name in names
    }


def sum_row(channels: int, size: int, count: int, work: Path, rounds: int) -> dict[str, Any]:
    """What a residual sum costs: chains of --chain linear 1x1 convs with and without a sum
    after each, the difference per node."""
    import torch

    paths: dict[str, Path] = {}
    for summed in (False, True):
        torch.manual_seed(0)
        name = "summed" if summed else "plain"
        model = summed_chain(channels, CHAIN, summed=summed)
        fp32, int8 = write_pair(model, (1, channels, size, size), work, name)
        paths[f"onnx_fp32_{name}"], paths[f"onnx_int8_{name}"] = fp32, int8
    ms = time_files(paths, rounds)
    per_node = {
        p: 1000 * (ms[f"onnx_{p}_summed"] - ms[f"onnx_{p}_plain"]) / CHAIN for p in ("fp32", "int8")
    }
    return _row(f"residual sum {channels}ch at {size}x{size}", count, per_node)


def _row(kind: str, count: int, per_node: dict[str, float]) -> dict[str, Any]:
    return {
        "kind": kind,
        "count": count,
        "fp32_us": round(per_node["fp32"], 3),
        "int8_us": round(per_node["int8"], 3),
        "int8_minus_fp32_us": round(count * (per_node["int8"] - per_node["fp32"]), 2),
    }


# Activation dtype, weight dtype and weight zero point of each QLinearConv encoding; which
# depthwise kernel of onnxruntime's mlas runs it (onnxruntime 1.32, qlinearconv.cc).
ENCODINGS: dict[str, tuple[str, str, int]] = {
    # export's: symmetric int8 weights, MlasConvSymDepthwise with requantization fused in
    "u8s8_symmetric": ("uint8", "int8", 0),
    # asymmetric uint8 weights: MlasConvDepthwise, then a separate requantization pass
    "u8u8": ("uint8", "uint8", 128),
    # int8 activations and weights
    "s8s8_symmetric": ("int8", "int8", 0),
}


def bare_kind(kind: Kind) -> Kind:
    """``kind`` without its activation, its channels padded as export pads them for this CPU's
    int8 kernels (``export.onnx_channel_alignment``)."""
    from export.formats import kernel_isa
    from export.onnx_channel_alignment import KERNEL_RULES, aligned_channels

    isa = kernel_isa(platform.machine())
    channels = kind.channels[0]
    if isa != "none":
        channels = aligned_channels(channels, KERNEL_RULES[isa], depthwise=True)
    return dataclasses.replace(kind, act="none", channels=(channels, channels))


def bare_depthwise_chain(kind: Kind, length: int, encoding: str | None) -> onnx.ModelProto:
    """``length`` depthwise convs of ``kind`` (no activation) as bare ONNX nodes: float Conv
    for ``encoding`` None, else QLinearConv in that ENCODINGS entry between one
    QuantizeLinear and one DequantizeLinear (per-channel weight scales, int32 bias)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    c, k = kind.channels[0], kind.kernel
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    attrs: dict[str, Any] = {"group": c, "kernel_shape": [k, k], "pads": [k // 2] * 4}

    def constant(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "x"
    if encoding is not None:
        act_type, weight_type, weight_zero = ENCODINGS[encoding]
        act, weight = np.dtype(act_type), np.dtype(weight_type)
        scale = constant("s", np.float32(0.05))
        zero = constant("z", np.array(0 if act == np.int8 else 128, act))
        w_scale = constant("ws", np.full(c, 0.01, np.float32))
        w_zero = constant("wz", np.full(c, weight_zero, weight))
        nodes.append(helper.make_node("QuantizeLinear", ["x", scale, zero], ["q"]))
        x = "q"
    for i in range(length):
        w = rng.integers(-100, 100, (c, 1, k, k))
        if encoding is None:
            inputs = [x, constant(f"w{i}", (w / 100).astype(np.float32))]
            inputs.append(constant(f"b{i}", np.zeros(c, np.float32)))
            nodes.append(helper.make_node("Conv", inputs, [f"y{i}"], **attrs))
        else:
            q = constant(f"w{i}", (w + weight_zero).astype(weight))
            b = constant(f"b{i}", np.zeros(c, np.int32))
            inputs = [x, scale, zero, q, w_scale, w_zero, scale, zero, b]
            nodes.append(helper.make_node("QLinearConv", inputs, [f"y{i}"], **attrs))
        x = f"y{i}"
    if encoding is None:
        nodes.append(helper.make_node("Identity", [x], ["out"]))
    else:
        nodes.append(helper.make_node("DequantizeLinear", [x, scale, zero], ["out"]))
    shape = [1, c, kind.size, kind.size]
    graph = helper.make_graph(
        nodes,
        "depthwise_chain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def encodings_row(kind: Kind, work: Path, rounds: int) -> dict[str, Any]:
    """µs per bare depthwise node of ``kind`` in fp32 and in each of ENCODINGS."""
    import onnx

    paths: dict[str, Path] = {}
    for encoding in ("fp32", *ENCODINGS):
        for length in (1, CHAIN):
            model = bare_depthwise_chain(kind, length, None if encoding == "fp32" else encoding)
            paths[f"onnx_{encoding}_{length}"] = work / f"bare_{encoding}_{length}.onnx"
            onnx.save(model, str(paths[f"onnx_{encoding}_{length}"]))
    per_node = chain_cost(time_files(paths, rounds), ["fp32", *ENCODINGS])
    return {
        "kind": kind.label.removesuffix(", none"),
        "us": {k: round(v, 3) for k, v in per_node.items()},
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| kind | count | fp32 µs/node | int8 µs/node | count × (int8 − fp32) µs |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['count']} | {r['fp32_us']:.2f} | {r['int8_us']:.2f} | "
            f"{r['int8_minus_fp32_us']:+.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m benchmarks.int8_kernels",
        description="Where an int8 ONNX file gains or loses against fp32, node by node: for "
        "each kind of conv in a subnet, what one more node of it costs in onnxruntime, fp32 "
        "and int8, as edgenas export writes them.",
    )
    parser.add_argument(
        "--space", default="mbv3-tiny", help="a built-in search space (default mbv3-tiny)"
    )
    parser.add_argument("--subnet", default="max", help="max, min, a subnet JSON or pareto.json#K")
    parser.add_argument("--resolution", type=at_least(1), help="px (default: the subnet's)")
    parser.add_argument(
        "--rounds",
        type=at_least(1),
        default=40,
        help="interleaved rounds of 5 runs per file (default 40)",
    )
    parser.add_argument(
        "--encodings",
        action="store_true",
        help="also time each depthwise kind as bare QLinearConv nodes in every encoding "
        "onnxruntime has a kernel for",
    )
    args = parser.parse_args(argv)
    import torch

    from benchmarks.export import random_model
    from edgenas.subnet_choice import choose_subnet
    from once_for_all import get_space

    torch.set_num_threads(1)
    with blamed("--space"):
        space = get_space(args.space)
    with blamed("--subnet"):
        subnet = choose_subnet(args.subnet, space)
    if args.resolution is not None:
        with blamed("--resolution"):
            subnet = space.validate(dataclasses.replace(subnet, r=args.resolution))
    model = random_model(space, subnet)
    kinds, untimed = conv_kinds(model)
    sums = residual_sums(model)
    log(
        f"{space.id} {subnet.key}: {sum(kinds.values())} convs in {len(kinds)} kinds and "
        f"{sum(sums.values())} residual sums timed"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgenas-int8-kernels-") as tmp:
        work = Path(tmp)
        files = write_pair(model, model.input_shape, work, "model")
        ms = time_files({"onnx_fp32": files[0], "onnx_int8": files[1]}, args.rounds)
        for kind in sorted(kinds):
            rows.append(kind_row(kind, kinds[kind], work, args.rounds))
            log(f"  {rows[-1]}")
        for (channels, size), count in sorted(sums.items()):
            rows.append(sum_row(channels, size, count, work, args.rounds))
            log(f"  {rows[-1]}")
        encodings = []
        if args.encodings:
            for kind in sorted({bare_kind(k) for k in kinds if k.depthwise}):
                encodings.append(encodings_row(kind, work, args.rounds))
                log(f"  {encodings[-1]}")
    result = {
        "benchmark": "int8_kernels",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "flags": cpu_flags(),
            "onnxruntime": version("onnxruntime"),
        },
        "space": space.id,
        "subnet": subnet.to_dict(),
        "chain": CHAIN,
        "rounds": args.rounds,
        "model": {
            "fp32_ms": round(ms["onnx_fp32"], 4),
            "int8_ms": round(ms["onnx_int8"], 4),
            "int8_over_fp32": round(ms["onnx_int8"] / ms["onnx_fp32"], 3),
            "int8_minus_fp32_us": round(1000 * (ms["onnx_int8"] - ms["onnx_fp32"]), 1),
        },
        "rows": rows,
        "accounted_us": round(sum(r["int8_minus_fp32_us"] for r in rows), 1),
        "not_timed": dict(sorted(untimed.items())),
    }
    if args.encodings:
        result["encodings"] = encodings
    log(table(rows))
    if encodings:
        log("\n| bare depthwise, µs/node | fp32 | " + " | ".join(ENCODINGS) + " |")
        log("|---|---" + "|---" * len(ENCODINGS) + "|")
        for r in encodings:
            log(f"| {r['kind']} | " + " | ".join(f"{us:.2f}" for us in r["us"].values()) + " |")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run_main(main)
