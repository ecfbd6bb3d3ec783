"""The profile stage: a latency lookup table (``lut.json``) and a calibrated predictor
(``predictor.json``) for one device, or for several devices at once. Rerunning resumes.
A ``published`` device (tables someone else measured, e.g. OFA's Samsung Note10) is not
measured: its tables are imported into the same two files."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from edgenas.console import LineProgress, err_console, stage_progress

if TYPE_CHECKING:
    from latency.fleet import DeviceResult, FleetJob, Profiled, ProfileOptions
    from latency.model_cache import ModelCache
    from once_for_all.progress import Progress
    from once_for_all.search_space import SearchSpace

Say = Callable[[str], None]


def profile(
    device: str,
    space: SearchSpace,
    out: Path,
    options: ProfileOptions,
    *,
    cache: ModelCache,
    quiet: bool = False,
    say: Say = lambda message: None,
) -> Profiled:
    """Profile one device (a bundled profile's name or a profile YAML) into ``out``."""
    from devices import load_profile, open_device
    from latency.blocks import profiled_resolutions
    from latency.fleet import profile_device, profile_published
    from once_for_all.files import output_folder_for_work
    from once_for_all.folder_lock import folder_lock

    profiled_resolutions(space, options.resolutions)  # a bad --resolution leaves no folder
    target = load_profile(device)  # an unknown device too
    # The folder comes before connecting to the device; failed before writing anything
    # (tables missing, device unreachable), a folder this call made is not left behind empty.
    # A table measured in part stays to resume.
    with output_folder_for_work(out), folder_lock(out):
        if target.kind == "published":
            say(f"{target.name}: importing its published tables (nothing is measured)")
            return profile_published(target, space, out, options)
        with (
            open_device(device) as dev,
            stage_progress(dev.name, quiet=quiet) as progress,
        ):
            return profile_device(dev, space, out, options, cache=cache, progress=progress, say=say)


@dataclass(frozen=True)
class FleetOutcome:
    results: list[DeviceResult]  # one per job, in order; failed devices say why
    interrupted: bool  # Ctrl-C stopped the fleet (what was measured is saved)


def profile_many(
    jobs: Sequence[FleetJob], space: SearchSpace, *, cache: ModelCache, quiet: bool = False
) -> FleetOutcome:
    """Profile the jobs' devices at once, one progress bar each. A device that fails does
    not stop the others; Ctrl-C ends the workers after their batch in flight."""
    from once_for_all.files import output_folder
    from once_for_all.folder_lock import folder_lock

    # The folders this call makes, parents included (a run's devices/).
    created = {p for job in jobs for p in (job.out, *job.out.parents) if not p.exists()}
    with ExitStack() as held:
        for job in jobs:
            output_folder(job.out)  # every folder, before any device works
            held.enter_context(folder_lock(job.out))
        outcome = _profile_fleet(jobs, space, cache=cache, quiet=quiet)
        # A device that failed before measuring anything (unreachable, no runtime) leaves no
        # empty folder behind, as a single device's profile does, nor the parents made for
        # it; a table measured in part stays. Under the lock: no other profile writes there.
        failed = [r.out for r in outcome.results if not r.ok and r.out in created]
        parents = {p for out in failed for p in out.parents if p in created}
        for folder in [*failed, *sorted(parents, key=lambda p: len(p.parts), reverse=True)]:
            with suppress(OSError):  # not empty after all: left as it is
                folder.rmdir()
    return outcome


def _profile_fleet(
    jobs: Sequence[FleetJob], space: SearchSpace, *, cache: ModelCache, quiet: bool
) -> FleetOutcome:
    from devices import load_profile
    from latency.fleet import profile_fleet

    stop = threading.Event()
    names = [load_profile(job.device).name for job in jobs]
    with _fleet_progress(names, quiet=quiet) as (progress, finished):
        results = profile_fleet(
            jobs, space, cache=cache, progress=progress, on_done=finished, stop=stop
        )
    return FleetOutcome(results, stop.is_set())


@contextmanager
def _fleet_progress(
    names: list[str], *, quiet: bool
) -> Iterator[tuple[Callable[[str], Progress], Callable[[DeviceResult], None]]]:
    """One bar per device: ``bar(name)`` is the progress of the device ``name`` (its stage
    and how far it is); ``finished`` marks the outcome. Without a terminal (a log file, CI,
    nohup) plain lines per device instead, as ``stage_progress`` prints them: a bar is only
    drawn on a terminal, and a fleet's profiling can take an hour."""
    if not quiet and not err_console.is_terminal:
        lines = {n: LineProgress(f"profile {n}") for n in names}

        def said(result: DeviceResult) -> None:
            outcome = "done" if result.ok else "interrupted" if result.interrupted else "failed"
            err_console.print(f"profile {result.name}: {outcome}", highlight=False, soft_wrap=True)

        yield (lambda name: lines[name]), said
        return
    with RichProgress(
        TextColumn("{task.fields[device]}"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    ) as progress:
        tasks = {n: progress.add_task("queued", total=None, device=escape(n)) for n in names}

        def bar(name: str) -> Progress:
            task = tasks[name]

            def update(stage: str, done: int, total: int) -> None:
                progress.update(task, description=stage, completed=done, total=total or None)

            return update

        def finished(result: DeviceResult) -> None:
            task = tasks[result.name]
            if result.ok:
                progress.update(task, description="[green]done", completed=1, total=1)
            elif result.interrupted:  # "failed" came before the line saying it was Ctrl-C
                progress.update(task, description="[yellow]interrupted", total=1)
            else:
                progress.update(task, description="[red]failed", total=1)
            progress.stop_task(task)

        yield bar, finished
