from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from once_for_all import (
    CheckpointError,
    OFAMobileNetV3,
    PhaseConfig,
    ProgressiveShrinkingTrainer,
    Subnet,
    TrainConfig,
    get_space,
    load_checkpoint,
    progressive_shrinking,
)
from once_for_all.checkpoint import save_checkpoint
from once_for_all.data import BatchLoader, DataBundle, DataError
from once_for_all.progressive_shrinking import cosine_lr, make_optimizer, trained_expand_ratios

SPACE = get_space("mbv3-tiny")
K, E, D = SPACE.kernel_sizes, SPACE.expand_ratios, SPACE.depths

CONFIG = TrainConfig(
    phases=(
        PhaseConfig("full", 1, 0.05, warmup_epochs=0.5, kd_ratio=0.0),
        PhaseConfig("kernel", 1, 0.02, ks=K),
        PhaseConfig("depth", 1, 0.01, ks=K, d=D, subnets_per_step=2),
        PhaseConfig("expand", 2, 0.01, ks=K, d=D, e=E, subnets_per_step=2, sort_channels=True),
    ),
    batch_size=64,
    eval_images=100,
    bn_images=64,
)


@pytest.fixture(scope="module")
def few_images(fmnist_small: DataBundle) -> DataBundle:
    """Fashion-MNIST with 512 training images: 8 steps an epoch at CONFIG's batch size. No
    assertion here depends on how many steps an epoch has, only on there being some."""
    return replace(fmnist_small, train=fmnist_small.train.select(torch.arange(512)))


def _trainer(
    data: DataBundle, checkpoint: Path, config: TrainConfig = CONFIG
) -> ProgressiveShrinkingTrainer:
    torch.manual_seed(0)
    return ProgressiveShrinkingTrainer(OFAMobileNetV3(SPACE), data, config, checkpoint=checkpoint)


@pytest.fixture(scope="module")
def uninterrupted(
    few_images: DataBundle, tmp_path_factory: pytest.TempPathFactory
) -> ProgressiveShrinkingTrainer:
    trainer = _trainer(few_images, tmp_path_factory.mktemp("full") / "ckpt.pt")
    trainer.train()
    return trainer


def test_schedule_runs_every_phase_and_records_history(
    uninterrupted: ProgressiveShrinkingTrainer,
) -> None:
    history = uninterrupted.state.history
    assert [h["phase"] for h in history] == ["full", "kernel", "depth", "expand", "expand"]
    assert all(0.0 <= h["val_acc_max"] <= 1.0 and math.isfinite(h["train_loss"]) for h in history)
    payload = load_checkpoint(uninterrupted.checkpoint)
    assert payload["complete"] is True
    assert payload["teacher"] is not None  # distillation phases had a teacher
    assert len(payload["history"]) == 5


def test_killed_and_resumed_run_equals_uninterrupted(
    few_images: DataBundle, tmp_path: Path, uninterrupted: ProgressiveShrinkingTrainer
) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    # Stop after each of the first epochs (mid-phase and at phase boundaries) with fresh objects,
    # as a killed process would restart.
    first = _trainer(few_images, checkpoint)
    first.train(stop_after_epochs=2)
    assert load_checkpoint(checkpoint)["phase_index"] == 2
    for _ in range(2):
        again = _trainer(few_images, checkpoint)
        assert again.resume()
        again.train(stop_after_epochs=1)
    last = _trainer(few_images, checkpoint)
    assert last.resume()
    last.train()
    expected = uninterrupted.supernet.state_dict()
    for name, tensor in last.supernet.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert last.state.history[-1]["val_acc_max"] == uninterrupted.state.history[-1]["val_acc_max"]


def test_resume_refuses_another_schedule(
    few_images: DataBundle, uninterrupted: ProgressiveShrinkingTrainer
) -> None:
    other = TrainConfig(phases=CONFIG.phases[:1], batch_size=64, eval_images=100, bn_images=64)
    trainer = _trainer(few_images, uninterrupted.checkpoint, other)
    with pytest.raises(CheckpointError, match="different training schedule"):
        trainer.resume()


def _phases(*changes: tuple[int, dict[str, Any]]) -> tuple[PhaseConfig, ...]:
    phases = list(CONFIG.phases)
    for i, fields in changes:
        phases[i] = replace(phases[i], **fields)
    return tuple(phases)


@pytest.mark.parametrize(
    ("config", "change"),
    [
        (replace(CONFIG, phases=_phases((3, {"lr": 0.001}))), ""),  # the phase under way
        (replace(CONFIG, phases=(*CONFIG.phases, replace(CONFIG.phases[3], name="more"))), ""),
        (replace(CONFIG, phases=_phases((3, {"epochs": 3}))), "train.phases[3].epochs 2, now 3"),
        (replace(CONFIG, phases=_phases((2, {"lr": 0.005}))), "train.phases[2].lr 0.01, now 0.005"),
        (replace(CONFIG, batch_size=32), "train.batch_size 64, now 32"),
        (
            replace(CONFIG, phases=CONFIG.phases[:3]),
            "3 phase(s), but the checkpoint has epochs of 4 done",
        ),
    ],
    ids=["lr-under-way", "phase-added", "epochs-under-way", "lr-finished", "shared", "fewer"],
)
def test_resume_takes_changes_to_what_has_not_trained_and_names_any_other(
    few_images: DataBundle,
    tmp_path: Path,
    uninterrupted: ProgressiveShrinkingTrainer,
    config: TrainConfig,
    change: str,
) -> None:
    # Any change was "a different training schedule", naming none, even the lower lr that a
    # diverged run is told to resume with (audit, finding 2). Stopped after the first of the
    # expand phase's two epochs:
    checkpoint = tmp_path / "ckpt.pt"
    payload = load_checkpoint(uninterrupted.checkpoint)
    payload |= {"phase_index": 3, "epoch": 1, "complete": False}
    save_checkpoint(checkpoint, {k: v for k, v in payload.items() if k != "format"})
    trainer = _trainer(few_images, checkpoint, config)
    if not change:
        assert trainer.resume()
        return
    with pytest.raises(CheckpointError) as raised:
        trainer.resume()
    assert str(raised.value) == (
        f"checkpoint {checkpoint} was made with a different training schedule ({change}): a "
        "resumed run may change only the phases it has not started and the lr of the phase "
        "under way; resume with the checkpoint's settings, or train into another output folder"
    )


SETTINGS = {"source": "fashion-mnist", "val_size": 1000, "train_limit": 512, "seed": 0}


def test_resume_refuses_other_data(
    few_images: DataBundle, tmp_path: Path, uninterrupted: ProgressiveShrinkingTrainer
) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    payload = load_checkpoint(uninterrupted.checkpoint)
    payload["data"] = SETTINGS  # as edgenas train records them
    save_checkpoint(checkpoint, {k: v for k, v in payload.items() if k != "format"})

    def resume(data: DataBundle, settings: dict[str, Any]) -> bool:
        torch.manual_seed(0)
        trainer = ProgressiveShrinkingTrainer(
            OFAMobileNetV3(SPACE), data, CONFIG, checkpoint=checkpoint, metadata={"data": settings}
        )
        return trainer.resume()

    with pytest.raises(
        CheckpointError,
        match=r"was made with different data \(data\.train_limit 512, now 900\): resume with "
        r"the same recipe, or train into another output folder$",
    ):
        resume(few_images, SETTINGS | {"train_limit": 900})
    other_stats = replace(few_images, spec=replace(few_images.spec, mean=(0.5,)))
    with pytest.raises(CheckpointError, match=r"different data \(its data spec's mean differ\)"):
        resume(other_stats, SETTINGS)
    # The same data in another folder (the machine a run resumes on) is the same data.
    assert resume(few_images, SETTINGS | {"source": "/elsewhere/fashion-mnist"})


def test_fewer_training_images_than_one_batch_are_refused(
    few_images: DataBundle, tmp_path: Path
) -> None:
    tiny = replace(few_images, train=few_images.train.select(torch.arange(50)))
    with pytest.raises(
        DataError,
        match=r"has 50 training images, fewer than one global batch of 64 \(train\.batch_size "
        r"64\), so training would run no step: lower train\.batch_size or give more training",
    ):
        _trainer(tiny, tmp_path / "ckpt.pt")
    assert not (tmp_path / "ckpt.pt").exists()
    small_batch = replace(CONFIG, batch_size=50, phases=CONFIG.phases[:1])
    assert len(_trainer(tiny, tmp_path / "ckpt.pt", small_batch).loader) == 1


def test_data_held_in_memory_is_augmented_by_its_train_transforms(
    few_images: DataBundle, tmp_path: Path
) -> None:
    assert _trainer(few_images, tmp_path / "a.pt").loader.transforms == "crop-flip"
    photos = replace(few_images, train_transforms="ofa")
    loader = _trainer(photos, tmp_path / "b.pt").loader
    assert isinstance(loader, BatchLoader) and loader.transforms == "ofa"


def test_channel_sorting_happens_at_expand_phase_start(
    few_images: DataBundle, tmp_path: Path
) -> None:
    config = TrainConfig(
        phases=(
            PhaseConfig("full", 1, 0.05, kd_ratio=0.0),
            PhaseConfig("expand", 1, 0.01, e=E, sort_channels=True),
        ),
        batch_size=64,
        eval_images=50,
        bn_images=64,
    )
    trainer = _trainer(few_images, tmp_path / "c.pt", config)
    trainer.train(stop_after_epochs=1)
    block = trainer.supernet.blocks[0]
    trainer._start_phase(1, config.phases[1])
    importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_second_expand_sort_keeps_the_first_expand_phases_channels(
    few_images: DataBundle, tmp_path: Path
) -> None:
    phases = (
        PhaseConfig("full", 1, 0.05, kd_ratio=0.0),
        PhaseConfig("expand-1", 1, 0.01, e=(4, 6), sort_channels=True),
        PhaseConfig("expand-2", 1, 0.01, e=E, sort_channels=True),
    )
    config = TrainConfig(phases=phases, batch_size=64, eval_images=50, bn_images=64)
    trainer = _trainer(few_images, tmp_path / "c.pt", config)
    block = trainer.supernet.blocks[0]
    w4 = block.mid_channels(4)
    # the channels' expand weights identify them (rows of random floats are distinct)
    rows = block.expand_conv.weight.detach().clone()
    trainer._start_phase(2, phases[2])
    after = block.expand_conv.weight.detach()
    assert sorted(map(tuple, after[:w4].tolist())) == sorted(map(tuple, rows[:w4].tolist()))
    importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[: w4 - 1] >= importance[1:w4])
    assert torch.all(importance[w4:-1] >= importance[w4 + 1 :])


def test_a_sort_keeps_every_expand_ratio_trained_before() -> None:
    phases = (
        PhaseConfig("full", 1, 0.05),
        PhaseConfig("largest", 1, 0.05, e=(6,)),
        PhaseConfig("ends", 1, 0.01, e=(3, 6)),
        PhaseConfig("all", 1, 0.01, e=(3, 4, 6), sort_channels=True),
    )
    assert trained_expand_ratios(phases[:1]) == ()
    assert trained_expand_ratios(phases[:2]) == (6,)
    assert trained_expand_ratios(phases[:3]) == (3, 6)
    assert trained_expand_ratios(phases) == (3, 4, 6)


def test_cosine_lr_warmup_and_decay() -> None:
    assert cosine_lr(1.0, 0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(1.0, 9, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 55, 100, 10) == pytest.approx(0.5)
    assert cosine_lr(1.0, 100, 100, 10) == pytest.approx(0.0, abs=1e-9)


def test_no_weight_decay_on_bn_bias_and_transforms() -> None:
    net = OFAMobileNetV3(SPACE)
    opt = make_optimizer(net, CONFIG, 0.1)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(p.ndim > 1 and "transform_" not in names[id(p)] for p in decay["params"])
    assert any("transform_" in names[id(p)] for p in no_decay["params"])
    assert any(names[id(p)].endswith("bn.weight") for p in no_decay["params"])
    assert opt.defaults["nesterov"] is True and no_decay["weight_decay"] == 0.0


def _spy_active(monkeypatch: pytest.MonkeyPatch) -> list[Subnet]:
    """Every subnet the supernet is set to, in order."""
    seen: list[Subnet] = []
    original = OFAMobileNetV3.set_active

    def spy(self: OFAMobileNetV3, subnet: Subnet) -> None:
        seen.append(subnet)
        original(self, subnet)

    monkeypatch.setattr(OFAMobileNetV3, "set_active", spy)
    return seen


def test_sandwich_rule_trains_largest_smallest_and_random_every_step(
    few_images: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(
        phases=(PhaseConfig("expand", 1, 0.01, ks=K, d=D, e=E, subnets_per_step=3, sandwich=True),),
        batch_size=256,
        eval_images=64,
        bn_images=64,
    )
    trainer = _trainer(few_images, tmp_path / "ckpt.pt", config)
    seen = _spy_active(monkeypatch)
    steps: list[int] = []
    trainer.train(on_step=lambda phase, epoch, step, total, metrics: steps.append(step))
    largest = SPACE.max_subnet(r=SPACE.resolutions[-1])
    smallest = SPACE.min_subnet(r=SPACE.resolutions[0])
    # Each step: the largest, the smallest, then a random one (validation calls come after).
    trained = seen[: 3 * len(steps)]
    assert trained[0::3] == [largest] * len(steps)
    assert trained[1::3] == [smallest] * len(steps)
    assert all(s not in (largest, smallest) for s in trained[2::3])
    assert trainer.teacher is not None  # OFA's frozen full network teaches by default


def test_sandwich_without_the_smallest_trains_the_largest_and_random_subnets(
    few_images: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phase = PhaseConfig(
        "expand", 1, 0.01, ks=K, d=D, e=E, subnets_per_step=3, sandwich=True, smallest=False
    )
    config = TrainConfig(phases=(phase,), batch_size=256, eval_images=64, bn_images=64)
    trainer = _trainer(few_images, tmp_path / "ckpt.pt", config)
    seen = _spy_active(monkeypatch)
    steps: list[int] = []
    trainer.train(on_step=lambda phase, epoch, step, total, metrics: steps.append(step))
    largest = SPACE.max_subnet(r=SPACE.resolutions[-1])
    smallest = SPACE.min_subnet(r=SPACE.resolutions[0])
    trained = seen[: 3 * len(steps)]
    assert trained[0::3] == [largest] * len(steps)
    randoms = trained[1::3] + trained[2::3]
    assert all(s not in (largest, smallest) for s in randoms)
    assert len(set(randoms)) == len(randoms)  # sampled afresh, not one subnet twice


def test_inplace_distillation_teaches_with_the_steps_largest_subnet(
    few_images: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(
        phases=(
            PhaseConfig(
                "depth", 1, 0.01, ks=K, d=D, subnets_per_step=3, sandwich=True, distill="inplace"
            ),
        ),
        batch_size=256,
        eval_images=64,
        bn_images=64,
    )
    trainer = _trainer(few_images, tmp_path / "ckpt.pt", config)
    seen = _spy_active(monkeypatch)
    outputs: list[tuple[Subnet, torch.Tensor]] = []
    targets: list[torch.Tensor] = []
    forward = OFAMobileNetV3.forward
    soft_ce = progressive_shrinking.soft_cross_entropy

    def record_forward(self: OFAMobileNetV3, x: torch.Tensor) -> torch.Tensor:
        out = forward(self, x)
        if self.training:
            outputs.append((seen[-1], out.detach().clone()))
        return out

    def record_targets(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        targets.append(soft.clone())
        return soft_ce(logits, soft)

    monkeypatch.setattr(OFAMobileNetV3, "forward", record_forward)
    monkeypatch.setattr(progressive_shrinking, "soft_cross_entropy", record_targets)
    trainer.train()
    assert trainer.teacher is None  # no frozen copy: the step's largest subnet teaches
    largest = SPACE.max_subnet(r=SPACE.resolutions[-1])
    steps = len(outputs) // 3
    assert steps >= 2 and len(outputs) == 3 * steps
    assert len(targets) == 2 * steps  # the two smaller subnets of each step, not the largest
    for step in range(steps):
        subnet, logits = outputs[3 * step]
        assert subnet == largest
        expected = torch.softmax(logits, dim=1)
        for target in targets[2 * step : 2 * step + 2]:
            torch.testing.assert_close(target, expected)


@pytest.mark.parametrize("label_loss", [True, False])
def test_label_loss_decides_whether_distilled_subnets_also_fit_the_labels(
    few_images: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label_loss: bool
) -> None:
    phase = PhaseConfig(
        "depth", 1, 0.01, ks=K, d=D, subnets_per_step=3, sandwich=True, distill="inplace",
        label_loss=label_loss,
    )  # fmt: skip
    config = TrainConfig(phases=(phase,), batch_size=512, eval_images=64, bn_images=64)
    trainer = _trainer(few_images, tmp_path / "ckpt.pt", config)
    calls = {"labels": 0, "soft": 0}
    cross_entropy = torch.nn.functional.cross_entropy
    soft_ce = progressive_shrinking.soft_cross_entropy

    def count_labels(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["labels"] += 1
        return cross_entropy(*args, **kwargs)

    def count_soft(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        calls["soft"] += 1
        return soft_ce(logits, soft)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", count_labels)
    monkeypatch.setattr(progressive_shrinking, "soft_cross_entropy", count_soft)
    steps: list[int] = []
    trainer.train(on_step=lambda phase, epoch, step, total, metrics: steps.append(step))
    # Each step: the largest fits the labels; the two others the largest's outputs, and the
    # labels too only with label_loss.
    assert calls["soft"] == 2 * len(steps) > 0
    assert calls["labels"] == (3 if label_loss else 1) * len(steps)
    assert math.isfinite(trainer.state.history[-1]["train_loss"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sandwich": True, "subnets_per_step": 1}, "subnets_per_step must be at least 2"),
        ({"distill": "inplace", "subnets_per_step": 2}, "set sandwich: true"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
    ],
)
def test_sandwich_and_inplace_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PhaseConfig("depth", 1, 0.01, ks=K, d=D, **kwargs)


def test_checkpoints_from_before_the_distill_options_existed_resume(
    few_images: DataBundle, tmp_path: Path
) -> None:
    config = TrainConfig(phases=CONFIG.phases[:2], batch_size=512, eval_images=64, bn_images=64)
    trainer = _trainer(few_images, tmp_path / "ckpt.pt", config)
    trainer.train()
    payload = load_checkpoint(trainer.checkpoint)
    for phase in payload["train_config"]["phases"]:
        for option in ("distill", "label_loss", "smallest", "ema_decay"):
            del phase[option]
    save_checkpoint(trainer.checkpoint, {k: v for k, v in payload.items() if k != "format"})
    assert _trainer(few_images, trainer.checkpoint, config).resume()


EMA_CONFIG = TrainConfig(
    phases=(
        PhaseConfig("full", 1, 0.05, kd_ratio=0.0),
        PhaseConfig(
            "expand", 2, 0.05, ks=K, d=D, e=E, subnets_per_step=2, sandwich=True, ema_decay=0.9
        ),
    ),
    batch_size=256,
    eval_images=64,
    bn_images=64,
)


@pytest.fixture(scope="module")
def ema_stopped(few_images: DataBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of EMA_CONFIG stopped after two epochs, one into the averaging phase;
    tests copy it."""
    checkpoint = tmp_path_factory.mktemp("ema") / "ckpt.pt"
    _trainer(few_images, checkpoint, EMA_CONFIG).train(stop_after_epochs=2)
    return checkpoint


def test_a_phase_with_ema_decay_ends_on_the_average_of_its_weights(
    few_images: DataBundle, tmp_path: Path
) -> None:
    trainer = _trainer(few_images, tmp_path / "ckpt.pt", EMA_CONFIG)
    average: dict[str, torch.Tensor] = {}
    raw: dict[str, torch.Tensor] = {}
    updates = 0

    def follow(phase: PhaseConfig, epoch: int, step: int, steps: int, _: Any) -> None:
        # An independent average of the weights after every step of the expand phase.
        nonlocal updates
        if phase.name != "expand":
            return
        for name, p in trainer.supernet.named_parameters():
            average[name] = 0.9 * average[name] + 0.1 * p.detach()
            raw[name] = p.detach().clone()
        updates += 1

    def phase_start(record: Any) -> None:
        if record.phase == "full":
            average.update({n: p.detach().clone() for n, p in trainer.supernet.named_parameters()})

    trainer.train(on_step=follow, on_epoch=phase_start)
    assert updates == 2 * len(trainer.loader)
    assert trainer.average is None
    params = dict(trainer.supernet.named_parameters())
    for name, expected in average.items():
        torch.testing.assert_close(params[name].detach(), expected, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(params[n].detach(), raw[n]) for n in raw)
    payload = load_checkpoint(trainer.checkpoint)
    assert payload["weight_average"] is None
    assert torch.equal(payload["model"]["classifier.weight"], params["classifier.weight"])


def test_killed_in_an_averaging_phase_and_resumed_equals_uninterrupted(
    few_images: DataBundle, tmp_path: Path, ema_stopped: Path
) -> None:
    whole = _trainer(few_images, tmp_path / "whole.pt", EMA_CONFIG)
    whole.train()
    checkpoint = tmp_path / "ckpt.pt"
    shutil.copyfile(ema_stopped, checkpoint)
    saved = load_checkpoint(checkpoint)["weight_average"]
    assert saved is not None and saved["updates"] == len(whole.loader)
    resumed = _trainer(few_images, checkpoint, EMA_CONFIG)
    assert resumed.resume()
    resumed.train()
    expected = whole.supernet.state_dict()
    for name, tensor in resumed.supernet.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    pairs = zip(whole.state.history, resumed.state.history, strict=True)
    assert all({**h, "seconds": 0} == {**r, "seconds": 0} for h, r in pairs)


def test_a_checkpoint_with_a_broken_weight_average_is_refused(
    few_images: DataBundle, tmp_path: Path, ema_stopped: Path
) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    shutil.copyfile(ema_stopped, checkpoint)
    payload = load_checkpoint(checkpoint)
    average = payload["weight_average"]
    average["average"].popitem()
    for broken in (average, None):
        payload["weight_average"] = broken
        save_checkpoint(checkpoint, {k: v for k, v in payload.items() if k != "format"})
        with pytest.raises(CheckpointError, match=r"weight average of phase expand.*retrain"):
            _trainer(few_images, checkpoint, EMA_CONFIG).resume()
