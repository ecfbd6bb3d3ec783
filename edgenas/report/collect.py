"""Reading a run folder into the plain data the report draws.

Every part is optional except ``run.json``: a run that only trained gets a report with its
training curves, and the sections of the stages it did not run say so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgenas.run_layout import RECORD_NAME, RunLayout
from edgenas.run_record import (
    SUMMARY_NAME,
    RunDocument,
    RunSummary,
    SummaryRow,
    read_run,
    read_summary,
)
from export.card import CardDocument, read_card
from latency.profile_files import LUT_NAME, PREDICTOR_NAME
from once_for_all.errors import EdgenasError

if TYPE_CHECKING:
    from edgenas.search.pareto import ParetoDocument
    from latency.predictors import PredictorDocument
    from latency.table import LatencyTable


class ReportError(EdgenasError, ValueError):
    """A run folder the report cannot read; the message names the file and the fix."""


@dataclass
class DeviceData:
    name: str
    predictor: PredictorDocument  # as written by edgenas profile
    path: Path
    # lut.json beside the predictor, where its entries hold per-op times (edgenas profile
    # --per-op); None otherwise: the block view then shows block latencies only.
    per_op_table: LatencyTable | None = None


@dataclass
class RunData:
    root: Path
    run: RunDocument
    summary: RunSummary | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    imported: str | None = None  # where supernet.pt came from, when not trained here
    pareto: ParetoDocument | None = None
    # Objective values of every completed trial, in pareto.json's objective order.
    trial_values: list[list[float]] | None = None
    devices: list[DeviceData] = field(default_factory=list)
    cards: list[CardDocument] = field(default_factory=list)
    # Chosen subnets' export folders written again since the summary (a user's own
    # `edgenas export --out` there): their cards no longer say what the summary's rows do.
    rewritten: list[str] = field(default_factory=list)
    # Section key -> the refusals of its files that did not read (truncated, another format):
    # said in its place, the rest of the page drawn.
    unreadable: dict[str, list[str]] = field(default_factory=dict)
    # The line of run.log where the last `edgenas run` into the folder stopped (a stage's
    # failure or interruption, or the recipe's checks); None where it finished.
    stopped: str | None = None

    def refused(self, sections: Iterable[str], exc: EdgenasError) -> None:
        for key in sections:
            # whole: the readers' refusals are one line, and end with what to do
            self.unreadable.setdefault(key, []).append(str(exc))

    @property
    def name(self) -> str:
        return str(self.run.get("recipe", {}).get("name") or self.root.name)

    @property
    def planned_stages(self) -> list[str]:
        """The stages the run's recipe names (none for a recipe this version cannot read)."""
        from pydantic import ValidationError

        from edgenas.recipe import Recipe

        try:
            return list(Recipe.model_validate(self.run.get("recipe", {})).planned_stages)
        except ValidationError:
            return []

    def stage_state(self, stage: str) -> str:
        """``unfinished`` (started, then failed or stopped), ``finished``, ``not run`` (named
        by the recipe, not started yet) or ``not planned``; a stage per device or subnet
        (``profile:pi4``) is unfinished if any of its parts is."""

        def recorded(keys: Iterable[str]) -> bool:
            return any(k == stage or k.startswith(f"{stage}:") for k in keys)

        if recorded(self.run.get("started", {})):
            return "unfinished"
        if recorded(self.run.get("stages", {})):
            return "finished"
        return "not run" if stage in self.planned_stages else "not planned"


_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d "
_STARTED = re.compile(_STAMP + r"recipe .* → .*: stages ")  # a run's first line (pipeline)
_STOPPED = re.compile(
    _STAMP + r"((?:recipe|train|profile|search|export) (?:failed|interrupted)\b.*)"
)


def last_stop(log: Path) -> str | None:
    """The first line of the failure or interruption that ended the last `edgenas run` that
    ``log`` (run.log) records, None where it finished, or where no log says."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    start = max((i for i, line in enumerate(lines) if _STARTED.match(line)), default=None)
    if start is None:
        return None
    for line in lines[start + 1 :]:
        if stop := _STOPPED.match(line):
            return stop.group(1)
    return None


RERUN = "rerun the stage that writes it (edgenas run RECIPE --force STAGE)"
# No stage writes summary.json: every run does at its end, skipping what is up to date.
RESUMMARISE = "rerun edgenas run on its recipe, which writes it again at its end"


def _history(root: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The per-epoch records saved in the training checkpoint (loaded weights-only), and
    where an imported supernet came from (``None``: trained here, or none yet)."""
    from once_for_all import CheckpointError
    from once_for_all.checkpoint import load_checkpoint

    layout = RunLayout(root)
    for path in (layout.supernet, layout.checkpoint):
        if path.is_file():
            try:
                payload = load_checkpoint(path)
            except CheckpointError as exc:
                raise ReportError(str(exc)) from None
            imported = payload.get("imported")
            source = (
                f"{imported.get('ofa_net_id', 'a supernet')} {imported.get('source', 'imported')}"
                if isinstance(imported, dict)
                else None
            )
            return list(payload.get("history") or []), source
    return [], None


def _trial_values(root: Path, pareto: ParetoDocument) -> list[list[float]] | None:
    """The study's completed trials, from the storage the run's search stage wrote."""
    import optuna

    from edgenas.search.study_runner import open_storage

    search = RunLayout(root).search
    url = next(
        (
            u
            for name, u in (
                ("study.log", f"journal:{search / 'study.log'}"),
                ("study.db", f"sqlite:///{search / 'study.db'}"),
            )
            if (search / name).is_file()
        ),
        None,
    )
    if url is None:
        return None
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        study = optuna.load_study(
            study_name=pareto.get("study", "edgenas"), storage=open_storage(url)
        )
    except (KeyError, ValueError) as exc:
        raise ReportError(f"cannot read the search study in {search} ({exc})") from None
    trials = study.get_trials(deepcopy=False)
    complete = optuna.trial.TrialState.COMPLETE
    values = [list(t.values) for t in trials if t.state == complete]
    # pareto.json counts every trial, whatever its state
    if len(trials) < pareto["trials"] or any(len(v) != len(pareto["objectives"]) for v in values):
        # Another storage's study (--storage) wrote pareto.json: this one is not its trials
        # (its objectives ended in an IndexError, its count in a plot of other trials).
        return None
    return values


def _per_op_table(path: Path) -> LatencyTable | None:
    """The table at ``path`` if any of its entries has per-op times."""
    from latency.table import LatencyTable, TableError

    if not path.is_file():
        return None
    try:
        table = LatencyTable.load(path)
    except TableError as exc:
        raise ReportError(str(exc)) from None
    return table if any(m.ops for m in table.entries.values()) else None


def collect(root: Path) -> RunData:
    """Everything the report shows from the run folder ``root``."""
    from edgenas.search.pareto import read_pareto
    from latency.predictors import read_predictor

    layout = RunLayout(root)
    if root.is_file():  # run.json itself, or the report
        raise ReportError(
            f"{root} is a file, not a run folder: give the folder that edgenas run wrote "
            f"(the one holding run.json{', ' + str(root.parent) if root.name == RECORD_NAME else ''})"
        )
    if not layout.record.is_file():
        raise ReportError(
            f"{root} is not a run folder (no run.json): give the folder that edgenas run wrote"
        )
    data = RunData(root=root, run=read_run(layout.record, fix=RERUN, error=ReportError))
    if (root / SUMMARY_NAME).is_file():
        data.summary = read_summary(root / SUMMARY_NAME, fix=RESUMMARISE, error=ReportError)
    data.history, data.imported = _history(root)
    data.stopped = last_stop(layout.log)
    if layout.pareto.is_file():
        # with the parts the report draws
        needs = {"objectives": list, "devices": list, "trials": int}
        try:
            data.pareto = read_pareto(layout.pareto, needs=needs)
        except EdgenasError as exc:
            data.refused(["pareto"], exc)
        else:
            data.trial_values = _trial_values(root, data.pareto)
    # Devices in the order the run profiled them, then any other profiled folder.
    profiled = [k.split(":", 1)[1] for k in data.run.get("stages", {}) if k.startswith("profile:")]
    folders = sorted(p.parent.name for p in layout.devices.glob(f"*/{PREDICTOR_NAME}"))
    if data.summary and "devices" in data.summary:  # a device the recipe dropped stays out
        folders = [n for n in folders if n in data.summary["devices"]]
    for name in [
        *(n for n in profiled if n in folders),
        *(n for n in folders if n not in profiled),
    ]:
        path = layout.predictor(name)
        try:
            predictor = read_predictor(path)
        except EdgenasError as exc:
            data.refused(["latency-predictors", "block-latency"], exc)
            continue
        try:
            per_op = _per_op_table(path.parent / LUT_NAME)
        except EdgenasError as exc:  # the device's predictor is still drawn
            data.refused(["block-latency"], exc)
            per_op = None
        data.devices.append(DeviceData(name, predictor, path, per_op))
    # Only the exports of the current choice (the pipeline removes the others; a folder a
    # user copied in, or one a recipe without export left, stays out), or every export of a
    # run without a summary yet.
    rows = data.summary.get("chosen", []) if data.summary else []
    chosen = {Path(row["folder"]).name for row in rows}
    cards: dict[str, CardDocument] = {}
    for path in sorted(layout.exports.glob("*/card.json")):
        if not data.summary or path.parent.name in chosen:
            try:
                cards[path.parent.name] = read_card(path)
            except EdgenasError as exc:
                data.refused(["models"], exc)
    data.cards = list(cards.values())
    for row in rows:
        folder = Path(row["folder"]).name
        card = cards.get(folder)
        if card is not None and not _card_matches(card, row) and folder not in data.rewritten:
            data.rewritten.append(folder)
    return data


def rewritten_line(folders: list[str]) -> str:
    """What the page and the command say of chosen subnets' folders exported again."""
    return (
        f"{', '.join(f'export/{name}' for name in folders)}: exported again since this run "
        "(the card there is of another subnet or other files than the run's summary); the "
        "chosen subnets are the run's and the model cards the folders' as they are now; "
        "run the recipe again (edgenas run RECIPE), which exports its choice there again"
    )


def _card_matches(card: CardDocument, row: SummaryRow) -> bool:
    """Whether ``card`` is still the one ``row`` was made from: the same subnet, files and
    fp32 accuracy, and the recommended file of the same size. A card edited out of shape
    counts as matching: the model cards' part of the page names it."""
    try:
        files = {f["name"]: f for f in card["files"]}
        recommended = files.get(row["file"]) if row["file"] is not None else None
        return (
            card["name"] == row["subnet"]
            and sorted(files) == sorted(row.get("files", files))
            and card["accuracy"]["fp32"] == row["accuracy_fp32"]
            and (row["file"] is None or (recommended and recommended["bytes"]) == row["bytes"])
        )
    except (KeyError, TypeError, AttributeError):
        return True
