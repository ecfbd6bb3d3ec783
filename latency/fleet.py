"""Profiling one device, or a fleet of them at once: a lookup table and a predictor each.

``profile_device`` is what ``edgenas profile`` does for one device: export the models it
measures (blocks, the reference model, calibration subnets), measure the blocks into
``lut.json``, fit ``predictor.json`` on calibration subnets measured end to end. Every step
saves as it goes, so a rerun skips what is done.

``profile_fleet`` runs it for several devices at once, one worker thread per device; the
work is waiting on SSH and on subprocesses, and threads share one ``ModelCache``. A device
that fails, or goes away mid-run, ends with its error in its ``DeviceResult``; the others go
on, and what the failed one measured stays saved for a rerun.

Two rules keep the devices from getting in each other's way:

- Model export takes one lock: the first worker that needs a block exports it, the next
  finds it in the cache (exports are CPU-heavy and the cache is shared, so never twice).
- Devices that run on this host (``local``, and the ``npu-sim`` and ``vela`` simulators, which
  take host CPU) take turns, and start measuring only once every device's models are
  exported: a local timing never runs beside an export, a simulation or another local
  timing, which would slow it unevenly. Remote devices (``ssh``) measure in parallel at once;
  their host-side work is uploads and waiting, which hardly disturbs a local timing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.base import Device, DeviceError
from devices.profiles import DeviceProfile, load_profile, open_device
from export.formats import ModelFormat, Precision
from latency.blocks import enumerate_blocks, profiled_resolutions
from latency.end_to_end import MeasuredSubnets, random_subnets
from latency.model_cache import ExportFailed, ModelCache
from latency.predictors import CalibratedPredictor, LutSumPredictor
from latency.predictors import calibrate as fit_calibration
from latency.profiler import ProgressFn, open_table, profile_blocks, reference_file, settings_for
from latency.table import LatencyTable, TableError
from once_for_all import SubnetError
from once_for_all.network_config import network_config
from once_for_all.search_space import SearchSpace

# Kinds whose measurements use this host's CPU (see the module docstring).
HOST_KINDS = frozenset({"local", "npu-sim", "vela"})
_INTERRUPTED = "interrupted; run the same command again to resume"
LUT_NAME = "lut.json"
PREDICTOR_NAME = "predictor.json"

# (device name, stage, done, total); stage is e.g. "export blocks", "measure blocks".
FleetProgressFn = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class ProfileOptions:
    """How a device is profiled; ``None`` format/precision: the device's defaults."""

    model_format: ModelFormat | None = None
    precision: Precision | None = None
    calibrate: int = 40  # subnets measured end to end (0: lut-sum only)
    passes: int | None = None  # passes per calibration subnet; None: the device's default
    resolutions: tuple[int, ...] | None = None  # None: all of the space's
    batch_size: int = 32
    workers: int = 2  # processes exporting models


@dataclass(frozen=True)
class Profiled:
    table: LatencyTable
    predictor: LutSumPredictor | CalibratedPredictor


@dataclass(frozen=True)
class FleetJob:
    """One device of a fleet: a bundled profile name or a profile YAML, and its folder."""

    device: str
    out: Path
    options: ProfileOptions = ProfileOptions()


@dataclass(frozen=True)
class DeviceResult:
    """How one device of a fleet ended; ``error`` is ``None`` when it did."""

    device: str  # as given
    name: str  # the profile's device name
    out: Path
    error: str | None = None
    blocks: int = 0  # entries in lut.json (the measured part when it failed)
    total_blocks: int = 0
    kind: str | None = None  # the predictor's kind when it finished
    validation: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "name": self.name,
            "status": "ok" if self.ok else "failed",
            "error": self.error,
            "blocks": self.blocks,
            "total_blocks": self.total_blocks,
            "lut": str(self.out / LUT_NAME),
            "predictor": str(self.out / PREDICTOR_NAME) if self.ok else None,
            "kind": self.kind,
            "validation": self.validation,
            "reference": self.reference,
            "seconds": round(self.seconds, 1),
        }


class Cancelled(Exception):
    """The fleet was asked to stop (Ctrl-C); raised in a worker between two batches."""


def profile_device(
    device: Device,
    space: SearchSpace,
    out: Path,
    options: ProfileOptions,
    *,
    cache: ModelCache,
    progress: ProgressFn | None = None,
    say: Callable[[str], None] | None = None,
    export_lock: AbstractContextManager[Any] | None = None,
    exported: Callable[[], None] | None = None,
    measuring: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Profiled:
    """Profile ``device`` into ``out/lut.json`` and ``out/predictor.json`` (resuming what
    is there). ``export_lock`` is held while exporting models, ``exported()`` is called after,
    and measuring happens inside ``measuring()``: a fleet coordinates its workers with them."""
    fp = device.fingerprint()
    settings = settings_for(
        fp, device.name, model_format=options.model_format, precision=options.precision
    )
    resolutions = profiled_resolutions(space, options.resolutions)
    specs = enumerate_blocks(space, resolutions=resolutions)
    table_path = out / LUT_NAME
    table = open_table(
        table_path,
        space=space,
        device=device.name,
        fingerprint=fp,
        settings=settings,
        resolutions=resolutions,
    )
    if say is not None:
        say(
            f"{space.id}: {len(specs)} distinct blocks to profile on {device.name} "
            f"({fp.runtime}, {settings.model_format} {settings.precision})"
        )
    subnets = (
        random_subnets(space, options.calibrate, seed=0, resolutions=resolutions, extremes=True)
        if options.calibrate
        else []
    )
    calibration = out / "calibration.json"

    def stage(what: str) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda step, done, total: progress(f"{step} {what}", done, total)

    def measuring_stage(what: str) -> ProgressFn | None:
        # Its models are exported by now: the measuring steps' own export check says nothing.
        report = stage(what)
        if report is None:
            return None
        return lambda step, done, total: None if step == "export" else report(step, done, total)

    # Everything is exported before anything is measured (see the module docstring); the
    # measuring steps below then find their models in the cache.
    with export_lock or contextlib.nullcontext():
        todo = [spec for spec in specs if spec.key not in table]
        cache.blocks(
            todo,
            settings.model_format,
            settings.precision,
            workers=options.workers,
            progress=_step(stage("blocks"), "export"),
        )
        done = MeasuredSubnets(calibration, table.header) if subnets else None
        pending = done.missing(subnets, options.passes) if done is not None else []
        cache.networks(
            [network_config(space, s) for s in pending],
            settings.model_format,
            settings.precision,
            workers=options.workers,
            progress=_step(stage("calibration subnets"), "export"),
        )
        if todo or pending:
            reference_file(cache, space, table.header)
    if exported is not None:
        exported()
    with measuring() if measuring is not None else contextlib.nullcontext():
        table = profile_blocks(
            device,
            space,
            table_path,
            cache=cache,
            model_format=settings.model_format,
            precision=settings.precision,
            resolutions=resolutions,
            batch_size=options.batch_size,
            workers=options.workers,
            progress=measuring_stage("blocks"),
        )
        base = LutSumPredictor.from_table(space, table)
        base.save(out / "lut-sum.json")
        predictor: LutSumPredictor | CalibratedPredictor = base
        if subnets:
            store = MeasuredSubnets(calibration, table.header)
            measured = store.measure(
                device,
                space,
                subnets,
                cache=cache,
                settings=settings,
                passes=options.passes,
                batch_size=options.batch_size,
                workers=options.workers,
                progress=measuring_stage("calibration subnets"),
            )
            predictor = fit_calibration(base, subnets, measured)
    predictor.save(out / PREDICTOR_NAME)
    return Profiled(table, predictor)


def _step(progress: ProgressFn | None, step: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(step, done, total)


def check_fleet(jobs: Sequence[FleetJob]) -> list[DeviceProfile]:
    """Each job's device profile; refuses two jobs that would write the same folder.
    Raises ``DeviceError`` for a profile that cannot be loaded (before anything runs)."""
    profiles = [load_profile(job.device) for job in jobs]
    seen: dict[Path, str] = {}
    for job in jobs:
        folder = job.out.resolve()
        if folder in seen:
            raise TableError(
                f"devices {seen[folder]!r} and {job.device!r} would both write {job.out}: "
                "give each device its own profile name"
            )
        seen[folder] = job.device
    return profiles


def profile_fleet(
    jobs: Sequence[FleetJob],
    space: SearchSpace,
    *,
    cache: ModelCache,
    progress: FleetProgressFn | None = None,
    on_done: Callable[[DeviceResult], None] | None = None,
    stop: threading.Event | None = None,
) -> list[DeviceResult]:
    """Profile every job's device at once (one thread each; see the module docstring) and
    return their results in the jobs' order. A device's failure is its result's ``error``;
    only a profile that cannot be loaded, or two devices sharing a folder, raise (before
    anything starts). Setting ``stop`` ends every worker after its batch in flight."""
    profiles = check_fleet(jobs)
    stop = stop or threading.Event()
    export_lock = threading.Lock()
    host_lock = threading.Lock()
    all_exported = threading.Event()
    remaining = [len(jobs)]
    count_lock = threading.Lock()
    results: list[DeviceResult | None] = [None] * len(jobs)

    def arrive() -> None:
        with count_lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_exported.set()

    @contextlib.contextmanager
    def host_turn(name: str) -> Iterator[None]:
        report(name, "waiting for the other devices' exports", 0, 0)
        while not all_exported.wait(0.2):
            _check(stop)
        report(name, "waiting for this host's CPU", 0, 0)
        while not host_lock.acquire(timeout=0.2):
            _check(stop)
        try:
            yield
        finally:
            host_lock.release()

    def report(name: str, stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(name, stage, done, total)

    def work(index: int, job: FleetJob, profile: DeviceProfile) -> None:
        started = time.perf_counter()
        arrived = False

        def exported() -> None:
            nonlocal arrived
            arrived = True
            arrive()

        def on_progress(stage: str, done: int, total: int) -> None:
            _check(stop)
            report(profile.name, stage, done, total)

        result: DeviceResult
        try:
            report(profile.name, "connecting", 0, 0)
            with open_device(job.device) as device:
                profiled = profile_device(
                    device,
                    space,
                    job.out,
                    job.options,
                    cache=cache,
                    progress=on_progress,
                    export_lock=_Interruptible(export_lock, stop),
                    exported=exported,
                    measuring=(lambda: host_turn(profile.name))
                    if profile.kind in HOST_KINDS
                    else None,
                )
            predictor = profiled.predictor
            table = profiled.table
            result = DeviceResult(
                job.device,
                profile.name,
                job.out,
                blocks=len(table),
                total_blocks=_total_blocks(space, job.options),
                kind=predictor.kind,
                validation=dict(getattr(predictor, "validation", {})),
                reference=table.header.reference.to_dict() if table.header.reference else None,
                seconds=time.perf_counter() - started,
            )
        except Exception as exc:  # a worker reports every failure as its device's result
            result = DeviceResult(
                job.device,
                profile.name,
                job.out,
                error=_INTERRUPTED if stop.is_set() else one_line(exc),
                blocks=_saved_blocks(job.out / LUT_NAME),
                total_blocks=_total_blocks(space, job.options),
                seconds=time.perf_counter() - started,
            )
        finally:
            if not arrived:
                arrive()
        results[index] = result
        if on_done is not None:
            on_done(result)

    threads = [
        # Daemon threads: a second Ctrl-C ends the process without waiting for a batch in
        # flight; the tables are written atomically, so nothing is left half-written.
        threading.Thread(target=work, args=(i, job, p), name=f"profile-{p.name}", daemon=True)
        for i, (job, p) in enumerate(zip(jobs, profiles, strict=True))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    return [r for r in results if r is not None]


class _Interruptible:
    """A lock whose waiting ends with ``Cancelled`` once ``stop`` is set."""

    def __init__(self, lock: threading.Lock, stop: threading.Event) -> None:
        self.lock, self.stop = lock, stop

    def __enter__(self) -> None:
        while not self.lock.acquire(timeout=0.2):
            _check(self.stop)

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Cancelled(_INTERRUPTED)


def one_line(exc: BaseException) -> str:
    """An error as one line: our errors' own message, others with their type."""
    known = (DeviceError, TableError, SubnetError, ExportFailed, ValueError, Cancelled)
    text = str(exc).strip() if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _total_blocks(space: SearchSpace, options: ProfileOptions) -> int:
    try:
        resolutions = profiled_resolutions(space, options.resolutions)
    except ValueError:
        return 0
    return len(enumerate_blocks(space, resolutions=resolutions))


def _saved_blocks(path: Path) -> int:
    try:
        return len(LatencyTable.load(path))
    except (OSError, TableError):
        return 0
