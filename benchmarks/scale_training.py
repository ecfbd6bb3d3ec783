"""Training throughput of 1 vs N processes under torchrun (gloo on CPU).

    python -m benchmarks.scale_training                    # 1 and 2 processes (about a minute)
    python -m benchmarks.scale_training --processes 1 2 4 --steps 20

Each run starts ``torchrun --standalone --nproc_per_node N`` on this file's worker, which
trains the tiny space's elastic-expand phase (two subnets per step, knowledge distillation:
the bulk of progressive shrinking) on Fashion-MNIST with the same global batch, and times the
steps after a warm-up. The machine's cores are split among the processes (``threads`` in
total). Two processes also run with ``sync_bn: true`` (batch norm over the global batch
instead of each shard's, as plain DDP) to show what that costs in collectives.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.command_line import ArgumentParser, Refused, at_least, run_main

# torchrun starts the workers as the module benchmarks.scale_training from here.
REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE = 64  # the global batch


def check_batch(batch_size: int, processes: int) -> None:
    """Refuse a global batch that the processes cannot share equally: torchrun failed on it
    after its workers started, in 17 lines that did not say why."""
    if batch_size % processes:
        raise Refused(
            f"--batch-size {batch_size} cannot be split equally across {processes} processes: "
            f"give a multiple of {processes} (e.g. {processes * max(1, batch_size // processes)})"
        )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_throughput(
    processes: int,
    *,
    steps: int = 12,
    warmup: int = 2,
    batch_size: int = BATCH_SIZE,
    threads: int | None = None,
    sync_bn: bool = False,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Images per second of ``processes`` training processes on one machine (global batch
    ``batch_size``, ``threads`` torch threads in all, default one per core), timed over
    ``steps`` steps after ``warmup``. Raises ``RuntimeError`` if torchrun fails."""
    total_threads = threads or os.cpu_count() or 1
    per_process = max(1, total_threads // processes)
    with tempfile.TemporaryDirectory(prefix="edgenas-scale-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "benchmarks.scale_training",
            "--worker",
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--batch-size",
            str(batch_size),
            "--threads",
            str(per_process),
            "--out",
            tmp,
            *(["--sync-bn"] if sync_bn else []),
        ]
        started = time.perf_counter()
        with subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": str(per_process)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                _, stderr = proc.communicate(timeout=timeout_s)
            except BaseException:
                # A timeout, Ctrl-C or SIGTERM: torchrun passes SIGTERM on to its workers and
                # waits for them (subprocess.run's SIGKILL would leave them running).
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not result_path.exists():
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"torchrun with {processes} process(es) failed:\n{tail}")
        result: dict[str, Any] = json.loads(result_path.read_text())
    result.update(
        {
            "processes": processes,
            "threads_per_process": per_process,
            "sync_bn": sync_bn,
            "wall_s_with_startup": round(wall, 1),
        }
    )
    return result


def _worker(args: argparse.Namespace) -> None:
    """One torchrun process: train the timed steps, rank 0 writes the figures."""
    import torch

    from once_for_all import (
        OFAMobileNetV3,
        PhaseConfig,
        ProgressiveShrinkingTrainer,
        TrainConfig,
        get_space,
    )
    from once_for_all.data import load_data
    from once_for_all.distributed import process_group

    torch.set_num_threads(args.threads)
    space = get_space("mbv3-tiny")
    steps = args.warmup + args.steps
    data = load_data("fashion-mnist", val_size=200, train_limit=args.batch_size * steps, seed=0)
    phase = PhaseConfig(
        "expand",
        1,
        0.01,
        ks=space.kernel_sizes,
        d=space.depths,
        e=space.expand_ratios,
        subnets_per_step=2,
        kd_ratio=1.0,
    )
    config = TrainConfig(
        (phase,), batch_size=args.batch_size, eval_images=50, bn_images=32, sync_bn=args.sync_bn
    )
    stamps: list[float] = []
    with process_group() as world:
        torch.manual_seed(0)
        trainer = ProgressiveShrinkingTrainer(
            OFAMobileNetV3(space), data, config, checkpoint=Path(args.out) / "checkpoint.pt"
        )
        trainer.train(on_step=lambda *_: stamps.append(time.perf_counter()))
        if not world.is_main:
            return
    # stamps[i] is the end of step i; the timed steps are those after the warm-up.
    timed = stamps[args.warmup - 1 :]
    step_ms = [1000 * (b - a) for a, b in itertools.pairwise(timed)]
    seconds = timed[-1] - timed[0]
    images = args.batch_size * (len(timed) - 1)
    result = {
        "global_batch": args.batch_size,
        "steps_timed": len(timed) - 1,
        "images_per_s": round(images / seconds, 1),
        "step_ms_median": round(statistics.median(step_ms), 1),
        "phase": "expand, 2 subnets per step, distillation (mbv3-tiny, 28-32 px)",
    }
    (Path(args.out) / "result.json").write_text(json.dumps(result))


def environment() -> dict[str, Any]:
    import torch

    return {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m benchmarks.scale_training", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--processes",
        type=at_least(1),
        nargs="+",
        default=[1, 2],
        help="training processes per run, one run each (default 1 2)",
    )
    parser.add_argument("--steps", type=at_least(1), default=12, help="timed steps per run")
    parser.add_argument("--warmup", type=at_least(1), default=2, help="untimed steps first")
    parser.add_argument(
        "--batch-size",
        type=at_least(1),
        default=BATCH_SIZE,
        help=f"the global batch, a multiple of every --processes (default {BATCH_SIZE})",
    )
    parser.add_argument(
        "--threads", type=at_least(1), default=None, help="torch threads in all (default: cores)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for processes in args.processes:
        check_batch(args.batch_size, processes)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        args.threads = args.threads or 1
        _worker(args)
        return 0
    runs: list[dict[str, Any]] = []
    plan = [(n, False) for n in args.processes]
    if 2 in args.processes:
        plan.append((2, True))
    for processes, sync_bn in plan:
        log(f"{processes} process(es), sync_bn={sync_bn} ...")
        try:
            runs.append(
                training_throughput(
                    processes,
                    steps=args.steps,
                    warmup=args.warmup,
                    batch_size=args.batch_size,
                    threads=args.threads,
                    sync_bn=sync_bn,
                )
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log(f"  {runs[-1]['images_per_s']} images/s")
    single = next((r for r in runs if r["processes"] == 1), None)
    speedup = {
        f"{r['processes']}{'_sync_bn' if r['sync_bn'] else ''}": round(
            r["images_per_s"] / single["images_per_s"], 2
        )
        for r in runs
        if single is not None and r is not single
    }
    print(
        json.dumps(
            {
                "benchmark": "scale_training",
                "environment": environment(),
                "runs": runs,
                "speedup_vs_1_process": speedup,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    run_main(main)
