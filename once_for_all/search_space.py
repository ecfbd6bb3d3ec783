"""Search spaces: the MobileNetV3-style stages and the elastic choices of an OFA supernet."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from once_for_all.errors import EdgenasError, one_line
from once_for_all.subnet import Subnet, SubnetError


class SpaceError(EdgenasError, ValueError):
    """An unknown space name, or a space file that cannot be read or does not describe one."""


Activation = Literal["relu", "hswish"]
SPACE_FORMAT = "edgenas.space/1"


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping below 90% (as MobileNet does)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: its blocks share width, activation and squeeze-excite."""

    width: int
    stride: int
    act: Activation
    se: bool


@dataclass(frozen=True)
class SearchSpace:
    """The architecture family of one supernet and the choices a subnet makes in it.

    Layout (OFA MobileNetV3): stem conv → a fixed first MBConv (expand 1, kernel 3) →
    elastic stages of up to ``max(depths)`` MBConv blocks → 1×1 final expand → global pool →
    1×1 feature mix → classifier.
    """

    name: str
    in_channels: int
    num_classes: int
    stem_width: int
    stem_stride: int
    stem_act: Activation
    first_block_width: int
    first_block_act: Activation
    first_block_stride: int
    stages: tuple[StageSpec, ...]
    final_expand_width: int
    feature_mix_width: int
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    depths: tuple[int, ...]
    resolutions: tuple[int, ...]
    width_mult: float = 1.0
    dropout: float = 0.1
    # OFA's feature-mix 1x1 conv has no bias; edgenas's own spaces were made with one.
    feature_mix_bias: bool = True

    def __post_init__(self) -> None:
        # A space file is the user's: a 0, a float or a string here failed deep in a build.
        strides = {
            "stem_stride": self.stem_stride,
            "first_block_stride": self.first_block_stride,
            **{f"stages[{i}].stride": stage.stride for i, stage in enumerate(self.stages)},
        }
        for name, stride in strides.items():
            if not _positive_int(stride):
                raise SpaceError(f"space {self.name!r}: {name}={stride!r}: allowed an integer >= 1")
        for name in _CHOICE_LISTS:
            values = getattr(self, name)
            bad = next((v for v in values if not _positive_int(v)), None)
            if bad is not None:
                raise SpaceError(
                    f"space {self.name!r}: {name} holds {bad!r}: every choice must be an "
                    "integer >= 1"
                )
            if not values or list(values) != sorted(set(values)):
                raise SpaceError(f"space {self.name!r}: {name} must be non-empty, sorted, unique")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise SpaceError(f"space {self.name!r}: kernel sizes must be odd")

    # ---- identity and serialisation

    @cached_property
    def id(self) -> str:
        """Name plus a stable content hash: two spaces with the same id build the same supernet."""
        digest = hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:10]}"

    def _content(self) -> dict[str, object]:
        content = asdict(self)
        # Fields added after the first spaces are left out at their defaults, so the ids of
        # existing spaces (recorded in subnets, tables and checkpoints) do not change.
        if self.feature_mix_bias:
            del content["feature_mix_bias"]
        return content

    def to_dict(self) -> dict[str, object]:
        return {"format": SPACE_FORMAT, "id": self.id, **self._content()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SearchSpace:
        if data.get("format") != SPACE_FORMAT:
            raise SpaceError(
                f"not a search space file: format is {data.get('format')!r}, expected {SPACE_FORMAT!r}"
            )
        body: dict[str, Any] = {k: v for k, v in data.items() if k not in ("format", "id")}
        try:
            body["stages"] = tuple(StageSpec(**s) for s in body["stages"])
            for k in _CHOICE_LISTS:
                body[k] = tuple(body[k])
            space = cls(**body)
        except (KeyError, TypeError) as exc:
            raise SpaceError(
                f"search space description is incomplete or malformed: {exc}"
            ) from None
        if "id" in data and data["id"] != space.id:
            raise SpaceError(
                f"search space {data['id']} does not match its content (id {space.id}); the file was edited"
            )
        return space

    # ---- derived shape

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def num_blocks(self) -> int:
        """Elastic block slots: ``max_depth`` per stage (``ks`` and ``e`` have one entry per slot)."""
        return len(self.stages) * self.max_depth

    def width(self, channels: int) -> int:
        return make_divisible(channels * self.width_mult, 8)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.width(s.width) for s in self.stages)

    def stage_of(self, block: int) -> int:
        return block // self.max_depth

    def active_blocks(self, subnet: Subnet) -> list[int]:
        """Indices of the block slots a subnet uses (the first ``d`` of each stage)."""
        return [s * self.max_depth + i for s, d in enumerate(subnet.d) for i in range(d)]

    def canonical(self, subnet: Subnet) -> Subnet:
        """The same network with the entries of skipped blocks at the first choices: two
        subnets that extract to the same network (and encode alike) have the same one."""
        active = set(self.active_blocks(subnet))
        k0, e0 = self.kernel_sizes[0], self.expand_ratios[0]
        return replace(
            subnet,
            ks=tuple(k if b in active else k0 for b, k in enumerate(subnet.ks)),
            e=tuple(e if b in active else e0 for b, e in enumerate(subnet.e)),
        )

    def feature_size(self, resolution: int) -> int:
        """Spatial size of the final feature map for an input resolution."""
        size = _conv_out(_conv_out(resolution, self.stem_stride), self.first_block_stride)
        for stage in self.stages:
            size = _conv_out(size, stage.stride)
        return size

    # ---- subnets

    def validate(self, subnet: Subnet) -> Subnet:
        """Return ``subnet`` if it belongs to this space, else raise ``SubnetError`` saying why."""
        if subnet.space != self.id:
            raise SubnetError(
                f"subnet is for space {subnet.space!r}, not {self.id!r}: take one made for this supernet"
            )
        checks: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = [
            ("ks", subnet.ks, self.kernel_sizes),
            ("e", subnet.e, self.expand_ratios),
        ]
        for name, values, allowed in checks:
            if len(values) != self.num_blocks:
                raise SubnetError(
                    f"{name} has {len(values)} entries; space {self.id} needs {self.num_blocks} (one per block)"
                )
            _check_choices(name, values, allowed)
        if len(subnet.d) != len(self.stages):
            raise SubnetError(
                f"d has {len(subnet.d)} entries; space {self.id} needs {len(self.stages)} (one per stage)"
            )
        _check_choices("d", subnet.d, self.depths)
        if subnet.r not in self.resolutions:
            raise SubnetError(f"r={subnet.r}: allowed {_fmt(self.resolutions)}")
        return subnet

    def subnet_from_dict(self, data: Mapping[str, object]) -> Subnet:
        return self.validate(Subnet.from_dict(data))

    def make(
        self, *, ks: int | Sequence[int], e: int | Sequence[int], d: int | Sequence[int], r: int
    ) -> Subnet:
        """Build a subnet from scalars (same choice everywhere) or full lists."""
        return self.validate(
            Subnet(
                space=self.id,
                ks=_expand(ks, self.num_blocks),
                e=_expand(e, self.num_blocks),
                d=_expand(d, len(self.stages)),
                r=r,
            )
        )

    def max_subnet(self, *, r: int | None = None) -> Subnet:
        return self.make(
            ks=self.kernel_sizes[-1],
            e=self.expand_ratios[-1],
            d=self.depths[-1],
            r=self.resolutions[-1] if r is None else r,
        )

    def min_subnet(self, *, r: int | None = None) -> Subnet:
        return self.make(
            ks=self.kernel_sizes[0],
            e=self.expand_ratios[0],
            d=self.depths[0],
            r=self.resolutions[0] if r is None else r,
        )

    def sample(
        self,
        rng: random.Random | int,
        *,
        ks: Sequence[int] | None = None,
        e: Sequence[int] | None = None,
        d: Sequence[int] | None = None,
        r: Sequence[int] | None = None,
    ) -> Subnet:
        """A uniformly random subnet; ``ks``/``e``/``d``/``r`` restrict the choices (progressive shrinking)."""
        gen = rng if isinstance(rng, random.Random) else random.Random(rng)
        ks_c = self._subset("ks", ks, self.kernel_sizes)
        e_c = self._subset("e", e, self.expand_ratios)
        d_c = self._subset("d", d, self.depths)
        r_c = self._subset("r", r, self.resolutions)
        return Subnet(
            space=self.id,
            ks=tuple(gen.choice(ks_c) for _ in range(self.num_blocks)),
            e=tuple(gen.choice(e_c) for _ in range(self.num_blocks)),
            d=tuple(gen.choice(d_c) for _ in self.stages),
            r=gen.choice(r_c),
        )

    @staticmethod
    def _subset(
        name: str, chosen: Sequence[int] | None, allowed: tuple[int, ...]
    ) -> tuple[int, ...]:
        if chosen is None:
            return allowed
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise SubnetError(f"{name} choices {list(chosen)}: allowed {_fmt(allowed)}")
        return tuple(chosen)

    # ---- numeric encoding for predictors

    @property
    def encoding_size(self) -> int:
        per_block = len(self.kernel_sizes) + len(self.expand_ratios)
        return self.num_blocks * per_block + len(self.resolutions)

    def encode(self, subnet: Subnet) -> np.ndarray:
        """Fixed-length float32 vector: per block one-hot kernel and expand (zeros when the block
        is skipped), then one-hot resolution."""
        return self.encode_many([subnet])[0]

    def encode_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        nk, ne = len(self.kernel_sizes), len(self.expand_ratios)
        out = np.zeros((len(subnets), self.encoding_size), dtype=np.float32)
        k_index = {k: i for i, k in enumerate(self.kernel_sizes)}
        e_index = {e: i for i, e in enumerate(self.expand_ratios)}
        r_index = {r: i for i, r in enumerate(self.resolutions)}
        base_r = self.num_blocks * (nk + ne)
        for row, subnet in enumerate(subnets):
            for b in self.active_blocks(subnet):
                off = b * (nk + ne)
                out[row, off + k_index[subnet.ks[b]]] = 1.0
                out[row, off + nk + e_index[subnet.e[b]]] = 1.0
            out[row, base_r + r_index[subnet.r]] = 1.0
        return out


_CHOICE_LISTS = ("kernel_sizes", "expand_ratios", "depths", "resolutions")


def _positive_int(value: object) -> bool:
    # bool is an int subclass; true where a count belongs is a mistake, not a 1
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _conv_out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _expand(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (value,) * n


def _fmt(values: Sequence[int]) -> str:
    return ", ".join(map(str, values))


def _check_choices(name: str, values: Sequence[int], allowed: Sequence[int]) -> None:
    for i, v in enumerate(values):
        if v not in allowed:
            raise SubnetError(f"{name}[{i}]={v}: allowed {_fmt(allowed)}")


# ---- built-in spaces (a registry, not an if-ladder)

_BUILTIN: dict[str, Callable[[], SearchSpace]] = {}


def register_space(name: str) -> Callable[[Callable[[], SearchSpace]], Callable[[], SearchSpace]]:
    def deco(fn: Callable[[], SearchSpace]) -> Callable[[], SearchSpace]:
        _BUILTIN[name] = fn
        return fn

    return deco


def list_spaces() -> list[str]:
    return sorted(_BUILTIN)


def get_space(name: str) -> SearchSpace:
    """A built-in space by name, or a space file (``space.json``, as ``to_dict`` writes it:
    a run folder holds one for spaces a recipe adapted to its data)."""
    if name in _BUILTIN:
        return _BUILTIN[name]()
    if name.endswith(".json"):
        path = Path(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            # binary or non-UTF-8 bytes too: the user's file, not a bug
            raise SpaceError(
                f"cannot read search space file {path}: {one_line(exc)}; give a built-in "
                "space name or the space.json of a run folder"
            ) from None
        if not isinstance(data, dict):
            raise SpaceError(f"{path} is not a search space file")
        try:
            return SearchSpace.from_dict(data)
        except ValueError as exc:
            raise SpaceError(f"search space file {path}: {one_line(exc)}") from None
    if Path(name).is_file():
        raise SpaceError(
            f"{name} is not a search space file (a space.json, as a run folder holds): give "
            f"one, or a built-in space: {', '.join(list_spaces())}"
        )
    raise SpaceError(
        f"unknown search space {name!r}: built-in spaces are {', '.join(list_spaces())}, "
        "or give a space file (space.json)"
    )


@register_space("mbv3-imagenet")
def _mbv3_imagenet() -> SearchSpace:
    # OFA's MobileNetV3 w1.0 space (ofa_mbv3_d234_e346_k357_w1.0), 224 px RGB, 1000 classes.
    return SearchSpace(
        name="mbv3-imagenet",
        in_channels=3,
        num_classes=1000,
        stem_width=16,
        stem_stride=2,
        stem_act="hswish",
        first_block_width=16,
        first_block_act="relu",
        first_block_stride=1,
        stages=(
            StageSpec(24, 2, "relu", False),
            StageSpec(40, 2, "relu", True),
            StageSpec(80, 2, "hswish", False),
            StageSpec(112, 1, "hswish", True),
            StageSpec(160, 2, "hswish", True),
        ),
        final_expand_width=960,
        feature_mix_width=1280,
        kernel_sizes=(3, 5, 7),
        expand_ratios=(3, 4, 6),
        depths=(2, 3, 4),
        resolutions=tuple(range(128, 225, 4)),
        dropout=0.1,
    )


def _ofa_mbv3(width_mult: float) -> SearchSpace:
    # OFA's published ImageNet supernets (ofa_mbv3_d234_e346_k357_w1.0 and _w1.2), exactly:
    # the same widths (width_mult scales every stage; feature mix is 1280 x width_mult, rounded
    # as OFA does), no feature-mix bias, and the resolutions OFA trained them at (128-224 px).
    base = _mbv3_imagenet()
    return SearchSpace(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "name": f"ofa-mbv3-w{width_mult}",
            "width_mult": width_mult,
            "feature_mix_width": make_divisible(1280 * width_mult, 8),
            "feature_mix_bias": False,
        }
    )


@register_space("ofa-mbv3-w1.0")
def _ofa_mbv3_w10() -> SearchSpace:
    return _ofa_mbv3(1.0)


@register_space("ofa-mbv3-w1.2")
def _ofa_mbv3_w12() -> SearchSpace:
    return _ofa_mbv3(1.2)


@register_space("mbv3-tiny")
def _mbv3_tiny() -> SearchSpace:
    # The same structure scaled for 28-32 px grayscale images on a 2-core CPU. The stem keeps
    # full resolution (stride 1); the fixed first block downsamples so that no expanded
    # (6x) tensor lives at full resolution, which is what makes a training step cheap.
    return SearchSpace(
        name="mbv3-tiny",
        in_channels=1,
        num_classes=10,
        stem_width=8,
        stem_stride=1,
        stem_act="hswish",
        first_block_width=8,
        first_block_act="relu",
        first_block_stride=2,
        stages=(
            StageSpec(8, 2, "relu", False),
            StageSpec(16, 2, "relu", True),
            StageSpec(24, 2, "hswish", False),
            StageSpec(32, 1, "hswish", True),
        ),
        final_expand_width=192,
        feature_mix_width=256,
        kernel_sizes=(3, 5, 7),
        expand_ratios=(3, 4, 6),
        depths=(2, 3, 4),
        resolutions=(28, 30, 32),
        dropout=0.1,
    )
