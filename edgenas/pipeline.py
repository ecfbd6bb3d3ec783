"""`edgenas run RECIPE`: train → profile → search → export into one run folder.

``run.json`` records the recipe, the package versions, and each stage's inputs and outputs
with their SHA-256. A stage whose recorded inputs are the current ones and whose outputs are
still there, unchanged, is skipped; a stage whose inputs changed starts afresh; a stage that
was killed resumes (training from its checkpoint, profiling from its table, the search from
its study). Stages run the same code as the single commands (`edgenas train`, `profile`,
`search`, `export`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from edgenas.recipe import DeviceSection, Recipe, RecipeError, load_recipe
from edgenas.report import REPORT_NAME, build_report
from edgenas.run_record import (
    RUN_FORMAT,
    SUMMARY_FORMAT,
    SUMMARY_NAME,
    MeasuredFile,
    RunDocument,
    RunSummary,
    StageRecord,
    SummaryRow,
    read_run,
    write_run,
    write_summary,
)
from edgenas.stages import StageName
from export.card import DeviceLatency, execution_text, read_card
from once_for_all.errors import EdgenasError, Interrupted, one_line
from once_for_all.files import file_sha256, output_folder_for_work
from once_for_all.folder_lock import folder_lock

PACKAGES = (
    "edgenas",
    "torch",
    "numpy",
    "onnx",
    "onnxruntime",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "optuna",
    "ethos-u-vela",
)


class Log(Protocol):
    """A line for ``run.log``, also printed unless --quiet (or ``echo`` is false)."""

    def __call__(self, message: str, /, *, echo: bool = True) -> None: ...


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


class RunFolder:
    """A run folder and its ``run.json``: which stage ran on which inputs, made what."""

    def __init__(self, root: Path, recipe: Recipe, recipe_path: Path) -> None:
        self.root = root
        self.path = root / "run.json"
        self.stages: dict[str, StageRecord] = {}
        self.started: dict[str, dict[str, Any]] = {}  # unfinished stages' inputs
        self.fingerprints: dict[str, Any] = {}  # data sources read this run (_data_inputs)
        if self.path.exists():
            fix = "move it away or choose another --out"
            data = read_run(self.path, fix=fix, error=RecipeError)
            try:
                self.stages = dict(data["stages"])
                self.started = dict(data.get("started", {}))
            except (ValueError, KeyError, TypeError) as exc:
                raise RecipeError(
                    f"{self.path} is not an edgenas run record ({exc}): {fix}"
                ) from None
        self.recipe_path = str(recipe_path)
        self.recipe = recipe.model_dump(mode="json")
        self.versions = package_versions()

    def up_to_date(self, key: str, inputs: dict[str, Any]) -> bool:
        record = self.stages.get(key)
        if not record or record.get("inputs") != inputs or key in self.started:
            return False
        return all(
            (self.root / name).is_file() and file_sha256(self.root / name) == digest
            for name, digest in record.get("outputs", {}).items()
        )

    def last_inputs(self, key: str) -> dict[str, Any] | None:
        """The inputs stage ``key``'s outputs were last made from: those of its run that
        started and did not finish, else those of its finished run (None: it never ran)."""
        if key in self.started:
            return self.started[key]
        record = self.stages.get(key)
        return record.get("inputs") if record else None

    def start(self, key: str, inputs: dict[str, Any]) -> None:
        """Stage ``key`` starts on ``inputs``: what it leaves if stopped is theirs. The
        summary and report of the run before go: they would outlive a failure as current."""
        self.started[key] = inputs
        self.save()
        for name in (SUMMARY_NAME, REPORT_NAME):
            (self.root / name).unlink(missing_ok=True)

    def record(
        self, key: str, inputs: dict[str, Any], outputs: Sequence[Path], seconds: float
    ) -> None:
        self.stages[key] = {
            "inputs": inputs,
            "outputs": {str(p.relative_to(self.root)): file_sha256(p) for p in outputs},
            "seconds": round(seconds, 1),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        self.started.pop(key, None)
        self.save()

    def output_hash(self, key: str, name: str) -> str | None:
        record = self.stages.get(key)
        return record["outputs"].get(name) if record else None

    def save(self) -> None:
        doc = RunDocument(
            format=RUN_FORMAT,
            recipe_path=self.recipe_path,
            recipe=self.recipe,
            versions=self.versions,
            stages=self.stages,
        )
        if self.started:
            doc["started"] = self.started
        write_run(self.path, doc)


@dataclass(frozen=True)
class RunOptions:
    out: Path | None = None  # default runs/<recipe name>
    force: tuple[StageName, ...] = ()
    quiet: bool = False
    threads: int | None = None


# What each stage's outputs feed: --force redoes these too (profiling times the space's
# blocks, not the trained supernet).
DEPENDENTS: dict[StageName, tuple[StageName, ...]] = {
    "train": ("search", "export"),
    "profile": ("search", "export"),
    "search": ("export",),
    "export": (),
}


# The stages whose outputs are made from a stage's outputs and are no use without them: a
# search and exports of another supernet or another table's latencies. An export is of its
# subnet, not of the search that chose it: a new search that chooses it again reuses it.
MADE_FROM_OUTPUTS: dict[StageName, tuple[StageName, ...]] = {
    **DEPENDENTS,
    "search": (),
}


def with_dependents(force: Sequence[StageName]) -> tuple[StageName, ...]:
    """The forced stages and the stages that depend on them, in the order a run does them."""
    forced = set(force) | {d for stage in force for d in DEPENDENTS[stage]}
    return tuple(s for s in DEPENDENTS if s in forced)


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
_BOOKKEEPING = frozenset({"run.json", "run.log", "space.json"})


def _check_recipe(recipe: Recipe) -> None:
    """What the recipe asks that cannot be done, found without any work, so that a new run
    refused for it leaves no folder (it was left with a run.json and run.log)."""
    if "export" in recipe.planned_stages:
        recipe.check_export()
    if "search" in recipe.planned_stages:
        recipe.check_search()
    for at, section in enumerate(recipe.devices):
        _device_name(section.name)  # an unknown or invalid profile fails here
        if "profile" in recipe.planned_stages:
            _check_device_entry(recipe, at, section)


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


def _run_stages(
    recipe: Recipe, recipe_path: Path, run: RunFolder, options: RunOptions, console: Console
) -> RunSummary:
    root = run.root
    log_file = root / "run.log"

    def log(message: str, /, *, echo: bool = True) -> None:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        with log_file.open("a") as f:
            f.write(f"{stamp} {message}\n")
        if echo and not options.quiet:
            console.print(f"[bold cyan]run:[/bold cyan] {message}", highlight=False, soft_wrap=True)

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
        with _logged("export", log):
            recipe.check_export()
    if "search" in stages:
        with _logged("search", log):
            recipe.check_search()
    with _logged("profile", log):
        _check_devices(recipe, run, options, log)
    with _logged("recipe", log):  # before any stage: no stage's failure
        _check_sources(recipe)
        _check_upstream(recipe, root)
    # Only now the recipe goes into run.json: a refused one wrote itself over a good run's.
    run.save()
    with _logged("train", log):
        if "train" in stages:
            _train(recipe, run, options, console, log)
        supernet = root / "supernet.pt"
        # Profiling times blocks, not the supernet: a recipe that only profiles needs none.
        if {"search", "export"} & set(stages) and not supernet.is_file():
            raise RecipeError(
                f"{supernet} does not exist: add 'train' to the recipe's stages (or run "
                f"'edgenas train {recipe_path} --out {root}', or import OFA's with "
                f"'edgenas import ofa-supernet FILE --out {root}')"
            )
    if "profile" in stages:
        with _logged("profile", log):
            _profile(recipe, run, options, log)
    if "search" in stages:
        with _logged("search", log):
            _search(recipe, run, options, log)
    exported: list[dict[str, Any]] = []
    if "export" in stages:
        with _logged("export", log):
            exported = _export(recipe, run, options, log)
    with _logged("report", log):
        summary = _summary(recipe, run, exported)
        summary["report"] = str(root / REPORT_NAME)
        write_summary(root / SUMMARY_NAME, summary)
        build_report(root)  # reads summary.json
    log(
        f"done: {len(exported)} subnet(s) exported; summary in {root / SUMMARY_NAME}, "
        f"report in {summary['report']}"
    )
    return summary


@contextmanager
def _logged(stage: str, log: Log) -> Iterator[None]:
    """Write a stage's failure to ``run.log`` before it propagates: the user's error as its
    one line, a bug with its traceback (the terminal shows it too). Ctrl-C becomes the one
    line naming the stage, which the command line prints even with --quiet."""
    try:
        yield
    except EdgenasError as exc:
        log(f"{stage} failed: {exc}")
        raise
    except KeyboardInterrupt:
        log(f"{stage} interrupted: run the same command again to resume", echo=False)
        raise Interrupted(
            f"interrupted in the {stage} stage: finished work is saved; run the same command "
            "again to resume"
        ) from None
    except Exception as exc:
        log(
            f"{stage} failed with an unexpected error ({type(exc).__name__}: {one_line(exc)}):\n"
            + "".join(traceback.format_exception(exc)).rstrip()
        )
        raise


def _needs_run(
    run: RunFolder,
    key: str,
    inputs: dict[str, Any],
    *,
    stage: StageName,
    options: RunOptions,
    outputs: Sequence[Path],
    log: Log,
    resumable: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
    unusable: Callable[[], str | None] | None = None,
) -> bool:
    """Whether stage ``key`` must run. A stage that is forced, or whose outputs were last
    made from other inputs, loses its ``outputs`` first: resuming them would mix two runs;
    the log says what is discarded and why. ``resumable(old, new)`` may say that the outputs
    of the old inputs can be continued (a longer search of the same study). A stage that
    runs is marked started on its inputs in run.json, so that a rerun after Ctrl-C or a kill
    continues its work (it was discarded as made from the inputs of the run before).
    ``unusable()`` may name why up-to-date outputs cannot be used as they are (a predictor
    that an older edgenas fitted): the stage then runs on them again, keeping them."""
    forced = stage in options.force
    name = key.replace(":", " ")
    if not forced and run.up_to_date(key, inputs):
        why = unusable() if unusable is not None else None
        if why is None:
            log(f"{name}: up to date, skipped")
            return False
        log(f"{name}: {why}; running it again on what it kept")
        run.start(key, inputs)
        return True
    old = run.last_inputs(key)
    if not forced and key in run.started and old == inputs:
        log(f"{name}: continuing where the last run stopped")
    elif not forced and old is not None and resumable is not None and resumable(old, inputs):
        log(f"{name}: continuing from the last run ({_changes(old, inputs)} changed)")
    elif forced or (old is not None and old != inputs):
        existing = [p for p in outputs if p.exists()]
        if existing:
            why = "forced" if forced else f"{_changes(old or {}, inputs)} changed"
            shown = ", ".join(str(p.relative_to(run.root)) for p in existing)
            log(f"{name}: {why}; discarding {shown} and starting again")
        for path in outputs:
            _remove(path)
        for dependent in MADE_FROM_OUTPUTS[stage]:
            _discard_stage(run, dependent, log, made_from=name)
    run.start(key, inputs)
    return True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _discard_stage(run: RunFolder, stage: StageName, log: Log, *, made_from: str) -> None:
    """Stage ``stage``'s outputs (its folder) and records go with the outputs of a stage they
    were made from: kept, a recipe run into a folder it did not make reported the other
    recipe's front and cards as its own (run audit), whether or not it plans the stage."""
    keys = [k for k in {**run.stages, **run.started} if k.split(":", 1)[0] == stage]
    folder = run.root / stage  # search/, export/
    if folder.exists():
        log(f"{stage}: made from what {made_from} discards; discarding {stage}")
        _remove(folder)
    for key in keys:
        run.stages.pop(key, None)
        run.started.pop(key, None)
    if keys:
        run.save()


def _changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """The settings that differ between two stage inputs, as dotted names down to the
    setting (``train.phases``: the train stage's inputs hold the recipe's sections under
    ``recipe``, which the name leaves out, as the recipe file has no such key)."""
    names: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        dotted = "" if not prefix and name == "recipe" else f"{prefix}{name}."
        if isinstance(a, dict) and isinstance(b, dict):
            names.append(_changes(a, b, dotted))
        else:
            names.append(dotted.removesuffix(".") or name)
    return ", ".join(names)


def _only_trials_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A search whose only change is more trials continues its study. Fewer start afresh:
    the study holds more trials than asked, and its front is not that of the recipe's."""

    def trials(inputs: dict[str, Any]) -> Any:
        return inputs.get("search", {}).get("trials")

    def without_trials(inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "search": {**inputs.get("search", {}), "trials": None}}

    more = isinstance(trials(old), int) and isinstance(trials(new), int)
    return more and trials(new) >= trials(old) and without_trials(old) == without_trials(new)


def _more_resolutions(old: dict[str, Any], new: dict[str, Any], *, every: Sequence[int]) -> bool:
    """A device entry whose only change is more resolutions (or the same ones, listed or
    not: none listed is ``every`` one of the space's) extends its table in place
    (``latency.table.TableHeader.extended``): only what the new ones add is measured."""

    def resolutions(inputs: dict[str, Any]) -> set[int]:
        return set(inputs.get("device", {}).get("resolution") or every)

    def without(inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "device": {**inputs.get("device", {}), "resolution": None}}

    return resolutions(old) <= resolutions(new) and without(old) == without(new)


def train_inputs(recipe: Recipe) -> dict[str, Any]:
    """What the train stage's supernet is made from: the recipe's space, data and training
    settings, and the content of the files they name (the data, ``init_from``)."""
    # Not the name: a recipe copied under another name reuses the same supernet; nor where
    # and on how many threads it trains, which change the speed, not the supernet.
    inputs: dict[str, Any] = {
        "recipe": recipe.model_dump(
            mode="json",
            include={"space", "data", "train"},
            exclude={"train": {"threads", "device"}},
        )
    }
    if (data := data_source_fingerprint(recipe.data.source)) is not None:
        inputs["data"] = data
    init_from = recipe.train.init_from if recipe.train is not None else None
    if init_from and Path(init_from).expanduser().is_file():
        inputs["init_from"] = {"sha256": file_sha256(Path(init_from).expanduser())}  # its content
    return inputs


def data_source_fingerprint(source: str) -> dict[str, str] | None:
    """What a data source holds, for the train stage's inputs: a data file's SHA-256, a
    folder's listing (each file's path, size and modification time: hashing every image of
    an ImageNet folder would take minutes). None for a built-in data set (its name stands
    for it: run folders recorded without one stay up to date) or a source that does not
    exist (loading it says so)."""
    from once_for_all.data.load import BUILTIN_SOURCES

    path = Path(source).expanduser()
    if source in BUILTIN_SOURCES:
        return None
    if path.is_file():
        return {"sha256": file_sha256(path)}
    if path.is_dir():
        return {"listing": _listing_sha256(path)}
    return None


def _listing_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()  # os.walk descends in this order
        for name in sorted(files):
            path = Path(top) / name
            try:
                stat = path.stat()
                entry = f"{stat.st_size}|{stat.st_mtime_ns}"
            except OSError:  # a broken link: listed by its name alone
                entry = "-"
            digest.update(f"{path.relative_to(folder)}|{entry}\n".encode())
    return digest.hexdigest()


def _adopt_inputs(
    run: RunFolder, key: str, inputs: dict[str, Any], same: Callable[[dict[str, Any]], bool]
) -> bool:
    """Give stage ``key``'s record (finished or started) today's ``inputs`` where
    ``same(recorded)`` says they describe the same work, so that it is not done again;
    whether any record took them."""
    adopted = False
    record = run.stages.get(key)
    if record is not None and record["inputs"] != inputs and same(record["inputs"]):
        record["inputs"], adopted = inputs, True
    started = run.started.get(key)
    if started is not None and started != inputs and same(started):
        run.started[key], adopted = inputs, True
    if adopted:
        run.save()
    return adopted


def _adopt_data_fingerprint(run: RunFolder, inputs: dict[str, Any]) -> None:
    """A train stage recorded before data fingerprints were is taken as made from today's
    data, as it was then (else every such run would train again): when nothing else
    changed, its record gains the fingerprint."""
    if "data" in inputs:
        before = {k: v for k, v in inputs.items() if k != "data"}
        _adopt_inputs(run, "train", inputs, lambda recorded: recorded == before)


def _unlocated(inputs: dict[str, Any]) -> dict[str, Any]:
    """Train inputs without the paths of the files whose content they record (the data's
    fingerprint, init_from's SHA-256): the same files elsewhere are the same inputs."""
    recipe = inputs.get("recipe", {})
    data, train = dict(recipe.get("data") or {}), dict(recipe.get("train") or {})
    if "data" in inputs:
        data.pop("source", None)
    if "init_from" in inputs:
        train.pop("init_from", None)
    return {**inputs, "recipe": {**recipe, "data": data, "train": train}}


def _adopt_moved_files(run: RunFolder, inputs: dict[str, Any], log: Log) -> None:
    """A train stage whose data or init_from moved, the same files at a new path, keeps its
    work: its record takes the new path. Refused where missing (``_check_sources``), the
    fix was to give the new path, and that discarded the trained supernet."""
    here = _unlocated(inputs)
    if _adopt_inputs(run, "train", inputs, lambda recorded: _unlocated(recorded) == here):
        log("train: its data or init_from moved (the same files); the training is kept")


def _train(recipe: Recipe, run: RunFolder, options: RunOptions, console: Console, log: Log) -> None:
    from edgenas.stages.train import CHECKPOINT_NAME, SUPERNET_NAME, TrainOptions, train

    inputs = train_inputs(recipe)
    _adopt_data_fingerprint(run, inputs)
    _adopt_moved_files(run, inputs, log)
    supernet = run.root / SUPERNET_NAME
    checkpoints = [run.root / CHECKPOINT_NAME, supernet]
    if not _needs_run(
        run,
        "train",
        inputs,
        stage="train",
        options=options,
        outputs=checkpoints,
        log=log,
        resumable=lambda old, new: _training_continues(
            recipe, run.root / CHECKPOINT_NAME, old, new
        ),
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


def _training_continues(
    recipe: Recipe, checkpoint: Path, old: dict[str, Any], new: dict[str, Any]
) -> bool:
    """A train section changed only where ``checkpoint``'s run can take it (the phases it
    has not started, the lr of the one under way: ``resume_change``) continues that run, as
    ``edgenas train --resume`` does, rather than training from the start; the same data and
    space besides. Only the lr of the phase under way makes it other than a run of the new
    recipe from the start."""
    from once_for_all import CheckpointError
    from once_for_all.checkpoint import load_checkpoint
    from once_for_all.progressive_shrinking import resume_change

    def without_train(inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "recipe": {**inputs.get("recipe", {}), "train": None}}

    if recipe.train is None or without_train(old) != without_train(new) or not checkpoint.is_file():
        return False
    try:
        payload = load_checkpoint(checkpoint)
        return resume_change(payload, recipe.train_config().to_dict()) == ""
    except (CheckpointError, KeyError, TypeError):  # not a training checkpoint: start again
        return False


def _check_upstream(recipe: Recipe, root: Path) -> None:
    """A stage whose input no planned stage makes finds it in the folder before the work
    planned ahead of it: export without search, and search without profile, failed after
    training (without work ahead, the stage itself says what is missing)."""
    stages = recipe.planned_stages
    needed: list[tuple[Path, StageName]] = []
    if "export" in stages and "search" not in stages and {"train", "profile"} & set(stages):
        needed.append((root / "search" / "pareto.json", "search"))
    if "search" in stages and "profile" not in stages and "train" in stages:
        needed += [
            (root / "devices" / _device_name(d.name) / "predictor.json", "profile")
            for d in recipe.devices
        ]
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
    reads_data = {"train", "search", "export"} & set(stages)  # profiling times blocks only
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


def _device_name(device: str) -> str:
    from devices.profiles import load_profile

    return load_profile(device).name


def _profile_inputs(recipe: Recipe, section: DeviceSection) -> dict[str, Any]:
    from devices.profiles import load_profile

    inputs: dict[str, Any] = {
        "space": recipe.search_space().id,
        # per_op only when set: runs recorded before it existed stay up to date.
        "device": section.model_dump(
            mode="json", exclude={"budget_ms"} | (set() if section.per_op else {"per_op"})
        ),
        "profile": load_profile(section.name).model_dump(mode="json"),
    }
    if groups := _stem_groups(recipe):  # likewise
        inputs["stem_groups"] = list(groups)
    return inputs


def _stem_groups(recipe: Recipe) -> tuple[int, ...]:
    """The stem groups export writes int8 files in, when fixed by the recipe and not the
    split every int8 table times anyway (``latency.profiler.split_stems``): int8 tables time
    the stem so too, and the card predicts those files with it."""
    from latency.blocks import SPLIT_STEM_GROUPS

    groups = recipe.export.stem_groups
    return (groups,) if isinstance(groups, int) and groups not in (1, SPLIT_STEM_GROUPS) else ()


def _check_devices(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> None:
    """Unknown profiles, device entries the profile stage would refuse, and SSH boards that it
    will need but cannot reach, fail before training (they were found after it, minutes or
    hours later)."""
    from devices import open_device

    stages = recipe.planned_stages
    for at, section in enumerate(recipe.devices):
        inputs = _profile_inputs(recipe, section)  # an unknown or invalid profile fails here
        needed = "profile" in stages and (
            "profile" in options.force
            or not run.up_to_date(f"profile:{_device_name(section.name)}", inputs)
        )
        if needed:
            _check_device_entry(recipe, at, section)
        if needed and "train" in stages and inputs["profile"]["kind"] == "ssh":
            log(f"checking that {section.name} can be reached before training")
            with open_device(section.name) as device:
                device.fingerprint()  # connects, logs in and runs the runner once


def _profile(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> None:
    """Profile every device that is not up to date at once (as `edgenas profile --profiles`
    does); each finished device is recorded even when another fails."""
    from devices.profiles import load_profile
    from edgenas.stages.profile import profile_many
    from latency.fleet import FleetJob, ProfileOptions
    from latency.model_cache import ModelCache

    todo: list[tuple[str, dict[str, Any], FleetJob]] = []
    for section in recipe.devices:
        name = _device_name(section.name)
        folder = run.root / "devices" / name
        key = f"profile:{name}"
        inputs = _profile_inputs(recipe, section)
        if not _needs_run(
            run,
            key,
            inputs,
            stage="profile",
            options=options,
            outputs=[folder],
            log=log,
            resumable=partial(_more_resolutions, every=recipe.search_space().resolutions),
            unusable=partial(_refused_predictor, folder / "predictor.json"),
        ):
            continue
        log(f"profile {name}: lookup table and calibrated predictor → {folder}")
        # Published tables (Note10's) time no stem in groups: nothing of theirs is measured.
        published = load_profile(section.name).kind == "published"
        settings = ProfileOptions(
            model_format=section.format,
            precision=section.precision,
            calibrate=section.calibrate,
            resolutions=tuple(section.resolution) if section.resolution else None,
            tables=Path(section.tables) if section.tables else None,
            per_op=section.per_op,
            stem_groups=() if published else _stem_groups(recipe),
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
            outputs = [job.out / "lut.json", job.out / "predictor.json"]
            run.record(key, inputs, outputs, result.seconds)
    failed = [r for r in results if not r.ok]
    if failed:
        raise RecipeError(
            "; ".join(f"profile {r.name} failed: {r.error}" for r in failed)
            + " (the other devices are profiled; fix it and run again to go on)"
        )


def _refused_predictor(path: Path) -> str | None:
    """Why the predictor at ``path`` is refused at load, or None. Its file is as recorded,
    yet a model that an older edgenas fitted can predict no time for some subnet, which this
    one refuses; profiling the folder again refits it from the kept measurements."""
    from latency.predictors import load_predictor
    from latency.table import TableError

    try:
        load_predictor(path)
    except TableError as exc:
        return f"{path.name} cannot be used ({one_line(exc)})"
    return None


def _search(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> None:
    from edgenas.search.pareto import InfeasibleBudget
    from edgenas.stages.search import SearchOptions, search

    names = [_device_name(d.name) for d in recipe.devices]
    folder = run.root / "search"
    s = recipe.search
    ofa_predictor = Path(s.ofa_predictor) if s.ofa_predictor else None
    inputs = {
        **_upstream(run, recipe, names),
        "budgets_ms": [d.budget_ms for d in recipe.devices],
        "search": s.model_dump(mode="json"),
        **(
            {"ofa_predictor": file_sha256(ofa_predictor)}
            if ofa_predictor and ofa_predictor.is_file()
            else {}
        ),
    }
    _adopt_data_path(run, "search", inputs, recipe)
    if not _needs_run(
        run,
        "search",
        inputs,
        stage="search",
        options=options,
        outputs=_search_outputs(folder, run.last_inputs("search"), inputs),
        log=log,
        resumable=_only_trials_changed,
    ):
        return
    budgets = [b for b in (d.budgets() for d in recipe.devices) if b is not None]
    log(f"search: {s.trials} trials, {s.sampler} → {folder}")
    started = time.perf_counter()
    try:
        search(
            SearchOptions(
                supernet=run.root / "supernet.pt",
                devices=tuple(str(run.root / "devices" / n) for n in names),
                out=folder,
                budgets_ms=tuple(budgets),
                trials=s.trials,
                sampler=s.sampler,
                accuracy=s.accuracy,
                accuracy_samples=s.accuracy_samples,
                eval_images=s.eval_images,
                reevaluate=s.reevaluate,
                profiles=run.root / "devices",
                seed=s.seed,
                ofa_predictor=ofa_predictor,
                data=_stage_data(recipe),
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


def _search_outputs(folder: Path, old: dict[str, Any] | None, new: dict[str, Any]) -> list[Path]:
    """What a search started afresh discards: its folder, but the accuracy cache where the
    subnets' accuracies stay what they were (the same supernet, data and images evaluated):
    fewer trials, other budgets or another seed re-evaluated hours of subnets on ImageNet."""
    from edgenas.stages.search import ACCURACY_CACHE_NAME

    def accuracy_inputs(inputs: dict[str, Any]) -> tuple[Any, ...]:
        return (
            inputs.get("supernet"),
            inputs.get("data"),
            inputs.get("search", {}).get("eval_images"),
        )

    cache = folder / ACCURACY_CACHE_NAME
    if old is None or accuracy_inputs(old) != accuracy_inputs(new) or not cache.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p != cache)


def _upstream(run: RunFolder, recipe: Recipe, devices: Sequence[str]) -> dict[str, Any]:
    """What search and export depend on from earlier stages: the supernet and each device's
    predictor, by content (and the data folder of a supernet not trained here)."""
    predictors = {n: run.root / "devices" / n / "predictor.json" for n in devices}
    inputs = {
        "supernet": run.output_hash("train", "supernet.pt")
        or file_sha256(run.root / "supernet.pt"),
        "predictors": {n: file_sha256(p) if p.is_file() else None for n, p in predictors.items()},
    }
    data = _supernet_data(recipe)
    return inputs if data is None else {**inputs, "data": _data_inputs(run, str(data))}


def _data_inputs(run: RunFolder, source: str) -> Any:
    """What search and export record of the data an imported supernet is evaluated on: its
    content (``data_source_fingerprint``: the same files at a new path are the same data,
    other files at the same path are not), or a built-in set's name. Once a run: a folder's
    listing takes ~1 s per 80,000 images, and every export records it."""
    if source not in run.fingerprints:
        run.fingerprints[source] = data_source_fingerprint(source) or source
    return run.fingerprints[source]


def _adopt_data_path(run: RunFolder, key: str, inputs: dict[str, Any], recipe: Recipe) -> None:
    """Search and export records of earlier versions hold the data folder's path where the
    data's fingerprint now goes: taken as made from today's data, as they were (else each
    such run would search again), when nothing else changed."""
    if isinstance(inputs.get("data"), dict):
        before = {**inputs, "data": str(_supernet_data(recipe))}
        _adopt_inputs(run, key, inputs, lambda recorded: recorded == before)


def _stage_data(recipe: Recipe) -> Path:
    """Where search and export read the supernet's data: the recipe's data.source. A
    supernet trained here finds its files there by their digest if they moved (the train
    record takes the new path: ``_adopt_moved_files``); an imported one records none, and
    search and export record the data's content (``_data_inputs``), which a move keeps."""
    return Path(recipe.data.source)


def _supernet_data(recipe: Recipe) -> Path | None:
    """The recipe's data source for a supernet.pt this run does not train (one placed by
    'edgenas import ofa-supernet ... --out RUNDIR'): a checkpoint that records no data (an
    imported one) is evaluated and calibrated on it; a trained one must record this source."""
    return None if "train" in recipe.planned_stages else Path(recipe.data.source)


def _export(recipe: Recipe, run: RunFolder, options: RunOptions, log: Log) -> list[dict[str, Any]]:
    from edgenas.search.pareto import read_pareto
    from edgenas.stages.export import ExportJob, FinetuneSettings, run_export
    from export.subnet_export import ExportOptions
    from once_for_all import Subnet

    pareto_path = run.root / "search" / "pareto.json"
    if not pareto_path.is_file():
        raise RecipeError(f"{pareto_path} does not exist: add 'search' to the recipe's stages")
    pareto = read_pareto(pareto_path)
    e = recipe.export
    devices = [d.name for d in recipe.devices]
    names = [_device_name(d) for d in devices]
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
        shutil.rmtree(run.root / "export" / old.removeprefix("export:"), ignore_errors=True)
        del run.stages[old]
    if stale:  # saved now: were every export up to date, nothing else would save run.json
        run.save()
    for key, entry in exported.items():
        folder = run.root / "export" / key
        stage_key = f"export:{key}"
        inputs = {
            **_upstream(run, recipe, names),
            "subnet": pareto["front"][entry["index"]]["subnet"],
            "export": e.model_dump(mode="json"),
            "devices": devices,
        }
        entry["folder"] = folder
        _adopt_data_path(run, stage_key, inputs, recipe)
        if not _needs_run(
            run, stage_key, inputs, stage="export", options=options, outputs=[folder], log=log
        ):
            continue
        log(f"export {key} → {folder}")
        started = time.perf_counter()
        run_export(
            ExportJob(
                supernet=run.root / "supernet.pt",
                subnet=f"{pareto_path}#{entry['index']}",
                out=folder,
                options=ExportOptions(
                    formats=tuple(e.formats),
                    int8=e.int8,
                    calibration_images=e.calibration_images,
                    stem_groups=e.stem_groups,
                    test_images=e.test_images,
                    min_int8_agreement=e.min_int8_agreement,
                ),
                devices=tuple(devices),
                profiles=run.root / "devices",
                align_channels=e.align_channels,
                data=_stage_data(recipe),
                finetune=FinetuneSettings(
                    epochs=e.finetune_epochs, qat_epochs=e.qat_epochs if e.int8 else 0
                ),
            ),
            say=lambda message: None if options.quiet else log(f"  export: {message}"),
        )
        outputs = sorted(p for p in folder.iterdir() if p.is_file())
        run.record(stage_key, inputs, outputs, time.perf_counter() - started)
    return list(exported.values())


def _measured_file(
    value: Mapping[str, Any],
    described: Mapping[str, Any],
    int8: Mapping[str, Any] | None,
    card: Mapping[str, Any],
) -> MeasuredFile:
    """One file of a card as measured on one device, for the run summary."""
    out = MeasuredFile(
        latency_ms=value["measured"]["median_ms"],
        speedup_vs_fp32=value.get("speedup_vs_fp32"),
        runs_as=execution_text(described.get("execution") or {}),
        accuracy=int8["accuracy"] if int8 else card["accuracy"]["fp32"],
        top1_agreement=int8["top1_agreement"] if int8 else None,
    )
    placement = value["measured"].get("placement_text")
    if placement:
        out["placement"] = placement
    return out


def _predicted_ms(on_device: DeviceLatency | None, shown: str | None) -> float | None:
    """The predicted latency of the file shown for a device; a device nothing runs on
    (published tables, samsung-note10) has no file, only its tables' prediction."""
    if on_device is None:
        return None
    if shown is not None:
        return on_device["files"][shown]["predicted"]
    return on_device.get("predicted")


def _summary(recipe: Recipe, run: RunFolder, exported: list[dict[str, Any]]) -> RunSummary:
    """One row per device budget: the chosen subnet, its accuracy and latency, its files."""
    rows: list[SummaryRow] = []
    for entry in exported:
        card = read_card(entry["folder"] / "card.json")
        files = {f["name"]: f for f in card["files"]}
        int8 = card["accuracy"]["int8"]
        for choice in entry["chosen_for"]:
            device = choice["device"]
            on_device = card["latency"].get(device)
            measured = on_device["files"] if on_device else {}
            # The fastest file whose accuracy is acceptable (the card's recommendation).
            shown = on_device.get("recommended") if on_device else None
            rows.append(
                SummaryRow(
                    device=device,
                    budget_ms=choice["budget_ms"],
                    subnet=entry["subnet"],
                    accuracy_fp32=card["accuracy"]["fp32"],
                    accuracy_int8={n: v["accuracy"] for n, v in card["accuracy"]["int8"].items()},
                    file=shown,
                    latency_predicted_ms=_predicted_ms(on_device, shown),
                    latency_measured_ms=measured[shown]["measured"]["median_ms"] if shown else None,
                    latency_measured_at_baseline_ms=measured[shown].get("measured_at_baseline_ms")
                    if shown
                    else None,
                    bytes=files[shown]["bytes"] if shown else None,
                    folder=str(entry["folder"]),
                    files=sorted(files),
                    measured_files={
                        name: _measured_file(value, files[name], int8.get(name), card)
                        for name, value in measured.items()
                    },
                )
            )
    devices = [_device_name(d.name) for d in recipe.devices]
    current = _current_stages(recipe, devices, [e["subnet"] for e in exported])
    return RunSummary(
        format=SUMMARY_FORMAT,
        run=str(run.root),
        recipe=recipe.name,
        stages={k: v.get("seconds") for k, v in run.stages.items() if k in current},
        chosen=rows,
        devices=devices,
    )


def _current_stages(recipe: Recipe, devices: Sequence[str], exported: Sequence[str]) -> set[str]:
    """The stage keys this recipe's run is made of: records of a stage it does not plan, a
    device it no longer names or a subnet no longer chosen stay in run.json (their work may
    serve again) but are not this run's."""
    planned = recipe.planned_stages
    keys: set[str] = {s for s in planned if s in ("train", "search")}
    if "profile" in planned:
        keys |= {f"profile:{name}" for name in devices}
    if "export" in planned:
        keys |= {f"export:{key}" for key in exported}
    return keys
