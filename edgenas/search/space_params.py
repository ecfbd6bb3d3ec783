"""A subnet as Optuna parameters: one categorical per block slot (kernel and expand ratio
together, e.g. ``"k5-e4"``), one per stage depth, and the resolution.

Every slot is suggested even when its stage is shallower, so every trial has the same
parameters: NSGA-II and TPE's multivariate mode need a fixed space. Kernel and expand ratio
share a parameter because Optuna's cost grows with the parameter count (about 0.2 ms per
parameter per trial), and a block's two choices are one decision anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import CategoricalDistribution

from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet, SubnetError


def block_choice(kernel_size: int, expand_ratio: int) -> str:
    return f"k{kernel_size}-e{expand_ratio}"


def distributions(
    space: SearchSpace, *, resolutions: tuple[int, ...] | None = None
) -> dict[str, CategoricalDistribution]:
    blocks = [block_choice(k, e) for k in space.kernel_sizes for e in space.expand_ratios]
    out: dict[str, CategoricalDistribution] = {
        f"b{b}": CategoricalDistribution(blocks) for b in range(space.num_blocks)
    }
    for s in range(len(space.stages)):
        out[f"d{s}"] = CategoricalDistribution(list(space.depths))
    out["r"] = CategoricalDistribution(list(resolutions or space.resolutions))
    return out


def subnet_from_params(space: SearchSpace, params: Mapping[str, Any]) -> Subnet:
    try:
        blocks = [str(params[f"b{b}"]) for b in range(space.num_blocks)]
        ks = tuple(int(c.split("-")[0][1:]) for c in blocks)
        e = tuple(int(c.split("-")[1][1:]) for c in blocks)
        d = tuple(int(params[f"d{s}"]) for s in range(len(space.stages)))
        r = int(params["r"])
    except (KeyError, IndexError, ValueError) as exc:
        raise SubnetError(
            f"trial parameters do not describe a subnet of {space.id}: {exc}"
        ) from None
    return space.validate(Subnet(space=space.id, ks=ks, e=e, d=d, r=r))


def subnet_params(subnet: Subnet) -> dict[str, Any]:
    """The parameters of ``subnet`` (for ``study.enqueue_trial``)."""
    out: dict[str, Any] = {
        f"b{b}": block_choice(k, e)
        for b, (k, e) in enumerate(zip(subnet.ks, subnet.e, strict=True))
    }
    for s, d in enumerate(subnet.d):
        out[f"d{s}"] = d
    out["r"] = subnet.r
    return out
