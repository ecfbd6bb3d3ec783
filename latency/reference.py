"""The reference model: a fixed network measured in every device call, to cancel speed drift.

A shared or thermally limited CPU changes speed over minutes, so a table's blocks, the
calibration subnets and validation subnets measured days later would each see another
machine. Every call to a timed device therefore also measures one fixed subnet of the space
(interleaved with the call's models, so under the same conditions), and each result is
scaled by ``baseline / reference-in-this-call``, the baseline being the reference's latency
in the first call that measured it for the table. Raw figures stay in the measurement;
``extra["reference"]`` records the reference's median in that call and the scale applied.

The reference runs as ``COPIES`` copies spread over the call. Their medians agree when the
machine kept one speed during the call; when they do not, the speed changed mid-call, no
single scale fits all of the call's models, and the call is measured again.
Simulators are deterministic and get no reference.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from devices.measurement import Fingerprint, Measurement
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

# Runtimes that compute latency instead of timing it: the same model gives the same figure.
SIMULATED_RUNTIMES = frozenset({"npu-sim", "vela"})
COPIES = 3
# Copies whose medians differ by more than this (max/min - 1) saw the speed change mid-call;
# on a quiet machine they agree within about 2%.
AGREEMENT = 0.10
RETRIES = 2  # calls measured again at most, when the copies disagree


def needs_reference(fingerprint: Fingerprint) -> bool:
    return fingerprint.runtime not in SIMULATED_RUNTIMES


def reference_subnet(space: SearchSpace, resolutions: Sequence[int]) -> Subnet:
    """The middle choice everywhere, at the middle profiled resolution: a mid-size network
    that runs the same kinds of operators as the blocks and subnets it is measured with."""
    rs = sorted(resolutions)
    return space.make(
        ks=space.kernel_sizes[len(space.kernel_sizes) // 2],
        e=space.expand_ratios[len(space.expand_ratios) // 2],
        d=space.depths[len(space.depths) // 2],
        r=rs[len(rs) // 2],
    )


@dataclass(frozen=True)
class Reference:
    """Which network is the reference, and its median latency (ms) when first measured
    (``None`` until then)."""

    subnet: Mapping[str, Any]
    baseline_ms: float | None = None
    baseline_measured: str | None = None

    def with_baseline(self, measurement: Measurement) -> Reference:
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        return replace(self, baseline_ms=measurement.median_ms, baseline_measured=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subnet": dict(self.subnet),
            "baseline_ms": self.baseline_ms,
            "baseline_measured": self.baseline_measured,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        baseline = None if data.get("baseline_ms") is None else float(data["baseline_ms"])
        if baseline is not None and not (math.isfinite(baseline) and baseline > 0):
            # every time in the file is scaled by it: 0 gave NaN predictions (review)
            raise ValueError(f"reference baseline_ms {baseline:g} is not a time above 0 ms")
        return cls(
            subnet=dict(data["subnet"]),
            baseline_ms=baseline,
            baseline_measured=data.get("baseline_measured"),
        )


def copies_spread(copies: Sequence[Measurement]) -> float:
    """How far the copies' medians disagree: max / min - 1."""
    medians = [c.median_ms for c in copies]
    return max(medians) / min(medians) - 1.0 if min(medians) > 0 else 0.0


def combine_copies(copies: Sequence[Measurement], *, attempts: int) -> Measurement:
    """The reference's measurement in one call: the copy with the middle median, with every
    copy's median, their spread and how many times the call was measured."""
    middle = sorted(copies, key=lambda c: c.median_ms)[len(copies) // 2]
    extra = {
        **middle.extra,
        "copies_ms": [c.median_ms for c in copies],
        "copies_spread": copies_spread(copies),
        "attempts": attempts,
    }
    return replace(middle, extra=extra)


def normalise(measurement: Measurement, reference: Measurement, baseline_ms: float) -> Measurement:
    """``measurement`` (raw figures kept) with the scale to the baseline's conditions."""
    scale = baseline_ms / reference.median_ms if reference.median_ms > 0 else 1.0
    note: dict[str, Any] = {"median_ms": reference.median_ms, "scale": scale}
    for key in ("copies_ms", "copies_spread", "attempts"):
        if key in reference.extra:
            note[key] = reference.extra[key]
    return replace(measurement, extra={**measurement.extra, "reference": note})


def reference_scale(measurement: Measurement) -> float:
    """The factor from raw to normalised latency; 1 where no reference was measured."""
    note = measurement.extra.get("reference")
    return float(note["scale"]) if isinstance(note, Mapping) else 1.0


def normalised_ms(measurement: Measurement) -> float:
    """Median latency in ms at the reference's baseline conditions (raw where none)."""
    return measurement.median_ms * reference_scale(measurement)
