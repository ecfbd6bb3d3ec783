"""A run folder's bookkeeping: its ``run.json`` (the recipe, the package versions, each
stage's inputs and outputs with their SHA-256), which stages are made from which, and whether
a stage must run, continue or start afresh. What a stage's inputs are is
``edgenas.stage_inputs``'s to say; running the stages is ``edgenas.pipeline``'s.
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from edgenas.recipe import Recipe, RecipeError
from edgenas.report import REPORT_NAME
from edgenas.run_layout import RunLayout
from edgenas.run_record import (
    RUN_FORMAT,
    SUMMARY_NAME,
    RunDocument,
    StageRecord,
    read_run,
    write_run,
)
from edgenas.stages import StageName
from once_for_all.files import file_sha256

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
        self.layout = RunLayout(root)
        self.path = self.layout.record
        self.stages: dict[str, StageRecord] = {}
        self.started: dict[str, dict[str, Any]] = {}  # unfinished stages' inputs
        # data sources read this run (stage_inputs._data_inputs)
        self.fingerprints: dict[str, Any] = {}
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
        return not self.changed_outputs(key)

    def changed_outputs(self, key: str) -> list[str]:
        """The outputs of stage ``key``'s finished run that are gone or not as it wrote them."""
        record = self.stages.get(key)
        outputs: dict[str, str] = record.get("outputs", {}) if record else {}
        return [
            name
            for name, digest in outputs.items()
            if not (self.root / name).is_file() or file_sha256(self.root / name) != digest
        ]

    def scratch(self) -> RunFolder:
        """A copy of the records whose changes stay in memory (``save`` writes nothing): to
        work out what a stage would do, adoptions of old records included, before the run
        changes anything."""
        scratch = _ScratchRunFolder.__new__(_ScratchRunFolder)
        scratch.__dict__.update(self.__dict__)
        scratch.stages, scratch.started = deepcopy(self.stages), deepcopy(self.started)
        return scratch

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


class _ScratchRunFolder(RunFolder):
    def save(self) -> None:
        pass  # RunFolder.scratch: in memory only


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


def needs_run(
    run: RunFolder,
    key: str,
    inputs: dict[str, Any],
    *,
    stage: StageName,
    options: RunOptions,
    outputs: Sequence[Path],
    log: Log,
    resumable: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
) -> bool:
    """Whether stage ``key`` must run. A stage that is forced, or whose outputs were last
    made from other inputs, loses its ``outputs`` first: resuming them would mix two runs;
    the log says what is discarded and why. ``resumable(old, new)`` may say that the outputs
    of the old inputs can be continued (a longer search of the same study). A stage that
    runs is marked started on its inputs in run.json, so that a rerun after Ctrl-C or a kill
    continues its work (it was discarded as made from the inputs of the run before)."""
    forced = stage in options.force
    name = key.replace(":", " ")
    if not forced and run.up_to_date(key, inputs):
        log(f"{name}: up to date, skipped")
        return False
    old = run.last_inputs(key)
    if not forced and key in run.started and old == inputs:
        log(f"{name}: continuing where the last run stopped")
    elif not forced and old is not None and resumable is not None and resumable(old, inputs):
        # the same inputs: an output changed since (a supernet.pt cut short or edited)
        changed = _changes(old, inputs)
        outputs_changed = ", ".join(run.changed_outputs(key))
        why = f"{changed} changed" if changed else f"{outputs_changed} changed since written"
        log(f"{name}: continuing from the last run ({why})")
    elif forced or (old is not None and old != inputs):
        existing = [p for p in outputs if p.exists()]
        if existing:
            why = "forced" if forced else f"{_changes(old or {}, inputs)} changed"
            shown = ", ".join(str(p.relative_to(run.root)) for p in existing)
            log(f"{name}: {why}; discarding {shown} and starting again")
        for path in outputs:
            _remove(path)
        for dependent in MADE_FROM_OUTPUTS[stage]:
            _discard_stage(run, dependent, log, made_from=name, source=stage)
    run.start(key, inputs)
    return True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _independent_of(run: RunFolder, stage: StageName, source: StageName) -> set[str] | None:
    """What of stage ``stage``'s outputs does not depend on stage ``source``'s, and stays when
    they are discarded: None for all of it (a search that OFA's accuracy predictor scored
    read no supernet), else the names in its folder that stay (a search's subnet accuracies
    do not depend on a device's latencies: hours of evaluations on ImageNet)."""
    from edgenas.stages.search import ACCURACY_CACHE_NAME

    if stage != "search":
        return set()
    scored = (run.last_inputs(stage) or {}).get("search", {}).get("accuracy")
    if source == "train" and scored == "ofa-predictor":
        return None
    return {ACCURACY_CACHE_NAME} if source == "profile" else set()


def _discard_stage(
    run: RunFolder, stage: StageName, log: Log, *, made_from: str, source: StageName
) -> None:
    """Stage ``stage``'s outputs (its folder) and records go with the outputs of stage
    ``source`` they were made from (``made_from`` names it), but for what does not depend on
    them (``_independent_of``): kept, a recipe run into a folder it did not make reported the
    other recipe's front and cards as its own (run audit), whether or not it plans the
    stage."""
    kept = _independent_of(run, stage, source)
    if kept is None:
        return
    keys = [k for k in {**run.stages, **run.started} if k.split(":", 1)[0] == stage]
    folder = run.root / stage  # search/, export/
    staying = sorted(p.name for p in folder.glob("*") if p.name in kept)
    if folder.exists():
        also = f" but its {', '.join(staying)}, which it does not change" if staying else ""
        log(f"{stage}: made from what {made_from} discards; discarding {stage}{also}")
        for path in folder.iterdir() if staying else [folder]:
            if path.name not in kept:
                _remove(path)
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


def adopt_inputs(
    run: RunFolder, key: str, update: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> bool:
    """Give stage ``key``'s record (finished or started) the inputs ``update(recorded)``
    returns, where it says they describe the same work as today's (None where not), so that
    it is not done again; whether any record took new inputs."""
    adopted = False
    record = run.stages.get(key)
    if record is not None and (new := update(record["inputs"])) not in (None, record["inputs"]):
        record["inputs"], adopted = new, True
    started = run.started.get(key)
    if started is not None and (new := update(started)) not in (None, started):
        run.started[key], adopted = new, True
    if adopted:
        run.save()
    return adopted
