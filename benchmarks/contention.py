"""Training throughput when the cores are shared: quiet against one competing process.

    python -m benchmarks.contention [--steps 40] [--threads 2] [--repeats 2]

Each case runs supernet training steps (mbv3-tiny, batch 64, the largest subnet, random
images) in fresh processes, so that OpenMP's settings take effect before torch loads:
alone ("quiet"), and side by side with a second identical process ("shared"), each with the
OpenMP wait policy as torch ships it and with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at
once instead of spinning when they wait, which a busy neighbour's cores pay for), each case
``--repeats`` times. Prints per case the median ms per step of each process, and the shared
throughput as a fraction of the quiet one (medians over the repeats). Target (issue 24):
>= 40% of the quiet figure with one competing 2-thread process.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.command_line import ArgumentParser, at_least, run_main

WORKER = """
import json, sys, time
import torch
import torch.nn.functional as F
from once_for_all import OFAMobileNetV3, get_space
torch.manual_seed(0)
steps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
space = get_space("mbv3-tiny")
net = OFAMobileNetV3(space).train()
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,))
times = []
for step in range(steps + 5):
    started = time.perf_counter()
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    if step >= 5:  # warm-up steps are not counted
        times.append((time.perf_counter() - started) * 1000)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2]}))
"""


def start_training(steps: int, threads: int, passive: bool) -> subprocess.Popen[str]:
    """A process running ``steps`` training steps with ``threads`` threads (stdout: its JSON)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(steps), str(threads)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _run(processes: int, steps: int, threads: int, passive: bool) -> list[float]:
    running = [start_training(steps, threads, passive) for _ in range(processes)]
    out = []
    try:
        for proc in running:
            stdout, _ = proc.communicate()
            if proc.returncode != 0:  # its traceback is on stderr above: a bug
                raise RuntimeError(f"a training worker failed (exit {proc.returncode})")
            out.append(json.loads(stdout)["median_ms"])
    finally:  # an error or an interruption: no worker is left training
        for proc in running:
            proc.kill()
            proc.wait()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m benchmarks.contention", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps",
        type=at_least(1),
        default=40,
        help="timed training steps per process (default 40)",
    )
    p.add_argument(
        "--threads", type=at_least(1), default=2, help="torch threads per process (default 2)"
    )
    p.add_argument("--repeats", type=at_least(1), default=2, help="runs of each case (default 2)")
    args = p.parse_args(argv)
    cases: dict[str, Any] = {}
    for passive in (False, True):
        policy = "PASSIVE" if passive else "default"
        quiet = [_run(1, args.steps, args.threads, passive)[0] for _ in range(args.repeats)]
        shared = [_run(2, args.steps, args.threads, passive) for _ in range(args.repeats)]
        quiet_ms = statistics.median(quiet)
        shared_ms = statistics.median(ms for pair in shared for ms in pair)
        cases[policy] = {
            "quiet_ms_per_step": [round(v, 1) for v in quiet],
            "shared_ms_per_step": [[round(v, 1) for v in pair] for pair in shared],
            "shared_throughput_vs_quiet": round(quiet_ms / shared_ms, 3),
        }
        print(f"{policy}: quiet {quiet}, shared {shared}", file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "contention",
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "workload": f"mbv3-tiny largest subnet, batch 64, {args.threads} threads",
                "steps": args.steps,
                "cases": cases,
                "target": "shared throughput >= 0.40 of quiet",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    run_main(main)
