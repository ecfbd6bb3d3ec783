"""Training a static (extracted) network: the from-scratch baseline, and fine-tuning a subnet
before export. The same optimiser, schedule and loss as progressive shrinking, one phase long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from once_for_all.data import BatchLoader, DataBundle, resize_batch
from once_for_all.divergence import require_finite_loss
from once_for_all.memory_layout import to_training_layout
from once_for_all.progressive_shrinking import (
    PhaseConfig,
    TrainConfig,
    cosine_lr,
    epoch_seed,
    make_optimizer,
    soft_cross_entropy,
)
from once_for_all.static_net import MobileNetV3

# (epoch, train loss, train accuracy), called after each epoch
StaticEpochCallback = Callable[[int, float, float], None]
# (epochs done, the optimiser's state): what a resumed training continues from
Resume = tuple[int, dict[str, Any]]


def train_static(
    model: MobileNetV3,
    data: DataBundle,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    warmup_epochs: float = 0.0,
    momentum: float = 0.9,
    weight_decay: float = 3e-5,
    label_smoothing: float = 0.1,
    augment: bool = True,
    seed: int = 0,
    teacher: nn.Module | None = None,
    kd_ratio: float = 1.0,
    on_epoch: StaticEpochCallback | None = None,
    save: Callable[[Resume], None] | None = None,
    resume: Resume | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``data.train`` at ``model.resolution`` and return one record
    per epoch (``epoch``, ``lr``, ``train_loss``, ``train_acc``, ``seconds``).

    SGD with Nesterov momentum, linear warmup then cosine decay to zero, label smoothing; with
    a ``teacher``, ``kd_ratio`` × the soft cross-entropy to its outputs (on the same resized
    batch) is added. ``augment`` augments by ``data.train_transforms``. The batches,
    augmentation and dropout depend only on ``seed`` and the
    starting weights, so a run is repeatable. For a from-scratch baseline, seed torch and build
    the network with ``build_from_config(config)`` before calling this.

    ``model`` (and ``teacher``) are converted in place to the layout that trains fastest on the
    CPU (``memory_layout.to_training_layout``; the same function); ``model`` is left in eval
    mode.

    ``save`` is given the epochs done and the optimiser's state after each epoch (before
    ``on_epoch``); with ``model`` then at those weights, ``resume`` continues from them and
    ends where an uninterrupted training does (each epoch's randomness is seeded by its
    number, the schedule by the step).
    """
    _check_args(model, data, epochs=epochs, lr=lr, batch_size=batch_size, kd_ratio=kd_ratio)
    # A one-phase schedule: the optimiser settings travel the way the supernet trainer's do.
    config = TrainConfig(
        phases=(PhaseConfig("static", epochs, lr, warmup_epochs=warmup_epochs, kd_ratio=kd_ratio),),
        batch_size=batch_size,
        momentum=momentum,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        seed=seed,
        augment=augment,
    )
    loader = BatchLoader(
        data.train,
        data.spec,
        batch_size=batch_size,
        shuffle=True,
        augment=augment,
        transforms=data.train_transforms,
        seed=seed,
        drop_last=True,
    )
    model = to_training_layout(model)
    # a teacher with kd_ratio 0 would cost a forward pass per step for nothing
    teacher = to_training_layout(teacher).eval() if teacher is not None and kd_ratio > 0 else None
    optimizer = make_optimizer(model, config, lr)
    first = 0
    if resume is not None:
        first, state = resume
        optimizer.load_state_dict(state)
    steps = len(loader)
    total = steps * epochs
    warmup = int(warmup_epochs * steps)
    resolution = model.resolution
    history: list[dict[str, float]] = []
    for epoch in range(first, epochs):
        torch.manual_seed(epoch_seed(seed, 0, epoch))
        model.train()
        loss_sum = correct = seen = 0.0
        current_lr = lr
        started = time.perf_counter()
        for step, (x, y) in enumerate(loader.epoch(epoch)):
            current_lr = cosine_lr(lr, epoch * steps + step, total, warmup)
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            optimizer.zero_grad(set_to_none=True)
            xr = resize_batch(x, resolution)
            logits = model(xr)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    soft = F.softmax(teacher(xr), dim=1)
                loss = loss + kd_ratio * soft_cross_entropy(logits, soft)
            value = require_finite_loss(
                float(loss.detach()),
                where=f"epoch {epoch + 1}, step {step + 1} of training the subnet",
                fix=f"lower the learning rate ({lr:g}, --finetune-lr or export.finetune_lr)",
            )
            loss.backward()
            optimizer.step()
            loss_sum += value * len(y)
            correct += float((logits.argmax(1) == y).sum())
            seen += len(y)
        record = {
            "epoch": float(epoch + 1),
            "lr": current_lr,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if save is not None:
            save((epoch + 1, optimizer.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch + 1, record["train_loss"], record["train_acc"])
    model.eval()
    return history


def _check_args(
    model: MobileNetV3,
    data: DataBundle,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    kd_ratio: float,
) -> None:
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    if lr <= 0:
        raise ValueError(f"lr={lr} must be > 0")
    if kd_ratio < 0:
        raise ValueError(f"kd_ratio={kd_ratio} must be >= 0")
    if not 1 <= batch_size <= len(data.train):
        raise ValueError(
            f"batch_size={batch_size} must be between 1 and the {len(data.train)} training images "
            "(the last partial batch is dropped)"
        )
    channels = model.input_shape[1]
    classes = int(model.config["head"]["num_classes"])
    if channels != data.spec.channels or classes != data.spec.num_classes:
        raise ValueError(
            f"network takes {channels} channel(s) and predicts {classes} classes, but data "
            f"'{data.spec.name}' has {data.spec.channels} channel(s) and {data.spec.num_classes} "
            "classes: extract the network from a supernet trained on this data"
        )
