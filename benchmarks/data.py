"""Streaming image folders: decoder speed, loader throughput against the in-memory path, and
peak memory while iterating a large folder.

    python -m benchmarks.data [--images 50000] [--work .bench-work] [--sample 300]

A folder of ``--images`` generated 500 x 375 JPEGs (photo-like: smooth colour waves and
sensor-like noise, quality 90, 100 classes) is written once under ``--work`` and reused.
Parts, in this order:

- ``memory``: the whole folder iterated once (train transforms, 224 px, 2 workers, batch
  64): peak RSS of this process and of the largest worker (lifetime peaks, hence first), and
  the peak summed PSS of all of them (pages shared after the fork counted once), sampled
  every batch: the figure to hold against the target.
- ``decoders``: one process, images/s of OFA's eval transform (resize to r / 0.875, centre
  crop r) and train transform (random-resized crop, flip, colour jitter) at 128 and 224 px,
  decoding with Pillow, Pillow's JPEG draft mode (DCT-domain downscale, what
  once_for_all.data.image_stream uses) and, when importable, simplejpeg (its DCT scaling via
  min_width/min_height).
- ``loader``: images/s of ``StreamLoader`` (train transforms) with 1 and 2 worker processes
  at 128 and 224 px, against ``BatchLoader`` over the same count of images held in memory
  (its own augmentation, a 2-pixel crop and flip, then resized as training resizes).
- ``epoch``: progressive shrinking's training epoch (mbv3-imagenet at 64 px, 100 classes,
  batch 64, one phase with every choice elastic) on a folder of ``--epoch-images`` of the
  same JPEGs, streamed (2 workers) and held in memory, alternated ``--epoch-repeats`` times
  in one process; the seconds each epoch took (its validation included) and the ratio of
  the medians. Run it as ``edgenas train`` runs, with ``OMP_WAIT_POLICY=PASSIVE`` (the
  figures record the policy).

The load average is recorded beside the figures: the cores may be shared.

Targets (issue 22, 2 cores): peak memory <= 2 GiB whatever the folder's size; >= 250 images/s
at 224 px decoded and augmented; a streamed epoch within 1.3x of the in-memory one at 64 px. Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.command_line import (
    ArgumentParser,
    DefaultsHelpFormatter,
    Refused,
    at_least,
    require_folder,
    run_main,
)
from once_for_all.data import BatchLoader, ImageSplit, resize_batch
from once_for_all.data.image_stream import StreamLoader, StreamSplit, decode, stream_image_folder
from once_for_all.data.transforms import center_crop, random_resized_crop_box, train_augment
from once_for_all.data.user_data import list_image_folder
from once_for_all.ofa_import import IMAGENET_SPEC

WIDTH, HEIGHT = 500, 375
CLASSES = 100
SIZES = (128, 224)
LOADER_BATCH = 64
# A folder the loader, memory and epoch parts read holds out 1/6 of each class as its test
# split (once_for_all.data.splits): 4 images per class leave one.
MIN_FOLDER_IMAGES = 4 * CLASSES


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _photo(rng: np.random.Generator) -> Image.Image:
    """Smooth colour waves plus noise (about 56 KiB at quality 90): JPEG decode costs near a
    real photo's of the same size. The waves are drawn at 1/8 size and upsampled: ten times
    faster to generate than at full size, for the same files."""
    h, w = HEIGHT // 8 + 1, WIDTH // 8 + 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) * 8
    channels = []
    for _ in range(3):
        wave = np.zeros((h, w), dtype=np.float32)
        for _ in range(4):
            fx, fy = rng.uniform(0.002, 0.05, 2)
            wave += np.sin(xx * fx + yy * fy + rng.uniform(0, 6.3)) * rng.uniform(20, 50)
        channels.append(wave)
    small = Image.fromarray(np.clip(128 + np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    base = np.asarray(small.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-14, 15, (HEIGHT, WIDTH, 3), dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def generated_folder(work: Path, images: int) -> Path:
    """``images`` JPEGs in ``CLASSES`` class folders under ``work``, written once; an
    interrupted generation resumes."""
    root = work / f"jpeg-{images}"
    done = root / "complete.json"
    if done.is_file():
        return root
    started = time.perf_counter()
    for i in range(images):
        path = root / f"c{i % CLASSES:03d}" / f"{i:07d}.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        _photo(np.random.default_rng(i)).save(tmp, format="JPEG", quality=90)
        tmp.replace(path)
        if (i + 1) % 1000 == 0:
            say(f"generated {i + 1}/{images} JPEGs ({time.perf_counter() - started:.0f} s)")
    done.write_text(json.dumps({"images": images, "size": [WIDTH, HEIGHT]}))
    return root


def _rate(run: Callable[[Path], object], paths: Sequence[Path]) -> float:
    run(paths[0])  # warm-up
    started = time.perf_counter()
    for path in paths:
        run(path)
    return len(paths) / (time.perf_counter() - started)


def part_decoders(paths: Sequence[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import simplejpeg  # type: ignore[import-not-found]
    except ImportError:
        simplejpeg = None
        out["simplejpeg"] = "not installed"
    rng = np.random.default_rng(0)

    def pillow_eval(size: int) -> Callable[[Path], object]:
        def run(path: Path) -> object:
            with Image.open(path) as image:
                return np.asarray(center_crop(image.convert("RGB"), size))

        return run

    def pillow_train(size: int) -> Callable[[Path], object]:
        def run(path: Path) -> object:
            with Image.open(path) as image:
                box = random_resized_crop_box(*image.size, rng)
                return np.asarray(train_augment(image.convert("RGB"), size, box, rng))

        return run

    def draft(size: int, train: bool) -> Callable[[Path], object]:
        return lambda path: decode(path, 3, size, rng if train else None)

    def simple_eval(size: int) -> Callable[[Path], object]:
        def run(path: Path) -> object:
            data = path.read_bytes()
            w, h, _, _ = simplejpeg.decode_jpeg_header(data)
            short = int(np.ceil(size / 0.875))
            scale = short / min(w, h)
            pixels = simplejpeg.decode_jpeg(
                data, min_width=int(np.ceil(w * scale)), min_height=int(np.ceil(h * scale))
            )
            return np.asarray(center_crop(Image.fromarray(pixels), size))

        return run

    for size in SIZES:
        cases: dict[str, Callable[[Path], object]] = {
            "pillow_eval": pillow_eval(size),
            "pillow_draft_eval": draft(size, False),
            "pillow_train": pillow_train(size),
            "pillow_draft_train": draft(size, True),
        }
        if simplejpeg is not None:
            cases["simplejpeg_scaled_eval"] = simple_eval(size)
        for name, run in cases.items():
            rate = _rate(run, paths)
            out[f"{name}_{size}_images_per_s"] = round(rate, 1)
            say(f"decoders: {name} at {size} px: {rate:.0f} images/s")
    return out


def part_loader(root: Path, count: int) -> dict[str, Any]:
    bundle = stream_image_folder(
        root, image_size=224, val_size=0, mean=IMAGENET_SPEC.mean, std=IMAGENET_SPEC.std
    )
    split = bundle.train.select(np.arange(min(count, len(bundle.train))))
    out: dict[str, Any] = {"images": len(split)}
    for size in SIZES:
        for workers in (1, 2):
            loader = StreamLoader(
                split,
                bundle.spec,
                batch_size=LOADER_BATCH,
                shuffle=True,
                augment=True,
                resolutions=(size,),
                workers=workers,
            )
            seen, started = 0, 0.0
            for b, (_, y) in enumerate(loader.epoch(0)):
                if b == 0:  # worker start-up is not counted
                    started = time.perf_counter()
                else:
                    seen += len(y)
            rate = seen / (time.perf_counter() - started)
            out[f"stream_{size}_workers{workers}_images_per_s"] = round(rate, 1)
            say(f"loader: stream at {size} px, {workers} worker(s): {rate:.0f} images/s")
        memory = ImageSplit(
            torch.randint(0, 256, (len(split), 3, size, size), dtype=torch.uint8),
            torch.zeros(len(split), dtype=torch.int64),
        )
        in_memory = BatchLoader(
            memory, bundle.spec, batch_size=LOADER_BATCH, shuffle=True, augment=True
        )
        started = time.perf_counter()
        for x, _ in in_memory.epoch(0):
            resize_batch(x, size)
        rate = len(split) / (time.perf_counter() - started)
        out[f"in_memory_{size}_images_per_s"] = round(rate, 1)
        say(f"loader: in memory at {size} px: {rate:.0f} images/s")
    return out


def part_epoch(root: Path, repeats: int) -> dict[str, Any]:
    from once_for_all import (
        OFAMobileNetV3,
        PhaseConfig,
        ProgressiveShrinkingTrainer,
        TrainConfig,
        get_space,
    )
    from once_for_all.data import DataBundle, StreamBundle, load_data

    size, mean, std = 64, IMAGENET_SPEC.mean, IMAGENET_SPEC.std
    # every step at 64 px: the space's own resolutions (128-224) would decode at 224 px
    space = dataclasses.replace(
        get_space("mbv3-imagenet"), num_classes=CLASSES, resolutions=(size,)
    )
    config = TrainConfig(
        phases=(
            PhaseConfig(
                "elastic", 1, 0.05, kd_ratio=0.0, ks=space.kernel_sizes, e=space.expand_ratios
            ),
        ),
        batch_size=64,
        eval_images=64,
        bn_images=64,
    )
    data: dict[str, DataBundle | StreamBundle] = {
        "stream": stream_image_folder(
            root, image_size=size, val_size=64, workers=2, mean=mean, std=std
        ),
        "memory": load_data(
            str(root), image_size=size, resize="center-crop", val_size=64, mean=mean, std=std
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in data}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(repeats):
            for name, bundle in data.items():
                torch.manual_seed(0)
                trainer = ProgressiveShrinkingTrainer(
                    OFAMobileNetV3(space),
                    bundle,
                    config,
                    checkpoint=Path(work) / f"{name}-{repeat}.pt",
                )
                trainer.train()
                taken = float(trainer.state.history[-1]["seconds"])
                seconds[name].append(round(taken, 2))
                say(f"epoch: {name}, repeat {repeat + 1}: {taken:.1f} s")
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    return {
        "images": len(data["memory"].train),
        "image_size": size,
        "threads": torch.get_num_threads(),
        # edgenas sets PASSIVE before torch loads; give it here as the command line does
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (spinning)"),
        "seconds": seconds,
        "stream_over_memory": round(medians["stream"] / medians["memory"], 3),
        "target_ratio": 1.3,
    }


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def part_memory(root: Path) -> dict[str, Any]:
    """Run first: the peak RSS figures are the process's (and its workers') lifetime peaks."""
    spec = stream_image_folder(
        root, image_size=224, val_size=0, mean=IMAGENET_SPEC.mean, std=IMAGENET_SPEC.std
    ).spec
    every = StreamSplit.of(root, list_image_folder(root).train)  # no test hold-out
    loader = StreamLoader(
        every,
        spec,
        batch_size=64,
        shuffle=True,
        augment=True,
        resolutions=(224,),
        workers=2,
    )
    me = os.getpid()
    peak_pss = seen = 0
    started = time.perf_counter()
    for b, (_, y) in enumerate(loader.epoch(0)):
        seen += len(y)
        peak_pss = max(peak_pss, sum(_pss_kib(p) for p in [me, *_children(me)]))
        if b % 100 == 0:
            say(f"memory: {seen}/{len(every)} images, peak PSS {peak_pss / 2**20:.2f} GiB")
    elapsed = time.perf_counter() - started
    kib = 1024
    return {
        "images": seen,
        "images_per_s": round(seen / elapsed, 1),
        "peak_pss_sum_gib": round(peak_pss / 2**20, 3),
        "peak_rss_main_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peak_rss_largest_worker_gib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**30, 3
        ),
        "target_gib": 2.0,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(
        prog="python -m benchmarks.data",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--images",
        type=at_least(1),
        default=50_000,
        help=f"JPEGs in the generated folder (the loader and memory parts: at least "
        f"{MIN_FOLDER_IMAGES}, so that each of the {CLASSES} classes has a test image)",
    )
    p.add_argument("--work", type=Path, default=Path(".bench-work"), help="cache folder")
    p.add_argument("--sample", type=at_least(1), default=300, help="images per decoder case")
    p.add_argument(
        "--loader-images",
        type=at_least(2 * LOADER_BATCH, why=": the first batch of 64 is not timed"),
        default=2000,
        help="images per loader case",
    )
    p.add_argument(
        "--epoch-images",
        type=at_least(
            MIN_FOLDER_IMAGES, why=f", so that each of the {CLASSES} classes has a test image"
        ),
        default=2000,
        help="JPEGs of the epoch part",
    )
    p.add_argument("--epoch-repeats", type=at_least(1), default=3, help="epochs per path")
    p.add_argument(
        "--part",
        choices=("all", "decoders", "loader", "memory", "epoch"),
        default="all",
        help="one part, or all of them in the order above",
    )
    args = p.parse_args(argv)
    require_folder("--work", args.work)
    if args.part in ("all", "loader", "memory") and args.images < MIN_FOLDER_IMAGES:
        raise Refused(
            f"--images {args.images}: the loader and memory parts need at least "
            f"{MIN_FOLDER_IMAGES} (4 per class: each class holds out a test image); give more, "
            "or --part decoders"
        )
    root = generated_folder(args.work, args.epoch_images if args.part == "epoch" else args.images)
    paths = sorted(root.glob("c*/*.jpg"))
    result: dict[str, Any] = {
        "benchmark": "data",
        "python": platform.python_version(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "pillow": Image.__version__,
        "folder": {
            "images": len(paths),
            "size": [WIDTH, HEIGHT],
            "mean_jpeg_kib": round(
                float(np.mean([p.stat().st_size for p in paths[:1000]])) / 1024, 1
            ),
        },
    }
    if args.part in ("all", "memory"):
        result["memory"] = part_memory(root)
    if args.part in ("all", "decoders"):
        result["decoders"] = part_decoders(paths[: args.sample])
    if args.part in ("all", "loader"):
        result["loader"] = part_loader(root, args.loader_images)
    if args.part in ("all", "epoch"):
        result["epoch"] = part_epoch(
            generated_folder(args.work, args.epoch_images), args.epoch_repeats
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run_main(main)
