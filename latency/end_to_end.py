"""End-to-end measurements of whole subnets, kept in a resumable file.

Calibration fits on them and validation compares predictions with them. Each batch is
saved atomically, so a killed run measures only what is missing when rerun. Like table
entries, they are normalised to the table's reference model (``latency.reference``): the
header carries its baseline, so subnets measured later compare with the same machine speed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from devices.atomic_write import write_text_atomic
from devices.base import Device
from devices.measurement import Measurement
from latency.model_cache import ModelCache
from latency.profiler import (
    ProfileSettings,
    ProgressFn,
    apply_reference,
    measure_in_batches,
    reference_file,
)
from latency.reference import Reference, normalised_ms
from latency.table import TableError, TableHeader, read_json
from once_for_all.network_config import network_config
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

# /2 added the reference model (header) and its per-subnet scale; /1 files hold raw timings.
MEASURED_FORMAT = "edgenas.measured-subnets/2"
READABLE_MEASURED_FORMATS = ("edgenas.measured-subnets/1", MEASURED_FORMAT)


def random_subnets(
    space: SearchSpace,
    n: int,
    *,
    seed: int,
    resolutions: Sequence[int] | None = None,
    exclude: Sequence[Subnet] = (),
    extremes: bool = False,
) -> list[Subnet]:
    """``n`` distinct subnets at ``resolutions`` (default: all), the largest and smallest
    first with ``extremes``."""
    rng = random.Random(seed)
    seen = {s.to_json() for s in exclude}
    out: list[Subnet] = []
    rs = tuple(resolutions or space.resolutions)
    candidates = [space.max_subnet(r=rs[-1]), space.min_subnet(r=rs[0])] if extremes else []
    attempts = 0
    while len(out) < n:
        subnet = candidates.pop(0) if candidates else space.sample(rng, r=rs)
        attempts += 1
        if attempts > 100 * n + 100:
            raise ValueError(f"space {space.id} has fewer than {n} distinct subnets to measure")
        key = subnet.to_json()
        if key not in seen:
            seen.add(key)
            out.append(subnet)
    return out


class MeasuredSubnets:
    """Subnet → end-to-end measurement on one device, saved at ``path``.

    ``header`` is the table's (or predictor's): its reference baseline is the one the
    measurements are normalised to."""

    def __init__(self, path: Path, header: TableHeader) -> None:
        self.path, self.header = path, header
        self.results: dict[str, Measurement] = {}
        if path.exists():
            data = read_json(path, what="measured subnets file")
            if data.get("format") not in READABLE_MEASURED_FORMATS:
                raise TableError(
                    f"{path} is not a measured subnets file; delete it or use another folder"
                )
            old = TableHeader.from_dict(data["header"])
            old.check(
                what=f"existing file {path}",
                space_id=header.space_id,
                fingerprint=header.fingerprint,
                model_format=header.model_format,
                precision=header.precision,
                resolutions=header.resolutions,
            )
            self.header = _same_reference(path, old, header)
            for item in data["subnets"]:
                self.results[json.dumps(item["subnet"], sort_keys=True)] = Measurement.from_dict(
                    item["measurement"]
                )

    @staticmethod
    def _key(subnet: Subnet) -> str:
        return json.dumps(subnet.to_dict(), sort_keys=True)

    def get(self, subnet: Subnet) -> Measurement | None:
        """The raw measurement (with its reference scale in ``extra``), if measured."""
        return self.results.get(self._key(subnet))

    def save(self) -> None:
        items: list[dict[str, Any]] = [
            {"subnet": json.loads(k), "measurement": m.to_dict()} for k, m in self.results.items()
        ]
        body = {"format": MEASURED_FORMAT, "header": self.header.to_dict(), "subnets": items}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(body, indent=1) + "\n")

    def measure(
        self,
        device: Device,
        space: SearchSpace,
        subnets: Sequence[Subnet],
        *,
        cache: ModelCache,
        settings: ProfileSettings,
        batch_size: int = 32,
        workers: int = 2,
        progress: ProgressFn | None = None,
    ) -> list[float]:
        """Median latency (ms, normalised to the reference) of each subnet, measuring only
        those not in the file yet."""
        todo = [s for s in subnets if self.get(s) is None]
        configs = [network_config(space, s) for s in todo]
        files = cache.networks(
            configs,
            settings.model_format,
            settings.precision,
            workers=workers,
            progress=(lambda d, t: progress("export", d, t)) if progress else None,
        )

        def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
            self.header, results = apply_reference(self.header, results, ref)
            for subnet, result in zip(todo[start : start + len(results)], results, strict=True):
                self.results[self._key(subnet)] = result
            self.save()

        measure_in_batches(
            device,
            files,
            batch_size=batch_size,
            on_batch=store,
            progress=progress,
            reference=reference_file(cache, space, self.header) if todo else None,
        )
        if not self.path.exists():
            self.save()
        return [normalised_ms(self.results[self._key(s)]) for s in subnets]


def _same_reference(path: Path, stored: TableHeader, wanted: TableHeader) -> TableHeader:
    """The header to continue ``path`` under: ``wanted``, with the stored baseline where
    ``wanted`` has none yet; refuses a file normalised to another reference or baseline."""
    old, new = stored.reference, wanted.reference
    if old is not None and new is not None and new.baseline_ms is None:
        new = Reference(new.subnet, old.baseline_ms, old.baseline_measured)
    if _identity(old) != _identity(new):
        raise TableError(
            f"existing file {path} holds {_describe(old)}, but its table or predictor has "
            f"{_describe(new)}; delete it to measure again"
        )
    return replace(wanted, reference=new)


def _identity(reference: Reference | None) -> tuple[str, float] | None:
    if reference is None or reference.baseline_ms is None:
        return None
    return json.dumps(dict(reference.subnet), sort_keys=True), reference.baseline_ms


def _describe(reference: Reference | None) -> str:
    if reference is None or reference.baseline_ms is None:
        return "raw timings (no reference model)"
    return f"timings normalised to a reference baseline of {reference.baseline_ms:.6g} ms"
