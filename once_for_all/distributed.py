"""Data-parallel training across the processes that ``torchrun`` starts.

A process joins torchrun's process group (from its environment: ``RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) only when ``WORLD_SIZE`` > 1; a plain
process, or ``torchrun --nproc_per_node 1``, trains exactly as before. Every collective here is
a no-op for a single process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from once_for_all.errors import EdgenasError
from once_for_all.training_devices import TrainingDevice

T = TypeVar("T")


class DistributedError(EdgenasError, ValueError):
    """A torchrun environment that cannot be used; the message says what to set."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and logs; the others compute and wait."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items: the sizes differ by at most one, the
        first ranks taking the remainder, and the parts of all ranks tile ``range(n)``."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def current_world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    size = dist.get_world_size()
    return World(dist.get_rank(), size, int(os.environ.get("LOCAL_WORLD_SIZE", size)))


def launched_rank(env: Mapping[str, str] = os.environ) -> int:
    """The rank torchrun gave this process (0 outside torchrun), usable without a process group."""
    return int(env.get("RANK", "0") or 0)


def training_device(
    requested: TrainingDevice,
    env: Mapping[str, str] = os.environ,
    *,
    cuda_devices: int | None = None,
) -> torch.device:
    """The device this process trains on: ``cpu``; ``cuda``, the GPU of this process's
    ``LOCAL_RANK`` (torchrun starts one process per GPU); ``auto``, a GPU where this torch
    sees one, else the CPU. ``cuda_devices`` overrides the count torch reports (tests)."""
    if requested == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if count == 0:
        if requested == "auto":
            return torch.device("cpu")
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DistributedError(
            f"training on cuda, but torch {torch.__version__} ({build}) sees no GPU: install a "
            "CUDA build of torch on a machine with an NVIDIA GPU, or train with --device cpu"
        )
    local_rank = int(env.get("LOCAL_RANK", "0") or 0)
    if local_rank >= count:
        raise DistributedError(
            f"process with LOCAL_RANK {local_rank} but only {count} GPU(s) on this machine: start "
            f"torchrun with --nproc_per_node {count} (one process per GPU)"
        )
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    """gloo for tensors in host memory, NCCL for CUDA tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(
    *, device: torch.device | None = None, env: Mapping[str, str] = os.environ
) -> Iterator[World]:
    """Join torchrun's process group for the duration of the block when ``WORLD_SIZE`` > 1
    (yielding this process's ``World``); otherwise yield the single-process world. A group
    that already exists is used as it is and left open."""
    try:
        size = int(env.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        raise DistributedError(
            f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not a number: start training with "
            "'torchrun --nproc_per_node N -m edgenas train ...' or unset it"
        ) from None
    if size <= 1 or dist.is_initialized():
        yield current_world()
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={size} but {', '.join(missing)} not set: start training with "
            "'torchrun --nproc_per_node N -m edgenas train ...', which sets them"
        )
    dist.init_process_group(backend=backend_for(device or torch.device("cpu")))
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()


def broadcast_object(obj: T, world: World) -> T:
    """Rank 0's ``obj`` on every rank (pickled; for small things and checkpoints)."""
    if world.size == 1:
        return obj
    box: list[object] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def broadcast_module(module: nn.Module, world: World) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (what DDP does when it
    wraps a model), so that all ranks start from the same weights."""
    if world.size == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_buffers(module: nn.Module, world: World) -> None:
    """Average the floating-point buffers (BN running statistics) over the ranks."""
    if world.size == 1:
        return
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(world.size)


def all_reduce_gradients(parameters: Sequence[nn.Parameter], world: World) -> None:
    """Sum every parameter's gradient over the ranks, in one flat all-reduce.

    Each rank scales its loss by its share of the global batch, so the sum is the gradient of
    the global batch's mean loss. The elastic supernet leaves the parameters of inactive
    choices without a gradient: they count as zeros, and a parameter keeps ``grad=None`` only
    where no rank gave it one, so the optimizer skips exactly what one process would skip.
    (DDP would need ``find_unused_parameters=True``, a graph traversal per forward, and
    ``no_sync`` for the several backward passes of one step; one reduction per step is
    simpler and its order is the same on every rank.)
    """
    if world.size == 1 or not parameters:
        return
    reference = parameters[0]
    flat = torch.cat(
        [
            *(
                p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
                for p in parameters
            ),
            torch.tensor(
                [float(p.grad is not None) for p in parameters],
                dtype=reference.dtype,
                device=reference.device,
            ),
        ]
    )
    dist.all_reduce(flat)
    used = flat[-len(parameters) :].tolist()
    offset = 0
    for p, flag in zip(parameters, used, strict=True):
        chunk = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if flag == 0:
            continue
        if p.grad is None:
            p.grad = torch.empty_like(p)
        p.grad.copy_(chunk)


def all_reduce_sums(values: Sequence[float], world: World) -> list[float]:
    """Sums of per-rank numbers (in float64), e.g. loss and accuracy counts of an epoch."""
    if world.size == 1:
        return list(values)
    # NCCL reduces only tensors on this process's GPU, gloo host tensors.
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    )
    t: Tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]
