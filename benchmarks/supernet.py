"""Supernet benchmark: what elasticity costs, and what inherited weights are worth.

    python -m benchmarks.supernet                     # --part overhead (a few minutes)
    python -m benchmarks.supernet --part accuracy --checkpoint runs/fmnist/supernet.pt \
        --scratch-cache runs/bench/scratch.json   # baselines kept for the next recipe

``overhead``: a training step of the supernet with its largest subnet active against the same
network extracted as a static one (mbv3-imagenet, 128 px, batch 16), the time of
``supernet.extract``, and the tiny space's training step. ``accuracy``: test accuracy of four
subnets with weights inherited from a trained supernet against the same architectures trained
from scratch for as many epochs as the whole progressive-shrinking schedule (tens of minutes).

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.command_line import (
    ArgumentParser,
    DefaultsHelpFormatter,
    Refused,
    at_least,
    blamed,
    names_from,
    require_folder,
    run_main,
)
from once_for_all import (
    OFAMobileNetV3,
    SearchSpace,
    Subnet,
    TrainConfig,
    accuracy,
    evaluate_subnet,
    get_space,
    load_supernet,
    recalibrate_bn,
    train_static,
)
from once_for_all.checkpoint import CheckpointDocument
from once_for_all.data import DataBundle, load_data
from once_for_all.evaluation import BN_IMAGES, bn_batches
from once_for_all.files import write_text
from once_for_all.memory_layout import to_training_layout
from once_for_all.progressive_shrinking import make_optimizer

# Targets from the issue; OFA's reference implementation measured on this machine for scale.
OVERHEAD_TARGET = 1.10
OVERHEAD_OFA_REFERENCE = 1.14
EXTRACT_TARGET_MS = 50.0
EXTRACT_OFA_REFERENCE_MS = 65.0
TINY_STEP_TARGET_MS = 100.0
ACCURACY_TARGET_PP = 1.0
SUBNET_NAMES = ("max", "min", "random-seed1", "random-seed2")  # benchmark_subnets' order


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spread(samples: Sequence[float]) -> dict[str, float]:
    """Median and spread of a sample (timings in milliseconds, or ratios)."""
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered), 3),
        "mean": round(statistics.fmean(ordered), 3),
        "std": round(statistics.stdev(ordered), 3) if len(ordered) > 1 else 0.0,
        "p10": round(_quantile(ordered, 0.1), 3),
        "p90": round(_quantile(ordered, 0.9), 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def environment(threads: int) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    others = other_runnable()
    # more runnable threads than cores makes OpenMP threads wait on each other: timings can
    # grow several-fold and say nothing about the code
    busy = others is not None and others + threads > cores
    if busy:
        log(
            f"warning: {others:.1f} other runnable thread(s) on {cores} cores besides this "
            f"benchmark's {threads}: timings will be inflated"
        )
    return {
        "host": platform.node(),
        # the kernels torch picks (AVX2, AVX512...) change the last bits of every float sum:
        # a training run repeats exactly only on hosts that agree here and on the thread count
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": cores,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "other_runnable_threads": others,
        "machine_busy": busy,
    }


def other_runnable(samples: int = 10, interval_s: float = 0.1) -> float | None:
    """Mean number of runnable threads other than this one (Linux's /proc/loadavg), or None."""
    counts: list[int] = []
    for _ in range(samples):
        try:
            running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
        except (OSError, IndexError):
            return None
        counts.append(int(running) - 1)
        time.sleep(interval_s)
    return round(statistics.fmean(counts), 2)


# ---- overhead


def train_step(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """One training step as the trainer takes it: forward, label-smoothed loss, backward, SGD."""
    optimizer = make_optimizer(model, TrainConfig(phases=()), lr=1e-3)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        optimizer.step()

    return step


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def compare_steps(
    supernet_step: Callable[[], None],
    static_step: Callable[[], None],
    *,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Interleaved timings (the order alternates every round) so that drift in the machine's
    load falls on both alike; the paired ratio compares steps taken a moment apart."""
    for _ in range(warmup):
        supernet_step()
        static_step()
    super_ms: list[float] = []
    static_ms: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            super_ms.append(_time_ms(supernet_step))
            static_ms.append(_time_ms(static_step))
        else:
            static_ms.append(_time_ms(static_step))
            super_ms.append(_time_ms(supernet_step))
    ratios = [s / t for s, t in zip(super_ms, static_ms, strict=True)]
    return {
        "supernet_ms": spread(super_ms),
        "static_ms": spread(static_ms),
        "ratio_of_medians": round(statistics.median(super_ms) / statistics.median(static_ms), 4),
        "paired_ratio": spread(ratios),
    }


def measure_overhead(
    *, resolution: int, batch_size: int, warmup: int, repeats: int, seed: int
) -> dict[str, Any]:
    space = get_space("mbv3-imagenet")
    subnet = space.max_subnet(r=resolution)
    torch.manual_seed(seed)
    supernet = OFAMobileNetV3(space)
    supernet.set_active(subnet)
    static = supernet.extract(subnet)
    x = torch.randn(batch_size, space.in_channels, resolution, resolution)
    y = torch.randint(0, space.num_classes, (batch_size,))
    result: dict[str, Any] = {
        "space": space.id,
        "subnet": "largest",
        "resolution": resolution,
        "batch_size": batch_size,
    }
    for layout in ("channels_last", "contiguous"):
        # fresh copies: the steps update weights, and each layout starts from the same ones
        sup, sta = copy.deepcopy(supernet), copy.deepcopy(static)
        # each network brings its input to its own layout
        if layout == "channels_last":
            sup, sta = to_training_layout(sup), to_training_layout(sta)
        log(f"overhead: {layout}, {warmup} warm-up + {repeats} interleaved steps each")
        result[layout] = compare_steps(
            train_step(sup, x, y), train_step(sta, x, y), warmup=warmup, repeats=repeats
        )
        log(
            f"  supernet {result[layout]['supernet_ms']['median']:.0f} ms, "
            f"static {result[layout]['static_ms']['median']:.0f} ms"
        )
    overhead = result["channels_last"]["ratio_of_medians"]
    result["elasticity_overhead"] = overhead
    result["elasticity_overhead_measured_on"] = (
        "channels_last: the trainer's layout (memory_layout.to_training_layout), ratio of medians"
    )
    result["target"] = OVERHEAD_TARGET
    result["met"] = overhead <= OVERHEAD_TARGET
    result["ofa_reference"] = OVERHEAD_OFA_REFERENCE
    return result


def measure_extraction(*, samples: int, warmup: int, seed: int) -> dict[str, Any]:
    space = get_space("mbv3-imagenet")
    torch.manual_seed(seed)
    # as search uses it: loaded from a checkpoint (contiguous weights), in eval mode
    supernet = OFAMobileNetV3(space).eval()
    rng = random.Random(seed)
    subnets = [space.sample(rng) for _ in range(samples)]
    for subnet in subnets[:warmup]:
        supernet.extract(subnet)
    log(f"extraction: {samples} random subnets")
    times: list[float] = []
    for subnet in subnets:
        start = time.perf_counter()
        supernet.extract(subnet)
        times.append((time.perf_counter() - start) * 1000.0)
    stats = spread(times)
    return {
        "space": space.id,
        "ms": stats,
        "median_ms": stats["median"],
        "p90_ms": stats["p90"],
        "target_ms": EXTRACT_TARGET_MS,
        "met": stats["median"] <= EXTRACT_TARGET_MS,
        "ofa_reference_ms": EXTRACT_OFA_REFERENCE_MS,
    }


def measure_tiny_step(*, warmup: int, repeats: int, seed: int) -> dict[str, Any]:
    space = get_space("mbv3-tiny")
    resolution, batch_size = space.resolutions[-1], 64
    torch.manual_seed(seed)
    supernet = to_training_layout(OFAMobileNetV3(space))
    supernet.set_active(space.max_subnet(r=resolution))
    x = torch.randn(batch_size, space.in_channels, resolution, resolution)
    y = torch.randint(0, space.num_classes, (batch_size,))
    step = train_step(supernet, x, y)
    for _ in range(warmup):
        step()
    log(f"tiny: {repeats} steps")
    stats = spread([_time_ms(step) for _ in range(repeats)])
    return {
        "space": space.id,
        "subnet": "largest",
        "resolution": resolution,
        "batch_size": batch_size,
        "layout": "training (memory_layout.to_training_layout)",
        "ms": stats,
        "target_ms": TINY_STEP_TARGET_MS,
        "met": stats["median"] < TINY_STEP_TARGET_MS,
    }


def run_overhead(args: argparse.Namespace) -> dict[str, Any]:
    env = environment(args.threads)
    started = time.perf_counter()
    overhead = measure_overhead(
        resolution=args.resolution,
        batch_size=args.batch_size,
        warmup=args.warmup,
        repeats=args.repeats,
        seed=args.seed,
    )
    extraction = measure_extraction(samples=args.extract_samples, warmup=3, seed=args.seed)
    tiny = measure_tiny_step(warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    env["load_avg_1_5_15_after"] = [round(v, 2) for v in os.getloadavg()]
    env["other_runnable_threads_after"] = other_runnable()
    return {
        "benchmark": "supernet",
        "part": "overhead",
        "environment": env,
        "train_step": overhead,
        "extraction": extraction,
        "tiny_train_step": tiny,
        "all_targets_met": bool(overhead["met"] and extraction["met"] and tiny["met"]),
        "seconds": round(time.perf_counter() - started, 1),
    }


# ---- accuracy


@dataclass(frozen=True)
class Schedule:
    """What the from-scratch baseline copies from the supernet's training."""

    epochs: int
    lr: float
    warmup_epochs: float
    batch_size: int
    momentum: float
    weight_decay: float
    label_smoothing: float
    augment: bool
    seed: int


def schedule_from(train_config: dict[str, Any]) -> Schedule:
    phases = train_config["phases"]
    if not phases:
        raise Refused("the checkpoint's train_config has no phases")
    teacher = phases[0]
    return Schedule(
        epochs=sum(int(p["epochs"]) for p in phases),
        lr=float(teacher["lr"]),
        warmup_epochs=float(teacher["warmup_epochs"]),
        batch_size=int(train_config["batch_size"]),
        momentum=float(train_config["momentum"]),
        weight_decay=float(train_config["weight_decay"]),
        label_smoothing=float(train_config["label_smoothing"]),
        augment=bool(train_config["augment"]),
        seed=int(train_config["seed"]),
    )


def data_kwargs(
    payload: CheckpointDocument, args: argparse.Namespace
) -> tuple[dict[str, Any], str]:
    """``load_data`` arguments: the checkpoint's own (written by ``edgenas train``), else the flags."""
    stored = payload.get("data")
    if isinstance(stored, dict) and "source" in stored:
        return dict(stored), "checkpoint"
    return {
        "source": args.data_source,
        "val_size": args.val_size,
        "train_limit": args.train_limit,
        "seed": args.data_seed,
    }, "arguments"


def load_matching_data(kwargs: dict[str, Any], spec: dict[str, Any]) -> DataBundle:
    kw = dict(kwargs)
    source = kw.pop("source")
    data = load_data(source, **kw)
    if data.spec.to_dict() != spec:
        raise Refused(
            f"data loaded with {kwargs} differs from the data the supernet was trained on "
            f"({spec.get('name')}, mean {spec.get('mean')}): pass the --data-source, --val-size "
            "and --train-limit of its recipe"
        )
    return data


def benchmark_subnets(supernet: OFAMobileNetV3) -> list[tuple[str, Subnet]]:
    space = supernet.space
    subnets = [space.max_subnet(), space.min_subnet(), space.sample(1), space.sample(2)]
    return list(zip(SUBNET_NAMES, subnets, strict=True))


def scratch_key(
    space_id: str, subnet: Subnet, schedule: Schedule, epochs: int, data_spec: dict[str, Any]
) -> str:
    """Everything a from-scratch result depends on: the architecture, the schedule and the data."""
    return json.dumps(
        {
            "space": space_id,
            "subnet": subnet.to_dict(),
            "schedule": asdict(schedule),
            "epochs": epochs,
            "data": data_spec,
        },
        sort_keys=True,
    )


class ScratchCache:
    """Scratch baselines by key, kept in a JSON file between runs (they do not depend on the
    supernet, so a new recipe is compared without retraining them); no file, no cache."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.loaded = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            entries = json.loads(self.path.read_text())["entries"]
            return {e["key"]: e["result"] for e in entries}
        except (ValueError, KeyError, TypeError) as exc:
            raise Refused(
                f"--scratch-cache {self.path} is not a scratch cache ({exc}): delete it or pass "
                "another path"
            ) from exc

    def get(self, key: str) -> dict[str, Any] | None:
        return self.loaded.get(key)

    def put(self, key: str, result: dict[str, Any]) -> None:
        if self.path is None:
            return
        # Processes splitting --subnets share one file: merge under a lock, write atomically.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = {**self._read(), key: result}
            text = json.dumps({"entries": [{"key": k, "result": r} for k, r in entries.items()]})
            write_text(self.path, text)


def train_scratch(
    name: str,
    space: SearchSpace,
    subnet: Subnet,
    data: DataBundle,
    schedule: Schedule,
    epochs: int,
) -> dict[str, Any]:
    """The architecture trained alone for ``epochs`` with the teacher phase's settings."""
    log(f"{name}: training from scratch for {epochs} epoch(s) at {subnet.r} px")
    # initialised as the supernet was before its training (the same seed and schemes)
    torch.manual_seed(schedule.seed)
    model = OFAMobileNetV3(space).extract(subnet)
    t0 = time.perf_counter()
    train_static(
        model,
        data,
        epochs=epochs,
        lr=schedule.lr,
        batch_size=schedule.batch_size,
        warmup_epochs=min(schedule.warmup_epochs, epochs / 4),
        momentum=schedule.momentum,
        weight_decay=schedule.weight_decay,
        label_smoothing=schedule.label_smoothing,
        augment=schedule.augment,
        seed=schedule.seed,
        on_epoch=lambda e, loss, acc: log(
            f"  epoch {e}/{epochs}: loss {loss:.3f}, train acc {acc:.3f}"
        ),
    )
    train_seconds = time.perf_counter() - t0
    running = accuracy(model, data.test, data, resolution=subnet.r)
    # the inherited weights are judged after BN recalibration: judge these the same way
    recalibrate_bn(model, bn_batches(data, subnet.r))
    return {
        "scratch_test_acc": round(accuracy(model, data.test, data, resolution=subnet.r), 5),
        "scratch_test_acc_running_bn": round(running, 5),
        "scratch_train_seconds": round(train_seconds, 1),
        # where it was trained: the same code, seed and threads gave the smallest subnet
        # .9087 on one host and .9117 on another, so a cached baseline carries its kernels
        "scratch_trained_on": {
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    with blamed("--checkpoint"):
        supernet, _, payload = load_supernet(args.checkpoint)
    if not payload.get("complete", False):
        raise Refused(
            f"--checkpoint {args.checkpoint} is not a finished training (phase "
            f"{payload.get('phase_index')}, epoch {payload.get('epoch')}): finish it with "
            "'edgenas train RECIPE' first"
        )
    env = environment(args.threads)
    schedule = schedule_from(payload["train_config"])
    epochs = args.scratch_epochs if args.scratch_epochs is not None else schedule.epochs
    kwargs, kwargs_from = data_kwargs(payload, args)
    log(f"accuracy: loading data {kwargs} (from the {kwargs_from})")
    data = load_matching_data(kwargs, payload["data_spec"])
    rows: list[dict[str, Any]] = []
    chosen = benchmark_subnets(supernet)
    if args.subnets:
        chosen = [(name, subnet) for name, subnet in chosen if name in args.subnets]
    cache = ScratchCache(args.scratch_cache)
    for name, subnet in chosen:
        log(f"{name}: inherited weights, BN recalibrated on training images")
        inherited = evaluate_subnet(supernet, subnet, data, split="test")
        key = scratch_key(supernet.space.id, subnet, schedule, epochs, payload["data_spec"])
        baseline = cache.get(key)
        if baseline is None:
            baseline = train_scratch(name, supernet.space, subnet, data, schedule, epochs)
            cache.put(key, baseline)
        else:
            log(
                f"{name}: scratch baseline from {args.scratch_cache} (same architecture and schedule)"
            )
        scratch = baseline["scratch_test_acc"]
        diff_pp = (inherited - scratch) * 100.0
        log(f"{name}: inherited {inherited:.4f}, scratch {scratch:.4f} ({diff_pp:+.2f} pp)")
        rows.append(
            {
                "name": name,
                "subnet": subnet.to_dict(),
                "inherited_test_acc": round(inherited, 5),
                **baseline,
                "difference_pp": round(diff_pp, 3),
                "met": diff_pp >= -ACCURACY_TARGET_PP,
                "scratch_cached": key in cache.loaded,
            }
        )
    env["load_avg_1_5_15_after"] = [round(v, 2) for v in os.getloadavg()]
    env["other_runnable_threads_after"] = other_runnable()
    return {
        "benchmark": "supernet",
        "part": "accuracy",
        "environment": env,
        "checkpoint": str(args.checkpoint),
        "space": supernet.space.id,
        "data": kwargs,
        "data_from": kwargs_from,
        "test_images": len(data.test),
        "bn_recalibration_images": min(BN_IMAGES, len(data.train)),
        "bn_recalibration": "both inherited and scratch weights, on the same training images "
        "(scratch_test_acc_running_bn: scratch with the running statistics of its training)",
        "scratch": {
            "epochs": epochs,
            "schedule_epochs": schedule.epochs,
            "epochs_overridden": args.scratch_epochs is not None,
            "lr": schedule.lr,
            "warmup_epochs": min(schedule.warmup_epochs, epochs / 4),
            "batch_size": schedule.batch_size,
            "augment": schedule.augment,
            "seed": schedule.seed,
            "distillation": False,
            "init": "extracted from a freshly initialised supernet (seeded as the training was)",
        },
        "subnets": rows,
        "difference_pp": "inherited minus scratch test accuracy, percentage points",
        "target_pp": -ACCURACY_TARGET_PP,
        "met": all(r["met"] for r in rows),
        "seconds": round(time.perf_counter() - started, 1),
    }


# ---- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m benchmarks.supernet",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--part",
        choices=("overhead", "accuracy"),
        default="overhead",
        help="what to measure (see above)",
    )
    p.add_argument("--threads", type=at_least(1), default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and subnets")
    g = p.add_argument_group("overhead")
    g.add_argument("--resolution", type=at_least(1), default=128, help="px")
    g.add_argument("--batch-size", type=at_least(1), default=16, help="images per step")
    g.add_argument("--warmup", type=at_least(0), default=3, help="untimed steps before timing")
    g.add_argument("--repeats", type=at_least(1), default=20, help="timed steps per network")
    g.add_argument(
        "--extract-samples", type=at_least(1), default=20, help="random subnets to extract"
    )
    g = p.add_argument_group("accuracy")
    g.add_argument("--checkpoint", type=Path, help="supernet.pt of a finished training")
    g.add_argument(
        "--subnets",
        type=names_from(SUBNET_NAMES),
        help=f"comma-separated subset of {','.join(SUBNET_NAMES)} (to split the work over "
        "processes; default all)",
    )
    g.add_argument(
        "--scratch-epochs",
        type=at_least(1),
        help="train the scratch baselines this many epochs instead of the whole schedule's",
    )
    g.add_argument(
        "--scratch-cache",
        type=Path,
        help="JSON file of scratch baselines: reused where the architecture, schedule and data "
        "match, new ones added; its folder is made if missing (default: none, every baseline "
        "is trained)",
    )
    g.add_argument("--data-source", default="fashion-mnist", help="if the checkpoint has no 'data'")
    g.add_argument("--val-size", type=int, default=5000, help="if the checkpoint has no 'data'")
    g.add_argument("--train-limit", type=int, help="if the checkpoint has no 'data'")
    g.add_argument("--data-seed", type=int, default=0, help="if the checkpoint has no 'data'")
    args = p.parse_args(argv)
    if args.part == "accuracy" and args.checkpoint is None:
        raise Refused("--part accuracy needs --checkpoint PATH (a supernet trained with a recipe)")
    if args.scratch_cache is not None:
        if args.scratch_cache.is_dir():
            raise Refused(f"--scratch-cache {args.scratch_cache}: is a folder; give a JSON file")
        require_folder("--scratch-cache", args.scratch_cache.parent)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run_overhead(args) if args.part == "overhead" else run_accuracy(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
