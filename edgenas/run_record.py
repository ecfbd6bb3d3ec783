"""A run folder's two records: ``run.json`` (what each stage ran on and made) and
``summary.json`` (the chosen subnets, one row per device budget).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from once_for_all.errors import EdgenasError
from once_for_all.files import read_json, write_json

if TYPE_CHECKING:
    from export.card import DeviceCheck

RUN_FORMAT = "edgenas.run/1"
SUMMARY_FORMAT = "edgenas.run-summary/1"
SUMMARY_NAME = "summary.json"  # in the run folder, beside run.json


class StageRecord(TypedDict):
    """One finished stage (``train``, ``profile:<device>``, ``search``, ``export:<subnet>``)."""

    inputs: dict[str, Any]
    outputs: dict[str, str]  # file (relative to the run folder) -> SHA-256
    seconds: float
    finished: str  # ISO 8601, UTC


class RunDocument(TypedDict):
    """``run.json``: the recipe, the package versions, each finished stage, and the inputs
    of each stage that started and has not finished (stopped by Ctrl-C, a kill, an error):
    a rerun on the same inputs continues its work rather than discarding it."""

    format: str
    recipe_path: str
    recipe: dict[str, Any]  # the recipe as loaded, in JSON form
    versions: dict[str, str | None]  # None: not installed
    stages: dict[str, StageRecord]
    started: NotRequired[dict[str, dict[str, Any]]]  # stage key -> its inputs


def read_run(path: Path, *, fix: str, error: type[EdgenasError]) -> RunDocument:
    """A run folder's ``run.json`` (any other file, or one whose stage records are not
    objects as written, raises ``error`` with one line ending in ``fix``)."""
    what = "an edgenas run record"
    doc = read_json(path, formats=RUN_FORMAT, what=what, fix=fix, error=error)
    # A hand-edited record failed deep in the pipeline or the report with a traceback.
    stages, started = doc.get("stages", {}), doc.get("started", {})
    why = (
        _not_objects("stages", stages)
        or _not_objects("started", started)
        or _wrong_kinds("", doc, _RUN_KINDS)
    )
    for key, record in stages.items() if why is None else ():
        if not isinstance(record.get("inputs"), dict) or not isinstance(
            record.get("outputs"), dict
        ):
            why = f"stages[{key!r}] has no inputs and outputs objects"
        else:
            why = _wrong_kinds(f"stages[{key!r}].", record, _STAGE_KINDS)
        if why is not None:
            break
    if why is not None:
        raise error(f"{path} is not {what} ({why}): {fix}")
    return cast(RunDocument, doc)


_NUMBER = (int, float)
_NONE = type(None)
# The kinds of the values the pipeline and the report read, where present.
_RUN_KINDS: dict[str, tuple[type, ...]] = {
    "recipe": (dict,),
    "recipe_path": (str,),
    "versions": (dict,),
}
_STAGE_KINDS: dict[str, tuple[type, ...]] = {"seconds": (*_NUMBER, _NONE), "finished": (str,)}


def _wrong_kinds(where: str, doc: dict[str, Any], kinds: dict[str, tuple[type, ...]]) -> str | None:
    """Why a value of ``doc`` is not of the kinds ``kinds`` gives its key, or None (a
    key that is absent is another check's business)."""
    names = {
        int: "a number",
        float: "a number",
        str: "a string",
        dict: "an object",
        list: "a list",
        bool: "true or false",
        _NONE: "null",
    }
    for key, allowed in kinds.items():
        if key in doc and (
            not isinstance(doc[key], allowed)
            or (isinstance(doc[key], bool) and bool not in allowed)
        ):
            expected = " or ".join(dict.fromkeys(names[k] for k in allowed))
            return f"{where}{key} is {json.dumps(doc[key])[:40]}, not {expected}"
    return None


def _not_objects(name: str, value: Any) -> str | None:
    """Why ``value`` is not an object of objects, or None."""
    if not isinstance(value, dict):
        return f"{name} is not an object"
    bad = next((k for k, v in value.items() if not isinstance(v, dict)), None)
    return f"{name}[{bad!r}] is not an object" if bad is not None else None


def write_run(path: Path, doc: RunDocument) -> None:
    write_json(path, doc)


class MeasuredFile(TypedDict):
    """One model file as measured on a row's device, from the export's card."""

    latency_ms: float  # median
    speedup_vs_fp32: float | None  # the same format's fp32 latency over this file's
    runs_as: str  # XNNPACK partitions / float islands (export.card.execution_text)
    placement: NotRequired[str]  # where the device ran it, as its runtime reported
    accuracy: float | None  # on the test split
    top1_agreement: float | None  # with fp32, for int8 files
    # Its agreement and accuracy as the device ran it, where the device checked the files.
    on_device: NotRequired[DeviceCheck]


class SummaryRow(TypedDict):
    """The subnet chosen under one device's budget, from its export's card."""

    device: str
    budget_ms: float
    subnet: str  # the subnet's key, also its export folder's name
    accuracy_fp32: float | None
    accuracy_int8: dict[str, float]  # by model file
    file: str | None  # the recommended file: the fastest accurate enough (the card says)
    # False: no file reached the agreement target, and ``file`` is the one that agrees best.
    # Absent in summaries of an earlier edgenas.
    file_meets_accuracy: NotRequired[bool]
    # True: the recommended file measured above the budget (``over_budget``). Absent in
    # summaries of an earlier edgenas.
    file_over_budget: NotRequired[bool]
    # The precision of the files the device's table predicts (the latency the search held to
    # the budget), where the recommended file is of another: an fp32 file recommended for an
    # int8 device whose int8 files missed the agreement target or ran slower.
    searched_precision: NotRequired[str]
    latency_predicted_ms: float | None
    latency_measured_ms: float | None
    latency_measured_at_baseline_ms: float | None
    bytes: int | None
    folder: str
    files: list[str]
    measured_files: dict[str, MeasuredFile]


# Beside a recommended file where no file reached the agreement target
# (--min-int8-agreement): the card then recommends the one that agrees best.
BELOW_TARGET = "(below target)"
# Beside a recommended file whose latency is above the budget it was chosen under.
OVER_BUDGET = "(over budget)"


def searched_mark(row: SummaryRow) -> str | None:
    """Beside a recommended file of another precision than the device's table: "(int8
    searched)"."""
    precision = row.get("searched_precision")
    return f"({precision} searched)" if precision else None


def over_budget(row: SummaryRow) -> bool:
    """Whether the row's file takes longer than its budget: measured (at the predictor's
    baseline where the device has one, the unit budgets are in), else predicted. The search
    held the subnet's predicted latency to the budget; the exported file can cost more (a
    stem split in groups for int8 agreement, the predictor's error)."""
    ms = row.get("latency_measured_at_baseline_ms")
    if ms is None:
        ms = row["latency_measured_ms"]
    if ms is None:
        ms = row["latency_predicted_ms"]
    return ms is not None and ms > row["budget_ms"]


def device_label(row: SummaryRow, rows: Sequence[SummaryRow]) -> str:
    """The row's device, with its budget where the summary has several rows for it."""
    if sum(r["device"] == row["device"] for r in rows) > 1:
        return f"{row['device']} <= {row['budget_ms']:g} ms"
    return row["device"]


class RunSummary(TypedDict):
    """``summary.json``: what ``edgenas run`` made (also what it prints)."""

    format: str
    run: str  # the run folder
    recipe: str  # the recipe's name
    stages: dict[str, float | None]  # seconds per finished stage of this recipe's run
    chosen: list[SummaryRow]
    # A run that searched and exported nothing: the search's choices (pareto.json's), one per
    # device budget: device, budget_ms, index (in its front), subnet, accuracy (measured, else
    # predicted), latency_ms (predicted on that device).
    searched: NotRequired[list[dict[str, Any]]]
    # The recipe's devices (their profile names): the report shows these, not every folder
    # under devices/ (a device a recipe no longer names keeps its table there).
    devices: NotRequired[list[str]]
    report: NotRequired[str]  # report.html


def read_summary(path: Path, *, fix: str, error: type[EdgenasError]) -> RunSummary:
    """A run folder's ``summary.json`` (any other file raises ``error`` with one line)."""
    what = "an edgenas run summary"
    doc = read_json(path, formats=SUMMARY_FORMAT, what=what, fix=fix, error=error)
    chosen, stages = doc.get("chosen"), doc.get("stages", {})
    why = None
    if not isinstance(chosen, list) or not all(isinstance(row, dict) for row in chosen):
        why = "chosen is not a list of objects"
    elif missing := next((k for row in chosen for k in _ROW_KINDS if k not in row), None):
        why = f"a chosen row has no {missing!r}"
    elif not isinstance(stages, dict):
        why = "stages is not an object"
    else:
        why = _wrong_kinds("", doc, _SUMMARY_KINDS) or next(
            (w for i, row in enumerate(chosen) if (w := _row_problem(i, row))), None
        )
    if why is None and not all(isinstance(d, str) for d in doc.get("devices", [])):
        why = "devices is not a list of names"
    if why is not None:
        raise error(f"{path} is not {what} ({why}): {fix}")
    return cast(RunSummary, doc)


_SUMMARY_KINDS: dict[str, tuple[type, ...]] = {
    "run": (str,),
    "recipe": (str,),
    "devices": (list,),
    "report": (str,),
}
# What the report reads from every row, of these kinds; the others (measured_files, ...)
# where present: summaries written before them lack them.
_ROW_KINDS: dict[str, tuple[type, ...]] = {
    "device": (str,),
    "budget_ms": _NUMBER,
    "subnet": (str,),
    "accuracy_fp32": (*_NUMBER, _NONE),
    "accuracy_int8": (dict,),
    "file": (str, _NONE),
    "latency_predicted_ms": (*_NUMBER, _NONE),
    "latency_measured_ms": (*_NUMBER, _NONE),
    "bytes": (int, _NONE),
    "folder": (str,),
}
_OPTIONAL_ROW_KINDS: dict[str, tuple[type, ...]] = {
    "latency_measured_at_baseline_ms": (*_NUMBER, _NONE),
    "file_meets_accuracy": (bool,),
    "file_over_budget": (bool,),
    "measured_files": (dict,),
    "files": (list,),
}


def _row_problem(at: int, row: dict[str, Any]) -> str | None:
    """Why chosen row ``at`` is not as ``build_summary`` writes it, or None."""
    where = f"chosen[{at}]."
    why = _wrong_kinds(where, row, _ROW_KINDS) or _wrong_kinds(where, row, _OPTIONAL_ROW_KINDS)
    if why is None and not all(isinstance(v, _NUMBER) for v in row["accuracy_int8"].values()):
        why = f"{where}accuracy_int8 is not an object of numbers"
    if why is None:
        why = _not_objects(f"{where}measured_files", row.get("measured_files", {}))
    return why


def write_summary(path: Path, doc: RunSummary) -> None:
    write_json(path, doc)
