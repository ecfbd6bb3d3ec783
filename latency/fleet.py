"""Profiling one device, or a fleet of them at once: a lookup table and a predictor each.

``profile_device`` is what ``edgenas profile`` does for one device: export the models it
measures (blocks, the reference model, calibration subnets), measure the blocks into
``lut.json``, fit ``predictor.json`` on calibration subnets measured end to end. Every step
saves as it goes, so a rerun skips what is done.

``profile_fleet`` runs it for several devices at once on a thread pool, one worker per
device; the work is waiting on SSH and on subprocesses, and threads share one
``ModelCache``. A device that fails, or goes away mid-run, ends with its error in its
``DeviceResult``; the others go on, and what the failed one measured stays saved for a rerun.
A fleet runs each device's two steps (export its models, then measure them) in turns that
keep the devices from getting in each other's way:

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
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.base import Device, DeviceError
from devices.profiles import DeviceProfile, load_profile, open_device
from export.formats import ModelFormat, Precision
from latency.blocks import BlockSpec, enumerate_blocks, profiled_resolutions
from latency.end_to_end import MeasuredSubnets, table_subnets
from latency.model_cache import ExportFailed, ModelCache
from latency.predictors import CalibratedPredictor, LutSumPredictor, read_predictor
from latency.predictors import calibrate as fit_calibration
from latency.profile_files import LUT_NAME, PREDICTOR_NAME
from latency.profiler import (
    ProfileSettings,
    blocks_to_measure,
    check_per_op,
    open_table,
    profile_blocks,
    profiled_blocks,
    reference_file,
    settings_for,
    split_stems,
    with_table_stems,
)
from latency.published import import_published, not_published, published_refusal
from latency.table import LatencyTable, TableError, TableHeader
from once_for_all import SubnetError
from once_for_all.errors import one_line
from once_for_all.network_config import network_config
from once_for_all.progress import Progress
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

# Kinds whose measurements use this host's CPU (see the module docstring).
HOST_KINDS = frozenset({"local", "npu-sim", "vela"})
_INTERRUPTED = "interrupted; run the same command again to resume"
_POLL_S = 0.2  # how often a waiting worker looks whether it should stop


@dataclass(frozen=True)
class ProfileOptions:
    """How a device is profiled; ``None`` format/precision: the device's defaults."""

    model_format: ModelFormat | None = None
    precision: Precision | None = None
    calibrate: int = 40  # subnets measured end to end (0: lut-sum only)
    passes: int | None = None  # passes per calibration subnet; None: the device's default
    # None: all of the space's; more than an existing table's extend it in place
    resolutions: tuple[int, ...] | None = None
    batch_size: int = 32
    workers: int = 2  # processes exporting models
    tables: Path | None = None  # the folder of a published device's tables (kind published)
    per_op: bool = False  # also store each block's per-op times in the table
    # an int8 table also times the stem in these numbers of groups, besides export's auto
    # split (latency.profiler.settings_for); fp32 tables have no split stems
    stem_groups: tuple[int, ...] = ()


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

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C (or SIGTERM), not failed: what it measured is saved."""
        return self.error == _INTERRUPTED

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
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> Profiled:
    """Profile ``device`` into ``out/lut.json`` and ``out/predictor.json`` (resuming what
    is there, and extending a table of fewer resolutions than ``options`` asks: only the
    blocks and calibration subnets the new ones add are measured, and the predictor is
    fitted on the earlier subnets and the new): export every model it measures, then
    measure them. Progress stages are ``"export blocks"``, ``"measure blocks"`` and the
    same for ``"calibration subnets"``."""
    plan = _plan(device, space, out, options, say=say)
    _export(plan, cache, progress)
    return _measure(plan, cache, progress)


def profile_published(
    profile: DeviceProfile, space: SearchSpace, out: Path, options: ProfileOptions
) -> Profiled:
    """A ``published`` device's "profile": its tables (``options.tables``) imported into
    ``out/lut.json`` and a lut-sum ``out/predictor.json``; nothing is measured, so there is
    nothing to calibrate."""
    if options.per_op:
        raise TableError(
            f"device {profile.name!r} is published tables, imported as they are: they hold no "
            "per-op times; leave out --per-op (per_op in a recipe) for it"
        )
    asked = not_published(options.precision, options.model_format)
    if asked or options.stem_groups:
        raise TableError(
            published_refusal(
                profile.name,
                asked[1] if asked else "a split stem",
                "leave out --precision/--format/--stem-groups for it",
            )
        )
    imported = import_published(
        profile, space, options.tables, out, resolutions=options.resolutions
    )
    return Profiled(imported.table, imported.predictor)


@dataclass(frozen=True)
class _Plan:
    """What profiling one device takes, worked out from its fingerprint: ``profile_device``
    carries it out in two steps, ``_export`` then ``_measure``, and a fleet runs each step
    in its turn."""

    device: Device
    space: SearchSpace
    out: Path
    options: ProfileOptions
    settings: ProfileSettings
    resolutions: tuple[int, ...]
    specs: list[BlockSpec]
    table: LatencyTable  # as found in ``out``: what is measured already
    subnets: list[Subnet]  # to measure end to end for calibration

    @property
    def calibration(self) -> Path:
        return self.out / "calibration.json"


def _plan(
    device: Device,
    space: SearchSpace,
    out: Path,
    options: ProfileOptions,
    *,
    say: Callable[[str], None] | None = None,
) -> _Plan:
    fp = device.fingerprint()
    if options.per_op:
        check_per_op(device, fp)  # before anything is exported for it
    settings = settings_for(
        fp,
        device.name,
        model_format=options.model_format,
        precision=options.precision,
        stem_groups=options.stem_groups,
    )
    resolutions = profiled_resolutions(space, options.resolutions)
    table = open_table(
        out / LUT_NAME,
        space=space,
        device=device.name,
        fingerprint=fp,
        settings=settings,
        resolutions=resolutions,
        measured_with=device.measured_with(),
    )
    _check_predictor_file(out / PREDICTOR_NAME, table.header)
    settings = with_table_stems(settings, space, table)
    specs = profiled_blocks(space, resolutions, settings)
    if say is not None:
        say(
            f"{space.id}: {len(specs)} distinct blocks to profile on {device.name} "
            f"({fp.runtime}, {settings.model_format} {settings.precision})"
        )
    # An extended table keeps its calibration subnets and adds some at the new resolutions.
    subnets = (
        table_subnets(space, options.calibrate, table.header, seed=0, extremes=True)
        if options.calibrate
        else []
    )
    plan = _Plan(device, space, out, options, settings, resolutions, specs, table, subnets)
    _check_keeps_calibration(plan)
    return plan


def _check_predictor_file(path: Path, header: TableHeader) -> None:
    """A predictor.json of another device or setup in the output folder is refused as its
    lut.json would be: profile would replace it. One that does not read as a predictor
    (damaged, cut short) is rewritten, as its refusal elsewhere says."""
    if not path.exists():
        return
    try:
        old = TableHeader.from_dict(read_predictor(path)["header"])
    except (TableError, KeyError, TypeError, ValueError):
        return
    old.check_same_setup(header, what=f"existing predictor {path}")


def _check_keeps_calibration(plan: _Plan) -> None:
    """A rerun asking fewer calibration subnets than its folder holds measured would refit
    the predictor on fewer of them (``--calibrate 0``: fit the lut-sum one), and a rerun is
    taken to resume: refused, as other changed settings are, naming the --calibrate that
    keeps them (a larger one's subnets begin with a smaller one's, per resolution group)."""
    if not plan.calibration.exists():
        return
    store = MeasuredSubnets(plan.calibration, plan.table.header)
    left_out = store.left_out(plan.subnets)
    if not left_out:
        return
    calibrate = plan.options.calibrate
    refit = (
        "fit a lut-sum predictor without them"
        if calibrate == 0
        else f"leave {left_out} of them out of the predictor's fit"
    )
    keeps = next(
        (
            n
            for n in range(calibrate + 1, store.count + 1)
            if not store.left_out(
                table_subnets(plan.space, n, plan.table.header, seed=0, extremes=True)
            )
        ),
        None,
    )
    give = f"--calibrate {keeps} (or more)" if keeps else "the --calibrate it was profiled with"
    raise TableError(
        f"{plan.calibration} holds {store.count} calibration subnets measured before, and "
        f"--calibrate {calibrate} (calibrate in a recipe) would {refit}: give {give} to "
        "resume, or use another output folder"
    )


def _export(plan: _Plan, cache: ModelCache, progress: Progress | None) -> None:
    """Export every model ``plan`` measures that the cache lacks: blocks not in the table,
    calibration subnets not measured yet, and the reference model."""
    settings, table = plan.settings, plan.table
    todo = blocks_to_measure(plan.specs, table, per_op=plan.options.per_op)
    cache.blocks(
        todo,
        settings.model_format,
        settings.precision,
        graph_form=settings.graph_form,
        align_channels=settings.align_channels,
        workers=plan.options.workers,
        progress=_stage(progress, "blocks"),
    )
    done = MeasuredSubnets(plan.calibration, table.header) if plan.subnets else None
    pending = done.missing(plan.subnets, plan.options.passes) if done is not None else []
    cache.networks(
        [network_config(plan.space, s) for s in pending],
        settings.model_format,
        settings.precision,
        graph_form=settings.graph_form,
        align_channels=settings.align_channels,
        workers=plan.options.workers,
        progress=_stage(progress, "calibration subnets"),
    )
    if todo or pending:
        reference_file(cache, plan.space, table.header)


def _measure(plan: _Plan, cache: ModelCache, progress: Progress | None) -> Profiled:
    """Measure ``plan``'s blocks and calibration subnets (their models are exported by now)
    and fit the predictor."""
    options, settings = plan.options, plan.settings
    table = profile_blocks(
        plan.device,
        plan.space,
        plan.out / LUT_NAME,
        cache=cache,
        model_format=settings.model_format,
        precision=settings.precision,
        resolutions=plan.resolutions,
        batch_size=options.batch_size,
        workers=options.workers,
        per_op=options.per_op,
        stem_groups=options.stem_groups,
        progress=_measuring_stage(progress, "blocks"),
    )
    base = LutSumPredictor.from_table(plan.space, table)
    base.save(plan.out / "lut-sum.json")
    predictor: LutSumPredictor | CalibratedPredictor = base
    if plan.subnets:
        store = MeasuredSubnets(plan.calibration, table.header)
        measured = store.measure(
            plan.device,
            plan.space,
            plan.subnets,
            cache=cache,
            settings=settings,
            passes=options.passes,
            batch_size=options.batch_size,
            workers=options.workers,
            progress=_measuring_stage(progress, "calibration subnets"),
        )
        predictor = fit_calibration(base, plan.subnets, measured)
    predictor.save(plan.out / PREDICTOR_NAME)
    return Profiled(table, predictor)


def _stage(progress: Progress | None, what: str) -> Progress | None:
    """``progress`` with ``what`` after each stage's name: "export" → "export blocks"."""
    if progress is None:
        return None
    return lambda step, done, total: progress(f"{step} {what}", done, total)


def _measuring_stage(progress: Progress | None, what: str) -> Progress | None:
    # Its models are exported by now: the measuring steps' own export check says nothing.
    report = _stage(progress, what)
    if report is None:
        return None
    return lambda step, done, total: None if step == "export" else report(step, done, total)


def check_fleet(jobs: Sequence[FleetJob]) -> list[DeviceProfile]:
    """Each job's device profile; refuses two jobs that would write the same folder.
    Raises ``DeviceError`` for a profile that cannot be loaded, or whose settings are wrong,
    before anything runs. A simulated NPU's array is read when the device is built: it was
    found after the other devices had been profiled. What only the environment decides (a
    tool not installed, a board that does not answer) stays each device's own failure, and
    the others finish."""
    profiles = [load_profile(job.device) for job in jobs]
    for job, profile in zip(jobs, profiles, strict=True):
        if profile.kind == "npu-sim":  # building it reads its settings, and nothing else
            open_device(job.device)
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
    progress: Callable[[str], Progress] | None = None,
    on_done: Callable[[DeviceResult], None] | None = None,
    stop: threading.Event | None = None,
) -> list[DeviceResult]:
    """Profile every job's device at once (one worker thread each; see the module docstring)
    and return their results in the jobs' order. ``progress(name)`` gives the progress
    callback of the device with that profile name; ``on_done`` is called, from the device's
    worker, as each device ends. A device's failure is its result's ``error``; only a
    profile that cannot be loaded or whose settings are wrong, or two devices sharing a
    folder, raise (before anything starts: ``check_fleet``). Ctrl-C, or setting ``stop``,
    ends every worker after its batch in flight (its result's error then says to rerun); the
    function still returns every result."""
    profiles = check_fleet(jobs)
    stop = stop or threading.Event()
    turns = _Turns(len(jobs), stop)

    def work(index: int, job: FleetJob, profile: DeviceProfile) -> DeviceResult:
        report = progress(profile.name) if progress is not None else _silent
        result = _profile_job(index, job, profile, space, cache=cache, turns=turns, report=report)
        if on_done is not None:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(len(jobs), 1), thread_name_prefix="profile") as pool:
        futures = [
            pool.submit(work, i, job, p)
            for i, (job, p) in enumerate(zip(jobs, profiles, strict=True))
        ]
        try:
            wait(futures)
        except KeyboardInterrupt:
            # The workers see ``stop`` at their next progress report or turn, after the
            # batch in flight: the tables are saved per batch, so a rerun resumes there.
            stop.set()
            wait(futures)
    return [future.result() for future in futures]


def _profile_job(
    index: int,
    job: FleetJob,
    profile: DeviceProfile,
    space: SearchSpace,
    *,
    cache: ModelCache,
    turns: _Turns,
    report: Progress,
) -> DeviceResult:
    """One fleet worker: profile ``job``'s device in the fleet's turns; every failure,
    Ctrl-C included, ends up as the result's ``error``."""
    started = time.perf_counter()

    def checked(stage: str, done: int, total: int) -> None:
        turns.check()  # between two batches: where a worker stops on Ctrl-C
        report(stage, done, total)

    try:
        if profile.kind == "published":
            turns.exported(index)  # nothing to export or measure
            report("importing tables", 0, 0)
            profiled = profile_published(profile, space, job.out, job.options)
        else:
            report("connecting", 0, 0)
            with open_device(job.device) as device:
                plan = _plan(device, space, job.out, job.options)
                with turns.exporting():
                    _export(plan, cache, checked)
                turns.exported(index)
                host = profile.kind in HOST_KINDS
                with turns.measuring(report) if host else contextlib.nullcontext():
                    profiled = _measure(plan, cache, checked)
    except Exception as exc:  # a worker reports every failure as its device's result
        saved = _saved_table(job.out / LUT_NAME)
        return DeviceResult(
            job.device,
            profile.name,
            job.out,
            error=_INTERRUPTED if turns.stop.is_set() else _error_text(exc),
            blocks=len(saved) if saved is not None else 0,
            # at least what it holds: an earlier --stem-groups' split stems are more
            total_blocks=max(
                len(saved) if saved is not None else 0,
                _total_blocks(
                    space,
                    job.options,
                    saved.header.precision if saved is not None else job.options.precision,
                ),
            ),
            seconds=time.perf_counter() - started,
        )
    finally:
        turns.exported(index)  # a device that failed exports nothing more either
    predictor, table = profiled.predictor, profiled.table
    return DeviceResult(
        job.device,
        profile.name,
        job.out,
        blocks=len(table),
        # Complete: every block it holds, with the split stems of an earlier --stem-groups
        # (counting what these options ask gave 80 of 78) and a published table's own.
        total_blocks=len(table),
        kind=predictor.kind,
        validation=dict(getattr(predictor, "validation", {})),
        reference=table.header.reference.to_dict() if table.header.reference else None,
        seconds=time.perf_counter() - started,
    )


class _Turns:
    """The fleet's two rules (see the module docstring) as turns its workers take. Every
    wait ends in ``Cancelled`` once ``stop`` is set."""

    def __init__(self, devices: int, stop: threading.Event) -> None:
        self.stop = stop
        self._export = threading.Lock()
        self._host = threading.Lock()
        self._exporting = set(range(devices))  # the devices that may still export
        self._exported = threading.Condition()

    def check(self) -> None:
        if self.stop.is_set():
            raise Cancelled(_INTERRUPTED)

    def exporting(self) -> AbstractContextManager[None]:
        """One device exports at a time: the first that needs a model exports it and the
        next finds it in the shared cache, so no export runs twice or beside another."""
        return self._hold(self._export)

    def exported(self, device: int) -> None:
        """Device number ``device`` exports nothing more (it is done, or failed)."""
        with self._exported:
            self._exporting.discard(device)
            self._exported.notify_all()

    @contextmanager
    def measuring(self, report: Progress) -> Iterator[None]:
        """A host device's turn to measure: once no device is left to export, one host
        device at a time, so that a timing here runs beside no export, simulation or other
        timing on this host's CPU."""
        report("waiting for the other devices' exports", 0, 0)
        with self._exported:
            while not self._exported.wait_for(lambda: not self._exporting, timeout=_POLL_S):
                self.check()
        report("waiting for this host's CPU", 0, 0)
        with self._hold(self._host):
            yield

    @contextmanager
    def _hold(self, lock: threading.Lock) -> Iterator[None]:
        # Waits in short steps: ``stop`` is an Event that no lock wait can also wait on.
        while not lock.acquire(timeout=_POLL_S):
            self.check()
        try:
            yield
        finally:
            lock.release()


def _silent(stage: str, done: int, total: int, /) -> None:
    return None


def _error_text(exc: BaseException) -> str:
    """A device's failure as one line: our errors' own message (whole: it says what to do),
    others with their type."""
    known = (DeviceError, TableError, SubnetError, ExportFailed, ValueError, Cancelled)
    if isinstance(exc, known):
        return one_line(exc, limit=1000)
    return f"{type(exc).__name__}: {one_line(exc)}" if str(exc).strip() else type(exc).__name__


def _total_blocks(space: SearchSpace, options: ProfileOptions, precision: Precision | None) -> int:
    """The blocks a complete table holds (an int8 one also its split stems)."""
    split = split_stems(precision, options.stem_groups)
    try:
        resolutions = profiled_resolutions(space, options.resolutions)
        return len(enumerate_blocks(space, resolutions=resolutions, split_stems=split))
    except ValueError:
        return 0


def _saved_table(path: Path) -> LatencyTable | None:
    try:
        return LatencyTable.load(path)
    except (OSError, TableError):
        return None
