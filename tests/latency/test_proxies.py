"""The analytic proxies against the extracted torch model: parameters counted by torch, MACs
counted by forward hooks, and peak activation memory measured from the tensors a real
forward pass creates."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from latency.blocks import subnet_blocks
from latency.proxies import BlockCost, SubnetCosts, block_costs, costs_many, subnet_costs
from once_for_all import MobileNetV3, SearchSpace, Subnet, build_from_config, get_space
from once_for_all.network_config import network_config

# Space -> resolutions its subnets are sampled at: imagenet's smallest keeps the forward cheap.
# ofa-mbv3-w1.2: a space without the feature-mix bias, at another width.
RESOLUTIONS = {"mbv3-tiny": None, "mbv3-imagenet": [128], "ofa-mbv3-w1.2": [128]}
SEEDS = range(20)

# Operators that write a new activation tensor, and those that run fused into the producer
# of their input or in place at inference (batch norm, activations, eval dropout, views).
_COMPUTE = {"conv2d", "linear", "mean", "mul", "add"}
_FOLDED = {"batch_norm", "relu", "hardswish", "hardsigmoid", "dropout", "flatten"}


class _DataflowTracer(TorchFunctionMode):
    """Records, for each operator of a forward pass, which activations it reads and writes,
    and in which block (``block`` is advanced by hooks on the block modules) it ran."""

    def __init__(self, image: Tensor) -> None:
        super().__init__()
        self._root = {id(image): id(image)}  # tensor id -> the activation it holds
        self.sizes = {id(image): image.numel()}
        self.ops: list[tuple[set[int], int]] = []
        self.op_block: list[int] = []
        self.block = 0
        self._keep = [image]  # holding every tensor keeps ids unique for the whole trace

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
    ) -> object:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, Tensor):
            return out
        # Weights and BN statistics never appear in _root: only the image and what it flows into.
        reads = {
            self._root[id(a)]
            for a in (*args, *kwargs.values())
            if isinstance(a, Tensor) and id(a) in self._root
        }
        if not reads:
            return out
        self._keep.append(out)
        name = getattr(func, "__name__", repr(func))
        if name in _COMPUTE:
            self._root[id(out)] = id(out)
            self.sizes[id(out)] = out.numel()
            self.ops.append((reads, id(out)))
            self.op_block.append(self.block)
        elif name in _FOLDED:
            (self._root[id(out)],) = reads
        else:
            raise AssertionError(f"operator {name} is neither traced nor folded; classify it")
        return out

    def live_elements(self) -> list[int]:
        """Per operator, the sum of live activations: a tensor lives from the operator that
        writes it (the image from the start) to the last one that reads it."""
        birth = {t: -1 for t in self.sizes}
        death = dict(birth)
        for i, (reads, written) in enumerate(self.ops):
            birth[written] = death[written] = i
            for t in reads:
                death[t] = i
        return [
            sum(n for t, n in self.sizes.items() if birth[t] <= i <= death[t])
            for i in range(len(self.ops))
        ]


def _measure(model: MobileNetV3, image: Tensor) -> list[tuple[int, int, int]]:
    """Per block of ``subnet_blocks`` (stem with the first block, each MBConv, head): MACs from
    forward hooks on every conv and linear layer, parameters, and the peak of live activation
    elements over the block's operators in one real forward pass."""
    tracer = _DataflowTracer(image)
    first, *rest = model.blocks.children()
    parts: list[list[nn.Module]] = [[model.stem, first], *([block] for block in rest)]
    parts.append([model.final_expand, model.feature_mix, model.classifier])
    macs = [0] * len(parts)

    def enter(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            tracer.block = index

        return hook

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs[tracer.block] += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs[tracer.block] += output.numel() * module.in_features

    handles = [part[0].register_forward_pre_hook(enter(i)) for i, part in enumerate(parts)]
    handles += [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad(), tracer:
            model(image)
    finally:
        for h in handles:
            h.remove()
    live = tracer.live_elements()
    return [
        (
            macs[i],
            sum(p.numel() for m in part for p in m.parameters()),
            max(n for n, b in zip(live, tracer.op_block, strict=True) if b == i),
        )
        for i, part in enumerate(parts)
    ]


def _subnets(name: str, n: int, *, seed: int = 0) -> tuple[SearchSpace, list[Subnet]]:
    space = get_space(name)
    rng = random.Random(seed)
    return space, [space.sample(rng, r=RESOLUTIONS[name]) for _ in range(n)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(RESOLUTIONS))
def test_costs_match_the_torch_model(name: str, seed: int) -> None:
    space = get_space(name)
    subnet = space.sample(random.Random(seed), r=RESOLUTIONS[name])
    torch.manual_seed(seed)
    model = build_from_config(network_config(space, subnet)).eval()
    image = torch.randn(model.input_shape)

    measured = _measure(model, image)
    blocks = [block_costs(spec) for spec in subnet_blocks(space, subnet)]
    assert [(b.macs, b.params, b.peak_activation_bytes // 4) for b in blocks] == measured

    costs = subnet_costs(space, subnet)
    assert costs.params == sum(p.numel() for p in model.parameters())
    assert costs.macs == sum(m for m, _, _ in measured)
    assert costs.peak_activation_bytes == 4 * max(peak for _, _, peak in measured)


@pytest.mark.parametrize("name", sorted(RESOLUTIONS))
def test_costs_many_agrees_with_subnet_costs(name: str) -> None:
    space, subnets = _subnets(name, 20, seed=1)
    subnets += [space.max_subnet(), space.min_subnet()]
    for bpe in (4, 1):
        many = costs_many(space, subnets, bytes_per_element=bpe)
        one = [subnet_costs(space, s, bytes_per_element=bpe) for s in subnets]
        assert set(many) == {"macs", "params", "peak_activation_bytes"}
        for key, values in many.items():
            assert values.dtype == np.int64
            assert values.tolist() == [getattr(c, key) for c in one]


def test_costs_many_handles_no_subnets_and_rejects_a_foreign_space() -> None:
    tiny, imagenet = get_space("mbv3-tiny"), get_space("mbv3-imagenet")
    empty = costs_many(tiny, [])
    assert all(v.shape == (0,) for v in empty.values())
    with pytest.raises(ValueError, match="not"):
        costs_many(tiny, [imagenet.min_subnet()])


def test_block_costs_add_up_to_the_subnet() -> None:
    space, (subnet,) = _subnets("mbv3-tiny", 1)
    blocks = [block_costs(spec) for spec in subnet_blocks(space, subnet)]
    assert all(isinstance(b, BlockCost) for b in blocks)
    assert subnet_costs(space, subnet) == SubnetCosts(
        macs=sum(b.macs for b in blocks),
        params=sum(b.params for b in blocks),
        peak_activation_bytes=max(b.peak_activation_bytes for b in blocks),
    )


@pytest.mark.parametrize("name", sorted(RESOLUTIONS))
def test_costs_grow_with_the_subnet(name: str) -> None:
    space = get_space(name)
    r = space.resolutions[0]
    small, large = space.min_subnet(r=r), space.max_subnet(r=r)
    for key in ("macs", "params", "peak_activation_bytes"):
        assert getattr(subnet_costs(space, small), key) < getattr(subnet_costs(space, large), key)
    # Resolution changes compute and memory, never the weights.
    low, high = (subnet_costs(space, space.max_subnet(r=x)) for x in (r, space.resolutions[-1]))
    assert low.params == high.params
    assert low.macs < high.macs
    assert low.peak_activation_bytes < high.peak_activation_bytes


def test_bytes_per_element_scales_the_peak_and_is_checked() -> None:
    space, (subnet,) = _subnets("mbv3-tiny", 1)
    fp32 = subnet_costs(space, subnet)
    int8 = subnet_costs(space, subnet, bytes_per_element=1)
    assert int8.peak_activation_bytes * 4 == fp32.peak_activation_bytes
    assert (int8.macs, int8.params) == (fp32.macs, fp32.params)
    for bad in (0, -4, 2.5):
        with pytest.raises(ValueError, match="bytes_per_element"):
            subnet_costs(space, subnet, bytes_per_element=bad)  # type: ignore[arg-type]
