"""The channel sort of progressive shrinking's expand phases against OFA's reference
implementation: the same weights sorted by OFA's ``re_organize_middle_weights`` (stage 0, then
stage 1, as OFA's expand phases do) and by edgenas's expand-1 then expand-2 come out equal."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from torch import Tensor, nn

from once_for_all import OFAMobileNetV3, get_space, ofa_phases
from once_for_all.elastic_supernet import ElasticMBConv
from once_for_all.progressive_shrinking import trained_expand_ratios
from tests.support.ofa_reference import import_ofa

SPACE = get_space("ofa-mbv3-w1.0")
# full, kernel, depth-1, depth-2, expand-1, expand-2
PHASES = ofa_phases(space=SPACE, epochs=(1, 1, 1, 1, 1, 1), lr=0.1)

# OFA's block tensor names (under blocks.N.conv., N >= 1) -> edgenas's (under blocks[N - 1]):
# every tensor with an expanded-channel dimension.
BLOCK_NAMES = {
    "inverted_bottleneck.conv.conv.weight": "expand_conv.weight",
    "depth_conv.conv.conv.weight": "depthwise.weight",
    "depth_conv.se.fc.reduce.weight": "se.reduce.weight",
    "depth_conv.se.fc.reduce.bias": "se.reduce.bias",
    "depth_conv.se.fc.expand.weight": "se.expand.weight",
    "depth_conv.se.fc.expand.bias": "se.expand.bias",
    "point_linear.conv.conv.weight": "project_conv.weight",
    **{
        f"{ofa}.bn.bn.{t}": f"{ours}_bn.{t}"
        for ofa, ours in (("inverted_bottleneck", "expand"), ("depth_conv", "depthwise"))
        for t in ("weight", "bias", "running_mean", "running_var")
    },
}


def block_pairs(theirs: nn.Module, mine: ElasticMBConv) -> list[tuple[str, Tensor, Tensor]]:
    """(OFA's name, OFA's tensor, edgenas's tensor) for every mapped tensor of one block
    (``theirs``: OFA's DynamicMBConvLayer)."""
    their_state, my_state = theirs.state_dict(), mine.state_dict()
    return [
        (name, their_state[name], my_state[ours])
        for name, ours in BLOCK_NAMES.items()
        if name in their_state
    ]


def network_pairs(ofa_net: nn.Module, ours: OFAMobileNetV3) -> list[tuple[str, Tensor, Tensor]]:
    """``block_pairs`` of every elastic block, OFA's blocks.N with edgenas's blocks[N - 1]."""
    return [
        (f"blocks.{n}.conv.{name}", theirs, mine)
        for n, block in enumerate(ours.blocks, start=1)
        for name, theirs, mine in block_pairs(ofa_net.blocks[n].conv, cast(ElasticMBConv, block))
    ]


def randomise_both(pairs: list[tuple[str, Tensor, Tensor]], seed: int) -> None:
    """The same random values in both tensors of each pair (positive running variances)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, theirs, mine in pairs:
            assert theirs.shape == mine.shape, name
            values = torch.randn(theirs.shape, generator=g, dtype=theirs.dtype)
            theirs.copy_(values.abs() if name.endswith("running_var") else values)
            mine.copy_(theirs)


def paired_networks(dtype: torch.dtype, seed: int) -> tuple[Any, OFAMobileNetV3]:
    """OFA's w1.0 supernet and edgenas's ``ofa-mbv3-w1.0`` with the same random block weights."""
    import_ofa()
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3 as OFANet

    ofa_net = OFANet(
        width_mult=1.0,
        ks_list=list(SPACE.kernel_sizes),
        expand_ratio_list=list(SPACE.expand_ratios),
        depth_list=list(SPACE.depths),
    ).to(dtype)
    ours = OFAMobileNetV3(SPACE).to(dtype)
    pairs = network_pairs(ofa_net, ours)
    assert len(pairs) == 20 * 11 + 12 * 4  # 20 blocks, 12 of them with squeeze-excite
    randomise_both(pairs, seed)
    return ofa_net, ours


def test_expand_phases_keep_what_ofa_keeps() -> None:
    # OFA's expand-1 sorts at stage 0 (nothing kept), its expand-2 at stage 1 (e=4 kept; e=6
    # is the whole width)
    assert [p.name for p in PHASES if p.sort_channels] == ["expand-1", "expand-2"]
    assert trained_expand_ratios(PHASES[:4]) == ()
    assert trained_expand_ratios(PHASES[:5]) == (4, 6)


def test_sorts_equal_ofas_in_float64() -> None:
    # OFA builds expand-1's network with e [4, 6], expand-2's with [3, 4, 6]; the weights'
    # shapes are the same, and stage 0 does not read the list
    ofa_net, ours = paired_networks(torch.float64, seed=0)
    for stage, index in ((0, 4), (1, 5)):
        if stage:
            # what expand-1's training does: the weights move (the same in both), so that
            # sorted channels are out of order again
            randomise_both(network_pairs(ofa_net, ours), seed=stage)
        ofa_net.re_organize_middle_weights(expand_ratio_stage=stage)
        ours.sort_channels(keep=trained_expand_ratios(PHASES[:index]))
        for name, theirs, mine in network_pairs(ofa_net, ours):
            assert torch.equal(theirs, mine), f"stage {stage}: {name}"
    # not vacuous: a full sort (what expand-2 did before) orders them differently
    ours.sort_channels()
    assert not all(torch.equal(theirs, mine) for _, theirs, mine in network_pairs(ofa_net, ours))


def test_sorts_agree_with_ofas_in_float32() -> None:
    """Stage 0 is identical. At stage 1 OFA's penalties (-2e5 on the channels beyond e=4)
    round those channels' float32 importance to steps of 1/64, which ties close ones; so the
    e=4 channels are identical and the rest are the same set, in edgenas's exact order (which
    no subnet depends on: e=3 and e=4 take prefixes of the e=4 channels)."""
    ofa_net, ours = paired_networks(torch.float32, seed=1)
    ofa_net.re_organize_middle_weights(expand_ratio_stage=0)
    ours.sort_channels(keep=())
    for name, theirs, mine in network_pairs(ofa_net, ours):
        assert torch.equal(theirs, mine), name

    randomise_both(network_pairs(ofa_net, ours), seed=2)
    ofa_net.re_organize_middle_weights(expand_ratio_stage=1)
    ours.sort_channels(keep=(4, 6))
    for n, block in enumerate(ours.blocks, start=1):
        w4 = cast(ElasticMBConv, block).mid_channels(4)
        theirs = ofa_net.blocks[n].conv.point_linear.conv.conv.weight
        mine = cast(ElasticMBConv, block).project_conv.weight
        assert torch.equal(theirs[:, :w4], mine[:, :w4]), n
        # the same columns (ordered by their first entries, distinct in random weights)
        tails = [w[:, w4:, 0, 0] for w in (theirs, mine)]
        assert torch.equal(*(t[:, t[0].argsort()] for t in tails)), n


@pytest.mark.parametrize("se", [False, True])
def test_single_block_equals_ofas_dynamic_layer(se: bool) -> None:
    """One DynamicMBConvLayer on its own, with and without squeeze-excite, both stages."""
    import_ofa()
    from ofa.imagenet_classification.elastic_nn.modules.dynamic_layers import (
        DynamicMBConvLayer,
    )

    theirs = DynamicMBConvLayer(
        [24], [40], kernel_size_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], use_se=se
    ).double()
    mine = ElasticMBConv(
        24, 40, kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), stride=1, act="relu", se=se
    ).double()
    for stage, keep in ((0, ()), (1, (4, 6))):
        randomise_both(block_pairs(theirs, mine), seed=stage)
        theirs.re_organize_middle_weights(expand_ratio_stage=stage)
        mine.sort_channels(keep=keep)
        for name, their_tensor, my_tensor in block_pairs(theirs, mine):
            assert torch.equal(their_tensor, my_tensor), (stage, name)
