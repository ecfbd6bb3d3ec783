"""End-to-end measurements of whole subnets, kept in a resumable file.

Calibration fits on them and validation compares predictions with them. Each batch is
saved atomically, so a killed run measures only what is missing when rerun.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devices.atomic_write import write_text_atomic
from devices.base import Device
from devices.measurement import Measurement
from latency.model_cache import ModelCache
from latency.profiler import ProfileSettings, ProgressFn, measure_in_batches
from latency.table import TableError, TableHeader, read_json
from once_for_all.network_config import network_config
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

MEASURED_FORMAT = "edgenas.measured-subnets/1"


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
    """Subnet → end-to-end measurement on one device, saved at ``path``."""

    def __init__(self, path: Path, header: TableHeader) -> None:
        self.path, self.header = path, header
        self.results: dict[str, Measurement] = {}
        if path.exists():
            data = read_json(path, what="measured subnets file")
            if data.get("format") != MEASURED_FORMAT:
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
            for item in data["subnets"]:
                self.results[json.dumps(item["subnet"], sort_keys=True)] = Measurement.from_dict(
                    item["measurement"]
                )

    @staticmethod
    def _key(subnet: Subnet) -> str:
        return json.dumps(subnet.to_dict(), sort_keys=True)

    def get(self, subnet: Subnet) -> Measurement | None:
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
        """Median latency (ms) of each subnet, measuring only those not in the file yet."""
        todo = [s for s in subnets if self.get(s) is None]
        configs = [network_config(space, s) for s in todo]
        files = cache.networks(
            configs,
            settings.model_format,
            settings.precision,
            workers=workers,
            progress=(lambda d, t: progress("export", d, t)) if progress else None,
        )

        def store(start: int, results: list[Measurement]) -> None:
            for subnet, result in zip(todo[start : start + len(results)], results, strict=True):
                self.results[self._key(subnet)] = result
            self.save()

        measure_in_batches(device, files, batch_size=batch_size, on_batch=store, progress=progress)
        if not self.path.exists():
            self.save()
        return [self.results[self._key(s)].median_ms for s in subnets]
