"""Once-for-All: search spaces, the elastic MobileNetV3 supernet, progressive shrinking and
subnet extraction. Depends on torch only (and numpy for encodings).

This is also the project's bottom layer: ``once_for_all.errors`` (the one base for user-facing
errors) and ``once_for_all.files`` (atomic writes, format-checked JSON) import nothing heavy,
and every other package uses them. So that importing them does not load torch, the names
below are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from once_for_all.lazy_names import lazy_names

if TYPE_CHECKING:
    from once_for_all.bn_recalibration import recalibrate_bn
    from once_for_all.checkpoint import CheckpointError, load_checkpoint, load_supernet
    from once_for_all.elastic_supernet import OFAMobileNetV3
    from once_for_all.errors import EdgenasError
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

_WHERE = {
    "CheckpointError": "checkpoint",
    "EdgenasError": "errors",
    "MobileNetV3": "static_net",
    "OFAMobileNetV3": "elastic_supernet",
    "PhaseConfig": "progressive_shrinking",
    "ProgressiveShrinkingTrainer": "progressive_shrinking",
    "SearchSpace": "search_space",
    "StageSpec": "search_space",
    "Subnet": "subnet",
    "SubnetError": "subnet",
    "TrainConfig": "progressive_shrinking",
    "accuracy": "evaluation",
    "build_from_config": "static_net",
    "evaluate_subnet": "evaluation",
    "get_space": "search_space",
    "list_spaces": "search_space",
    "load_checkpoint": "checkpoint",
    "load_supernet": "checkpoint",
    "make_divisible": "search_space",
    "ofa_phases": "progressive_shrinking",
    "recalibrate_bn": "bn_recalibration",
    "register_space": "search_space",
    "train_static": "static_training",
}
__all__ = [
    "CheckpointError",
    "EdgenasError",
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


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
