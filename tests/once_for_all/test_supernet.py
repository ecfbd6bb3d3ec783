"""OFAMobileNetV3: extraction parity in every progressive-shrinking phase, the static network's
config round trip, depth and width slicing, and channel sorting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch import Tensor, nn

from once_for_all import (
    MobileNetV3,
    OFAMobileNetV3,
    SearchSpace,
    Subnet,
    SubnetError,
    build_from_config,
    make_divisible,
)
from once_for_all.elastic_supernet import ElasticMBConv

if TYPE_CHECKING:
    from conftest import SpaceCase

PARITY_ATOL = 1e-5
SEEDS = (0, 1, 2)
# the full phase has one subnet per resolution, so one seed covers it
PHASE_SEEDS = [("full", 0)] + [(p, s) for p in ("kernel", "depth", "expand") for s in SEEDS]


def phase_choices(space: SearchSpace, phase: str) -> dict[str, list[int]]:
    """The restricted choices of a progressive-shrinking phase (as ``SearchSpace.sample`` takes)."""
    ks, e, d = list(space.kernel_sizes), list(space.expand_ratios), list(space.depths)
    return {
        "full": {"ks": ks[-1:], "e": e[-1:], "d": d[-1:]},
        "kernel": {"ks": ks, "e": e[-1:], "d": d[-1:]},
        "depth": {"ks": ks, "e": e[-1:], "d": d},
        "expand": {"ks": ks, "e": e, "d": d},
    }[phase]


def run(net: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out: Tensor = net(x)
    return out


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).detach().abs().max())


def block_params(cin: int, cout: int, mid: int, k: int, se_mid: int, expand: bool) -> int:
    n = (cin * mid + 2 * mid) if expand else 0
    n += mid * k * k + 2 * mid
    if se_mid:
        n += mid * se_mid + se_mid + se_mid * mid + mid
    return n + mid * cout + 2 * cout


def expected_param_count(space: SearchSpace, subnet: Subnet) -> int:
    """Parameters of the static network of ``subnet``, counted from the space by hand."""
    w = space.width
    stem, first = w(space.stem_width), w(space.first_block_width)
    n = space.in_channels * stem * 9 + 2 * stem
    n += block_params(stem, first, stem, 3, 0, expand=False)
    cin = first
    for s, (stage, width) in enumerate(zip(space.stages, space.stage_widths, strict=True)):
        for i in range(subnet.d[s]):
            b = s * space.max_depth + i
            mid = make_divisible(cin * subnet.e[b], 8)
            se_mid = make_divisible(mid // 4, 8) if stage.se else 0
            n += block_params(cin, width, mid, subnet.ks[b], se_mid, expand=True)
            cin = width
    fe, fm = w(space.final_expand_width), space.feature_mix_width
    n += cin * fe + 2 * fe
    n += fe * fm + (
        fm if space.feature_mix_bias else 0
    )  # feature mix: no BN, a bias but in OFA's spaces
    return n + fm * space.num_classes + space.num_classes


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- extraction parity


@pytest.mark.parametrize(("phase", "seed"), PHASE_SEEDS)
def test_extracted_subnet_matches_supernet(
    case: SpaceCase, supernet: OFAMobileNetV3, phase: str, seed: int
) -> None:
    space = case.space
    choices = phase_choices(space, phase)
    subnet = space.sample(seed, r=[case.resolution], **choices)
    assert all(k in choices["ks"] for k in subnet.ks)
    assert all(e in choices["e"] for e in subnet.e)
    assert all(d in choices["d"] for d in subnet.d)
    if phase == "full":
        assert subnet == space.max_subnet(r=case.resolution)

    x = case.inputs(seed)
    supernet.set_active(subnet)
    expected = run(supernet, x)
    model = supernet.extract(subnet)
    assert isinstance(model, MobileNetV3)
    assert not model.training
    got = run(model, x)

    assert got.shape == (case.batch, space.num_classes)
    assert max_diff(got, expected) <= PARITY_ATOL
    # Outputs that depend on the input: a collapsed network would make parity meaningless.
    assert max_diff(expected[0], expected[1]) > 1e-3
    # extract() without an argument takes the active subnet
    assert max_diff(run(supernet.extract(), x), expected) <= PARITY_ATOL


def test_randomised_weights_are_not_defaults(supernet: OFAMobileNetV3) -> None:
    # Guards the parity tests: identity transforms or fresh BN would hide extraction bugs.
    block = supernet.blocks[0]
    assert isinstance(block, ElasticMBConv)
    eye = torch.eye(block.depthwise.transform(7, 5).shape[0])
    assert max_diff(block.depthwise.transform(7, 5), eye) > 0.05
    assert block.depthwise_bn.running_mean is not None
    assert float(block.depthwise_bn.running_mean.abs().max()) > 1e-3
    assert max_diff(block.depthwise_bn.weight, torch.ones_like(block.depthwise_bn.weight)) > 0.05


def test_extract_other_than_active_subnet(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    space = case.space
    small = space.min_subnet(r=case.resolution)
    supernet.set_active(small)
    expected = run(supernet, case.inputs(3))
    supernet.set_active(space.max_subnet(r=case.resolution))
    model = supernet.extract(small)
    assert supernet.active == space.max_subnet(r=case.resolution)
    assert max_diff(run(model, case.inputs(3)), expected) <= PARITY_ATOL


def test_extract_keeps_training_mode(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    supernet.train()
    assert supernet.extract().training
    supernet.eval()
    assert not supernet.extract().training


def test_extracted_model_has_no_elastic_modules(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    for seed in SEEDS:
        model = supernet.extract(case.space.sample(seed, r=[case.resolution]))
        for module in model.modules():
            assert type(module).__module__ not in (
                "once_for_all.elastic_ops",
                "once_for_all.elastic_supernet",
            ), type(module)
            assert type(module).__module__.startswith(
                ("torch.nn.", "once_for_all.static_net", "once_for_all.layers")
            ), type(module)


def test_extracted_weights_are_copies(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    subnet = case.space.max_subnet(r=case.resolution)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    model = supernet.extract(subnet)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.add_(1.0)
    after = supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---- config round trip


def test_config_round_trip(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    x = case.inputs(5)
    for seed in SEEDS[:2]:
        subnet = case.space.sample(seed, r=[case.resolution])
        model = supernet.extract(subnet)
        config = json.loads(json.dumps(model.config))  # JSON-safe
        assert config == model.config
        rebuilt = build_from_config(config, model.state_dict()).eval()
        assert torch.equal(run(rebuilt, x), run(model, x))

    # without weights: the same architecture, freshly initialised on the CPU
    fresh = build_from_config(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == shapes
    assert all(p.device.type == "cpu" for p in fresh.parameters())
    assert torch.isfinite(run(fresh.eval(), x)).all()


def test_config_describes_the_subnet(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    space = case.space
    subnet = space.sample(7, r=[case.resolution])
    model = supernet.extract(subnet)
    config = model.config
    assert config["format"] == "edgenas.mobilenetv3/1"
    assert config["space"] == space.id
    assert config["subnet"] == subnet.to_dict()
    assert config["input"] == {"channels": space.in_channels, "resolution": case.resolution}
    assert model.resolution == case.resolution
    assert model.input_shape == (1, space.in_channels, case.resolution, case.resolution)
    blocks = config["blocks"]
    active = space.active_blocks(subnet)
    assert len(blocks) == 1 + sum(subnet.d) == 1 + len(active)
    assert blocks[0]["expand"] is False
    for cfg, b in zip(blocks[1:], active, strict=True):
        stage = space.stages[space.stage_of(b)]
        first_of_stage = b % space.max_depth == 0
        assert cfg["kernel_size"] == subnet.ks[b]
        assert cfg["mid_channels"] == make_divisible(cfg["in_channels"] * subnet.e[b], 8)
        assert cfg["out_channels"] == space.stage_widths[space.stage_of(b)]
        assert cfg["stride"] == (stage.stride if first_of_stage else 1)
        assert cfg["act"] == stage.act
        assert (cfg["se_channels"] > 0) == stage.se
        assert cfg["residual"] == (cfg["stride"] == 1 and cfg["in_channels"] == cfg["out_channels"])


def test_build_from_config_refuses_other_format(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    config: dict[str, Any] = supernet.extract().config
    config["format"] = "edgenas.mobilenetv3/0"
    with pytest.raises(ValueError, match=r"not a network config: format 'edgenas.mobilenetv3/0'"):
        build_from_config(config)


def test_parameter_count(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    space = case.space
    counts = {}
    subnets = {
        "max": space.max_subnet(r=case.resolution),
        "min": space.min_subnet(r=case.resolution),
        "random": space.sample(11, r=[case.resolution]),
    }
    for name, subnet in subnets.items():
        model = supernet.extract(subnet)
        counts[name] = param_count(model)
        assert counts[name] == expected_param_count(space, subnet), name
    assert counts["min"] < counts["random"] < counts["max"]
    assert counts["max"] < param_count(supernet)


def test_feature_size_matches_the_network(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    seen: list[tuple[int, ...]] = []
    supernet.final_expand.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:])))
    run(supernet, case.inputs(0))
    size = case.space.feature_size(case.resolution)
    assert seen == [(size, size)]


# ---- choosing the active subnet


def test_set_active_refuses_invalid_subnet(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    space = case.space
    before = supernet.active
    bad = Subnet(space.id, (4,) * space.num_blocks, before.e, before.d, before.r)
    with pytest.raises(SubnetError, match=r"^ks\[0\]=4: allowed 3, 5, 7$"):
        supernet.set_active(bad)
    assert supernet.active == before


def test_sample_active(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    space = case.space
    subnet = supernet.sample_active(4, e=[space.expand_ratios[0]], r=[case.resolution])
    assert subnet == space.sample(4, e=[space.expand_ratios[0]], r=[case.resolution])
    assert supernet.active == subnet
    blocks = [b for b in supernet.blocks if isinstance(b, ElasticMBConv)]
    assert [b.active_kernel for b in blocks] == list(subnet.ks)
    assert {b.active_expand for b in blocks} == {space.expand_ratios[0]}


# ---- depth and width slicing


def test_depth_runs_only_the_first_blocks_of_each_stage(
    case: SpaceCase, supernet: OFAMobileNetV3
) -> None:
    space = case.space
    calls = [0] * space.num_blocks
    for i, block in enumerate(supernet.blocks):
        block.register_forward_hook(lambda m, inp, out, i=i: calls.__setitem__(i, calls[i] + 1))
    depths = [space.depths[s % len(space.depths)] for s in range(len(space.stages))]
    depths[0] = 2
    subnet = space.make(ks=7, e=6, d=depths, r=case.resolution)
    supernet.set_active(subnet)
    run(supernet, case.inputs(0))
    for s, d in enumerate(depths):
        stage_calls = calls[s * space.max_depth : (s + 1) * space.max_depth]
        assert stage_calls == [1] * d + [0] * (space.max_depth - d), (s, stage_calls)
    assert [i for i, c in enumerate(calls) if c] == space.active_blocks(subnet)


def test_expand_ratio_slices_weight_prefixes(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    space = case.space
    n = space.num_blocks
    e = [space.expand_ratios[i % len(space.expand_ratios)] for i in range(n)]
    subnet = space.make(ks=space.kernel_sizes[-1], e=e, d=space.max_depth, r=case.resolution)
    model = supernet.extract(subnet)
    static_blocks: Sequence[nn.Module] = list(model.blocks)[1:]
    for b, static in zip(space.active_blocks(subnet), static_blocks, strict=True):
        elastic = supernet.blocks[b]
        assert isinstance(elastic, ElasticMBConv)
        mid = make_divisible(elastic.in_channels * subnet.e[b], 8)
        assert static.cfg["mid_channels"] == mid  # type: ignore[index]
        s = dict(static.named_parameters()) | dict(static.named_buffers())
        assert torch.equal(s["expand.conv.weight"], elastic.expand_conv.weight[:mid])
        assert torch.equal(s["depthwise.conv.weight"], elastic.depthwise.weight[:mid])
        assert torch.equal(s["project.conv.weight"], elastic.project_conv.weight[:, :mid])
        for bn_name, bn in (
            ("expand.bn", elastic.expand_bn),
            ("depthwise.bn", elastic.depthwise_bn),
        ):
            assert bn.running_mean is not None and bn.running_var is not None
            assert torch.equal(s[f"{bn_name}.weight"], bn.weight[:mid])
            assert torch.equal(s[f"{bn_name}.bias"], bn.bias[:mid])
            assert torch.equal(s[f"{bn_name}.running_mean"], bn.running_mean[:mid])
            assert torch.equal(s[f"{bn_name}.running_var"], bn.running_var[:mid])
        if elastic.se is not None:
            se_mid = make_divisible(mid // 4, 8)
            assert torch.equal(s["se.reduce.weight"], elastic.se.reduce.weight[:se_mid, :mid])
            assert torch.equal(s["se.expand.weight"], elastic.se.expand.weight[:mid, :se_mid])
        else:
            assert "se.reduce.weight" not in s


# ---- channel sorting


def importance(block: ElasticMBConv) -> Tensor:
    return block.project_conv.weight.abs().sum(dim=(0, 2, 3))


# The sorts of the two expand phases: expand-1 keeps nothing, expand-2 the e=4 channels.
KEEPS = [(), (4, 6)]


@pytest.mark.parametrize("keep", KEEPS)
def test_sort_channels_keeps_the_full_network(
    case: SpaceCase, supernet: OFAMobileNetV3, keep: tuple[int, ...]
) -> None:
    # float64, so that the changed summation order of permuted channels stays far below 1e-5
    supernet.double()
    space = case.space
    x = case.inputs(1, batch=1).double()
    full = space.max_subnet(r=case.resolution)
    small = space.make(
        ks=space.kernel_sizes[-1], e=space.expand_ratios[0], d=space.max_depth, r=case.resolution
    )
    supernet.set_active(full)
    full_before = run(supernet, x)
    supernet.set_active(small)
    small_before = run(supernet, x)

    supernet.sort_channels(keep=keep)

    supernet.set_active(full)
    assert max_diff(run(supernet, x), full_before) <= PARITY_ATOL
    supernet.set_active(small)
    small_after = run(supernet, x)
    assert max_diff(small_after, small_before) > 1e-3
    # the sorted supernet still extracts faithfully
    assert max_diff(run(supernet.extract(small), x), small_after) <= PARITY_ATOL


def test_sort_channels_orders_by_importance(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    blocks = [b for b in supernet.blocks if isinstance(b, ElasticMBConv)]
    assert not all(bool((importance(b)[:-1] >= importance(b)[1:]).all()) for b in blocks)
    supernet.sort_channels()
    for block in blocks:
        imp = importance(block)
        assert bool((imp[:-1] >= imp[1:]).all())
        if block.se is not None:
            se_imp = block.se.expand.weight.abs().sum(dim=(0, 2, 3))
            assert bool((se_imp[:-1] >= se_imp[1:]).all())
    # sorting sorted channels changes nothing
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    supernet.sort_channels()
    assert all(torch.equal(state[k], v) for k, v in supernet.state_dict().items())


def columns(weight: Tensor) -> Tensor:
    """A projection weight's input columns in a canonical order (by their first entries,
    distinct in random weights): equal for the same set of channels in any order."""
    w = weight.detach()[:, :, 0, 0]
    return w[:, w[0].argsort()]


def test_sort_keeping_e4_keeps_its_channel_set(case: SpaceCase, supernet: OFAMobileNetV3) -> None:
    """expand-2's sort (OFA's stage 1): the e=4 channels stay in front, sorted among
    themselves, and the rest follow, sorted among themselves."""
    blocks = [b for b in supernet.blocks if isinstance(b, ElasticMBConv)]
    before = [b.project_conv.weight.detach().clone() for b in blocks]
    supernet.sort_channels(keep=(4, 6))
    crossed = False
    for block, weight in zip(blocks, before, strict=True):
        w4 = block.mid_channels(4)
        after = block.project_conv.weight
        assert torch.equal(columns(after[:, :w4]), columns(weight[:, :w4]))
        assert torch.equal(columns(after[:, w4:]), columns(weight[:, w4:]))
        imp = importance(block)
        assert bool((imp[: w4 - 1] >= imp[1:w4]).all())
        assert bool((imp[w4:-1] >= imp[w4 + 1 :]).all())
        # a whole sort would have put other channels in front
        whole = weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        crossed |= not torch.equal(columns(weight[:, whole[:w4]]), columns(weight[:, :w4]))
    assert crossed


def test_sort_keeping_e4_keeps_the_e4_block_without_se() -> None:
    """Without squeeze-excite (whose bottleneck is re-sorted, as OFA does) an e=4 block
    computes the same function after expand-2's sort; after a whole sort it does not."""
    torch.manual_seed(0)
    block = ElasticMBConv(
        8, 16, kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), stride=1, act="relu", se=False
    ).double()
    block.eval()
    block.active_expand = 4
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    expected = run(block, x)
    block.sort_channels(keep=(4, 6))
    assert max_diff(run(block, x), expected) <= 1e-12
    block.sort_channels()
    assert max_diff(run(block, x), expected) > 1e-3
