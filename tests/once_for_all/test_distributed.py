"""The single-process parts of data-parallel training: shards, the global-batch dropout,
learning-rate scaling and torchrun environments that cannot work. Two real processes are
tested in tests/edgenas/test_distributed_training.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from once_for_all import (
    OFAMobileNetV3,
    PhaseConfig,
    ProgressiveShrinkingTrainer,
    TrainConfig,
    get_space,
)
from once_for_all.data import DataBundle, StreamLoader, stream_image_folder
from once_for_all.distributed import (
    DistributedError,
    TrainingDevice,
    World,
    backend_for,
    process_group,
    training_device,
)
from once_for_all.global_batch_layers import GlobalBatchDropout, GlobalBatchNorm2d
from once_for_all.progressive_shrinking import scaled_for
from tests.support.imagenet_folder import write_imagenet_folder

SPACE = get_space("mbv3-tiny")


@pytest.mark.parametrize(("n", "size"), [(64, 2), (65, 2), (10, 3), (3, 3), (7, 4)])
def test_shards_tile_the_batch(n: int, size: int) -> None:
    shards = [World(rank, size).shard(n) for rank in range(size)]
    assert [i for s in shards for i in range(n)[s]] == list(range(n))
    lengths = [s.stop - s.start for s in shards]
    assert max(lengths) - min(lengths) <= 1


def test_global_batch_dropout_keeps_this_ranks_rows_of_the_one_process_mask() -> None:
    x = torch.randn(10, 48)
    torch.manual_seed(3)
    expected = F.dropout(x, 0.2, training=True)
    for world in (World(0, 3), World(1, 3), World(2, 3)):
        rows = world.shard(10)
        torch.manual_seed(3)
        assert torch.equal(GlobalBatchDropout(0.2, rows=rows, total=10)(x[rows]), expected[rows])


def test_linear_scaling_multiplies_batch_and_lr_by_the_processes() -> None:
    phases = (PhaseConfig("full", 1, 0.1, kd_ratio=0.0),)
    assert scaled_for(TrainConfig(phases, batch_size=32), World(0, 4)) == (32, 1.0)
    linear = TrainConfig(phases, batch_size=32, lr_scaling="linear")
    assert scaled_for(linear, World(0, 4)) == (128, 4.0)
    assert scaled_for(linear, World()) == (32, 1.0)


def test_trainer_of_one_rank_shards_the_global_batch(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    config = TrainConfig(
        (PhaseConfig("full", 1, 0.1, kd_ratio=0.0),),
        batch_size=32,
        lr_scaling="linear",
        sync_bn=True,
    )
    trainer = ProgressiveShrinkingTrainer(
        OFAMobileNetV3(SPACE), fmnist_small, config, checkpoint=tmp_path / "c.pt", world=World(1, 2)
    )
    assert trainer.loader.batch_size == 64 and trainer.rows == slice(32, 64)
    assert trainer.lr_factor == 2.0
    bns = [m for m in trainer.supernet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(isinstance(m, GlobalBatchNorm2d) for m in bns)
    # Same state dict as a supernet built for one process: checkpoints do not depend on it.
    assert trainer.supernet.state_dict().keys() == OFAMobileNetV3(SPACE).state_dict().keys()


def test_a_streamed_ranks_loader_decodes_only_its_rows(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "inet", classes=2, per_class=6, size=(40, 30))
    bundle = stream_image_folder(root, image_size=32, val_size=2, channels=1, workers=0)
    config = TrainConfig((PhaseConfig("full", 1, 0.1, kd_ratio=0.0),), batch_size=4)
    trainer = ProgressiveShrinkingTrainer(
        OFAMobileNetV3(SPACE), bundle, config, checkpoint=tmp_path / "c.pt", world=World(1, 2)
    )
    assert isinstance(trainer.loader, StreamLoader) and trainer.loader.rows == slice(2, 4)
    assert [len(batch) for batch in trainer.loader.sampler(0)] == [2, 2]


def test_batch_smaller_than_the_processes_is_refused(
    fmnist_small: DataBundle, tmp_path: Path
) -> None:
    config = TrainConfig((PhaseConfig("full", 1, 0.1, kd_ratio=0.0),), batch_size=2)
    with pytest.raises(DistributedError, match="batch_size=2 cannot be split across 3"):
        ProgressiveShrinkingTrainer(
            OFAMobileNetV3(SPACE),
            fmnist_small,
            config,
            checkpoint=tmp_path / "c",
            world=World(0, 3),
        )


def test_global_batch_norm_is_elastic_batch_norm_in_one_process() -> None:
    bn = GlobalBatchNorm2d(8)
    x = torch.randn(4, 6, 5, 5)
    expected = F.batch_norm(x, torch.zeros(6), torch.ones(6), bn.weight[:6], bn.bias[:6], True)
    assert torch.allclose(bn(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a number"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR, MASTER_PORT not set"),
    ],
)
def test_unusable_torchrun_environment_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(DistributedError, match=message), process_group(env=env):
        pass


def test_without_torchrun_there_is_one_process() -> None:
    with process_group(env={}) as world:
        assert world == World() and world.is_main


@pytest.mark.parametrize(
    ("requested", "env", "gpus", "expected"),
    [
        ("cpu", {}, 2, "cpu"),
        ("auto", {}, 0, "cpu"),
        ("auto", {}, 1, "cuda:0"),
        ("cuda", {"LOCAL_RANK": "1"}, 2, "cuda:1"),  # torchrun's second process on a machine
    ],
)
def test_each_process_trains_on_its_local_gpu_or_the_cpu(
    requested: TrainingDevice, env: dict[str, str], gpus: int, expected: str
) -> None:
    assert training_device(requested, env, cuda_devices=gpus) == torch.device(expected)


@pytest.mark.parametrize(
    ("env", "gpus", "message"),
    [
        ({}, 0, "sees no GPU: install a CUDA build of torch .* or train with --device cpu"),
        ({"LOCAL_RANK": "2"}, 2, "LOCAL_RANK 2 but only 2 GPU.*--nproc_per_node 2"),
    ],
)
def test_an_unusable_gpu_is_a_clear_error(env: dict[str, str], gpus: int, message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        training_device("cuda", env, cuda_devices=gpus)


def test_gpus_use_nccl_and_cpus_gloo() -> None:
    assert backend_for(torch.device("cuda", 0)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
