"""The static network config of a subnet, computed from the search space alone.

One source of truth for channel arithmetic: the supernet's extraction, the latency blocks
and the analytic cost proxies all read their shapes from here.
"""

from __future__ import annotations

from typing import Any

from once_for_all.search_space import SearchSpace, make_divisible
from once_for_all.static_net import NETWORK_FORMAT
from once_for_all.subnet import Subnet


def mid_channels(in_channels: int, expand_ratio: int) -> int:
    """Expanded width of an MBConv block."""
    return make_divisible(round(in_channels * expand_ratio), 8)


def se_channels(channels: int) -> int:
    """Squeeze-excite bottleneck width for ``channels`` expanded channels."""
    return make_divisible(channels // 4, 8)


def first_block_config(space: SearchSpace) -> dict[str, Any]:
    """The fixed (non-elastic) first block: depthwise + project, no expansion."""
    stem, first = space.width(space.stem_width), space.width(space.first_block_width)
    return {
        "in_channels": stem,
        "out_channels": first,
        "mid_channels": stem,
        "expand": False,
        "kernel_size": 3,
        "stride": space.first_block_stride,
        "act": space.first_block_act,
        "se_channels": 0,
        "residual": space.first_block_stride == 1 and stem == first,
    }


def slot_config(
    space: SearchSpace, slot: int, kernel_size: int, expand_ratio: int
) -> dict[str, Any]:
    """The config of elastic block slot ``slot`` with the given kernel size and expand ratio."""
    stage_index, i = divmod(slot, space.max_depth)
    stage = space.stages[stage_index]
    width = space.stage_widths[stage_index]
    if i > 0:
        cin = width
    elif stage_index > 0:
        cin = space.stage_widths[stage_index - 1]
    else:
        cin = space.width(space.first_block_width)
    stride = stage.stride if i == 0 else 1
    mid = mid_channels(cin, expand_ratio)
    return {
        "in_channels": cin,
        "out_channels": width,
        "mid_channels": mid,
        "expand": True,
        "kernel_size": kernel_size,
        "stride": stride,
        "act": stage.act,
        "se_channels": se_channels(mid) if stage.se else 0,
        "residual": stride == 1 and cin == width,
    }


def head_config(space: SearchSpace) -> dict[str, Any]:
    """The head (``head.MobileNetV3Head``): the same for every subnet of ``space``.

    ``feature_mix_bias`` is present only when false (OFA's spaces): configs written before the
    field existed, and their digests, stay as they were; readers default it to true."""
    config: dict[str, Any] = {
        "in_channels": space.stage_widths[-1],
        "final_expand": space.width(space.final_expand_width),
        "feature_mix": space.feature_mix_width,
        "num_classes": space.num_classes,
        "dropout": space.dropout,
    }
    if not space.feature_mix_bias:
        config["feature_mix_bias"] = False
    return config


def network_config(space: SearchSpace, subnet: Subnet) -> dict[str, Any]:
    """The config ``static_net.build_from_config`` builds ``subnet`` from."""
    space.validate(subnet)
    blocks = [first_block_config(space)]
    blocks += [
        slot_config(space, b, subnet.ks[b], subnet.e[b]) for b in space.active_blocks(subnet)
    ]
    return {
        "format": NETWORK_FORMAT,
        "space": space.id,
        "subnet": subnet.to_dict(),
        "input": {"channels": space.in_channels, "resolution": subnet.r},
        "stem": {
            "in_channels": space.in_channels,
            "out_channels": space.width(space.stem_width),
            "stride": space.stem_stride,
            "act": space.stem_act,
        },
        "blocks": blocks,
        "head": head_config(space),
    }
