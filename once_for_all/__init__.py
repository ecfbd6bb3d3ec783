"""Once-for-All: search spaces, the elastic MobileNetV3 supernet, progressive shrinking and
subnet extraction. Depends on torch only (and numpy for encodings)."""

from __future__ import annotations

from once_for_all.bn_recalibration import recalibrate_bn
from once_for_all.checkpoint import CheckpointError, load_checkpoint, load_supernet
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.evaluation import accuracy, evaluate_subnet
from once_for_all.progressive_shrinking import (
    PhaseConfig,
    ProgressiveShrinkingTrainer,
    TrainConfig,
    ofa_phases,
)
from once_for_all.search_space import (
    SearchSpace,
    StageSpec,
    get_space,
    list_spaces,
    make_divisible,
    register_space,
)
from once_for_all.static_net import MobileNetV3, build_from_config
from once_for_all.static_training import train_static
from once_for_all.subnet import Subnet, SubnetError

__all__ = [
    "CheckpointError",
    "MobileNetV3",
    "OFAMobileNetV3",
    "PhaseConfig",
    "ProgressiveShrinkingTrainer",
    "SearchSpace",
    "StageSpec",
    "Subnet",
    "SubnetError",
    "TrainConfig",
    "accuracy",
    "build_from_config",
    "evaluate_subnet",
    "get_space",
    "list_spaces",
    "load_checkpoint",
    "load_supernet",
    "make_divisible",
    "ofa_phases",
    "recalibrate_bn",
    "register_space",
    "train_static",
]
