"""A subnet of a search space in OFA's notation: ``{"space", "ks", "e", "d", "r"}``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from once_for_all.errors import EdgenasError

SUBNET_KEYS = ("space", "ks", "e", "d", "r")
# OFA's own arch dict (its ArchManager, EvolutionFinder and tutorial): the resolution as a
# one-element list, the width multiplier (None: the supernet's) and no space.
OFA_ARCH_KEYS = ("ks", "e", "d", "r")
OFA_OPTIONAL_KEYS = ("wid",)


class SubnetError(EdgenasError, ValueError):
    """A subnet that does not fit its search space; the message names the entry and the fix."""


@dataclass(frozen=True)
class Subnet:
    """One architecture: kernel size and expand ratio per block, depth per stage, resolution.

    Entries for blocks beyond a stage's depth are ignored but must still be valid choices.
    Use ``SearchSpace.validate`` (or ``SearchSpace.subnet_from_dict``) to check one.
    """

    space: str
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    def to_dict(self) -> dict[str, object]:
        return {
            "space": self.space,
            "ks": list(self.ks),
            "e": list(self.e),
            "d": list(self.d),
            "r": self.r,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @property
    def key(self) -> str:
        """A short stable string, usable as a cache key or file name."""
        ks = "".join(map(str, self.ks))
        e = "".join(map(str, self.e))
        d = "".join(map(str, self.d))
        return f"r{self.r}-d{d}-k{ks}-e{e}"

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Subnet:
        """Parse the JSON form; checks types only (the space checks values)."""
        if not isinstance(data, Mapping):
            raise SubnetError(f"a subnet must be a JSON object with keys {', '.join(SUBNET_KEYS)}")
        missing = [k for k in SUBNET_KEYS if k not in data]
        if missing:
            raise SubnetError(
                f"subnet is missing {', '.join(missing)}: expected keys {', '.join(SUBNET_KEYS)}"
            )
        unknown = sorted(set(data) - set(SUBNET_KEYS))
        if unknown:
            raise SubnetError(
                f"subnet has unknown key(s) {', '.join(unknown)}: allowed {', '.join(SUBNET_KEYS)}"
            )
        space = data["space"]
        if not isinstance(space, str):
            raise SubnetError(f"subnet 'space' must be a space id string, got {space!r}")
        r = data["r"]
        if not _is_int(r):
            raise SubnetError(f"subnet 'r' must be an integer resolution in pixels, got {r!r}")
        return cls(
            space=space,
            ks=_int_list(data["ks"], "ks"),
            e=_int_list(data["e"], "e"),
            d=_int_list(data["d"], "d"),
            r=int(r),  # type: ignore[call-overload]
        )

    def to_ofa(self) -> dict[str, object]:
        """OFA's arch dict of this subnet, as its ``EvolutionFinder`` returns it and its
        ``AccuracyPredictor`` and ``LatencyTable`` read it."""
        return {
            "wid": None,
            "ks": list(self.ks),
            "e": list(self.e),
            "d": list(self.d),
            "r": [self.r],
        }

    @classmethod
    def from_ofa(cls, data: Mapping[str, object], space: str) -> Subnet:
        """A subnet of ``space`` (its id) from OFA's arch dict (``is_ofa_arch``): ``r`` a
        one-element list or a number, ``wid`` absent or None. Checks types only."""
        allowed = ", ".join(OFA_ARCH_KEYS + OFA_OPTIONAL_KEYS)
        missing = [k for k in OFA_ARCH_KEYS if k not in data]
        if missing:
            raise SubnetError(f"OFA arch dict has no {', '.join(missing)}: expected {allowed}")
        unknown = sorted(set(data) - set(OFA_ARCH_KEYS) - set(OFA_OPTIONAL_KEYS))
        if unknown:
            raise SubnetError(
                f"OFA arch dict has unknown key(s) {', '.join(unknown)}: allowed {allowed}"
            )
        if data.get("wid") is not None:
            raise SubnetError(
                f"OFA arch dict has wid={data['wid']!r}: edgenas spaces have one width (the "
                "supernet's); give wid: null"
            )
        r = data["r"]
        if isinstance(r, Sequence) and not isinstance(r, str) and len(r) == 1:
            r = r[0]
        return cls.from_dict(
            {"space": space, "ks": data["ks"], "e": data["e"], "d": data["d"], "r": r}
        )

    @classmethod
    def from_json(cls, text: str) -> Subnet:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SubnetError(f"subnet is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Subnet:
        """The subnet in a JSON file; every error names the file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise SubnetError(f"cannot read subnet file {p}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SubnetError(f"subnet file {p} is not a text file (not UTF-8)") from None
        try:
            return cls.from_json(text)
        except SubnetError as exc:
            raise SubnetError(f"subnet file {p}: {exc}") from None


def is_ofa_arch(data: object) -> bool:
    """Whether ``data`` looks like OFA's arch dict rather than edgenas's subnet JSON: the
    choices without a space."""
    return isinstance(data, Mapping) and "space" not in data and {"ks", "e", "d"} <= set(data)


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _int_list(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise SubnetError(f"subnet '{name}' must be a list of integers, got {value!r}")
    out = []
    for i, v in enumerate(value):
        if not _is_int(v):
            raise SubnetError(f"{name}[{i}]={v!r}: must be an integer")
        out.append(int(v))
    return tuple(out)
