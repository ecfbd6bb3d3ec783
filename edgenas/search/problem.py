"""What a search optimises: accuracy up, latency on each device down, under budgets."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from latency.predictors import LatencyPredictor
from latency.proxies import costs_many
from latency.table import TableError
from once_for_all.errors import EdgenasError
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

AccuracyFn = Callable[[Sequence[Subnet]], np.ndarray]
ExtraObjective = Literal["params", "macs", "peak_activation_bytes"]
Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class DeviceTarget:
    """A device's latency predictor and, optionally, its hard latency budget.

    ``tighter_budgets_ms`` are further budgets below ``budget_ms`` (OFA's tutorial asks for
    15, 18, 23 and 32 ms on one phone): the search constrains trials by ``budget_ms`` alone,
    and a subnet is chosen off the front for each budget."""

    name: str
    predictor: LatencyPredictor
    budget_ms: float | None = None
    tighter_budgets_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.tighter_budgets_ms and (
            self.budget_ms is None or max(self.tighter_budgets_ms) >= self.budget_ms
        ):
            raise ValueError("tighter_budgets_ms must lie below budget_ms")

    @property
    def budgets_ms(self) -> tuple[float, ...]:
        """Every budget of the device, ascending (empty without one)."""
        if self.budget_ms is None:
            return ()
        return (*sorted(self.tighter_budgets_ms), self.budget_ms)


class AccuracyError(EdgenasError, ValueError):
    """An accuracy source that gave no accuracy (NaN, infinite) for a subnet."""


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    latency_ms: dict[str, float]
    costs: dict[str, float]
    violations: dict[str, float]  # device -> latency - budget (> 0: over budget)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())


@dataclass(frozen=True)
class SearchProblem:
    space: SearchSpace
    accuracy: AccuracyFn
    devices: tuple[DeviceTarget, ...]
    extra: tuple[ExtraObjective, ...] = field(default=())
    # The resolutions the accuracy source can score (None: all of the space's); OFA's
    # published predictor encodes 112-224 px in steps of 16 only.
    accuracy_resolutions: tuple[int, ...] | None = None
    accuracy_name: str = "the accuracy source"
    # What the accuracy and the latencies come from, by content (``supernet``, ``predictors``,
    # ``accuracy``): part of a stored study's identity, so that it is continued only on them.
    sources: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for device in self.devices:
            if device.predictor.space.id != self.space.id:
                raise TableError(
                    f"the latency predictor of {device.name} is for space "
                    f"{device.predictor.space.id}, not {self.space.id}; profile the device "
                    "for this supernet's space"
                )

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Resolutions every device's predictor covers (a table may profile a subset) and
        the accuracy source can score."""
        allowed = set(self.space.resolutions)
        for d in self.devices:
            allowed &= set(d.predictor.header.resolutions)
        if not allowed:
            raise TableError(
                "the devices' latency tables share no input resolution; profile them with a "
                "common --resolution"
            )
        if self.accuracy_resolutions is not None:
            tables = allowed
            allowed &= set(self.accuracy_resolutions)
            if not allowed:
                raise TableError(
                    f"{self.accuracy_name} scores {_ints(self.accuracy_resolutions)} px only, "
                    f"and the devices' tables cover {_ints(sorted(tables))}: profile them "
                    "with --resolution set to one of the former"
                )
        return tuple(sorted(allowed))

    @property
    def objective_names(self) -> list[str]:
        return ["accuracy", *(f"latency_ms:{d.name}" for d in self.devices), *self.extra]

    @property
    def directions(self) -> list[Direction]:
        down: list[Direction] = ["minimize"] * (len(self.devices) + len(self.extra))
        return ["maximize", *down]

    def evaluate_many(self, subnets: Sequence[Subnet]) -> list[Evaluation]:
        acc = self.accuracy(subnets)
        for subnet, value in zip(subnets, acc, strict=True):
            if not math.isfinite(float(value)):
                # Optuna fails such a trial, and the search asked for the same ones for ever.
                raise AccuracyError(
                    f"{self.accuracy_name} gave {float(value)} for subnet {subnet.key}, not an "
                    "accuracy: check its file (a damaged predictor gives NaN) or the weights "
                    "it reads"
                )
        lat = {d.name: d.predictor.predict_many(subnets) for d in self.devices}
        costs = costs_many(self.space, subnets) if self.extra else {}
        out = []
        for i in range(len(subnets)):
            latency = {name: float(v[i]) for name, v in lat.items()}
            out.append(
                Evaluation(
                    accuracy=float(acc[i]),
                    latency_ms=latency,
                    costs={k: float(costs[k][i]) for k in self.extra},
                    violations={
                        d.name: latency[d.name] - d.budget_ms
                        for d in self.devices
                        if d.budget_ms is not None
                    },
                )
            )
        return out

    def values(self, ev: Evaluation) -> list[float]:
        return [ev.accuracy, *(ev.latency_ms[d.name] for d in self.devices)] + [
            ev.costs[k] for k in self.extra
        ]

    def fastest(self, device: DeviceTarget) -> tuple[Subnet, float]:
        """The subnet with the lowest latency on ``device`` at the resolutions searched, and
        that latency, exactly (``LatencyPredictor.lowest``): what decides that a budget is
        unreachable, and what the message quotes."""
        return min(
            (device.predictor.lowest(r) for r in self.resolutions), key=lambda found: found[1]
        )


def _at(values: tuple[int, ...], index: int, value: int) -> tuple[int, ...]:
    return (*values[:index], value, *values[index + 1 :])


def _ints(values: Sequence[int]) -> str:
    return ", ".join(map(str, values))
