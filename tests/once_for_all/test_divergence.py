"""Training that diverges or cannot measure stops with one line, before anything is written
from it: the supernet trainer (its last good checkpoint is kept), subnet training
(fine-tuning), export of a model whose weights are broken, and training without validation
images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from export import ExportError
from export.subnet_export import ExportOptions, export_subnet
from once_for_all import (
    OFAMobileNetV3,
    PhaseConfig,
    ProgressiveShrinkingTrainer,
    TrainConfig,
    build_from_config,
    get_space,
    load_checkpoint,
    train_static,
)
from once_for_all.data import DataBundle, DataError, load_data
from once_for_all.divergence import DivergedError

SPACE = get_space("mbv3-tiny")
# 1e30 is a finite learning rate (recipes refuse infinity) that overflows on the first step.
HUGE_LR = 1e30


def test_a_diverging_phase_stops_and_keeps_the_last_good_checkpoint(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    config = TrainConfig(
        phases=(
            PhaseConfig("full", 1, 0.05, kd_ratio=0.0),
            PhaseConfig("kernel", 1, HUGE_LR, ks=SPACE.kernel_sizes, kd_ratio=0.0),
        ),
        batch_size=256,
        eval_images=64,
        bn_images=64,
    )
    checkpoint = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    trainer = ProgressiveShrinkingTrainer(
        OFAMobileNetV3(SPACE), fmnist_small, config, checkpoint=checkpoint
    )
    with pytest.raises(DivergedError) as raised:
        trainer.train()
    message = str(raised.value)
    assert message.startswith("training diverged: the loss is nan at phase kernel, epoch 1, step ")
    assert "lower the phase's lr (1e+30)" in message and "\n" not in message
    kept = load_checkpoint(checkpoint)  # the first phase's epoch, finite
    assert (kept["phase_index"], kept["epoch"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    # What the message advises works: the lowered lr resumes from the kept epoch (resume
    # refused it as "a different training schedule"; audit, finding 2).
    lowered = replace(config, phases=(config.phases[0], replace(config.phases[1], lr=0.01)))
    torch.manual_seed(0)
    again = ProgressiveShrinkingTrainer(
        OFAMobileNetV3(SPACE), fmnist_small, lowered, checkpoint=checkpoint
    )
    assert again.resume()
    assert again.train().phase_index == 2
    assert [h["phase"] for h in load_checkpoint(checkpoint)["history"]] == ["full", "kernel"]


def test_subnet_training_that_diverges_stops(fmnist_small: DataBundle) -> None:
    model = build_from_config(OFAMobileNetV3(SPACE).subnet_config(SPACE.min_subnet()))
    with pytest.raises(
        DivergedError,
        match=r"^training diverged: the loss is nan at epoch 1, step \d+ of training the subnet; lower the learning rate \(1e\+30, --finetune-lr",
    ):
        train_static(model, fmnist_small, epochs=1, lr=HUGE_LR, batch_size=256)


def test_a_model_with_broken_weights_is_not_exported(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    model = build_from_config(OFAMobileNetV3(SPACE).subnet_config(SPACE.min_subnet()))
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    out = tmp_path / "export"
    with pytest.raises(ExportError, match="PyTorch outputs are not finite numbers"):
        export_subnet(model.eval(), fmnist_small, out, options=ExportOptions(formats=("onnx",)))
    assert not out.exists() or not any(out.iterdir())


def test_training_without_validation_images_is_refused(tmp_path: Path) -> None:
    # val_size 0 used to train and report a validation accuracy of 0.000 every epoch.
    data = load_data("fashion-mnist", val_size=0, train_limit=256)
    config = TrainConfig(phases=(PhaseConfig("full", 1, 0.05, kd_ratio=0.0),))
    with pytest.raises(DataError, match=r"has no validation images \(val_size 0\)"):
        ProgressiveShrinkingTrainer(
            OFAMobileNetV3(SPACE), data, config, checkpoint=tmp_path / "ckpt.pt"
        )
    assert not (tmp_path / "ckpt.pt").exists()
