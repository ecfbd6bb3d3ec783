"""Analytic cost proxies of a subnet: MACs, parameters and peak activation memory.

Counted from the static network config alone (no model is built), block by block, so a
whole population of subnets costs one table lookup per block (``costs_many``).

MACs are the multiply-accumulates of convolutions and linear layers, counted as thop and
fvcore do: a convolution costs ``Cout * Hout * Wout * (Cin / groups) * k * k``, a linear
layer ``in * out``; biases, batch norm, activations, pooling, the squeeze-excite scale and
the residual add are not counted.

Parameters are what ``model.parameters()`` of the extracted torch model holds: conv
weights (with a bias only where no batch norm follows), batch-norm weight and bias (their
running statistics are buffers, not parameters), squeeze-excite convs with biases, and the
classifier's weight and bias.

Peak activation memory is for inference on one image (batch 1). The network runs as a
sequence of operators: every convolution (with its batch norm and activation fused, as
inference runtimes do), every linear layer, every global average pool, the squeeze-excite
scale and the residual add. Each operator writes a new output tensor, and a tensor is freed
after the last operator that reads it. The memory an operator needs is the sum of the
tensors alive while it runs: its inputs, its output, and the tensors held for a later
operator (an MBConv block's input while the block runs, for its residual add; the
depthwise output while squeeze-excite computes its gate, for the scale). The peak is the
largest of these over all operators, times ``bytes_per_element`` (4 for fp32, 1 for
int8). Weights are not included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latency.blocks import BlockIndex, BlockSpec, enumerate_blocks, subnet_blocks
from once_for_all.head import feature_mix_bias
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

COST_NAMES = ("macs", "params", "peak_activation_bytes")


@dataclass(frozen=True)
class BlockCost:
    """The cost of one block: MACs, parameters, and the peak activation memory its operators
    need (see the module docstring for the definitions)."""

    macs: int
    params: int
    peak_activation_bytes: int


@dataclass(frozen=True)
class SubnetCosts:
    """A subnet's total MACs and parameters, and its peak activation memory (the largest of
    its blocks' peaks: no tensor is held across a block boundary except the block's input)."""

    macs: int
    params: int
    peak_activation_bytes: int


@dataclass(frozen=True)
class _Cost:
    """Costs with the activation peak in elements, so one table serves every element size."""

    macs: int
    params: int
    peak_elements: int


def _out(size: int, stride: int) -> int:
    # Same-padded conv with an odd kernel (padding k // 2), as ConvBNAct builds it.
    return (size - 1) // stride + 1


def _check_bytes(bytes_per_element: int) -> None:
    if isinstance(bytes_per_element, bool) or not isinstance(bytes_per_element, int):
        raise ValueError(f"bytes_per_element={bytes_per_element!r}: give a positive integer")
    if bytes_per_element <= 0:
        raise ValueError(
            f"bytes_per_element={bytes_per_element}: give a positive integer (4 for fp32, 1 for int8)"
        )


def _mbconv_cost(cfg: Mapping[str, Any], size: int) -> _Cost:
    cin, cout, mid = cfg["in_channels"], cfg["out_channels"], cfg["mid_channels"]
    k, se = cfg["kernel_size"], cfg["se_channels"]
    out = _out(size, cfg["stride"])
    x, e, d, y = cin * size * size, mid * size * size, mid * out * out, cout * out * out
    macs = params = 0
    live = []
    # The block input stays alive until the residual add; where it is itself an operator's
    # input it is counted once.
    held = x if cfg["residual"] else 0
    if cfg["expand"]:
        macs += mid * size * size * cin
        params += cin * mid + 2 * mid
        live.append(x + e)
    else:
        e = x  # the depthwise conv reads the block input directly
    macs += d * k * k
    params += mid * k * k + 2 * mid
    live.append(e + d + (held if cfg["expand"] else 0))
    if se:
        macs += 2 * mid * se
        params += 2 * mid * se + se + mid
        # pool, reduce, expand (gate): the depthwise output waits for the scale throughout.
        live += [d + mid + held, d + mid + se + held, d + se + mid + held]
        live.append(2 * d + mid + held)  # scale: input, gate and output
    macs += y * mid
    params += mid * cout + 2 * cout
    live.append(d + y + held)
    if cfg["residual"]:
        live.append(x + 2 * y)  # add: both inputs and the sum
    return _Cost(macs, params, max(live))


def _stem_cost(spec: BlockSpec) -> _Cost:
    stem, first = spec.config["stem"], spec.config["first_block"]
    cin, r = spec.input_shape[0], spec.input_shape[1]
    c, size = stem["out_channels"], _out(r, stem["stride"])
    conv = _Cost(c * size * size * cin * 9, cin * c * 9 + 2 * c, cin * r * r + c * size * size)
    block = _mbconv_cost(first, size)
    return _Cost(
        conv.macs + block.macs,
        conv.params + block.params,
        max(conv.peak_elements, block.peak_elements),
    )


def _head_cost(spec: BlockSpec) -> _Cost:
    cfg = spec.config
    cin, size = spec.input_shape[0], spec.input_shape[1]
    fe, fm, classes = cfg["final_expand"], cfg["feature_mix"], cfg["num_classes"]
    area = size * size
    macs = fe * area * cin + fm * fe + classes * fm
    mix_bias = fm if feature_mix_bias(cfg) else 0
    params = (cin * fe + 2 * fe) + (fe * fm + mix_bias) + (fm * classes + classes)
    # final expand, pool, feature mix, classifier
    live = [cin * area + fe * area, fe * area + fe, fe + fm, fm + classes]
    return _Cost(macs, params, max(live))


def _cost(spec: BlockSpec) -> _Cost:
    if spec.kind == "stem":
        return _stem_cost(spec)
    if spec.kind == "head":
        return _head_cost(spec)
    return _mbconv_cost(spec.config, spec.input_shape[1])


def block_costs(spec: BlockSpec, *, bytes_per_element: int = 4) -> BlockCost:
    """MACs, parameters and peak activation bytes of one block (stem, MBConv or head)."""
    _check_bytes(bytes_per_element)
    c = _cost(spec)
    return BlockCost(c.macs, c.params, c.peak_elements * bytes_per_element)


def subnet_costs(space: SearchSpace, subnet: Subnet, *, bytes_per_element: int = 4) -> SubnetCosts:
    """Total MACs and parameters of ``subnet`` and its peak activation bytes (batch 1)."""
    _check_bytes(bytes_per_element)
    costs = [_cost(spec) for spec in subnet_blocks(space, subnet)]
    return SubnetCosts(
        macs=sum(c.macs for c in costs),
        params=sum(c.params for c in costs),
        peak_activation_bytes=max(c.peak_elements for c in costs) * bytes_per_element,
    )


class _CostTable:
    """Per-block cost arrays of one space, aligned with ``BlockIndex.keys``."""

    def __init__(self, space: SearchSpace) -> None:
        self.index = BlockIndex(space)
        costs = {spec.key: _cost(spec) for spec in enumerate_blocks(space)}
        ordered = [costs[key] for key in self.index.keys]
        # A trailing zero row: the -1 that ``rows`` gives an inactive slot selects it, so
        # skipped blocks add nothing to a sum and never win a max.
        self.macs = np.array([c.macs for c in ordered] + [0], dtype=np.int64)
        self.params = np.array([c.params for c in ordered] + [0], dtype=np.int64)
        self.peak = np.array([c.peak_elements for c in ordered] + [0], dtype=np.int64)


# Keyed by space id (a content hash): building a table walks every block of the space once.
_TABLES: dict[str, _CostTable] = {}


def _table(space: SearchSpace) -> _CostTable:
    table = _TABLES.get(space.id)
    if table is None:
        table = _TABLES[space.id] = _CostTable(space)
    return table


def costs_many(
    space: SearchSpace, subnets: Sequence[Subnet], *, bytes_per_element: int = 4
) -> dict[str, np.ndarray]:
    """``subnet_costs`` for many subnets at once: int64 arrays of length ``len(subnets)``
    under the keys ``macs``, ``params`` and ``peak_activation_bytes``.

    The first call for a space builds its block table (well under a second for
    mbv3-imagenet); later calls only index it.
    """
    _check_bytes(bytes_per_element)
    table = _table(space)
    if not subnets:
        return {name: np.zeros(0, dtype=np.int64) for name in COST_NAMES}
    rows = table.index.rows(subnets)
    return {
        "macs": table.macs[rows].sum(axis=1),
        "params": table.params[rows].sum(axis=1),
        "peak_activation_bytes": table.peak[rows].max(axis=1) * bytes_per_element,
    }
