"""Which tensors cost int8 agreement with fp32: a quantization debugger for one subnet.

    python -m benchmarks.int8_sensitivity --supernet runs/fmnist/supernet.pt --subnet max
    python -m benchmarks.int8_sensitivity --supernet runs/fmnist/supernet.pt --subnet min --top 5

The int8 export is simulated in PyTorch as quantization-aware fine-tuning simulates it
(``once_for_all.quant_aware``: one min/max range per activation tensor from calibration
images, narrowed where hard-swish is flat). Reported, as top-1 agreement with the fp32
subnet on test images:

- ``all``: every activation tensor int8;
- ``weights``: only the conv and linear weights int8 (per output channel, symmetric);
- ``tensors``: each activation tensor alone int8, worst first, with its range;
- ``per_channel``: for the ``--top`` worst tensors, every activation int8 but that one with
  one range per channel: what a per-channel remedy for it would win back;
  ``per_channel_together``: the same with all of them per channel at once;
- ``stem_groups``: every activation int8, the stem's in 1, 2, 4... groups of channels by
  range (``quant_aware.stem_groups``, as ``--stem-groups`` exports them), for a model with a
  stem.

No fine-tuning: this is the post-training picture that ``--qat-epochs`` starts from. The
export's own files (onnxruntime, LiteRT) agree with this simulation within about a point;
``python -m benchmarks.export`` measures those. Prints one JSON object on stdout; progress
goes to stderr.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.command_line import ArgumentParser, at_least, blamed, require_file, run_main

Hook = Callable[[nn.Module, object, Tensor], Tensor]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def agreement(a: Tensor, b: Tensor) -> float:
    return round(float((a.argmax(1) == b.argmax(1)).float().mean()), 4)


@contextmanager
def hooked(modules: dict[str, nn.Module], hooks: dict[str, Hook]) -> Iterator[None]:
    """``hooks[name]`` replaces the output of ``modules[name]`` within the block."""
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def per_channel_quantize(ranges: Tensor) -> Hook:
    from once_for_all.quant_aware import fake_quantize

    def hook(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
        channels = [
            fake_quantize(out[:, c], float(lo), float(hi)) for c, (lo, hi) in enumerate(ranges)
        ]
        return torch.stack(channels, 1)

    return hook


def _groups_quantize(groups: list[list[int]], ranges: list[tuple[float, float]]) -> Hook:
    from once_for_all.quant_aware import fake_quantize_groups

    return lambda _m, _i, out: fake_quantize_groups(out, groups, ranges)


def _powers_of_two(channels: int) -> list[int]:
    """1, 2, 4, ... up to ``channels``, and ``channels`` itself (one group per channel)."""
    counts = [n for n in (2**i for i in range(channels.bit_length())) if n < channels]
    return [*counts, channels] if channels else []


def int8_weights(model: nn.Module, bits: int = 8) -> nn.Module:
    """A copy of ``model`` with conv and linear weights rounded per output channel."""
    rounded = copy.deepcopy(model)
    top = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for module in rounded.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                scale = w.reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-12) / top
                scale = scale.view(-1, *[1] * (w.dim() - 1))
                w.copy_(torch.clamp(torch.round(w / scale), -top, top) * scale)
    return rounded


@torch.no_grad()
def sensitivity(
    model: nn.Module, images: Tensor, calibration: Tensor, *, top: int = 3
) -> dict[str, Any]:
    """Top-1 agreement with ``model`` (eval mode) on ``images`` of its int8 simulations, as the
    module docstring lists them."""
    from once_for_all.quant_aware import (
        activation_ranges,
        channel_ranges,
        fake_quantize,
        group_ranges,
        quantized_modules,
        stem_groups,
        stem_outputs,
    )

    model.eval()

    def logits(m: nn.Module) -> Tensor:
        return torch.cat([m(batch) for batch in images.split(500)])

    reference = logits(model)
    ranges = activation_ranges(model, calibration)
    modules = quantized_modules(model)
    names = [name for name in modules if name in ranges]

    def tensor_quantize(name: str) -> Hook:
        lo, hi = ranges[name]
        return lambda _m, _i, out: fake_quantize(out, lo, hi)

    every = {name: tensor_quantize(name) for name in names}
    with hooked(modules, every):
        all_int8 = agreement(logits(model), reference)
    log(f"every activation int8: {all_int8}")
    tensors: list[dict[str, Any]] = []
    for i, name in enumerate(names, 1):
        with hooked(modules, {name: every[name]}):
            tensors.append(
                {
                    "tensor": name,
                    "module": type(modules[name]).__name__,
                    "range": [round(v, 4) for v in ranges[name]],
                    "agreement": agreement(logits(model), reference),
                }
            )
        log(f"tensor {i}/{len(names)} {name}: {tensors[-1]['agreement']}")
    tensors.sort(key=lambda t: t["agreement"])
    worst = [t["tensor"] for t in tensors[:top]]
    per_channel_ranges = channel_ranges(model, calibration, worst)
    per_channel = []
    for name in worst:
        hooks = {**every, name: per_channel_quantize(per_channel_ranges[name])}
        with hooked(modules, hooks):
            per_channel.append({"tensor": name, "agreement": agreement(logits(model), reference)})
    together = {name: per_channel_quantize(per_channel_ranges[name]) for name in worst}
    with hooked(modules, {**every, **together}):
        per_channel_together = agreement(logits(model), reference)
    stem = stem_outputs(model)
    stem_ranges = channel_ranges(model, calibration, stem)
    by_groups: dict[str, float] = {}
    for n in _powers_of_two(len(stem_ranges[stem[0]]) if stem else 0):
        groups = stem_groups(model, calibration, n)
        hooks = {
            name: _groups_quantize(groups, group_ranges(stem_ranges[name], groups)) for name in stem
        }
        with hooked(modules, {**every, **hooks}):
            by_groups[str(n)] = agreement(logits(model), reference)
        log(f"stem in {n} groups: {by_groups[str(n)]}")
    return {
        "images": len(images),
        "calibration_images": len(calibration),
        "all": all_int8,
        "weights": agreement(logits(int8_weights(model)), reference),
        "per_channel": per_channel,
        "per_channel_together": per_channel_together,
        "stem_groups": by_groups,
        "tensors": tensors,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m benchmarks.int8_sensitivity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--supernet", type=Path, required=True, help="a trained supernet.pt")
    parser.add_argument("--subnet", default="max", help="as for edgenas export (default max)")
    parser.add_argument(
        "--images",
        type=at_least(1),
        default=10_000,
        help="the first test images (default 10000: all of Fashion-MNIST's test split)",
    )
    parser.add_argument(
        "--calibration-images",
        type=at_least(1),
        default=256,
        help="int8 calibration images (default 256)",
    )
    parser.add_argument(
        "--top", type=at_least(0), default=3, help="worst tensors to try per channel"
    )
    parser.add_argument("--threads", type=at_least(1), default=2, help="torch threads")
    args = parser.parse_args(argv)
    require_file("--supernet", args.supernet, "train one with edgenas train")
    from edgenas.subnet_choice import choose_subnet
    from export.subnet_export import calibration_images, model_images
    from once_for_all import load_supernet, recalibrate_bn
    from once_for_all.checkpoint import FolderReads, load_training_data
    from once_for_all.evaluation import BN_IMAGES, bn_batches

    with blamed("--supernet"):
        supernet, _, payload = load_supernet(args.supernet)
    with blamed("--subnet"):
        subnet = choose_subnet(args.subnet, supernet.space)
    torch.set_num_threads(args.threads)
    reads = FolderReads(train=max(BN_IMAGES, args.calibration_images), test=args.images)
    data = load_training_data(args.supernet, payload, folder=None, reads=reads)
    model = supernet.extract(subnet)
    recalibrate_bn(model, bn_batches(data, subnet.r))
    r = subnet.r
    images = torch.from_numpy(model_images(data.test, data, r, args.images))
    calibration = torch.from_numpy(calibration_images(data, r, args.calibration_images))
    log(f"subnet {subnet.key}: {len(images)} test images, {len(calibration)} calibration")
    result = sensitivity(model, images, calibration, top=args.top)
    print(
        json.dumps(
            {
                "benchmark": "int8_sensitivity",
                "supernet": str(args.supernet),
                "subnet": subnet.key,
                **result,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    run_main(main)
