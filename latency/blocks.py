"""The distinct building blocks of a search space, each with a readable key.

A subnet is a chain of blocks (stem, the active MBConv blocks, head); its latency in a
lookup table is the sum of its blocks' entries. A block's key says what it computes and on
what shape, e.g. ``mbconv-in:8x8x16-out:8x8x16-k5-e4-s1-se1-hs0-skip1``, so the same key
means the same computation whichever subnet or position it comes from.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from export.formats import AUTO_SPLIT_GROUPS
from once_for_all.network_config import (
    first_block_config,
    head_config,
    network_config,
    slot_config,
)
from once_for_all.search_space import SearchSpace, SpaceError
from once_for_all.subnet import Subnet

BlockKind = Literal["stem", "mbconv", "head"]


@dataclass(frozen=True, eq=False)
class BlockSpec:
    """One block: what it is (``config``, in static_net's terms) and the input it gets.

    ``stem`` covers the stem convolution and the fixed first block; ``head`` covers the final
    expansion, pooling, the feature-mix layer and the classifier.
    """

    kind: BlockKind
    key: str
    input_shape: tuple[int, int, int]  # C, H, W
    output_shape: tuple[int, ...]  # C, H, W (C for the head's logits)
    config: Mapping[str, Any]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockSpec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "config": dict(self.config),
        }


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _shape(c: int, h: int) -> str:
    return f"{h}x{h}x{c}"


# The groups of channels export's "auto" writes an int8 stem in when whole it misses the
# agreement target (export.formats.STEM_GROUPS): int8 tables always time the stem so too.
SPLIT_STEM_GROUPS = AUTO_SPLIT_GROUPS


def stem_channels(space: SearchSpace) -> int:
    """The stem's output channels: the most groups it can be split into."""
    return space.width(space.stem_width)


def check_split_stems(space: SearchSpace, groups: Sequence[int]) -> tuple[int, ...]:
    """``groups`` (numbers of stem groups), sorted, once each, without 1 (the whole stem);
    ``SpaceError`` (a ``ValueError``) names one the stem of ``space`` cannot be split into."""
    channels = stem_channels(space)
    for g in groups:
        if not 1 <= g <= channels:
            most = f"give {channels} or fewer" if g > channels else "give 1 or more"
            raise SpaceError(
                f"stem groups {g}: the stem of space {space.id} has {channels} channels; {most}"
            )
    return tuple(sorted({g for g in groups if g > 1}))


def stem_block(space: SearchSpace, resolution: int, *, groups: int = 1) -> BlockSpec:
    """The stem and the fixed first block; with ``groups`` > 1, written as an int8 file
    writes them when their channels are split into that many groups, each with its own
    scale (``export.stem_split``; the file's groups are by range, of the sizes
    ``quant_aware.group_bounds`` cuts, which is all latency depends on)."""
    stem = {
        "in_channels": space.in_channels,
        "out_channels": stem_channels(space),
        "stride": space.stem_stride,
        "act": space.stem_act,
    }
    first = first_block_config(space)
    size = _out(_out(resolution, space.stem_stride), first["stride"])
    cin, cout = space.in_channels, first["out_channels"]
    key = (
        f"stem-in:{_shape(cin, resolution)}-out:{_shape(cout, size)}"
        f"-c{stem['out_channels']}-s{space.stem_stride}{first['stride']}"
        f"-hs{int(stem['act'] == 'hswish')}{int(first['act'] == 'hswish')}"
    )
    config: dict[str, Any] = {"stem": stem, "first_block": first}
    if groups > 1:
        key += f"-g{groups}"
        config["groups"] = groups
    return BlockSpec("stem", key, (cin, resolution, resolution), (cout, size, size), config)


def mbconv_block(cfg: Mapping[str, Any], size: int) -> BlockSpec:
    """The block of static config ``cfg`` on a ``size`` x ``size`` input."""
    cin, cout, stride = cfg["in_channels"], cfg["out_channels"], cfg["stride"]
    out = _out(size, stride)
    e = cfg["mid_channels"] / cin
    e_text = f"{e:g}" if e != int(e) else str(int(e))
    key = (
        f"mbconv-in:{_shape(cin, size)}-out:{_shape(cout, out)}-k{cfg['kernel_size']}"
        f"-e{e_text}-s{stride}-se{int(cfg['se_channels'] > 0)}"
        f"-hs{int(cfg['act'] == 'hswish')}-skip{int(cfg['residual'])}"
    )
    return BlockSpec("mbconv", key, (cin, size, size), (cout, out, out), dict(cfg))


def head_block(space: SearchSpace, resolution: int) -> BlockSpec:
    size = space.feature_size(resolution)
    head = head_config(space)
    cin, classes = head["in_channels"], head["num_classes"]
    key = f"head-in:{_shape(cin, size)}-out:{classes}-c{head['final_expand']}x{head['feature_mix']}"
    return BlockSpec("head", key, (cin, size, size), (classes,), head)


def slot_input_size(space: SearchSpace, slot: int, resolution: int) -> int:
    """Spatial size of the input of elastic block slot ``slot``."""
    size = _out(_out(resolution, space.stem_stride), space.first_block_stride)
    stage_index, i = divmod(slot, space.max_depth)
    for stage in space.stages[: stage_index + (1 if i > 0 else 0)]:
        size = _out(size, stage.stride)
    return size


def subnet_blocks(space: SearchSpace, subnet: Subnet) -> list[BlockSpec]:
    """The blocks ``subnet`` runs, in order."""
    config = network_config(space, subnet)
    r = subnet.r
    blocks = [stem_block(space, r)]
    size = slot_input_size(space, 0, r)
    for cfg in config["blocks"][1:]:
        blocks.append(mbconv_block(cfg, size))
        size = _out(size, cfg["stride"])
    blocks.append(head_block(space, r))
    return blocks


def _slot_blocks(space: SearchSpace, slot: int, r: int) -> Iterator[tuple[int, int, BlockSpec]]:
    size = slot_input_size(space, slot, r)
    for k in space.kernel_sizes:
        for e in space.expand_ratios:
            yield k, e, mbconv_block(slot_config(space, slot, k, e), size)


def profiled_resolutions(
    space: SearchSpace, resolutions: Sequence[int] | None = None
) -> tuple[int, ...]:
    """``resolutions`` checked against the space (all of the space's when ``None``);
    ``SpaceError`` (a ``ValueError``) names the first that is not."""
    if resolutions is None:
        return space.resolutions
    bad = [r for r in resolutions if r not in space.resolutions]
    if bad or not resolutions:
        raise SpaceError(
            f"resolution {bad[0] if bad else '(none)'} is not in space {space.id}: "
            f"give --resolution among {', '.join(map(str, space.resolutions))}"
        )
    return tuple(sorted(set(resolutions)))


def enumerate_blocks(
    space: SearchSpace,
    *,
    resolutions: Sequence[int] | None = None,
    split_stems: Sequence[int] = (),
) -> list[BlockSpec]:
    """Every distinct block any subnet of ``space`` (at ``resolutions``, default all) can
    run, each once, in a stable order; with ``split_stems`` (int8 tables), also the stem in
    each of those numbers of groups at each resolution, which no subnet needs but an int8
    file may run instead of the whole one (``BlockIndex`` leaves them out)."""
    seen: dict[str, BlockSpec] = {}
    split = check_split_stems(space, split_stems)
    for r in profiled_resolutions(space, resolutions):
        specs = [stem_block(space, r)]
        specs += [stem_block(space, r, groups=g) for g in split]
        for slot in range(space.num_blocks):
            specs += [spec for _, _, spec in _slot_blocks(space, slot, r)]
        specs.append(head_block(space, r))
        for spec in specs:
            seen.setdefault(spec.key, spec)
    return list(seen.values())


def unprofiled_fix(resolution: int, profiled: Sequence[int]) -> str:
    """What to do about a resolution a table of ``profiled`` lacks: profiling into its folder
    again with options that cover both extends it in place."""
    give = " ".join(f"--resolution {r}" for r in sorted({*profiled, resolution}))
    return (
        f"choose a profiled resolution, or profile the device again into the same --out with "
        f"{give} (a recipe: add {resolution} to the device's resolution; the table is "
        f"extended: only what {resolution} adds is measured)"
    )


class BlockIndex:
    """Vectorised map from subnets to the table rows of their blocks.

    ``rows(subnets)`` gives, per subnet, the index (into ``keys``) of its stem, of each slot's
    block (-1 for slots beyond the stage's depth) and of its head: what lets a predictor sum
    10,000 subnets' table entries in milliseconds.
    """

    def __init__(self, space: SearchSpace, *, resolutions: Sequence[int] | None = None) -> None:
        self.space = space
        self.resolutions = profiled_resolutions(space, resolutions)
        self.keys: list[str] = [
            spec.key for spec in enumerate_blocks(space, resolutions=self.resolutions)
        ]
        position = {key: i for i, key in enumerate(self.keys)}
        nr, nb = len(self.resolutions), space.num_blocks
        nk, ne = len(space.kernel_sizes), len(space.expand_ratios)
        self._slot = np.empty((nr, nb, nk, ne), dtype=np.int64)
        self._stem = np.empty(nr, dtype=np.int64)
        self._head = np.empty(nr, dtype=np.int64)
        self._k = {k: i for i, k in enumerate(space.kernel_sizes)}
        self._e = {e: i for i, e in enumerate(space.expand_ratios)}
        self._r = {r: i for i, r in enumerate(self.resolutions)}
        for ri, r in enumerate(self.resolutions):
            self._stem[ri] = position[stem_block(space, r).key]
            self._head[ri] = position[head_block(space, r).key]
            for slot in range(nb):
                for k, e, spec in _slot_blocks(space, slot, r):
                    self._slot[ri, slot, self._k[k], self._e[e]] = position[spec.key]

    @property
    def stem_columns(self) -> np.ndarray:
        """int64 array ``[len(resolutions)]``: the position in ``keys`` of each resolution's
        stem."""
        return self._stem

    @property
    def head_columns(self) -> np.ndarray:
        """int64 array ``[len(resolutions)]``: the position in ``keys`` of each resolution's
        head."""
        return self._head

    @property
    def slot_columns(self) -> np.ndarray:
        """int64 array ``[len(resolutions), num_blocks, kernel sizes, expand ratios]``: the
        position in ``keys`` of each slot's block for each choice."""
        return self._slot

    def resolution_rows(self, subnets: Sequence[Subnet]) -> np.ndarray:
        """int64 array ``[n]``: each subnet's position in ``resolutions`` (call after
        ``rows``, which checks them)."""
        return np.array([self._r[s.r] for s in subnets], dtype=np.int64)

    def rows(self, subnets: Sequence[Subnet]) -> np.ndarray:
        """int64 array ``[n, num_blocks + 2]``: stem, slots (-1 if inactive), head."""
        sp = self.space
        n, nb, depth = len(subnets), sp.num_blocks, sp.max_depth
        for s in subnets:
            if s.space != sp.id:
                raise ValueError(
                    f"subnet is for space {s.space}, not {sp.id}; use a table or predictor "
                    f"built for {s.space}"
                )
        k_map, e_map, r_map = self._k, self._e, self._r
        unprofiled = [s.r for s in subnets if s.r not in r_map]
        if unprofiled:
            fix = unprofiled_fix(unprofiled[0], self.resolutions)
            raise ValueError(
                f"resolution {unprofiled[0]} was not profiled (profiled: "
                f"{', '.join(map(str, self.resolutions))}): {fix}"
            )
        try:
            ki = np.array([[k_map[k] for k in s.ks] for s in subnets], dtype=np.int64)
            ei = np.array([[e_map[e] for e in s.e] for s in subnets], dtype=np.int64)
            ri = np.array([r_map[s.r] for s in subnets], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(
                f"subnet has choice {exc.args[0]} that space {sp.id} does not allow; "
                "check it with SearchSpace.validate"
            ) from None
        d = np.array([s.d for s in subnets], dtype=np.int64).reshape(n, len(sp.stages))
        if n and not np.isin(d, sp.depths).all():
            raise ValueError(
                f"subnet has a depth that space {sp.id} does not allow (allowed "
                f"{', '.join(map(str, sp.depths))}); check it with SearchSpace.validate"
            )
        active = np.arange(depth)[None, None, :] < d[:, :, None]  # [n, stages, depth]
        slots = self._slot[
            ri[:, None], np.arange(nb)[None, :], ki.reshape(n, nb), ei.reshape(n, nb)
        ]
        slots = np.where(active.reshape(n, nb), slots, -1)
        return np.concatenate([self._stem[ri][:, None], slots, self._head[ri][:, None]], axis=1)
