"""`edgenas run RECIPE`: train → profile → search → export into one run folder.

``run.json`` records the recipe, the package versions, and each stage's inputs and outputs
with their SHA-256. A stage whose recorded inputs are the current ones and whose outputs are
still there, unchanged, is skipped; a stage whose inputs changed starts afresh; a stage that
was killed resumes (training from its checkpoint, profiling from its table, the search from
its study). Stages run the same code as the single commands (`edgenas train`, `profile`,
`search`, `export`).

Here are the checks made before any work, the stages in order and each stage's runner; the
run folder's bookkeeping is ``edgenas.run_folder``'s, what each stage is made from
``edgenas.stage_inputs``'s, and the summary ``edgenas.run_summary``'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from edgenas.recipe import DeviceSection, Recipe, RecipeError, load_recipe
from edgenas.report import REPORT_NAME, build_report
from edgenas.run_folder import (
    Log,
    RunFolder,
    RunOptions,
    adopt_inputs,
    needs_run,
    with_dependents,
)
from edgenas.run_layout import LOG_NAME, RECORD_NAME, SPACE_NAME, RunLayout
from edgenas.run_record import SUMMARY_NAME, RunSummary, write_summary
from edgenas.run_summary import build_summary
from edgenas.stage_inputs import (
    SUPERNET_INPUTS,
    adopt_data_fingerprint,
    adopt_data_path,
    adopt_folder_digest,
    adopt_moved_files,
    device_name,
    held_out_fingerprint,
    more_resolutions,
    only_trials_changed,
    profile_inputs,
    search_outputs,
    stage_data,
    timed_stem_groups,
    train_inputs,
    training_continues,
    upstream_inputs,
)
from edgenas.stages import StageName
from latency.profile_files import LUT_NAME, PREDICTOR_NAME
from once_for_all.errors import EdgenasError, Interrupted, one_line
from once_for_all.files import file_sha256, output_folder_for_work
from once_for_all.folder_lock import folder_lock


def run_recipe(recipe_path: Path, options: RunOptions, console: Console) -> RunSummary:
    """Do the recipe's stages and return the summary (also the end of ``run.log``). A new run
    that fails before any stage made something leaves no folder."""
    recipe = load_recipe(recipe_path)
    unplanned = [s for s in options.force if s not in recipe.planned_stages]
    if unplanned:  # it did nothing, and the user would think it redid the stage
        raise RecipeError(
            f"--force {unplanned[0]}: recipe {recipe.name!r} has no {unplanned[0]} stage (its "
            f"stages: {', '.join(recipe.planned_stages)}); force one of those, or add "
            f"{unplanned[0]} to the recipe's 'stages'"
        )
    root = options.out or Path("runs") / recipe.name
    run = RunFolder(root, recipe, recipe_path)
    if not root.exists():  # an existing run's run.log records them (_run_stages checks again)
        _check_recipe(recipe)
    options = dataclasses.replace(options, force=with_dependents(options.force))
    # Created before any stage works; refused by what only work finds (data that does not
    # fit, a board that does not answer) or stopped before a first epoch, a new run's folder
    # goes with the record of nothing.
    with output_folder_for_work(root, records=_BOOKKEEPING), folder_lock(root):
        return _run_stages(recipe, recipe_path, run, options, console)


# What a run folder holds before any stage made something: its record, its log, and the space
# file training writes before its first epoch. Anything else (a checkpoint, a partial table,
# a study) is work a rerun resumes.
_BOOKKEEPING = frozenset({RECORD_NAME, LOG_NAME, SPACE_NAME})


def _check_recipe(recipe: Recipe) -> None:
    """What the recipe asks that cannot be done, found without any work, so that a new run
    refused for it leaves no folder (it was left with a run.json and run.log)."""
    if "export" in recipe.planned_stages:
        recipe.check_export()
    if "search" in recipe.planned_stages:
        recipe.check_search()
    _check_device_names(recipe)  # an unknown or invalid profile fails there
    if "profile" in recipe.planned_stages:
        for at, section in enumerate(recipe.devices):
            _check_device_entry(recipe, at, section)


def _check_device_names(recipe: Recipe) -> None:
    """Two device entries whose profiles have one name would share a device folder, a
    budget and a card entry (the profile stage found it after training): refused first."""
    from devices.base import DeviceError

    seen: dict[str, int] = {}
    for at, section in enumerate(recipe.devices):
        try:
            name = device_name(section.name)
        except DeviceError as exc:  # an unknown or invalid profile: named by its key
            given = Path(section.name).expanduser()
            relative = given.suffix in (".yaml", ".yml") and not given.is_absolute()
            relative = relative and not given.exists()
            where = f" (a relative path is read from where edgenas runs: {Path.cwd()})"
            raise RecipeError(
                f"recipe {recipe.name!r}: devices[{at}].name: {exc}" + (where if relative else "")
            ) from None
        if name in seen:
            raise RecipeError(
                f"recipe {recipe.name!r}: devices[{seen[name]}] ({recipe.devices[seen[name]].name}) "
                f"and devices[{at}] ({section.name}) are both device {name!r}: name each device "
                "once, and give each profile its own name"
            )
        seen[name] = at


def _check_device_entry(recipe: Recipe, at: int, section: DeviceSection) -> None:
    """What the profile stage would refuse in recipe device entry ``at`` (its resolutions,
    its published tables), before training rather than after it, naming the recipe's key."""
    from devices.profiles import load_profile

    space = recipe.search_space()
    key = f"recipe {recipe.name!r}: devices[{at}]"
    bad = [r for r in section.resolution or [] if r not in space.resolutions]
    if bad:
        raise RecipeError(
            f"{key}.resolution: {bad[0]} is not a resolution of space {space.name}: give "
            f"resolutions among {', '.join(map(str, space.resolutions))}, or leave it out for all"
        )
    profile = load_profile(section.name)
    if profile.kind != "published":
        from devices import open_device
        from latency.profiler import unmeasured

        open_device(section.name)  # its kind's settings (an NPU's array) are checked when built
        refused = unmeasured(profile.name, profile.files_runtime, section.format, section.precision)
        if refused is not None:  # the profile stage's refusal, after the training
            setting, why, instead = refused
            raise RecipeError(f"{key}.{setting}: {why}: give {instead} or leave it out")
    if profile.kind == "local" and profile.local is not None and profile.local.python:
        from devices.local import interpreter_problem

        problem = interpreter_problem(profile.local.python)
        if problem:  # found now, not when profiling starts after the training
            raise RecipeError(f"{key}: device {profile.name!r}: {problem}")
    published = profile.published
    if profile.kind != "published" or published is None:
        if section.tables is not None:
            raise RecipeError(
                f"{key}.tables: device {profile.name!r} is measured, not imported: tables is "
                "for a published device's tables (e.g. samsung-note10); leave it out"
            )
        return
    source = f"{published.files.format(r='R')} from {published.url}"
    if section.tables is None:
        raise RecipeError(
            f"{key}.tables: device {profile.name!r} is published tables: give the folder "
            f"holding them (download {source})"
        )
    if not Path(section.tables).is_dir():
        raise RecipeError(
            f"{key}.tables: {section.tables} is not a folder: give the folder holding {source}"
        )
    if section.per_op:
        raise RecipeError(
            f"{key}.per_op: device {profile.name!r} is published tables, imported as they are: "
            "they hold no per-op times; leave per_op out"
        )
    from latency.published import not_published, published_refusal

    # Taken and ignored before (the command line refuses them): nothing is measured there.
    if "calibrate" in section.model_fields_set:
        raise RecipeError(
            f"{key}.calibrate: device {profile.name!r} is published tables, imported as they "
            "are, and nothing is measured to calibrate with; leave calibrate out"
        )
    asked = not_published(section.precision, section.format)
    if asked:
        field_name, given = asked
        raise RecipeError(
            f"{key}.{field_name}: "
            + published_refusal(profile.name, given, f"leave {field_name} out")
        )


def _run_stages(
    recipe: Recipe, recipe_path: Path, run: RunFolder, options: RunOptions, console: Console
) -> RunSummary:
    root = run.root
    log_file = run.layout.log

    def log(message: str, /, *, echo: bool = True) -> None:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        with log_file.open("a") as f:
            f.write(f"{stamp} {message}\n")
        if echo and not options.quiet:
            console.print(
                f"[bold cyan]run:[/bold cyan] {escape(message)}", highlight=False, soft_wrap=True
            )

    def warn(line: str) -> None:
        # What a stage says the user should know (a device given a file not of its form):
        # said even with --quiet, as `edgenas export` says it.
        log(f"warning: {line}", echo=False)
        console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)

    def report_warning(line: str, exc: BaseException) -> None:
        # A part of the report not drawn: a file edited out of shape, or a bug in the page,
        # whose traceback run.log keeps. Said even with --quiet: it is not progress.
        trace = "".join(traceback.format_exception(exc)).rstrip()
        log(f"report: {line}\n{trace}", echo=False)
        console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)

    stages = recipe.planned_stages
    log(f"recipe {recipe_path} → {root}: stages {', '.join(stages)}")
    # Every stage computes on the same number of threads, whichever stages this process
    # runs: float sums (export's fine-tuning) depend on it, and a resumed run that skips
    # training must export what an uninterrupted one does (training set it for what followed).
    threads = options.threads or (recipe.train.threads if recipe.train is not None else None)
    if threads is not None:
        import torch  # here: the command's other paths need no torch

        torch.set_num_threads(threads)
    if "export" in stages:
        with _logged("export", log, checking=True):
            recipe.check_export()
    if "search" in stages:
        with _logged("search", log, checking=True):
            recipe.check_search()
    with _logged("profile", log, checking=True):
        _check_devices(recipe, run, options, log)
    if "export" in stages:
        with _logged("export", log, checking=True):  # its profiles load, checked just now
            _check_export_devices(recipe)
    if "search" in stages:
        with _logged("search", log, checking=True):
            _check_reachable_budgets(recipe, run, options)
    with _logged("recipe", log, checking=True):  # before any stage: no stage's failure
        _check_sources(recipe)
        _check_upstream(recipe, run.layout)
    trained_from: dict[str, Any] = {}
    if "train" in stages:
        with _logged("train", log, checking=True):
            trained_from = train_inputs(recipe)  # once: a folder's digest stats every image
            _check_retraining(recipe, run, options, trained_from)
    # Only now the recipe goes into run.json: a refused one wrote itself over a good run's.
    run.save()
    if "train" in stages:
        with _logged("train", log, forced="train" in options.force):
            _train(recipe, run, options, console, log, trained_from)
    supernet = run.layout.supernet
    # Profiling times blocks, not the supernet: a recipe that only profiles needs none, nor
    # does a search that OFA's accuracy predictor scores.
    if _reads_supernet(recipe, stages) and not supernet.is_file():
        with _logged("recipe", log, checking=True):  # no stage failed: none trains
            raise RecipeError(
                f"{supernet} does not exist: add 'train' to the recipe's stages (or run "
                f"'edgenas train {recipe_path} --out {root}', or import OFA's with "
                f"'edgenas import ofa-supernet FILE --out {root}')"
            )
    if "profile" in stages:
        with _logged("profile", log, forced="profile" in options.force):
            _profile(recipe, run, options, log)
    elif {"search", "export"} & set(stages):
        with _logged("profile", log):
            _refit_recorded(recipe, run, log)
    if "search" in stages:
        with _logged("search", log, forced="search" in options.force):
            _search(recipe, run, options, log)
    exported: list[dict[str, Any]] = []
    if "export" in stages:
        with _logged("export", log, forced="export" in options.force):
            exported = _export(recipe, run, options, log, warn)
    with _logged("report", log):
        summary = build_summary(recipe, run, exported)
        summary["report"] = str(root / REPORT_NAME)
        write_summary(root / SUMMARY_NAME, summary)
        try:
            build_report(root, warn=report_warning)  # reads summary.json
        except BaseException:
            # Beside an older report (or none), the summary would look current.
            for name in (SUMMARY_NAME, REPORT_NAME):
                with suppress(OSError):  # a folder in the report's way stays: it is named
                    (root / name).unlink(missing_ok=True)
            raise
    done = f"{len(exported)} subnet(s) exported" if "export" in stages else "no export stage"
    log(f"done: {done}; summary in {root / SUMMARY_NAME}, report in {summary['report']}")
    return summary


@contextmanager
def _logged(
    stage: str, log: Log, *, checking: bool = False, forced: bool = False
) -> Iterator[None]:
    """Write a stage's failure to ``run.log`` before it propagates: the user's error as its
    one line, which the command line prints after the stage's name (but for ``checking``,
    the recipe's checks before any stage runs), a bug with its traceback (the terminal shows
    it too). Ctrl-C becomes the one line naming the stage, which the command line prints
    even with --quiet."""
    try:
        yield
    except EdgenasError as exc:
        log(f"{stage} failed: {exc}", echo=False)  # the command line prints its one line
        if not checking:
            exc.stage = stage
        raise
    except KeyboardInterrupt:
        # The same command with --force would start the stage over, not resume it.
        again = "the same command without --force" if forced else "the same command again"
        log(f"{stage} interrupted: run {again} to resume", echo=False)
        raise Interrupted(
            f"interrupted in the {stage} stage: finished work is saved; run {again} to resume"
        ) from None
    except Exception as exc:
        log(
            f"{stage} failed with an unexpected error ({type(exc).__name__}: {one_line(exc)}):\n"
            + "".join(traceback.format_exception(exc)).rstrip()
        )
        raise


def _adopt_train_records(recipe: Recipe, run: RunFolder, inputs: dict[str, Any], log: Log) -> None:
    """Old train records that describe today's inputs take them (stage_inputs' adopt_*)."""
    adopt_folder_digest(run, "train", inputs, Path(recipe.data.source).expanduser())
    adopt_data_fingerprint(run, inputs)
    adopt_moved_files(run, inputs, log)


def _train(
    recipe: Recipe,
    run: RunFolder,
    options: RunOptions,
    console: Console,
    log: Log,
    inputs: dict[str, Any],
) -> None:
    from edgenas.stages.train import TrainOptions, train

    _adopt_train_records(recipe, run, inputs, log)
    supernet = run.layout.supernet
    checkpoints = [run.layout.checkpoint, supernet]
    if not needs_run(
        run,
        "train",
        inputs,
        stage="train",
        options=options,
        outputs=checkpoints,
        log=log,
        resumable=lambda old, new: training_continues(recipe, run.layout.checkpoint, old, new),
    ):
        return
    log("train: progressive shrinking (resumes from checkpoint.pt after a kill)")
    started = time.perf_counter()
    train(
        recipe,
        TrainOptions(out=run.root, resume=True, threads=options.threads),
        console=console,
        quiet=options.quiet,
    )
    run.record("train", inputs, [supernet], time.perf_counter() - started)


def _with_test_data(inputs: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any] | None:
    """``inputs`` for an export ``recorded`` without the test images' digest, the same else."""
    if "test_data" in recorded or {**recorded, "test_data": inputs["test_data"]} != inputs:
        return None
    return inputs


def _check_retraining(
    recipe: Recipe, run: RunFolder, options: RunOptions, inputs: dict[str, Any]
) -> None:
    """A training that would discard a trained supernet (forced, or on inputs it cannot
    continue from; ``needs_run``'s rule) first checks what it refuses before its first
    epoch (the data against the space, an init_from of another space, an unreadable image):
    the rerun discarded the supernet, the search and the exports, then refused the data
    (walk-through). Costs a load of the data, only when training starts over anyway."""
    from edgenas.stages.train import check_training

    layout = run.layout
    if not (layout.checkpoint.exists() or layout.supernet.exists()):
        return  # nothing to lose: the training itself refuses as early
    if "train" not in options.force:
        probe = run.scratch()  # the records as _train adopts them, the folder untouched
        _adopt_train_records(recipe, probe, inputs, lambda message, /, *, echo=True: None)
        old = probe.last_inputs("train")
        if old is None or old == inputs:
            return  # up to date, or resumed where it stopped
        if training_continues(recipe, layout.checkpoint, old, inputs):
            return
    check_training(recipe)


def _check_upstream(recipe: Recipe, layout: RunLayout) -> None:
    """A stage whose input no planned stage makes finds it in the folder before the work
    planned ahead of it: export without search, and search without profile, failed after
    training (without work ahead, the stage itself says what is missing)."""
    stages = recipe.planned_stages
    needed: list[tuple[Path, StageName]] = []
    if "export" in stages and "search" not in stages and {"train", "profile"} & set(stages):
        needed.append((layout.pareto, "search"))
    if "search" in stages and "profile" not in stages and "train" in stages:
        needed += [(layout.predictor(device_name(d.name)), "profile") for d in recipe.devices]
    for path, stage in needed:
        if not path.is_file():
            raise RecipeError(
                f"recipe {recipe.name!r}: {path} does not exist, and no stage of the recipe "
                f"makes it: add '{stage}' to its stages"
            )


def _check_sources(recipe: Recipe) -> None:
    """The files the recipe names exist: one that does not read as changed inputs, and the
    stage's outputs (a trained supernet) were discarded before loading it said so."""
    from once_for_all.data.load import BUILTIN_SOURCES

    stages = recipe.planned_stages
    init_from = recipe.train.init_from if recipe.train is not None else None
    missing: list[tuple[str, str, str]] = []
    source = recipe.data.source
    # Profiling times blocks only, and a search OFA's accuracy predictor scores reads none.
    reads_data = {"train", "export"} & set(stages) or _reads_supernet(recipe, stages)
    if reads_data and source not in BUILTIN_SOURCES and not Path(source).expanduser().exists():
        kinds = f"a .npz file, a folder of class folders, or {' or '.join(BUILTIN_SOURCES)}"
        missing.append(("data.source", source, kinds))
    for key, value, kind in (
        ("train.init_from", init_from if "train" in stages else None, "a supernet checkpoint"),
        (
            "search.ofa_predictor",
            recipe.search.ofa_predictor if "search" in stages else None,
            "OFA's acc_predictor.pth",
        ),
    ):
        if value and not Path(value).expanduser().is_file():
            missing.append((key, value, kind))
    for key, value, kind in missing[:1]:
        where = "" if Path(value).expanduser().is_absolute() else f" (read from {Path.cwd()})"
        raise RecipeError(
            f"recipe {recipe.name!r}: {key}: {value} does not exist{where}: give the path of "
            f"{kind}; nothing in the run folder was changed"
        )


def _check_devices(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> None:
    """Unknown profiles, device entries the profile stage would refuse, and SSH boards that it
    will need but cannot reach, fail before training (they were found after it, minutes or
    hours later)."""
    from devices import open_device

    stages = recipe.planned_stages
    _check_device_names(recipe)
    for at, section in enumerate(recipe.devices):
        inputs = profile_inputs(recipe, section)  # an unknown or invalid profile fails here
        needed = "profile" in stages and (
            "profile" in options.force
            or not run.up_to_date(f"profile:{device_name(section.name)}", inputs)
        )
        if needed:
            _check_device_entry(recipe, at, section)
        if needed and "train" in stages and inputs["profile"]["kind"] == "ssh":
            log(f"checking that {section.name} can be reached before training")
            with open_device(section.name) as device:
                device.fingerprint()  # connects, logs in and runs the runner once


def _check_export_devices(recipe: Recipe) -> None:
    """A device that runs none of the files the export section writes fails before any stage
    (export found it, after discarding the previous export; walk-through)."""
    from devices.profiles import load_profile
    from edgenas.stages.export import files_refusal

    export = recipe.export
    for at, section in enumerate(recipe.devices):
        why = files_refusal(load_profile(section.name), export.formats, int8=export.int8)
        if why:
            raise RecipeError(
                f"recipe {recipe.name!r}: devices[{at}]: {why}, and export.formats is "
                f"[{', '.join(export.formats)}]{'' if export.int8 else ' without int8'}: "
                "export those (export.formats, export.int8) or take the device out of devices"
            )


def _profile(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> None:
    """Profile every device that is not up to date at once (as `edgenas profile --profiles`
    does); each finished device is recorded even when another fails."""
    from devices.profiles import load_profile
    from edgenas.stages.profile import profile_many
    from latency.fleet import FleetJob, ProfileOptions
    from latency.model_cache import ModelCache

    todo: list[tuple[str, dict[str, Any], FleetJob]] = []
    for section in recipe.devices:
        name = device_name(section.name)
        folder = run.layout.device(name)
        key = f"profile:{name}"
        inputs = profile_inputs(recipe, section)
        if not needs_run(
            run,
            key,
            inputs,
            stage="profile",
            options=options,
            outputs=[folder],
            log=log,
            resumable=partial(more_resolutions, every=recipe.search_space().resolutions),
        ):  # up to date: nothing to measure
            _refit_refused(run, key, inputs, folder, log)
            continue
        # Published tables (Note10's) time no stem in groups: nothing of theirs is measured.
        published = load_profile(section.name).kind == "published"
        made = (
            "its published tables imported, a lut-sum predictor"
            if published
            else "lookup table and "
            + ("calibrated predictor" if section.calibrate else "lut-sum predictor")
        )
        log(f"profile {name}: {made} → {folder}")
        settings = ProfileOptions(
            model_format=section.format,
            precision=section.precision,
            calibrate=section.calibrate,
            resolutions=tuple(section.resolution) if section.resolution else None,
            tables=Path(section.tables) if section.tables else None,
            per_op=section.per_op,
            stem_groups=() if published else timed_stem_groups(recipe),
        )
        todo.append((key, inputs, FleetJob(section.name, folder, settings)))
    if not todo:
        return
    outcome = profile_many(
        [job for _, _, job in todo], recipe.search_space(), cache=ModelCache(), quiet=options.quiet
    )
    results, interrupted = outcome.results, outcome.interrupted
    if interrupted:
        raise KeyboardInterrupt
    for (key, inputs, job), result in zip(todo, results, strict=True):
        if result.ok:
            log(f"profile {result.name}: {result.blocks} blocks, {result.kind} predictor")
            outputs = [job.out / LUT_NAME, job.out / PREDICTOR_NAME]
            run.record(key, inputs, outputs, result.seconds)
    failed = [r for r in results if not r.ok]
    if failed:
        kept = "the other devices are profiled; " if len(failed) < len(results) else ""
        raise RecipeError(
            # the command line names the stage: "error: profile failed: DEVICE: ..."
            "; ".join(f"{r.name}: {r.error}" for r in failed)
            + f" ({kept}fix it and run again to go on)"
        )


def _refit_recorded(recipe: Recipe, run: RunFolder, log: Log) -> None:
    """A recipe without the profile stage refits what ``_refit_refused`` refits: the
    devices an earlier run of the folder profiled, whose predictors its search and export
    read. (`edgenas latency refit` leaves a run's files to the run.)"""
    for section in recipe.devices:
        name = device_name(section.name)
        key = f"profile:{name}"
        record = run.stages.get(key)
        # As recorded only: a predictor put there since is not refitted as the run's own.
        if record is not None and key not in run.started and not run.changed_outputs(key):
            _refit_refused(
                run,
                key,
                record["inputs"],
                run.layout.device(name),
                log,
                again="add 'profile' to the recipe's stages and rerun with --force profile",
            )


def _refit_refused(
    run: RunFolder,
    key: str,
    inputs: dict[str, Any],
    folder: Path,
    log: Log,
    *,
    again: str = "rerun with --force profile",
) -> None:
    """An up-to-date device whose predictor.json, as recorded, this edgenas refuses (a
    calibration model that an older one fitted, predicting no time for some subnet) has it
    fitted again from the measurements it keeps, and recorded: search would fail on it at
    every rerun, and profiling again would need the device and the same runtime version.
    ``again`` says how to measure the device anew where the measurements fit no model."""
    from latency.predictors import refit_refused
    from latency.table import TableError

    path = folder / PREDICTOR_NAME
    try:
        done = refit_refused(path)
    except TableError as exc:
        raise RecipeError(f"{one_line(exc)}; or measure the device again: {again}") from None
    if done is not None:
        log(f"{key.replace(':', ' ')}: {path.name}: {done}")
        seconds = float(run.stages[key].get("seconds", 0.0))
        run.record(key, inputs, [folder / LUT_NAME, path], seconds)


def _reads_supernet(recipe: Recipe, stages: Sequence[StageName]) -> bool:
    """Whether the recipe's ``stages`` read supernet.pt: export does, and search unless OFA's
    accuracy predictor scores it."""
    return "export" in stages or ("search" in stages and recipe.search.accuracy != "ofa-predictor")


def _without_supernet(recorded: dict[str, Any]) -> dict[str, Any] | None:
    """A search record made with OFA's accuracy predictor before such a search left out the
    supernet it does not read: the same search without it."""
    accuracy = recorded.get("search", {}).get("accuracy")
    if accuracy != "ofa-predictor":
        return None
    return {k: v for k, v in recorded.items() if k not in SUPERNET_INPUTS}


def _search(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> None:
    from edgenas.search.pareto import InfeasibleBudget
    from edgenas.stages.search import SearchOptions, search

    names = [device_name(d.name) for d in recipe.devices]
    folder = run.layout.search
    s = recipe.search
    ofa_predictor = Path(s.ofa_predictor) if s.ofa_predictor else None
    if ofa_predictor is not None:
        adopt_inputs(run, "search", _without_supernet)
    inputs = {
        **upstream_inputs(run, recipe, names, supernet=ofa_predictor is None),
        "budgets_ms": [d.budget_ms for d in recipe.devices],
        "search": s.model_dump(mode="json"),
        **(
            {"ofa_predictor": file_sha256(ofa_predictor)}
            if ofa_predictor and ofa_predictor.is_file()
            else {}
        ),
    }
    adopt_data_path(run, "search", inputs, recipe)
    if not needs_run(
        run,
        "search",
        inputs,
        stage="search",
        options=options,
        outputs=search_outputs(folder, run.last_inputs("search"), inputs),
        log=log,
        resumable=only_trials_changed,
    ):
        return
    budgets = [b for b in (d.budgets() for d in recipe.devices) if b is not None]
    log(f"search: {s.trials} trials, {s.sampler} → {folder}")
    started = time.perf_counter()
    try:
        search(
            SearchOptions(
                # OFA's predictor scores the recipe's space: no supernet is read
                supernet=None if ofa_predictor else run.layout.supernet,
                space=recipe.search_space() if ofa_predictor else None,
                devices=tuple(str(run.layout.device(n)) for n in names),
                out=folder,
                budgets_ms=tuple(budgets),
                trials=s.trials,
                sampler=s.sampler,
                accuracy=s.accuracy,
                accuracy_samples=s.accuracy_samples,
                eval_images=s.eval_images,
                reevaluate=s.reevaluate,
                profiles=run.layout.devices,
                seed=s.seed,
                ofa_predictor=ofa_predictor,
                data=stage_data(recipe),
                # a study of an older edgenas continued (more trials): its flags do not apply
                clash_fix="rerun with --force search, which starts the study afresh",
            ),
            quiet=options.quiet,
            say=log,
        )
    except InfeasibleBudget as exc:  # the budget is the recipe's here, not --budget-ms
        at = [i for i, name in enumerate(names) if name == exc.device]
        key = f"devices[{at[0]}].budget_ms" if at else "devices[].budget_ms"
        raise exc.with_fix(f"raise {key} in the recipe") from None
    outputs = [folder / "pareto.json", folder / "pareto.png"]
    run.record("search", inputs, outputs, time.perf_counter() - started)


def _check_reachable_budgets(recipe: Recipe, run: RunFolder, options: RunOptions) -> None:
    """A budget below every subnet's latency on its device's predictor, one this run keeps,
    fails before any stage: the search found it after discarding the last front, the summary
    and the report (walk-through). The search, at the resolutions all devices share, may
    find more budgets out of reach."""
    from edgenas.search.pareto import InfeasibleBudget
    from latency.predictors import load_predictor
    from latency.table import TableError

    for at, section in enumerate(recipe.devices):
        name = device_name(section.name)
        budgets, path = section.budgets(), run.layout.predictor(name)
        profiled_again = "profile" in recipe.planned_stages and (
            "profile" in options.force
            or not run.up_to_date(f"profile:{name}", profile_inputs(recipe, section))
        )
        if budgets is None or profiled_again or not path.is_file():
            continue
        lowest = min(budgets) if isinstance(budgets, tuple) else budgets
        try:
            predictor = load_predictor(path)
        except TableError:  # one the profile stage refits or replaces: its stage says so
            continue
        fastest = min(predictor.lowest(r)[1] for r in predictor.header.resolutions)
        if fastest > lowest:
            raise InfeasibleBudget(
                name, lowest, fastest, f"raise devices[{at}].budget_ms in the recipe"
            )


def _export(
    recipe: Recipe, run: RunFolder, options: RunOptions, log: Log, warn: Callable[[str], None]
) -> list[dict[str, Any]]:
    from edgenas.search.pareto import read_pareto
    from edgenas.stages.export import ExportJob, FinetuneSettings, run_export
    from export.subnet_export import ExportOptions
    from once_for_all import Subnet

    pareto_path = run.layout.pareto
    if not pareto_path.is_file():
        raise RecipeError(f"{pareto_path} does not exist: add 'search' to the recipe's stages")
    pareto = read_pareto(pareto_path)
    e = recipe.export
    devices = [d.name for d in recipe.devices]
    names = [device_name(d) for d in devices]
    exported: dict[str, dict[str, Any]] = {}
    for choice in pareto["chosen"]:
        member = pareto["front"][choice["index"]]
        subnet = Subnet.from_dict(member["subnet"])
        entry = exported.setdefault(
            subnet.key, {"subnet": subnet.key, "index": choice["index"], "chosen_for": []}
        )
        entry["chosen_for"].append(choice)
    stale = [
        k
        for k in run.stages
        if k.startswith("export:") and k.removeprefix("export:") not in exported
    ]
    for old in stale:  # the search now chooses other subnets
        shutil.rmtree(run.layout.export(old.removeprefix("export:")), ignore_errors=True)
        del run.stages[old]
    if stale:  # saved now: were every export up to date, nothing else would save run.json
        run.save()
    held_out = held_out_fingerprint(str(stage_data(recipe)))
    for key, entry in exported.items():
        folder = run.layout.export(key)
        stage_key = f"export:{key}"
        inputs = {
            **upstream_inputs(run, recipe, names),
            "subnet": pareto["front"][entry["index"]]["subnet"],
            "export": e.model_dump(mode="json"),
            "devices": devices,
        }
        if held_out is not None:  # the test images the files are checked on
            inputs["test_data"] = held_out
        entry["folder"] = folder
        adopt_data_path(run, stage_key, inputs, recipe)
        if held_out is not None:
            # Recorded before exports named them (2026-12-08): made from today's, as taken then.
            adopt_inputs(run, stage_key, partial(_with_test_data, inputs))
        if not needs_run(
            run, stage_key, inputs, stage="export", options=options, outputs=[folder], log=log
        ):
            continue
        log(f"export {key} → {folder}")
        started = time.perf_counter()
        run_export(
            ExportJob(
                supernet=run.layout.supernet,
                subnet=f"{pareto_path}#{entry['index']}",
                out=folder,
                options=ExportOptions(
                    formats=tuple(e.formats),
                    int8=e.int8,
                    calibration_images=e.calibration_images,
                    stem_groups=e.stem_groups,
                    test_images=e.test_images,
                    device_check_images=e.device_check_images,
                    min_int8_agreement=e.min_int8_agreement,
                ),
                devices=tuple(devices),
                profiles=run.layout.devices,
                align_channels=e.align_channels,
                data=stage_data(recipe),
                finetune=FinetuneSettings(
                    epochs=e.finetune_epochs, qat_epochs=e.qat_epochs if e.int8 else 0
                ),
            ),
            say=lambda message: None if options.quiet else log(f"  export: {message}"),
            warn=warn,
        )
        outputs = sorted(p for p in folder.iterdir() if p.is_file())
        run.record(stage_key, inputs, outputs, time.perf_counter() - started)
    return list(exported.values())
