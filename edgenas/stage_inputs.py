"""What each stage's outputs are made from, as ``run.json`` records it (the recipe's
settings, the content of the files they name, the outputs of the stages before), and when
outputs made from other inputs still count: a training or search that can continue, a table
that more resolutions extend, files that moved, records of earlier versions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgenas.recipe import DeviceSection, Recipe
from edgenas.run_folder import Log, RunFolder, adopt_inputs
from edgenas.run_layout import SUPERNET_NAME
from once_for_all.files import file_sha256


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
    """What a data source holds, for the stages' inputs: a data file's SHA-256, a folder's
    digest as eval checks it (``source_digest``: each image's path, label and size, as the
    loader lists them; hashing every image of an ImageNet folder would take minutes). None
    for a built-in data set (its name stands for it: run folders recorded without one stay
    up to date) or a source that does not exist (loading it says so). A folder the loader
    refuses (an empty class folder) is refused here, as eval refuses it. Of a train/ + test/
    folder, what training reads (``training_part``): its test/ is the export's
    (``held_out_fingerprint``)."""
    from once_for_all.data.load import BUILTIN_SOURCES
    from once_for_all.data.source_digest import source_digest, training_part

    path = Path(source).expanduser()
    if source in BUILTIN_SOURCES:
        return None
    if path.is_file():
        return {"sha256": file_sha256(path)}
    if path.is_dir():
        return {"digest": training_part(str(source_digest(str(path))))}
    return None


def held_out_fingerprint(source: str) -> str | None:
    """The digest of a train/ + test/ (or val/) folder's held-out part, which export's test
    checks read (None for any other source): a test/ that changed exports again, and trains
    nothing again."""
    from once_for_all.data.load import BUILTIN_SOURCES
    from once_for_all.data.source_digest import held_out_part, source_digest

    path = Path(source).expanduser()
    if source in BUILTIN_SOURCES or not path.is_dir():  # a data set's name, not a folder here
        return None
    return held_out_part(str(source_digest(str(path))))


def adopt_folder_digest(run: RunFolder, key: str, inputs: dict[str, Any], folder: Path) -> None:
    """Records of edgenas before 2026-12-08 hold a folder's listing with every file's
    modification time (``{"listing": ...}``) where its digest now goes, so that a copy (cp -r)
    or a touched file trained again: a record whose listing is still the folder's (nothing
    changed since) takes today's digest; any other is compared as ever."""
    data = inputs.get("data")
    if not (isinstance(data, dict) and "digest" in data):
        return
    today: list[str] = []  # the folder's listing, computed once, when a record has one

    def digested(recorded: dict[str, Any]) -> dict[str, Any] | None:
        old = recorded.get("data")
        if not (isinstance(old, dict) and "listing" in old):
            return None
        if not today:
            today.append(_listing_sha256(folder))
        return {**recorded, "data": data} if old["listing"] == today[0] else None

    adopt_inputs(run, key, digested)


def _listing_sha256(folder: Path) -> str:
    """The listing edgenas before 2026-12-08 recorded (``adopt_folder_digest``)."""
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
            # os.fsencode: a name that is not UTF-8 (a Windows zip's) keeps its own bytes
            digest.update(os.fsencode(path.relative_to(folder)) + f"|{entry}\n".encode())
    return digest.hexdigest()


def adopt_data_fingerprint(run: RunFolder, inputs: dict[str, Any]) -> None:
    """A train stage recorded before data fingerprints were is taken as made from today's
    data, as it was then (else every such run would train again): when nothing else
    changed, its record gains the fingerprint."""
    if "data" in inputs:
        before = {k: v for k, v in inputs.items() if k != "data"}
        adopt_inputs(run, "train", lambda recorded: inputs if recorded == before else None)


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


def adopt_moved_files(run: RunFolder, inputs: dict[str, Any], log: Log) -> None:
    """A train stage whose data or init_from moved, the same files at a new path, keeps its
    work: its record takes the new path. Refused where missing (``pipeline._check_sources``), the
    fix was to give the new path, and that discarded the trained supernet."""
    here = _unlocated(inputs)
    if adopt_inputs(run, "train", lambda old: inputs if _unlocated(old) == here else None):
        log("train: its data or init_from moved (the same files); the training is kept")


def training_continues(
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


def device_name(device: str) -> str:
    from devices.profiles import load_profile

    return load_profile(device).name


def profile_inputs(recipe: Recipe, section: DeviceSection) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "space": recipe.search_space().id,
        # per_op only when set: runs recorded before it existed stay up to date.
        "device": section.model_dump(
            mode="json", exclude={"budget_ms"} | (set() if section.per_op else {"per_op"})
        ),
        "profile": _profile_dump(section.name),
    }
    if groups := timed_stem_groups(recipe):  # likewise
        inputs["stem_groups"] = list(groups)
    return inputs


# Profile keys added after runs were recorded, left out of the inputs at their default so
# that those runs stay up to date (a key added with its default changes nothing measured).
_LATER_PROFILE_KEYS = {"x86_amx": True}


def _profile_dump(name: str) -> dict[str, Any]:
    from devices.profiles import load_profile

    dump = load_profile(name).model_dump(mode="json")
    for key, default in _LATER_PROFILE_KEYS.items():
        if dump.get(key) == default:
            del dump[key]
    return dump


def timed_stem_groups(recipe: Recipe) -> tuple[int, ...]:
    """The stem groups export writes int8 files in, when fixed by the recipe and not the
    split every int8 table times anyway (``latency.profiler.split_stems``): int8 tables time
    the stem so too, and the card predicts those files with it."""
    from latency.blocks import SPLIT_STEM_GROUPS

    groups = recipe.export.stem_groups
    return (groups,) if isinstance(groups, int) and groups not in (1, SPLIT_STEM_GROUPS) else ()


def more_resolutions(old: dict[str, Any], new: dict[str, Any], *, every: Sequence[int]) -> bool:
    """A device entry whose only change is more resolutions (or the same ones, listed or
    not: none listed is ``every`` one of the space's) extends its table in place
    (``latency.table.TableHeader.extended``): only what the new ones add is measured."""

    def resolutions(inputs: dict[str, Any]) -> set[int]:
        return set(inputs.get("device", {}).get("resolution") or every)

    def without(inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "device": {**inputs.get("device", {}), "resolution": None}}

    return resolutions(old) <= resolutions(new) and without(old) == without(new)


def only_trials_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A search whose only change is more trials continues its study. Fewer start afresh:
    the study holds more trials than asked, and its front is not that of the recipe's."""

    def trials(inputs: dict[str, Any]) -> Any:
        return inputs.get("search", {}).get("trials")

    def without_trials(inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "search": {**inputs.get("search", {}), "trials": None}}

    more = isinstance(trials(old), int) and isinstance(trials(new), int)
    return more and trials(new) >= trials(old) and without_trials(old) == without_trials(new)


def search_outputs(folder: Path, old: dict[str, Any] | None, new: dict[str, Any]) -> list[Path]:
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


def upstream_inputs(
    run: RunFolder, recipe: Recipe, devices: Sequence[str], *, supernet: bool = True
) -> dict[str, Any]:
    """What search and export depend on from earlier stages: the supernet and each device's
    predictor, by content (and the data folder of a supernet not trained here). Without
    ``supernet`` (a search scored by OFA's accuracy predictor), the predictors only."""
    from once_for_all.accuracy_dataset import EVAL_METHOD

    predictors = {n: run.layout.predictor(n) for n in devices}
    inputs: dict[str, Any] = {
        "predictors": {n: file_sha256(p) if p.is_file() else None for n, p in predictors.items()},
    }
    if not supernet:
        return inputs
    inputs["supernet"] = run.output_hash("train", SUPERNET_NAME) or file_sha256(run.layout.supernet)
    if _evaluated_on_held_folder(run.layout.supernet):
        # How its accuracies are measured changed for such data (once_for_all's
        # EVAL_METHOD): a search or export of an older method is done again, once.
        inputs["eval_method"] = EVAL_METHOD
    data = _supernet_data(recipe)
    return inputs if data is None else {**inputs, "data": _data_inputs(run, str(data))}


def _evaluated_on_held_folder(supernet: Path) -> bool:
    """``checkpoint.evaluated_on_held_folder``; False for a file that does not read, which
    the stage then refuses in its own words."""
    from once_for_all.checkpoint import CheckpointError, evaluated_on_held_folder

    try:
        return supernet.is_file() and evaluated_on_held_folder(supernet)
    except CheckpointError:
        return False


# What a search scored by OFA's accuracy predictor recorded of the supernet before it went
# without one: the supernet it did not read, that supernet's data and how it is evaluated.
SUPERNET_INPUTS = ("supernet", "data", "eval_method")


def _data_inputs(run: RunFolder, source: str) -> Any:
    """What search and export record of the data an imported supernet is evaluated on: its
    content (``data_source_fingerprint``: the same files at a new path are the same data,
    other files at the same path are not), or a built-in set's name. Once a run: a folder's
    listing takes ~1 s per 80,000 images, and every export records it."""
    if source not in run.fingerprints:
        run.fingerprints[source] = data_source_fingerprint(source) or source
    return run.fingerprints[source]


def adopt_data_path(run: RunFolder, key: str, inputs: dict[str, Any], recipe: Recipe) -> None:
    """Search and export records of earlier versions hold the data folder's path where its
    fingerprint now goes: a record of today's path takes today's fingerprint, as the data
    there was then taken to be the same. The other inputs are compared as ever: a record that
    also differs in them (more trials, a refitted predictor) still continues or keeps its
    accuracy cache as it would have, rather than reading as made from other data."""
    data, path = inputs.get("data"), str(_supernet_data(recipe))

    def fingerprinted(recorded: dict[str, Any]) -> dict[str, Any] | None:
        return {**recorded, "data": data} if recorded.get("data") == path else None

    if isinstance(data, dict):
        adopt_inputs(run, key, fingerprinted)
        adopt_folder_digest(run, key, inputs, Path(path).expanduser())


def stage_data(recipe: Recipe) -> Path:
    """Where search and export read the supernet's data: the recipe's data.source. A
    supernet trained here finds its files there by their digest if they moved (the train
    record takes the new path: ``adopt_moved_files``); an imported one records none, and
    search and export record the data's content (``_data_inputs``), which a move keeps."""
    return Path(recipe.data.source)


def _supernet_data(recipe: Recipe) -> Path | None:
    """The recipe's data source for a supernet.pt this run does not train (one placed by
    'edgenas import ofa-supernet ... --out RUNDIR'): a checkpoint that records no data (an
    imported one) is evaluated and calibrated on it; a trained one must record this source."""
    return None if "train" in recipe.planned_stages else Path(recipe.data.source)
