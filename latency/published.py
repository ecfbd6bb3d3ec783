"""Published latency tables as a device: a table someone else measured, imported instead of
measured (device profiles of kind ``published``).

The one format so far is OFA's (``ofa.tutorial.latency_table.LatencyEstimator``): one YAML
file per input resolution, ``<layer key>: {count, mean, std}`` with times in milliseconds,
e.g. OFA's Samsung Note10 tables. OFA's keys are per layer (``Conv``, ``expanded_conv``,
``Conv_1``, ``AvgPool2D``, ``Conv_2``, ``Logits``); an edgenas block is one or more of them:
the stem is ``Conv`` and the fixed first block, each elastic block one ``expanded_conv``
(OFA writes its expanded width as ``round(in * e)``), and the head ``Conv_1 + AvgPool2D +
Conv_2 + Logits``. A block's latency is the sum of its layers' means, so the table's
lut-sum predictor gives exactly what OFA's ``LatencyTable.predict_efficiency`` gives.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devices.measurement import Fingerprint, Measurement
from devices.profiles import DeviceProfile, PublishedSection
from export.formats import ModelFormat, Precision
from latency.blocks import (
    BlockSpec,
    head_block,
    mbconv_block,
    slot_input_size,
    stem_block,
)
from latency.predictors import LutSumPredictor
from latency.profile_files import LUT_NAME, PREDICTOR_NAME
from latency.table import PUBLISHED_RUNTIME, LatencyTable, TableError, TableHeader
from once_for_all.errors import one_line
from once_for_all.network_config import first_block_config, head_config, slot_config
from once_for_all.search_space import SearchSpace

_FIELDS = ("count", "mean", "std")
# The tables do not say; a phone ships TFLite fp32 models, and the header needs one.
PUBLISHED_FORMAT: ModelFormat = "tflite"
PUBLISHED_PRECISION: Precision = "fp32"


def not_published(precision: str | None, model_format: str | None) -> tuple[str, str] | None:
    """The first setting asked of a published device that its tables do not hold ("precision"
    or "format", and the value): an import would write their fp32 TFLite figures under it."""
    for name, given, table in (
        ("precision", precision, PUBLISHED_PRECISION),
        ("format", model_format, PUBLISHED_FORMAT),
    ):
        if given not in (None, table):
            return name, given
    return None


def published_refusal(device: str, what: str, fix: str) -> str:
    """Why ``device``'s published tables cannot give ``what``, and ``fix``."""
    return (
        f"{device}'s published tables are of {PUBLISHED_PRECISION} {PUBLISHED_FORMAT} models, "
        f"not {what}, and nothing more can be measured; {fix}"
    )


@dataclass(frozen=True)
class Imported:
    table: LatencyTable
    predictor: LutSumPredictor


def import_published(
    profile: DeviceProfile,
    space: SearchSpace,
    tables: Path | None,
    out: Path,
    *,
    resolutions: Sequence[int] | None = None,
) -> Imported:
    """Build ``out/lut.json`` and ``out/predictor.json`` (lut-sum) for ``profile``'s published
    tables, read from the folder ``tables``. Every problem (no folder, a missing file, a
    layer the tables lack, an entry without a mean) raises one ``TableError`` line naming
    the file and the key."""
    published = profile.published
    assert published is not None  # the profile's validator requires it for this kind
    if tables is None:
        raise TableError(
            f"device {profile.name!r} is published tables: give the folder holding them "
            f"(--tables DIR, or 'tables:' in the recipe's device entry); download "
            f"{published.files.format(r='R')} from {published.url}"
        )
    if not tables.is_dir():
        raise TableError(
            f"--tables {tables} is not a folder: give the folder holding "
            f"{published.files.format(r='R')} (from {published.url})"
        )
    rs = _resolutions(profile.name, published, space, resolutions)
    files = [tables / published.files.format(r=r) for r in rs]
    for path in files:
        if not path.is_file():
            raise TableError(
                f"no {path.name} in {tables}: download it from {published.url}{path.name}"
            )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    fingerprint = Fingerprint(
        host=published.measured_on,
        cpu_model=f"published by OFA at {published.url}",
        cores=0,
        governor="n/a",
        runtime=PUBLISHED_RUNTIME,
        runtime_version=f"sha256:{digest.hexdigest()}",
        threads=0,
    )
    header = TableHeader(
        space_id=space.id,
        device=profile.name,
        fingerprint=fingerprint,
        model_format=PUBLISHED_FORMAT,
        precision=PUBLISHED_PRECISION,
        resolutions=rs,
    )
    _check_not_another_device(out / LUT_NAME, header)
    table = LatencyTable(header)
    first_r: dict[str, int] = {}  # the resolution whose file gave each entry
    for r, path in zip(rs, files, strict=True):
        layers = read_ofa_table(path)
        _check_covers(layers, space, r, path, published.url)
        for spec, keys in ofa_layer_keys(space, r):
            if first_r.get(spec.key, r) == r:
                first_r[spec.key] = r
                table.add(spec.key, _measurement(spec, keys, layers, path))
                continue
            # The same block shape at another resolution (the 6x6 head at 176 and 192 px)
            # was measured again, in that resolution's file: keep each file's figure.
            first = table.entries[spec.key]
            by_r = first.extra.setdefault(
                "ms_by_resolution", {str(first_r[spec.key]): first.mean_ms}
            )
            by_r[str(r)] = _measurement(spec, keys, layers, path).mean_ms
    predictor = LutSumPredictor.from_table(space, table)
    table.save(out / LUT_NAME)
    predictor.save(out / PREDICTOR_NAME)
    return Imported(table, predictor)


def _resolutions(
    device: str, published: PublishedSection, space: SearchSpace, asked: Sequence[int] | None
) -> tuple[int, ...]:
    available = [r for r in published.resolutions if r in space.resolutions]
    if asked:
        bad = [r for r in asked if r not in available]
        if bad:
            raise TableError(
                f"resolution {bad[0]}: device {device!r} publishes tables for "
                f"{_ints(available)} px in space {space.id}; choose among them"
            )
        return tuple(sorted(set(asked)))
    if not available:
        raise TableError(
            f"device {device!r} publishes tables for {_ints(published.resolutions)} px, none "
            f"of which space {space.id} has ({_ints(space.resolutions)}): profile it for the "
            "space its tables were measured on (OFA's: --space ofa-mbv3-w1.2)"
        )
    return tuple(available)


def _check_not_another_device(path: Path, header: TableHeader) -> None:
    """An import rewrites its table, but never over another device's measurements."""
    if not path.exists():
        return
    old = LatencyTable.load(path)
    if old.header.device != header.device or old.header.fingerprint.runtime != PUBLISHED_RUNTIME:
        raise TableError(
            f"{path} holds the table of {old.header.device} "
            f"({old.header.fingerprint.runtime}); give another output folder"
        )


def read_ofa_table(path: Path) -> dict[str, dict[str, Any]]:
    """An OFA LatencyEstimator YAML: layer key -> {count, mean, std}. Raises one
    ``TableError`` line for a file that is not one."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TableError(f"cannot read OFA latency table {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TableError(f"{path} is not an OFA latency table (not text)") from None
    except yaml.YAMLError as exc:
        raise TableError(f"{path} is not valid YAML ({one_line(exc, limit=120)})") from None
    if not isinstance(doc, dict) or not doc:
        raise TableError(
            f"{path} is not an OFA latency table: expected a mapping of layer keys to "
            "{count, mean, std}"
        )
    return doc


def _check_covers(
    layers: Mapping[str, Any], space: SearchSpace, r: int, path: Path, url: str
) -> None:
    """Refuse a table without every layer ``space`` needs at ``r`` px: a table for another
    space holds layers it does not need, a file cut short (a broken download) only some of
    those it needs."""
    needed = list(dict.fromkeys(k for _, keys in ofa_layer_keys(space, r) for k in keys))
    missing = [k for k in needed if k not in layers]
    if not missing:
        return
    # Cut short: what it holds is the space's. A space adapted to its data (10 classes, grey
    # input) lacks only its classifier or stem, and the file holds OFA's instead.
    if len(missing) < len(needed) and set(layers) <= set(needed):
        raise TableError(
            f"OFA latency table {path} lacks {len(missing)} of the {len(needed)} layers "
            f"space {space.id} needs at {r} px (first {missing[0]}): the file is incomplete; "
            f"download it again from {url}{path.name}"
        )
    raise TableError(
        f"OFA latency table {path} has no entry {missing[0]}: the tables do not cover this "
        "space's layers (OFA's Note10 tables are for ofa-mbv3-w1.2)"
    )


def _layer_ms(layers: Mapping[str, Any], key: str, path: Path) -> tuple[float, float, int]:
    """The mean, std and count of OFA layer ``key`` in the table read from ``path``
    (``_check_covers`` has found it there)."""
    entry = layers[key]
    missing = [f for f in _FIELDS if not isinstance(entry, dict) or f not in entry]
    if missing:
        raise TableError(f"OFA latency table {path}: entry {key} has no {missing[0]!r}")
    try:
        mean, std, count = float(entry["mean"]), float(entry["std"]), int(entry["count"])
    except (TypeError, ValueError, OverflowError):
        raise TableError(
            f"OFA latency table {path}: entry {key} has a non-numeric mean, std or count"
        ) from None
    # A NaN or infinite std went into lut.json, which is then not JSON (review).
    for name, value, ok in (
        ("mean", mean, math.isfinite(mean) and mean >= 0),
        ("std", std, math.isfinite(std) and std >= 0),
        ("count", count, count >= 1),
    ):
        if not ok:
            raise TableError(
                f"OFA latency table {path}: entry {key} has {name} {value!r}, not a "
                f"{'count of runs' if name == 'count' else 'finite time in ms'}: the file was "
                "edited or damaged; download it again"
            )
    return mean, std, count


def _measurement(
    spec: BlockSpec,
    keys: Sequence[str],
    layers: Mapping[str, Any],
    path: Path,
) -> Measurement:
    figures = [_layer_ms(layers, k, path) for k in keys]
    mean = sum(m for m, _, _ in figures)
    # OFA publishes means only (with std and count): the mean stands in for every statistic.
    return Measurement(
        model=spec.key,
        median_ms=mean,
        mean_ms=mean,
        std_ms=math.sqrt(sum(s * s for _, s, _ in figures)),
        p10_ms=mean,
        p90_ms=mean,
        min_ms=mean,
        n=min(c for _, _, c in figures),
        extra={
            "statistic": "mean",
            "published": {
                "file": path.name,
                "layers": list(keys),
                "mean_ms": [m for m, _, _ in figures],
                "std_ms": [s for _, s, _ in figures],
                "count": [c for _, _, c in figures],
            },
        },
    )


def ofa_layer_keys(space: SearchSpace, r: int) -> Iterator[tuple[BlockSpec, list[str]]]:
    """Every block of ``space`` at ``r`` px with the OFA layer keys it is made of (blocks
    that several slots share come once per slot)."""
    stem = stem_block(space, r)
    c_stem = space.width(space.stem_width)
    size = _out(r, space.stem_stride)
    first = first_block_config(space)
    first_out = _out(size, first["stride"])
    yield (
        stem,
        [
            _key("Conv", (r, r, space.in_channels), (size, size, c_stem)),
            _expanded_conv(first, size, first_out, mid=first["mid_channels"]),
        ],
    )
    for slot in range(space.num_blocks):
        size = slot_input_size(space, slot, r)
        for k in space.kernel_sizes:
            for e in space.expand_ratios:
                cfg = slot_config(space, slot, k, e)
                out = _out(size, cfg["stride"])
                # OFA's tables write the expanded width as round(in * e), not rounded to 8.
                mid = round(cfg["in_channels"] * e)
                yield mbconv_block(cfg, size), [_expanded_conv(cfg, size, out, mid=mid)]
    head = head_config(space)
    f = space.feature_size(r)
    cin, final, mix = head["in_channels"], head["final_expand"], head["feature_mix"]
    yield (
        head_block(space, r),
        [
            _key("Conv_1", (f, f, cin), (f, f, final)),
            _key("AvgPool2D", (f, f, final), (1, 1, final)),
            _key("Conv_2", (1, 1, final), (1, 1, mix)),
            _key("Logits", (1, 1, mix), (head["num_classes"],)),
        ],
    )


def _expanded_conv(cfg: Mapping[str, Any], size: int, out: int, *, mid: int) -> str:
    return _key(
        "expanded_conv",
        (size, size, cfg["in_channels"]),
        (out, out, cfg["out_channels"]),
        f"expand:{mid}",
        f"kernel:{cfg['kernel_size']}",
        f"stride:{cfg['stride']}",
        f"idskip:{int(cfg['residual'])}",
        f"se:{int(cfg['se_channels'] > 0)}",
        f"hs:{int(cfg['act'] == 'hswish')}",
    )


def _key(layer: str, inp: tuple[int, ...], out: tuple[int, ...], *rest: str) -> str:
    # As LatencyEstimator.query writes them: "Conv-input:224x224x3-output:112x112x24".
    shape = "x".join
    return "-".join(
        [layer, f"input:{shape(map(str, inp))}", f"output:{shape(map(str, out))}", *rest]
    )


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _ints(values: Sequence[int]) -> str:
    return ", ".join(map(str, values))
