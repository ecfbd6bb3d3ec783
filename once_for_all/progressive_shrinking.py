"""Progressive shrinking (OFA): train the full network, then let kernel size, depth and
expand ratio shrink phase by phase, distilling from the full network throughout.

Randomness is derived from (seed, phase, epoch) at the start of every epoch, so a run
resumed from an epoch checkpoint continues bit for bit like one never interrupted.

Under torchrun (see ``once_for_all.distributed``) every rank draws the same epoch order, the
same subnets and the same dropout masks, trains on its own contiguous part of each global
batch, and the gradients are summed over the ranks; batch norm uses the statistics of the
whole global batch. N processes therefore train the supernet one process would, up to the
order of float sums, and a checkpoint (written by rank 0) holds no per-rank state: it resumes
on any number of processes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, Le
from torch import Tensor, nn

from once_for_all.checkpoint import (
    CheckpointBody,
    CheckpointDocument,
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    save_checkpoint,
    state_mismatch,
)
from once_for_all.data import (
    BatchLoader,
    DataBundle,
    DataError,
    StreamBundle,
    StreamLoader,
    resize_batch,
)
from once_for_all.distributed import (
    DistributedError,
    World,
    all_reduce_gradients,
    all_reduce_sums,
    average_buffers,
    barrier,
    broadcast_module,
    broadcast_object,
    current_world,
)
from once_for_all.divergence import require_finite_loss
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.evaluation import evaluate_subnet
from once_for_all.global_batch_layers import use_global_batch_layers
from once_for_all.memory_layout import to_training_layout
from once_for_all.search_space import SearchSpace
from once_for_all.static_net import MobileNetV3, build_from_config
from once_for_all.subnet import Subnet
from once_for_all.weight_average import WeightAverage, WeightAverageError

# An lr or weight decay above this is a typo: no schedule trains with it. Beyond float32
# (3.4e38), where the optimizer keeps them, they failed in SGD's step with a traceback.
MAX_RATE = 1e6
# OFA and BigNAS train 2 to 4 subnets a step, each a forward and backward pass of the batch;
# a count far above that is a typo that would look like a hang, at the first step.
MAX_SUBNETS_PER_STEP = 100


@dataclass(frozen=True)
class PhaseConfig:
    """One phase: which choices are elastic, and how it is optimised.

    ``ks``/``e``/``d`` are the choices sampled in this phase; ``None`` means the largest only
    (``ks``, ``e``, ``d``) — resolution is always elastic, as in OFA.

    This is also the schema of a recipe's ``train.phases`` entries (``edgenas.recipe``
    validates them against these fields, their bounds and ``__post_init__``): a field added
    here is a recipe key.
    """

    name: str
    # The bounds (annotated_types) are checked where pydantic builds a phase from a recipe.
    epochs: Annotated[int, Ge(1)]
    lr: Annotated[float, Gt(0), Le(MAX_RATE)]
    warmup_epochs: Annotated[float, Ge(0)] = 0.0
    ks: tuple[int, ...] | None = None
    e: tuple[int, ...] | None = None
    d: tuple[int, ...] | None = None
    subnets_per_step: Annotated[int, Ge(1), Le(MAX_SUBNETS_PER_STEP)] = 1
    kd_ratio: Annotated[float, Ge(0)] = 1.0
    # At the phase's start, sort the expanded channels by importance, keeping those of every
    # expand ratio an earlier phase trained in front (OFA's re_organize_middle_weights).
    sort_channels: bool = False
    # BigNAS's sandwich rule: every step trains the phase's largest and smallest subnets and
    # subnets_per_step - 2 random ones, so both ends of the space train every step instead of
    # by chance (the largest would otherwise drift while the small ones pull on shared weights).
    sandwich: bool = False
    # Where the soft targets come from: "teacher", the full network frozen when distillation
    # starts (OFA); "inplace", the largest subnet of the same step, trained on the labels
    # alone, so the targets keep improving with it (BigNAS; needs sandwich).
    distill: Literal["teacher", "inplace"] = "teacher"
    # Whether the distilled subnets also fit the labels (OFA: cross-entropy + kd_ratio × the
    # soft loss) or learn from the soft targets alone (BigNAS's in-place distillation).
    label_loss: bool = True
    # With the sandwich rule, whether the smallest subnet is one of every step's subnets; off,
    # the largest and subnets_per_step - 1 random ones train.
    smallest: bool = True
    # Above 0: the phase keeps an exponential moving average of the weights with this decay
    # (BigNAS: 0.9998 over its long runs), validates it, and ends with the supernet holding it.
    ema_decay: Annotated[float, Interval(ge=0, lt=1)] = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"phase {self.name}: ema_decay must be in [0, 1) (0 turns the weight average "
                f"off), not {self.ema_decay}"
            )
        if self.sandwich and self.subnets_per_step < 2:
            raise ValueError(
                f"phase {self.name}: subnets_per_step: {self.subnets_per_step} is too few for "
                "sandwich (the largest and the smallest subnet train every step): "
                "subnets_per_step must be at least 2"
            )
        if self.distill == "inplace" and not self.sandwich:
            raise ValueError(
                f"phase {self.name}: distill: inplace takes its targets from the step's largest "
                "subnet, which only the sandwich rule trains every step: set sandwich: true"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How a supernet trains: its phases and the settings they share.

    Its fields besides ``phases`` are also keys of a recipe's ``train`` section
    (``edgenas.recipe`` builds that section from them, with their defaults and bounds, in this
    order): a field added here is a recipe key."""

    phases: tuple[PhaseConfig, ...]
    # The bounds (annotated_types) are checked where pydantic builds the recipe's section.
    seed: Annotated[int, Ge(0)] = 0
    batch_size: Annotated[int, Ge(1)] = 64
    # "none": batch_size is the global batch, split across the training processes, and the
    # learning rates are as given, so any number of processes trains the same supernet.
    # "linear": batch_size is per process and every learning rate is multiplied by the number
    # of processes (Goyal et al.'s linear scaling rule, as OFA's Horovod training does).
    lr_scaling: Literal["none", "linear"] = "none"
    # Off: each process normalises its own shard, as plain DDP and OFA do. On: batch norm over
    # the global batch (its statistics all-reduced, two small collectives per BN layer and
    # step), so that the result does not depend on the number of processes; slower where
    # collectives are slow (gloo on CPUs: see benchmarks/scale.py; on 2 cores, 2 processes
    # trained at 0.24x one 2-thread process's speed, against 0.97-1.26x without).
    sync_bn: bool = False
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Ge(0), Le(MAX_RATE)] = 3e-5
    label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    augment: bool = True
    # Validation images for the per-epoch max/min accuracy.
    eval_images: Annotated[int, Ge(1)] = 2000
    bn_images: Annotated[int, Ge(1)] = 1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ofa_phases(
    *, space: SearchSpace, epochs: tuple[int, int, int, int, int, int], lr: float
) -> tuple[PhaseConfig, ...]:
    """OFA's schedule: full network → elastic kernel → elastic depth (two steps) → elastic
    expand (two steps). ``lr`` is the teacher's; later phases use OFA's smaller ratios."""
    k, e, d = space.kernel_sizes, space.expand_ratios, space.depths
    return (
        PhaseConfig("full", epochs[0], lr, warmup_epochs=min(1.0, epochs[0] / 4), kd_ratio=0.0),
        PhaseConfig("kernel", epochs[1], lr * 0.3, ks=k),
        PhaseConfig("depth-1", epochs[2], lr * 0.1, ks=k, d=d[-2:], subnets_per_step=2),
        PhaseConfig("depth-2", epochs[3], lr * 0.1, ks=k, d=d, subnets_per_step=2),
        PhaseConfig(
            "expand-1",
            epochs[4],
            lr * 0.1,
            ks=k,
            d=d,
            e=e[-2:],
            subnets_per_step=2,
            sort_channels=True,
        ),
        PhaseConfig(
            "expand-2", epochs[5], lr * 0.1, ks=k, d=d, e=e, subnets_per_step=2, sort_channels=True
        ),
    )


def trained_expand_ratios(phases: Sequence[PhaseConfig]) -> tuple[int, ...]:
    """The expand ratios that ``phases`` trained subnets at (their ``e`` choices; a phase
    without ``e`` trains the largest, the whole width), ascending: a later channel sort keeps
    their channels in front. After OFA's expand-1 (e 4, 6) that is OFA's
    ``expand_ratio_stage=1``; before it, nothing (stage 0)."""
    return tuple(sorted({e for phase in phases for e in phase.e or ()}))


@dataclass
class EpochRecord:
    phase: str
    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    val_acc_max: float
    val_acc_min: float
    seconds: float


@dataclass
class TrainState:
    phase_index: int = 0
    epoch: int = 0  # epochs completed in the current phase
    history: list[dict[str, Any]] = field(default_factory=list)


StepCallback = Callable[[PhaseConfig, int, int, int, dict[str, float]], None]
EpochCallback = Callable[[EpochRecord], None]


def cosine_lr(base: float, step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to zero over the phase."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * progress))


def soft_cross_entropy(logits: Tensor, soft_targets: Tensor) -> Tensor:
    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; no weight decay on BN, biases and kernel transforms
    (decay would pull the identity-initialised transforms towards zero)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or "transform_" in name else decay).append(p)
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=config.momentum,
        nesterov=True,
    )


def scaled_for(config: TrainConfig, world: World) -> tuple[int, float]:
    """The global batch size and the factor on every learning rate for ``world``."""
    if config.lr_scaling == "linear":
        return config.batch_size * world.size, float(world.size)
    return config.batch_size, 1.0


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    """The seed of one epoch, so that a resumed run replays the randomness of an uninterrupted one."""
    return (seed * 1_000_003 + phase * 10_007 + epoch) % (2**31)


def resume_change(payload: Mapping[str, Any], now: dict[str, Any]) -> str:
    """``schedule_change`` between checkpoint ``payload``'s schedule and ``now``, at the epoch
    it ended on (a training checkpoint: ``resume`` checks its keys first)."""
    # Checkpoints from before these options existed were made without them.
    saved = {"lr_scaling": "none", "sync_bn": False, **payload["train_config"]}
    saved["phases"] = tuple(
        {"distill": "teacher", "label_loss": True, "smallest": True, "ema_decay": 0.0, **p}
        for p in saved["phases"]
    )
    return schedule_change(saved, now, phase=payload["phase_index"], epoch=payload["epoch"])


def schedule_change(saved: dict[str, Any], now: dict[str, Any], *, phase: int, epoch: int) -> str:
    """The first change from the checkpoint's schedule ``saved`` (``TrainConfig.to_dict``)
    to ``now`` that a run resumed at ``epoch`` of phase ``phase`` cannot take, in words
    (empty: none). The finished epochs were trained with the shared settings and their phases'
    own, so those stay; the phase under way may take another lr (its next epochs continue the
    cosine decay from the new one: the advice after a loss diverged), and the phases not
    started yet may change at will, or be added or removed."""
    for key in sorted((saved.keys() | now.keys()) - {"phases"}):
        if saved.get(key) != now.get(key):
            return f"train.{key} {saved.get(key)!r}, now {now.get(key)!r}"
    started = phase + (epoch > 0)  # phases with a finished epoch
    old_phases, new_phases = saved["phases"], now["phases"]
    if len(new_phases) < started:
        return f"{len(new_phases)} phase(s), but the checkpoint has epochs of {started} done"
    for i in range(started):
        old, new = old_phases[i], new_phases[i]
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key) and (i, key) != (phase, "lr"):
                return f"train.phases[{i}].{key} {old.get(key)!r}, now {new.get(key)!r}"
    return ""


def changed_data(
    payload: CheckpointDocument,
    spec: dict[str, object],
    settings: dict[str, Any] | None,
    digest: str | None = None,
) -> str:
    """How the data of a resumed run differs from its checkpoint's, in words (empty: it does
    not): the data settings (``load_data``'s keyword arguments) that changed, where the caller
    gives them and the checkpoint records them; the files of the source, where both record
    their ``source_digest``; else the fields of the data spec."""
    saved = payload.get("data")
    if settings is not None and saved is not None:
        # The same data may sit in another folder on the machine a run resumes on; the
        # digest and the spec (classes, training-split statistics) still tell other data apart.
        keys = sorted((saved.keys() | settings.keys()) - {"source"})
        moved = [
            f"data.{k} {saved.get(k)!r}, now {settings.get(k)!r}"
            for k in keys
            if saved.get(k) != settings.get(k)
        ]
        if moved:
            return "; ".join(moved)
    recorded = payload.get("source_digest")
    if digest is not None and recorded is not None and digest != recorded:
        # a streamed folder's spec is its fixed settings: only the listing tells
        return "the files of its data.source were added, removed or rewritten"
    saved_spec = payload["data_spec"]
    fields = [k for k in saved_spec.keys() | spec.keys() if saved_spec.get(k) != spec.get(k)]
    if digest is not None and digest == recorded:
        # The same files: a folder's spec is named after the folder, which may have moved.
        fields = [k for k in fields if k != "name"]
    return f"its data spec's {', '.join(sorted(fields))} differ" if fields else ""


# What resume() reads besides the data records (weight_average: not in older checkpoints).
_TRAINING_STATE = (
    "space",
    "data_spec",
    "model",
    "teacher",
    "optimizer",
    "phase_index",
    "epoch",
    "history",
    "train_config",
    "rng",
)


class ProgressiveShrinkingTrainer:
    """Trains an ``OFAMobileNetV3`` with progressive shrinking, one checkpoint per epoch."""

    def __init__(
        self,
        supernet: OFAMobileNetV3,
        data: DataBundle | StreamBundle,
        config: TrainConfig,
        *,
        checkpoint: Path,
        metadata: CheckpointMetadata | None = None,
        world: World | None = None,
        device: torch.device | None = None,
        pretrained_expand_ratios: Sequence[int] = (),
    ) -> None:
        """``world`` defaults to the process group this process belongs to (or none);
        ``device`` (default the CPU) holds the weights and the batches (the data stays on the
        host and is copied per batch). Streamed ``data`` (an image folder too big for memory)
        is decoded at the space's largest resolution with OFA's train transforms
        (random-resized crop, flip, colour jitter) where ``config.augment``, and resized per
        subnet like data held in memory; data held in memory is augmented by its
        ``train_transforms`` (OFA's too for photos read with OFA's centre crop).

        ``pretrained_expand_ratios``: the expand ratios ``supernet``'s weights were already
        trained at before this schedule (a transfer's ``once_for_all.transfer``); a channel
        sort keeps their channels in front, as it does for the ratios of earlier phases."""
        if len(data.val) == 0:
            raise DataError(
                f"data '{data.spec.name}' has no validation images (val_size 0), and training "
                "validates the largest and smallest subnets every epoch on them: hold some out "
                "(data.val_size, e.g. 5000)"
            )
        self.world = world or current_world()
        self.device = device or torch.device("cpu")
        global_batch, self.lr_factor = scaled_for(config, self.world)
        if global_batch < self.world.size:
            raise DistributedError(
                f"batch_size={config.batch_size} cannot be split across {self.world.size} processes: "
                "give a batch size of at least the number of processes"
            )
        if len(data.train) < global_batch:
            # Every epoch drops its last incomplete batch: it would train no step at all.
            per = f" x {self.world.size} processes" if global_batch != config.batch_size else ""
            raise DataError(
                f"data '{data.spec.name}' has {len(data.train)} training images, fewer than one "
                f"global batch of {global_batch} (train.batch_size {config.batch_size}{per}), so "
                "training would run no step: lower train.batch_size or give more training "
                "images (data.train_limit, data.val_size or a bigger data set)"
            )
        # This rank's rows of every global batch; every rank builds the same global batches.
        self.rows = self.world.shard(global_batch)
        self.share = (self.rows.stop - self.rows.start) / global_batch
        if self.world.size > 1:
            use_global_batch_layers(
                supernet, rows=self.rows, total=global_batch, sync_bn=config.sync_bn
            )
        self.supernet = to_training_layout(supernet.to(self.device))
        self.space = supernet.space
        self.data = data
        self.config = config
        self.checkpoint = checkpoint
        self.pretrained_expand_ratios = tuple(pretrained_expand_ratios)
        self.metadata: CheckpointMetadata = metadata or {}
        self.state = TrainState()
        self.teacher: MobileNetV3 | None = None
        self.optimizer: torch.optim.SGD | None = None
        # The current phase's weight average, when it keeps one (PhaseConfig.ema_decay).
        self.average: WeightAverage | None = None
        self.loader: BatchLoader | StreamLoader
        if isinstance(data, StreamBundle):
            self.loader = StreamLoader(
                data.train,
                data.spec,
                batch_size=global_batch,
                shuffle=True,
                augment=config.augment,
                resolutions=(max(self.space.resolutions),),
                seed=config.seed,
                drop_last=True,
                workers=data.workers,
                rows=self.rows if self.world.size > 1 else None,  # each process decodes its own
            )
        else:
            self.loader = BatchLoader(
                data.train,
                data.spec,
                batch_size=global_batch,
                shuffle=True,
                augment=config.augment,
                transforms=data.train_transforms,
                seed=config.seed,
                drop_last=True,
            )

    # ---- checkpointing

    def _payload(self) -> CheckpointBody:
        teacher = None
        if self.teacher is not None:
            teacher = {"config": self.teacher.config, "state": self.teacher.state_dict()}
        body = CheckpointBody(
            space=self.space.to_dict(),
            data_spec=self.data.spec.to_dict(),
            model=self.supernet.state_dict(),
            teacher=teacher,
            optimizer=self.optimizer.state_dict() if self.optimizer is not None else None,
            weight_average=self.average.state_dict() if self.average is not None else None,
            phase_index=self.state.phase_index,
            epoch=self.state.epoch,
            history=self.state.history,
            train_config=self.config.to_dict(),
            rng={"torch": torch.get_rng_state()},
            complete=self.state.phase_index >= len(self.config.phases),
        )
        body.update(self.metadata)
        return body

    def _read_checkpoint(self) -> CheckpointDocument | None:
        """The checkpoint as rank 0 reads it (``None`` if there is none), on every rank: the
        output folder need not be shared between machines, and every rank fails alike."""
        found: CheckpointDocument | CheckpointError | None = None
        if self.world.is_main and self.checkpoint.exists():
            try:
                found = load_checkpoint(self.checkpoint)
            except CheckpointError as exc:
                found = exc
        found = broadcast_object(found, self.world)
        if isinstance(found, CheckpointError):
            raise found
        return found

    def resume(self) -> bool:
        """Continue from ``self.checkpoint`` if it exists; returns whether it did."""
        payload = self._read_checkpoint()
        if payload is None:
            return False
        self._check_training_state(payload)
        change = resume_change(payload, self.config.to_dict())
        if change:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} was made with a different training schedule "
                f"({change}): a resumed run may change only the phases it has not started and "
                "the lr of the phase under way; resume with the checkpoint's settings, or train "
                "into another output folder"
            )
        changed = changed_data(
            payload,
            self.data.spec.to_dict(),
            self.metadata.get("data"),
            self.metadata.get("source_digest"),
        )
        if changed:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} was made with different data ({changed}): "
                "resume with the same recipe, or train into another output folder"
            )
        mismatch = state_mismatch(payload["model"], self.supernet.state_dict())
        if mismatch:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} does not hold a valid supernet ({mismatch}, for "
                f"space {self.space.id}): retrain, or restore it"
            )
        self.supernet.load_state_dict(payload["model"])
        if payload["teacher"] is not None:
            teacher = build_from_config(payload["teacher"]["config"], payload["teacher"]["state"])
            self.teacher = to_training_layout(teacher.to(self.device)).eval()
        self.state = TrainState(payload["phase_index"], payload["epoch"], list(payload["history"]))
        if self.state.phase_index < len(self.config.phases):
            phase = self.config.phases[self.state.phase_index]
            self.optimizer = make_optimizer(self.supernet, self.config, phase.lr * self.lr_factor)
            if payload["optimizer"] is not None and self.state.epoch > 0:
                self.optimizer.load_state_dict(payload["optimizer"])
            if phase.ema_decay > 0 and self.state.epoch > 0:
                self.average = WeightAverage(self.supernet, phase.ema_decay)
                try:
                    # Missing (a checkpoint from before averaging) or None: as broken as empty.
                    self.average.load_state_dict(payload.get("weight_average") or {})
                except (WeightAverageError, KeyError, TypeError) as exc:
                    raise CheckpointError(
                        f"checkpoint {self.checkpoint} lacks the weight average of phase "
                        f"{phase.name} or holds a broken one ({exc}): retrain, or restore it"
                    ) from None
        torch.set_rng_state(payload["rng"]["torch"])
        return True

    def _check_training_state(self, payload: CheckpointDocument) -> None:
        """Refuse, in one line, a checkpoint that holds no training state to continue (an
        imported supernet, a damaged file) or one for another space."""
        if "imported" in payload:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} is an imported supernet, not a training "
                "checkpoint: start from it with train.init_from, training into another folder"
            )
        missing = [key for key in _TRAINING_STATE if key not in payload]
        if missing:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} holds no training state to resume ({missing[0]} "
                "missing): restore it, or train into another output folder"
            )
        saved = payload["space"].get("id") if isinstance(payload["space"], dict) else None
        if saved != self.space.id:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} is for space {saved}, not {self.space.id}: "
                "use another output folder or remove it"
            )

    # ---- training

    def train(
        self,
        *,
        on_step: StepCallback | None = None,
        on_epoch: EpochCallback | None = None,
        stop_after_epochs: int | None = None,
    ) -> TrainState:
        """Run (or continue) the schedule. ``stop_after_epochs`` ends early after that many epochs
        in this call (used to test resumption)."""
        done_now = 0
        phases = self.config.phases
        broadcast_module(self.supernet, self.world)
        while self.state.phase_index < len(phases):
            index = self.state.phase_index
            phase = phases[index]
            if self.state.epoch == 0:
                self._start_phase(index, phase)
            while self.state.epoch < phase.epochs:
                if stop_after_epochs is not None and done_now >= stop_after_epochs:
                    return self.state
                record = self._train_epoch(index, phase, on_step)
                self.state.history.append(asdict(record))
                self.state.epoch += 1
                if self.state.epoch == phase.epochs:
                    if self.average is not None:
                        self.average.copy_to_model()
                        self.average = None
                    self.state.phase_index += 1
                    self.state.epoch = 0
                    self.optimizer = None
                if self.world.is_main:
                    save_checkpoint(self.checkpoint, self._payload())
                # Nobody runs ahead of a checkpoint that is still being written.
                barrier(self.world)
                done_now += 1
                if on_epoch is not None:
                    on_epoch(record)
                if self.state.phase_index != index:
                    break
        return self.state

    def _start_phase(self, index: int, phase: PhaseConfig) -> None:
        if phase.kd_ratio > 0 and phase.distill == "teacher" and self.teacher is None:
            # The teacher is the full network as it stands when distillation starts.
            self.teacher = to_training_layout(self.supernet.extract(self.space.max_subnet())).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        if phase.sort_channels:
            trained = trained_expand_ratios(self.config.phases[:index])
            keep = sorted({*self.pretrained_expand_ratios, *trained})
            self.supernet.sort_channels(keep=keep)
        self.optimizer = make_optimizer(self.supernet, self.config, phase.lr * self.lr_factor)
        # Started after the channel sort, so that the average and the weights agree on the order.
        self.average = WeightAverage(self.supernet, phase.ema_decay) if phase.ema_decay else None

    def _step_subnets(self, phase: PhaseConfig, rng: random.Random) -> list[Subnet]:
        """The subnets one step trains, in order (with the sandwich rule the largest first)."""
        sp = self.space
        ks = phase.ks or sp.kernel_sizes[-1:]
        e = phase.e or sp.expand_ratios[-1:]
        d = phase.d or sp.depths[-1:]
        ends = (1 + phase.smallest) if phase.sandwich else 0
        sampled = [sp.sample(rng, ks=ks, e=e, d=d) for _ in range(phase.subnets_per_step - ends)]
        if not phase.sandwich:
            return sampled
        r = sp.resolutions
        largest = sp.sample(rng, ks=(max(ks),), e=(max(e),), d=(max(d),), r=(max(r),))
        if not phase.smallest:
            return [largest, *sampled]
        smallest = sp.sample(rng, ks=(min(ks),), e=(min(e),), d=(min(d),), r=(min(r),))
        return [largest, smallest, *sampled]

    def _train_epoch(
        self, index: int, phase: PhaseConfig, on_step: StepCallback | None
    ) -> EpochRecord:
        assert self.optimizer is not None
        seed = epoch_seed(self.config.seed, index, self.state.epoch)
        # The same on every rank: the subnets of a step and the dropout masks agree everywhere.
        torch.manual_seed(seed)
        rng = random.Random(seed)
        steps = len(self.loader)
        total = steps * phase.epochs
        warmup = int(phase.warmup_epochs * steps)
        model = self.supernet.train()
        loss_sum = correct = seen = 0.0
        base_lr = phase.lr * self.lr_factor
        lr = base_lr
        distributed = self.world.size > 1
        params = [p for p in model.parameters() if p.requires_grad]
        started = time.perf_counter()
        loader_epoch = index * 10_000 + self.state.epoch
        for step, (x, y) in enumerate(self.loader.epoch(loader_epoch)):
            if distributed and isinstance(self.loader, BatchLoader):
                x, y = x[self.rows], y[self.rows]  # a streamed loader yields only these rows
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            lr = cosine_lr(base_lr, self.state.epoch * steps + step, total, warmup)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            inplace_targets: Tensor | None = None
            for i, subnet in enumerate(self._step_subnets(phase, rng)):
                model.set_active(subnet)
                xr = resize_batch(x, subnet.r)
                logits = model(xr)
                soft: Tensor | None = None
                if phase.kd_ratio > 0 and phase.distill == "inplace":
                    if i == 0:  # the largest: labels only; its outputs teach the rest
                        inplace_targets = F.softmax(logits.detach(), dim=1)
                    else:
                        soft = inplace_targets
                elif self.teacher is not None and phase.kd_ratio > 0:
                    with torch.no_grad():
                        soft = F.softmax(self.teacher(xr), dim=1)
                loss = (
                    F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
                    if soft is None or phase.label_loss
                    else logits.new_zeros(())
                )
                if soft is not None:
                    loss = loss + phase.kd_ratio * soft_cross_entropy(logits, soft)
                # The share makes the summed gradients those of the global batch's mean loss.
                (loss * self.share if distributed else loss).backward()
                value = float(loss.detach())
                if not distributed:  # with several processes, all stop together (below)
                    self._require_finite(phase, value, f", step {step + 1}")
                loss_sum += value * len(y)
                correct += float((logits.argmax(1) == y).sum())
                seen += len(y)
            all_reduce_gradients(params, self.world)
            self.optimizer.step()
            if self.average is not None:
                self.average.update()
            if on_step is not None:
                on_step(
                    phase,
                    self.state.epoch,
                    step + 1,
                    steps,
                    {"loss": loss_sum / seen, "acc": correct / seen},
                )
        loss_sum, correct, seen = all_reduce_sums([loss_sum, correct, seen], self.world)
        # The same sum on every rank, so every process raises here, before the checkpoint.
        self._require_finite(phase, loss_sum, "")
        if not self.config.sync_bn:
            # The checkpoint and the next phase's teacher need one set of BN statistics.
            average_buffers(self.supernet, self.world)
        # Every rank holds the same weights: rank 0 validates, the others take its figures.
        val_max, val_min = broadcast_object(
            self._validate() if self.world.is_main else (0.0, 0.0), self.world
        )
        return EpochRecord(
            phase=phase.name,
            epoch=self.state.epoch + 1,
            lr=lr,
            train_loss=loss_sum / max(seen, 1),
            train_acc=correct / max(seen, 1),
            val_acc_max=val_max,
            val_acc_min=val_min,
            seconds=time.perf_counter() - started,
        )

    def _require_finite(self, phase: PhaseConfig, loss: float, step: str) -> None:
        require_finite_loss(
            loss,
            where=f"phase {phase.name}, epoch {self.state.epoch + 1}{step}",
            fix=(
                f"lower the phase's lr ({phase.lr:g}) in the recipe and run the same command "
                "again (edgenas run, or edgenas train --resume): it continues from the last "
                "finished epoch, kept in the checkpoint (a recipe with one train.lr for all "
                "phases must list its phases to lower this one's)"
            ),
        )

    def _validate(self) -> tuple[float, float]:
        """Validation accuracy of the largest and smallest subnets, after BN recalibration,
        on a fixed slice of the validation split (the supernet itself is not modified); of the
        weight average where the phase keeps one, as that is what the phase ends with."""
        sp = self.space
        accs = []
        with self.average.applied() if self.average is not None else nullcontext():
            for subnet in (sp.max_subnet(), sp.min_subnet()):
                accs.append(
                    evaluate_subnet(
                        self.supernet,
                        subnet,
                        self.data,
                        bn_images=self.config.bn_images,
                        limit=self.config.eval_images,
                    )
                )
        self.supernet.set_active(sp.max_subnet())
        return accs[0], accs[1]
