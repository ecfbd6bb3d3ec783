"""The latency lookup table (``lut.json``): one measurement per distinct block of a space.

The header says what was measured where (space id, device fingerprint, runtime, precision,
model format, resolutions) and, for timed devices, which reference model normalises the
entries and its baseline latency (see ``latency.reference``); a table is refused for another
space or device. A run asked for more resolutions than a table covers extends it in place
(``TableHeader.extended``): it keeps every entry and measures what the new ones add.
Tables are written atomically after every batch, so a killed profiling run loses at most one
batch.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np

from devices.measurement import Fingerprint, MeasuredWith, Measurement
from export.formats import MODEL_FORMATS, PRECISIONS, ModelFormat, Precision
from latency.blocks import unprofiled_fix
from latency.reference import Reference, normalised_ms, reference_scale
from once_for_all.errors import EdgenasError, one_line
from once_for_all.files import read_json, write_text

# /2 added the reference model (header) and its per-entry scale; /1 tables hold raw entries.
TABLE_FORMAT = "edgenas.lut/2"
READABLE_TABLE_FORMATS = ("edgenas.lut/1", TABLE_FORMAT)
# The runtime of a published table's fingerprint (latency.published): nothing was run by
# edgenas, and nothing more can be measured.
PUBLISHED_RUNTIME = "published"


# A rerun keeps the entries a table has (it measures only what is missing), so a damaged
# table is not mended by profiling again into it: only a new file is.
REMEASURE = "delete it (or use another output folder) and run edgenas profile again"


class TableError(EdgenasError, ValueError):
    """A table that cannot be used as asked; the message names the file and the fix."""


class TableDocument(TypedDict):
    """``lut.json``: one measurement per block, under one header."""

    format: str
    header: dict[str, Any]  # TableHeader.to_dict()
    entries: dict[str, dict[str, Any]]  # block key -> Measurement.to_dict() less its format


def read_table(path: Path) -> TableDocument:
    """A latency table of any readable format (anything else raises one ``TableError`` line)."""
    doc = read_json(
        path,
        formats=READABLE_TABLE_FORMATS,
        what="a latency table",
        fix=REMEASURE,
        error=TableError,
    )
    return cast(TableDocument, doc)


def write_table(path: Path, doc: TableDocument) -> None:
    # Not write_json, which refuses NaN: this file has always kept what a device reported.
    write_text(path, json.dumps(doc, indent=1) + "\n")


@dataclass(frozen=True)
class TableHeader:
    """What a table (or a predictor built from one) is valid for."""

    space_id: str
    device: str
    fingerprint: Fingerprint
    model_format: ModelFormat
    precision: Precision
    resolutions: tuple[int, ...]  # input resolutions profiled (a table may cover a subset)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )
    reference: Reference | None = None  # None: raw timings (simulators, /1 tables)
    # The settings besides the fingerprint that change what the entries mean (pinned cores,
    # warmup, delegate or provider options: Device.measured_with); None: unknown, a table
    # written before headers recorded them.
    measured_with: MeasuredWith | None = None
    # The resolutions each extension added, in order (``extended``); the rest of
    # ``resolutions`` are those the table was made with.
    added_resolutions: tuple[tuple[int, ...], ...] = ()

    @property
    def runtime(self) -> str:
        return self.fingerprint.runtime

    @property
    def resolution_groups(self) -> tuple[tuple[int, ...], ...]:
        """The resolutions in the order the table got them: those it was made with, then
        each extension's (what keeps its calibration subnets when it is extended:
        ``latency.end_to_end.table_subnets``)."""
        added = {r for group in self.added_resolutions for r in group}
        return (tuple(r for r in self.resolutions if r not in added), *self.added_resolutions)

    def extended(self, resolutions: tuple[int, ...]) -> TableHeader:
        """This header covering ``resolutions`` (which ``check`` has found to include its
        own), the ones it lacked recorded as one more group of ``added_resolutions``."""
        added = tuple(sorted(set(resolutions) - set(self.resolutions)))
        if not added:
            return self
        return replace(
            self,
            resolutions=tuple(sorted({*self.resolutions, *added})),
            added_resolutions=(*self.added_resolutions, added),
        )

    def check_resolution(self, resolution: int) -> None:
        """Refuse a resolution the table has no figures for, saying which it has and how to
        get the others (a published table has no others: nothing more can be measured)."""
        if resolution in self.resolutions:
            return
        profiled = ", ".join(map(str, self.resolutions))
        if self.runtime == PUBLISHED_RUNTIME:
            raise TableError(
                f"{self.device}'s published tables cover resolutions {profiled}, not "
                f"{resolution}: choose a subnet at one of those"
            )
        raise TableError(
            f"resolution {resolution} was not profiled on {self.device} (profiled: {profiled}): "
            f"{unprofiled_fix(resolution, self.resolutions)}"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fingerprint"] = self.fingerprint.to_dict()
        out["resolutions"] = list(self.resolutions)
        out["runtime"] = self.runtime
        out["reference"] = self.reference.to_dict() if self.reference is not None else None
        out["measured_with"] = dict(self.measured_with) if self.measured_with is not None else None
        # Written only once a table is extended: other headers stay as they were.
        added = out.pop("added_resolutions")
        if added:
            out["added_resolutions"] = [list(group) for group in added]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableHeader:
        """``ValueError`` naming the field for a model format or precision edgenas does not
        measure (an edited file would otherwise load, and export nothing it predicts)."""
        for field_name, allowed in (("model_format", MODEL_FORMATS), ("precision", PRECISIONS)):
            if data[field_name] not in allowed:
                raise ValueError(
                    f"its header's {field_name} is {data[field_name]!r}, not one of "
                    f"{', '.join(allowed)}"
                )
        return cls(
            space_id=str(data["space_id"]),
            device=str(data["device"]),
            fingerprint=Fingerprint.from_dict(data["fingerprint"]),
            model_format=data["model_format"],
            precision=data["precision"],
            resolutions=tuple(int(r) for r in data["resolutions"]),
            created=str(data["created"]),
            reference=Reference.from_dict(ref) if (ref := data.get("reference")) else None,
            measured_with=(
                tuple(sorted((str(k), str(v)) for k, v in given.items()))
                if (given := data.get("measured_with")) is not None
                else None
            ),
            added_resolutions=_added_resolutions(data),
        )

    def check(
        self,
        *,
        what: str,
        space_id: str | None = None,
        fingerprint: Fingerprint | None = None,
        model_format: str | None = None,
        precision: str | None = None,
        resolutions: tuple[int, ...] | None = None,
        measured_with: MeasuredWith | None = None,
        device: str | None = None,
        elsewhere: str = "use another output folder",
    ) -> None:
        """Raise ``TableError`` if this header is for another space, device or setup.
        ``device`` names the caller's device and ``elsewhere`` ends a ``measured_with``
        refusal: what else the caller can do (another output folder, profiling again).
        ``resolutions`` are those the caller covers: this header's, or more (a table is
        extended to more in place, ``extended``); fewer or others are refused, naming the
        ``--resolution`` options that would extend it."""
        if space_id is not None and space_id != self.space_id:
            raise TableError(
                f"{what} is for search space {self.space_id}, not {space_id}; profile the "
                f"device for this space (edgenas profile DEVICE --space ...)"
            )
        # Unknown on either side (a table from before headers recorded them) is accepted: it
        # was most likely measured with the same device profile, and refusing would throw
        # away every table measured before, hours of a board's time; the caller records the
        # settings from then on. Except AMX refused: nothing could refuse it back then.
        stored = self.measured_with
        if stored is None and measured_with is not None and dict(measured_with).get("x86_amx"):
            stored = tuple(item for item in measured_with if item[0] != "x86_amx")
        then, now = (
            (_changing(stored), _changing(measured_with))
            if measured_with is not None and stored is not None
            else ({}, {})
        )
        if fingerprint is not None and not self.fingerprint.same_target(fingerprint):
            if not self.fingerprint.same_target(
                replace(fingerprint, threads=self.fingerprint.threads)
            ):
                raise TableError(
                    f"{what} was measured on {_describe(self.fingerprint)}, not on "
                    f"{_describe(fingerprint)}; profile this device into a folder of its own "
                    "instead of reusing it"
                )
            # Threads are the profile's setting, not the machine's: refused as a setting is,
            # with the others that differ and the one fix.
            then["threads"], now["threads"] = (
                str(self.fingerprint.threads),
                str(fingerprint.threads),
            )
        self._check_measured_with(what, (self.device, device), then, now, elsewhere)
        if model_format is not None and model_format != self.model_format:
            raise TableError(
                f"{what} holds {self.model_format} measurements, not {model_format}; "
                f"use --format {self.model_format} or another output folder"
            )
        if precision is not None and precision != self.precision:
            raise TableError(
                f"{what} holds {self.precision} measurements, not {precision}; "
                f"use --precision {self.precision} or another output folder"
            )
        if resolutions is not None and not set(self.resolutions) <= set(resolutions):
            raise TableError(_not_covered(what, self.resolutions, resolutions))

    def check_same_setup(self, header: TableHeader, *, what: str) -> None:
        """``check`` against everything ``header`` (the caller's table's) records."""
        self.check(
            what=what,
            space_id=header.space_id,
            fingerprint=header.fingerprint,
            model_format=header.model_format,
            precision=header.precision,
            resolutions=header.resolutions,
            measured_with=header.measured_with,
            device=header.device,
        )

    @staticmethod
    def _check_measured_with(
        what: str,
        devices: tuple[str, str | None],
        stored: dict[str, str],
        given: dict[str, str],
        elsewhere: str,
    ) -> None:
        # Measurements taken otherwise measure another latency: they must not mix in one file.
        # Every differing setting is named at once, so that one edit of the profile does.
        keys = [k for k in sorted(stored.keys() | given.keys()) if stored.get(k) != given.get(k)]
        if not keys:
            return
        measured_on, device = devices
        # Given another profile than the table's (a bundled one is not the user's to edit),
        # the table's profile comes first, and the settings are not "again" the given one's.
        another = measured_on is not None and device not in (None, measured_on)
        again = [f"{k}: {stored[k]}" for k in keys if stored.get(k) is not None]
        added = [k for k in keys if stored.get(k) is None]
        in_profile = "in the device profile" + ("" if another else " again")
        if not added:
            edits = f"set {' and '.join(again)} {in_profile}"
        elif not again:
            edits = f"remove {' and '.join(added)} from the device profile"
        else:
            edits = (
                f"set {' and '.join(again)} {in_profile} and remove {' and '.join(added)} from it"
            )
        if not another:
            fix = edits
        elif keys == ["x86_amx"]:
            # Bundled profiles come in pairs that differ by it alone: the table's is the fix.
            fix = "use the profile it was measured with ({}, which {})".format(
                measured_on, "refuses AMX" if again else "leaves AMX to the runtime"
            )
        else:
            fix = f"use the profile it was measured with ({measured_on}), or {edits}"
        # Joined with "and": a value may hold commas (cores [0, 1]).
        then = " and ".join(_setting(k, stored.get(k)) for k in keys)
        now = " and ".join(_setting(k, given.get(k)) for k in keys)
        raise TableError(
            f"{what} was measured with {then}, but the device profile now gives {now}; {fix}, "
            f"or {elsewhere}"
        )


# Options of onnxruntime's CPU provider, which it ignores: tables from before profiles refused
# them recorded them, though they changed nothing measured.
_IGNORED_OPTIONS = "provider_options.CPUExecutionProvider."


def _changing(settings: MeasuredWith) -> dict[str, str]:
    """``settings`` as compared between a file and a profile: those that change a time."""
    return {k: v for k, v in settings if not k.startswith(_IGNORED_OPTIONS)}


def _added_resolutions(data: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
    """The header's ``added_resolutions``; ``ValueError`` for groups that are not disjoint
    parts of its resolutions that leave some for the table's first run (an edited file)."""
    groups = tuple(tuple(int(r) for r in group) for group in data.get("added_resolutions") or ())
    added = [r for group in groups for r in group]
    resolutions = {int(r) for r in data["resolutions"]}
    if len(added) != len(set(added)) or not set(added) < resolutions or not all(groups):
        raise ValueError(
            f"its header's added_resolutions {[list(g) for g in groups]} are not distinct "
            f"parts of its resolutions {sorted(resolutions)}"
        )
    return groups


def _not_covered(what: str, have: tuple[int, ...], asked: tuple[int, ...]) -> str:
    """The refusal of ``asked`` resolutions that lack some of ``have``: the options that give
    them all, which extend the table (or, for fewer, are its own)."""
    give = " ".join(f"--resolution {r}" for r in sorted({*have, *asked}))
    if set(asked) < set(have):
        return (
            f"{what} covers resolutions {_ints(have)}, more than {_ints(asked)}; give {give} "
            "to go on with it (a table keeps its resolutions), or use another output folder"
        )
    return (
        f"{what} covers resolutions {_ints(have)}, not {_ints(asked)}; give {give} to extend "
        "it in place (only what the new ones add is measured), or use another output folder"
    )


def _setting(key: str, value: str | None) -> str:
    if value is None and key == "x86_amx":
        return "x86_amx true (the default)"
    return f"{key} {value}" if value is not None else f"no {key}"


def _ints(values: tuple[int, ...]) -> str:
    return ", ".join(map(str, values))


def _describe(fp: Fingerprint) -> str:
    # TFLite's delegate "none" is its builtin kernels: "tflite on none" read as a device
    on = (
        " with no delegate"
        if fp.accelerator == "none"
        else f" on {fp.accelerator}"
        if fp.accelerator
        else ""
    )
    return f"{fp.host} ({fp.cpu_model}, {fp.runtime}{on}, {fp.threads} thread(s))"


class LatencyTable:
    """Block key → measurement, under one header."""

    def __init__(
        self, header: TableHeader, entries: Mapping[str, Measurement] | None = None
    ) -> None:
        self.header = header
        self.entries: dict[str, Measurement] = dict(entries or {})

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def ms(self, key: str) -> float:
        """Median latency of block ``key`` in milliseconds, normalised to the reference."""
        try:
            return normalised_ms(self.entries[key])
        except KeyError:
            raise TableError(
                f"block {key} is not in the table for {self.header.device}; the table is "
                "incomplete: run edgenas profile again to finish it"
            ) from None

    def resolution_ms(self) -> dict[int, dict[str, float]]:
        """Per input resolution, the blocks measured there with another figure than
        ``ms(key)`` (an entry's ``extra["ms_by_resolution"]``: published tables measure each
        resolution on its own, so one block shape can have a figure per resolution)."""
        out: dict[int, dict[str, float]] = {}
        for key, m in self.entries.items():
            for r, ms in (m.extra.get("ms_by_resolution") or {}).items():
                out.setdefault(int(r), {})[key] = float(ms) * reference_scale(m)
        return out

    def values(self, keys: Iterable[str]) -> np.ndarray:
        return np.array([self.ms(k) for k in keys], dtype=np.float64)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.entries]

    def add(self, key: str, measurement: Measurement) -> None:
        self.entries[key] = measurement

    def to_dict(self) -> TableDocument:
        return TableDocument(
            format=TABLE_FORMAT,
            header=self.header.to_dict(),
            entries={k: _entry(m) for k, m in sorted(self.entries.items())},
        )

    def save(self, path: Path) -> None:
        write_table(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        data = read_table(path)
        where = ""
        try:
            header = TableHeader.from_dict(data["header"])
            entries = {}
            for where, entry in data["entries"].items():
                entries[where] = Measurement.from_dict(entry)
        except KeyError as exc:
            raise _damaged(path, where, f"it has no {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise _damaged(path, where, one_line(exc)) from None
        return cls(header, entries)


def _damaged(path: Path, entry: str, why: str) -> TableError:
    what = f"entry {entry}: " if entry else ""
    return TableError(f"latency table {path} is damaged: {what}{why}; {REMEASURE}")


def _entry(m: Measurement) -> dict[str, Any]:
    # Per-layer simulator details would make tables huge; the summary figures stay.
    out = m.to_dict()
    out.pop("format", None)
    out["extra"] = {k: v for k, v in m.extra.items() if k != "layers"}
    return out
