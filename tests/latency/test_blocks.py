from __future__ import annotations

import itertools
import random
import re

import pytest
import torch
from torch import nn

from latency.block_models import block_input_shape, block_module
from latency.blocks import (
    SPLIT_STEM_GROUPS,
    BlockIndex,
    check_split_stems,
    enumerate_blocks,
    head_block,
    stem_block,
    stem_channels,
    subnet_blocks,
)
from once_for_all import OFAMobileNetV3, get_space, list_spaces
from once_for_all.head import MobileNetV3Head
from once_for_all.network_config import network_config
from once_for_all.search_space import SpaceError
from once_for_all.static_net import build_from_config

KEY = re.compile(
    r"^(stem-in:\d+x\d+x\d+-out:\d+x\d+x\d+-c\d+-s\d+-hs\d+"
    r"|mbconv-in:\d+x\d+x\d+-out:\d+x\d+x\d+-k\d-e[\d.]+-s\d-se[01]-hs[01]-skip[01]"
    r"|head-in:\d+x\d+x\d+-out:\d+-c\d+x\d+)$"
)


@pytest.mark.parametrize("name", list_spaces())
def test_every_block_of_200_random_subnets_is_enumerated(name: str) -> None:
    space = get_space(name)
    specs = enumerate_blocks(space)
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    assert all(KEY.match(k) for k in keys), [k for k in keys if not KEY.match(k)][:3]
    known = set(keys)
    rng = random.Random(0)
    subnets = [space.max_subnet(), space.min_subnet()] + [space.sample(rng) for _ in range(200)]
    used: set[str] = set()
    for subnet in subnets:
        blocks = subnet_blocks(space, subnet)
        assert len(blocks) == 2 + sum(subnet.d)
        used.update(b.key for b in blocks)
    assert used <= known
    # Nothing enumerated that no subnet can use: every mbconv key has a slot and resolution.
    assert {k.split("-", 1)[0] for k in known} == {"stem", "mbconv", "head"}


@pytest.mark.parametrize("name", list_spaces())
def test_block_index_rows_match_subnet_blocks(name: str) -> None:
    space = get_space(name)
    index = BlockIndex(space)
    rng = random.Random(1)
    subnets = [space.sample(rng) for _ in range(100)]
    rows = index.rows(subnets)
    assert rows.shape == (100, space.num_blocks + 2)
    for subnet, row in zip(subnets, rows, strict=True):
        assert [index.keys[i] for i in row if i >= 0] == [
            b.key for b in subnet_blocks(space, subnet)
        ]


def test_block_index_refuses_a_subnet_of_another_space() -> None:
    tiny, big = get_space("mbv3-tiny"), get_space("mbv3-imagenet")
    with pytest.raises(ValueError, match="not mbv3-tiny"):
        BlockIndex(tiny).rows([big.max_subnet()])


def test_chained_block_modules_compute_the_shapes_of_the_network() -> None:
    space = get_space("mbv3-tiny")
    for subnet in (space.max_subnet(), space.min_subnet(), space.sample(random.Random(3))):
        specs = subnet_blocks(space, subnet)
        x = torch.randn(block_input_shape(specs[0]))
        for spec in specs:
            assert tuple(x.shape[1:]) == spec.input_shape
            with torch.no_grad():
                x = block_module(spec)(x)
            assert tuple(x.shape[1:]) == spec.output_shape
        net = build_from_config(network_config(space, subnet)).eval()
        with torch.no_grad():
            assert net(torch.randn(1, 1, subnet.r, subnet.r)).shape == x.shape


def test_block_modules_run_the_same_layers_as_the_network() -> None:
    space = get_space("mbv3-tiny")
    subnet = space.sample(random.Random(5))
    net = build_from_config(network_config(space, subnet))
    blocks = [block_module(s) for s in subnet_blocks(space, subnet)]
    shapes = sorted(tuple(p.shape) for p in net.parameters())
    assert shapes == sorted(tuple(p.shape) for b in blocks for p in b.parameters())


# Saved checkpoints and the import of OFA weights find the head's weights by these names.
HEAD_STATE_KEYS = [
    "final_expand.conv.weight",
    "final_expand.bn.weight",
    "final_expand.bn.bias",
    "final_expand.bn.running_mean",
    "final_expand.bn.running_var",
    "final_expand.bn.num_batches_tracked",
    "feature_mix.conv.weight",
    "feature_mix.conv.bias",
    "classifier.weight",
    "classifier.bias",
]


def _head_layers(model: nn.Module) -> list[tuple[str, str]]:
    body = {"stem", "first_block", "blocks"}
    return [(n, repr(m)) for n, m in model.named_modules() if n and n.split(".")[0] not in body]


@pytest.mark.parametrize("name", list_spaces())
def test_the_head_block_is_the_head_of_the_network_and_of_the_supernet(name: str) -> None:
    # The table must time the head that gets deployed, and that the supernet trains.
    space = get_space(name)
    subnet = space.min_subnet()
    supernet = OFAMobileNetV3(space).eval()
    supernet.set_active(subnet)
    net = supernet.extract(subnet).eval()
    spec = head_block(space, subnet.r)
    head = block_module(spec)
    assert all(isinstance(m, MobileNetV3Head) for m in (head, net, supernet))
    assert _head_layers(head) == _head_layers(net) == _head_layers(supernet)
    # OFA's spaces have no feature-mix bias (their published weights have none).
    expected = [
        k for k in HEAD_STATE_KEYS if space.feature_mix_bias or k != "feature_mix.conv.bias"
    ]
    for model in (head, net, supernet):
        keys = list(model.state_dict())
        assert keys[len(keys) - len(expected) :] == expected

    head.load_state_dict(net.head_state())
    features: list[torch.Tensor] = []
    net.blocks.register_forward_hook(lambda m, i, o: features.append(o))
    x = torch.randn(2, space.in_channels, subnet.r, subnet.r)
    with torch.no_grad():
        logits = net(x)
        assert tuple(features[0].shape[1:]) == spec.input_shape
        torch.testing.assert_close(head(features[0]), logits, rtol=0, atol=0)
        torch.testing.assert_close(supernet(x), logits)


@pytest.mark.parametrize("name", ["mbv3-tiny", "mbv3-imagenet"])
def test_int8_tables_also_enumerate_the_stem_as_a_split_file_runs_it(name: str) -> None:
    from export.stem_split import SplitStemLayers
    from once_for_all.quant_aware import group_bounds

    space = get_space(name)
    whole = enumerate_blocks(space)
    split = [s for s in enumerate_blocks(space, split_stems=(SPLIT_STEM_GROUPS,)) if s not in whole]
    assert [s.key for s in split] == [f"{stem_block(space, r).key}-g2" for r in space.resolutions]
    # No subnet's row reads them: the table's predictor substitutes them (split_stem).
    assert not {s.key for s in split} & set(BlockIndex(space).keys)
    spec = split[0]
    torch.manual_seed(0)
    x = torch.randn(block_input_shape(spec))
    module = block_module(spec)
    assert isinstance(module, SplitStemLayers)
    channels = spec.config["stem"]["out_channels"]
    assert [s.conv.out_channels for s in module.stems] == [
        b - a for a, b in itertools.pairwise(group_bounds(channels, 2))
    ]
    with torch.no_grad():
        # The same function as the whole stem with the same seed, channels in the same order.
        reference = block_module(stem_block(space, spec.input_shape[1]))(x)
        assert torch.allclose(module(x), reference, atol=1e-5, rtol=1e-5)


def test_split_stems_are_checked_against_the_stems_channels() -> None:
    space = get_space("mbv3-tiny")
    channels = stem_channels(space)
    assert check_split_stems(space, [3, 2, 1, 3]) == (2, 3)  # 1 is the whole stem
    keys = [
        s.key
        for s in enumerate_blocks(space, resolutions=[space.resolutions[0]], split_stems=[3, 2])
    ]
    assert [k.rsplit("-", 1)[1] for k in keys if k.startswith("stem") and "-g" in k] == ["g2", "g3"]
    assert check_split_stems(space, [channels]) == (channels,)
    for bad in (channels + 1, 0):
        with pytest.raises(
            SpaceError, match=f"stem groups {bad}: the stem of space .* has {channels} channels"
        ):
            enumerate_blocks(space, split_stems=[bad])
