"""End-to-end measurements of whole subnets, kept in a resumable file.

Calibration fits on them and validation compares predictions with them. Each batch is
saved atomically, so a killed run measures only what is missing when rerun. Like table
entries, they are normalised to the table's reference model (``latency.reference``): the
header carries its baseline, so subnets measured later compare with the same machine speed.

A timed device is noisy even at one speed: a tiny subnet runs in about 0.1 ms, and a few
percent of noise reorders neighbours. Each subnet is therefore measured in ``passes``
separate device calls (``default_passes``: 3 on timed devices, 1 on the deterministic
simulators), each pass in its own seeded shuffled order so that a subnet's place in a call
biases no pass the same way; its latency is the median of the passes' normalised latencies.
Every pass's measurement is kept in the file, and a killed run keeps the passes it finished.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from devices.base import Device
from devices.measurement import Fingerprint, Measurement
from latency.model_cache import BN_STATISTICS_SINCE, CACHE_VERSION, ModelCache
from latency.profiler import (
    BatchFn,
    ProfileSettings,
    apply_reference,
    measure_in_batches,
    reference_file,
)
from latency.reference import Reference, needs_reference, normalised_ms
from latency.table import TableError, TableHeader
from once_for_all.errors import one_line
from once_for_all.files import read_json, write_text
from once_for_all.network_config import network_config
from once_for_all.progress import Progress
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

# /3 keeps every pass of a subnet; /2 added the reference model (header) and its per-subnet
# scale; /1 files hold raw timings. /1 and /2 files load as one pass per subnet.
MEASURED_FORMAT = "edgenas.measured-subnets/3"
READABLE_MEASURED_FORMATS = (
    "edgenas.measured-subnets/1",
    "edgenas.measured-subnets/2",
    MEASURED_FORMAT,
)


class MeasuredSubnet(TypedDict):
    subnet: dict[str, Any]  # Subnet.to_dict()
    measurement: dict[str, Any]  # Measurement.to_dict() of combine_passes(passes)
    passes: NotRequired[list[dict[str, Any]]]  # every pass, in order (not in /1 and /2)


class MeasuredDocument(TypedDict):
    """A measured subnets file: one device's end-to-end measurements."""

    format: str
    header: dict[str, Any]  # TableHeader.to_dict(): the table's, with its reference
    subnets: list[MeasuredSubnet]
    models: NotRequired[str]  # the model cache's CACHE_VERSION the subnets were written by


def read_measured(path: Path) -> MeasuredDocument:
    """A measured subnets file of any readable format (others raise ``TableError``)."""
    doc = read_json(
        path,
        formats=READABLE_MEASURED_FORMATS,
        what="a measured subnets file",
        fix="delete it or use another folder",
        error=TableError,
    )
    return cast(MeasuredDocument, doc)


def write_measured(path: Path, doc: MeasuredDocument) -> None:
    # Not write_json, which refuses NaN: this file has always kept what a device reported.
    write_text(path, json.dumps(doc, indent=1) + "\n")


PASSES = 3  # passes per subnet on a timed device


def default_passes(fingerprint: Fingerprint) -> int:
    """Passes per subnet: ``PASSES`` on a timed device, 1 on a simulator (deterministic)."""
    return PASSES if needs_reference(fingerprint) else 1


def combine_passes(passes: Sequence[Measurement]) -> Measurement:
    """One subnet's latency from its passes: the pass with the median normalised latency
    (the lower middle one for an even number), with every pass's normalised latency in
    ``extra["passes_ms"]`` when there are several."""
    if not passes:
        raise ValueError("no passes to combine")
    if len(passes) == 1:
        return passes[0]
    middle = sorted(passes, key=normalised_ms)[(len(passes) - 1) // 2]
    return replace(middle, extra={**middle.extra, "passes_ms": [normalised_ms(m) for m in passes]})


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


def table_subnets(
    space: SearchSpace,
    n: int,
    header: TableHeader,
    *,
    seed: int,
    exclude: Sequence[Subnet] = (),
    extremes: bool = False,
) -> list[Subnet]:
    """``n`` subnets (``random_subnets``) per group of ``header``'s resolutions, in the order
    the table got them (``TableHeader.resolution_groups``), each group's drawn apart: a table
    never extended gets the subnets it always got, and an extended one keeps those measured
    for it before and adds ``n`` at the resolutions each extension added."""
    out: list[Subnet] = []
    for group in header.resolution_groups:
        out += random_subnets(
            space, n, seed=seed, resolutions=group, exclude=[*exclude, *out], extremes=extremes
        )
    return out


def _damaged_item(path: Path, at: int, why: str) -> TableError:
    return TableError(f"{path} is damaged (subnets[{at}]: {why}): delete it or use another folder")


def _passes(path: Path, at: int, item: Any) -> list[dict[str, Any]]:
    """Item ``at`` of a measured subnets file's ``subnets``: its passes (one ``measurement``
    in files of format 2), each an object; a damaged item is one line."""
    if not isinstance(item, dict) or not isinstance(item.get("subnet"), dict):
        raise _damaged_item(path, at, "not an object with a subnet")
    passes = item.get("passes") or [item.get("measurement")]
    if not isinstance(passes, list) or not all(isinstance(m, dict) for m in passes):
        raise _damaged_item(path, at, "its passes are not a list of measurements")
    return passes


def _check_models(path: Path, data: MeasuredDocument, header: TableHeader) -> None:
    """int8 TFLite subnets measured with XNNPACK before the model cache set BN statistics
    ran their residual ADDs outside it (``latency.model_cache``): refused rather than mixed
    with subnets measured as export writes them. Other delegates, Vela and other formats
    timed the same graph either way."""
    fp = header.fingerprint
    if (header.model_format, header.precision, fp.runtime, fp.accelerator) != (
        "tflite",
        "int8",
        "tflite",
        "",
    ):
        return
    written = str(data.get("models") or "")
    if written.isdigit() and int(written) >= BN_STATISTICS_SINCE:
        return
    raise TableError(
        f"{path} holds int8 TFLite subnets written before the profiled models had BN "
        f"statistics (model cache {written or f'before {BN_STATISTICS_SINCE}'}): their residual "
        "ADDs ran outside XNNPACK, unlike the files export writes; profile the device again "
        "into a new folder"
    )


class MeasuredSubnets:
    """Subnet → end-to-end measurements (one per pass) on one device, saved at ``path``.

    ``header`` is the table's (or predictor's): its reference baseline is the one the
    measurements are normalised to. A file of fewer resolutions than ``header`` (made before
    its table was extended) goes on under it: its subnets' measurements stay valid."""

    def __init__(self, path: Path, header: TableHeader) -> None:
        self.path, self.header = path, header
        self.results: dict[str, list[Measurement]] = {}
        if path.exists():
            data = read_measured(path)
            try:
                old = TableHeader.from_dict(data["header"])
            except (KeyError, TypeError, ValueError) as exc:  # edited, or cut short
                raise TableError(
                    f"{path} is damaged (its header: {one_line(exc)}): delete it or use "
                    "another folder"
                ) from None
            old.check_same_setup(header, what=f"existing file {path}")
            self.header = _same_reference(path, old, header)
            _check_models(path, data, header)
            subnets = data.get("subnets")
            if not isinstance(subnets, list):
                raise TableError(
                    f"{path} is damaged (subnets is not a list): delete it or use another folder"
                )
            for at, item in enumerate(subnets):
                passes = _passes(path, at, item)
                try:
                    measured = [Measurement.from_dict(m) for m in passes]
                except KeyError as exc:  # edited: one line, not a traceback of the fit
                    raise _damaged_item(path, at, f"a pass has no {exc.args[0]!r}") from None
                except (TypeError, ValueError) as exc:
                    raise _damaged_item(path, at, one_line(exc)) from None
                self.results[json.dumps(item["subnet"], sort_keys=True)] = measured

    @staticmethod
    def _key(subnet: Subnet) -> str:
        return json.dumps(subnet.to_dict(), sort_keys=True)

    def get(self, subnet: Subnet) -> Measurement | None:
        """The subnet's measurement (``combine_passes`` of its passes; raw figures, with the
        reference scale in ``extra``), if measured."""
        passes = self.results.get(self._key(subnet))
        return combine_passes(passes) if passes else None

    def passes(self, subnet: Subnet) -> list[Measurement]:
        """Every pass's raw measurement of ``subnet``, in the order they were measured."""
        return list(self.results.get(self._key(subnet), []))

    @property
    def count(self) -> int:
        """How many distinct subnets the file holds measurements of."""
        return len(self.results)

    def left_out(self, subnets: Sequence[Subnet]) -> int:
        """How many subnets measured here are not among ``subnets``."""
        return len(self.results.keys() - {self._key(s) for s in subnets})

    def missing(self, subnets: Sequence[Subnet], passes: int | None = None) -> list[Subnet]:
        """The distinct ``subnets`` measured in fewer than ``passes`` passes (default:
        ``default_passes`` of the header's device)."""
        wanted = self._wanted(passes)
        seen: set[str] = set()
        out = []
        for subnet in subnets:
            key = self._key(subnet)
            if key not in seen and len(self.results.get(key, [])) < wanted:
                seen.add(key)
                out.append(subnet)
        return out

    def _wanted(self, passes: int | None) -> int:
        if passes is None:
            return default_passes(self.header.fingerprint)
        if passes < 1:
            raise ValueError(f"passes={passes}: measure each subnet in at least 1 pass")
        return passes

    def save(self) -> None:
        items = [
            MeasuredSubnet(
                subnet=json.loads(k),
                measurement=combine_passes(ms).to_dict(),
                passes=[m.to_dict() for m in ms],
            )
            for k, ms in self.results.items()
        ]
        write_measured(
            self.path,
            MeasuredDocument(
                format=MEASURED_FORMAT,
                header=self.header.to_dict(),
                subnets=items,
                models=CACHE_VERSION,
            ),
        )

    def measure(
        self,
        device: Device,
        space: SearchSpace,
        subnets: Sequence[Subnet],
        *,
        cache: ModelCache,
        settings: ProfileSettings,
        passes: int | None = None,
        batch_size: int = 32,
        workers: int = 2,
        progress: Progress | None = None,
        stem_groups: int = 1,
    ) -> list[float]:
        """Latency (ms, normalised to the reference; the median of ``passes`` passes, default
        ``default_passes``) of each subnet, measuring only the passes not in the file yet (a
        subnet with more passes there keeps them all). Pass ``p`` measures, in device calls
        of its own and in an order shuffled with seed ``p``, every subnet that has fewer
        than ``p + 1`` passes. ``stem_groups`` > 1 measures the subnets with their stem split
        (``ModelCache.networks``): keep those in a file of their own, as the file does not
        say which were."""
        wanted = self._wanted(passes)
        todo = self.missing(subnets, wanted)
        configs = [network_config(space, s) for s in todo]
        files = dict(
            zip(
                map(self._key, todo),
                cache.networks(
                    configs,
                    settings.model_format,
                    settings.precision,
                    graph_form=settings.graph_form,
                    align_channels=settings.align_channels,
                    stem_groups=stem_groups,
                    workers=workers,
                    progress=progress,
                ),
                strict=True,
            )
        )
        reference = reference_file(cache, space, self.header) if todo else None
        rounds = [self._round(todo, p) for p in range(wanted)]
        total, done = sum(len(r) for r in rounds), 0
        for round_ in rounds:
            measure_in_batches(
                device,
                [files[self._key(s)] for s in round_],
                batch_size=batch_size,
                on_batch=self._storer(round_),
                progress=_offset(progress, done, total),
                reference=reference,
                cache=cache,
            )
            done += len(round_)
        if not self.path.exists():
            self.save()
        return [normalised_ms(combine_passes(self.results[self._key(s)])) for s in subnets]

    def _storer(self, round_: list[Subnet]) -> BatchFn:
        """Adds a batch of pass results for ``round_``'s subnets and saves the file."""

        def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
            self.header, results = apply_reference(self.header, results, ref)
            for subnet, result in zip(round_[start : start + len(results)], results, strict=True):
                self.results.setdefault(self._key(subnet), []).append(result)
            self.save()

        return store

    def _round(self, todo: Sequence[Subnet], index: int) -> list[Subnet]:
        """Pass ``index``: the subnets of ``todo`` with at most ``index`` passes, shuffled."""
        chosen = [s for s in todo if len(self.results.get(self._key(s), [])) <= index]
        random.Random(index).shuffle(chosen)
        return chosen


def _offset(progress: Progress | None, done: int, total: int) -> Progress | None:
    """``progress`` of one pass's measuring, counted within all passes' ``total``."""
    if progress is None:
        return None
    return lambda stage, d, t: progress(stage, done + d, total)


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
