"""Latency predictors: ``lut-sum`` (the sum of a subnet's table entries) and ``calibrated``
(lut-sum corrected by a model fitted on subnets measured end to end).

A block measured alone pays the runtime's per-call overhead and misses the fusion and cache
effects of running inside a network, so the plain sum is biased (nn-Meter's lesson). A small
linear model over the per-kind sums and the block count, fitted on ~40 measured subnets
with relative-error weights and chosen by cross-validation, removes most of that bias.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NotRequired, Protocol, TypedDict, cast

import numpy as np

from latency.blocks import BlockIndex, stem_block, stem_channels
from latency.metrics import validation_figures
from latency.table import REMEASURE, LatencyTable, TableError, TableHeader
from once_for_all.files import read_json, write_text
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

PREDICTOR_FORMAT = "edgenas.predictor/1"


class PredictorDocument(TypedDict):
    """``predictor.json``: a latency predictor. A calibrated one adds its fitted model, its
    validation figures and the subnets it was calibrated on."""

    format: str
    kind: str  # lut-sum or calibrated
    header: dict[str, Any]  # TableHeader.to_dict()
    space: dict[str, Any]  # SearchSpace.to_dict()
    block_ms: dict[str, float]  # the table's block keys -> ms
    # resolution -> block key -> ms, where a table holds another figure for a block at that
    # input resolution (published tables measured each resolution on its own)
    resolution_ms: NotRequired[dict[str, dict[str, float]]]
    model: NotRequired[dict[str, Any]]  # LinearModel.to_dict()
    validation: NotRequired[dict[str, Any]]
    calibration: NotRequired[dict[str, Any]]  # subnets, measured_ms, held_out_ms


def read_predictor(path: Path) -> PredictorDocument:
    """A predictor file as written (refused with one ``TableError`` line if it is not one);
    ``load_predictor`` builds the predictor from it."""
    doc = read_json(
        path,
        formats=PREDICTOR_FORMAT,
        what="a latency predictor",
        fix="give the predictor.json that edgenas profile wrote",
        error=TableError,
    )
    return cast(PredictorDocument, doc)


def write_predictor(path: Path, doc: PredictorDocument) -> None:
    # Not write_json, which refuses NaN: validation figures may hold one.
    write_text(path, json.dumps(doc, indent=1) + "\n")


class LatencyPredictor(Protocol):
    """Latency in milliseconds of any subnet of ``space`` on the device of ``header``."""

    kind: str
    space: SearchSpace
    header: TableHeader

    def predict(self, subnet: Subnet) -> float: ...

    def predict_many(self, subnets: Sequence[Subnet]) -> np.ndarray: ...

    def lowest(self, resolution: int) -> tuple[Subnet, float]:
        """The subnet at ``resolution`` with the lowest prediction, and that prediction."""
        ...

    def save(self, path: Path) -> None: ...


@dataclass(frozen=True)
class BlockWeights:
    """A prediction as a weighted sum of a subnet's table entries: what the stem's entry,
    the head's and each active slot's in each stage count for, a constant per active slot
    and one per subnet. Every predictor here is one (lut-sum: all weights 1), which is what
    makes its lowest prediction exact to find, stage by stage."""

    stem: float
    head: float
    stages: tuple[float, ...]
    per_block: float = 0.0
    constant: float = 0.0


@lru_cache(maxsize=8)
def _index(space: SearchSpace, resolutions: tuple[int, ...]) -> BlockIndex:
    return BlockIndex(space, resolutions=resolutions)


class LutSumPredictor:
    """The sum of the table entries of a subnet's blocks. ``resolution_ms`` gives, per input
    resolution, the blocks whose figure differs there from ``block_ms`` (tables measured per
    resolution, as OFA's published ones: the same 6x6 head at 176 and 192 px has two)."""

    kind = "lut-sum"

    def __init__(
        self,
        space: SearchSpace,
        header: TableHeader,
        block_ms: Mapping[str, float],
        *,
        resolution_ms: Mapping[int, Mapping[str, float]] | None = None,
    ) -> None:
        header.check(what="latency table", space_id=space.id)
        self.space, self.header = space, header
        self.index = _index(space, header.resolutions)
        missing = [k for k in self.index.keys if k not in block_ms]
        if missing:
            raise TableError(
                f"the table for {header.device} lacks {len(missing)} of {len(self.index.keys)} "
                f"blocks (e.g. {missing[0]}); run edgenas profile again to finish it"
            )
        self.block_ms = {k: float(block_ms[k]) for k in self.index.keys}
        # An int8 table also times the stem as files that split it run it (enumerate_blocks).
        self.split_stem_ms = {
            k: float(block_ms[k])
            for r in header.resolutions
            for g in range(2, stem_channels(space) + 1)
            if (k := stem_block(space, r, groups=g).key) in block_ms
        }
        every = {**self.block_ms, **self.split_stem_ms}
        bad = next((k for k, ms in every.items() if not 0.0 <= ms < math.inf), None)
        if bad is not None:
            # A negative time let search pick a subnet at -23 ms; NaN made --json invalid.
            raise TableError(
                f"the table for {header.device} gives block {bad} {every[bad]} ms, not a "
                f"time (a finite number >= 0): the file was edited or damaged; {REMEASURE}"
            )
        position = {k: i for i, k in enumerate(self.index.keys)}
        self.resolution_ms: dict[int, dict[str, float]] = {}
        # One row of values per resolution; slot index -1 (a skipped block) reads the
        # trailing zero.
        base = np.array([*self.block_ms.values(), 0.0], dtype=np.float64)
        self._values = np.tile(base, (len(self.index.resolutions), 1))
        for r, figures in (resolution_ms or {}).items():
            unknown = [k for k in figures if k not in position]
            if r not in self.index.resolutions or unknown:
                what = f"block {unknown[0]}" if unknown else f"resolution {r}"
                raise TableError(
                    f"the table for {header.device} gives a figure for {what}, which its "
                    f"space and resolutions do not have; {REMEASURE}"
                )
            self.resolution_ms[int(r)] = {k: float(v) for k, v in figures.items()}
            bad = next(
                (k for k, ms in self.resolution_ms[r].items() if not 0 <= ms < math.inf), None
            )
            if bad is not None:  # as for block_ms: a negative figure reaches every prediction
                raise TableError(
                    f"the table for {header.device} gives block {bad} at {r} px "
                    f"{self.resolution_ms[r][bad]} ms, not a time (a finite number >= 0): the "
                    f"file was edited or damaged; {REMEASURE}"
                )
            row = self.index.resolutions.index(r)
            for k, v in figures.items():
                self._values[row, position[k]] = float(v)
        kinds = [k.split("-", 1)[0] for k in self.index.keys]
        self._is_mbconv = np.array([*(kind == "mbconv" for kind in kinds), False])

    @classmethod
    def from_table(cls, space: SearchSpace, table: LatencyTable) -> LutSumPredictor:
        return cls(
            space,
            table.header,
            {k: table.ms(k) for k in table.entries},
            resolution_ms=table.resolution_ms(),
        )

    def predict(self, subnet: Subnet) -> float:
        return float(self.predict_many([subnet])[0])

    def predict_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        return self._block_values(subnets)[0].sum(axis=1)

    def lowest(self, resolution: int, weights: BlockWeights | None = None) -> tuple[Subnet, float]:
        """The subnet at ``resolution`` with the lowest prediction (by ``weights``, default
        the plain sum), exactly: a slot's entry depends on its own kernel size and expand
        ratio only, so each stage takes the cheapest choice per slot and the depth whose
        slots add the least. Sampling had missed a reachable budget by 3%."""
        self.header.check_resolution(resolution)
        sp, depth = self.space, self.space.max_depth
        w = weights or BlockWeights(1.0, 1.0, (1.0,) * len(sp.stages))
        row = self.index.resolutions.index(resolution)
        values = self._values[row]
        total = (
            w.constant
            + w.stem * values[self.index.stem_columns[row]]
            + w.head * values[self.index.head_columns[row]]
        )
        ks: list[int] = []
        es: list[int] = []
        ds: list[int] = []
        ne = len(sp.expand_ratios)
        for s, stage_weight in enumerate(w.stages):
            columns = self.index.slot_columns[row, s * depth : (s + 1) * depth]
            cost = (stage_weight * values[columns] + w.per_block).reshape(depth, -1)
            choice = cost.argmin(axis=1)
            added = np.concatenate([[0.0], np.cumsum(cost.min(axis=1))])
            d = min(sp.depths, key=lambda n: added[n])  # ties: the shallower
            total += added[d]
            ds.append(d)
            ks += [sp.kernel_sizes[c // ne] for c in choice]
            es += [sp.expand_ratios[c % ne] for c in choice]
        subnet = Subnet(sp.id, tuple(ks), tuple(es), tuple(ds), resolution)
        return subnet, float(total)

    def split_stem(self, groups: int) -> SplitStemPredictor | None:
        """This predictor for int8 files whose stem is in ``groups`` groups of channels
        (``export.stem_split``): the sum with the table's split-stem entry in place of the
        whole stem's. None where the table has none at some resolution (an fp32 table, a
        table from before int8 tables timed the stem split, or a number of groups other than
        ``SPLIT_STEM_GROUPS`` that it was not profiled with: ``edgenas profile
        --stem-groups N``)."""
        extra = self.split_stem_extra_ms(groups)
        return SplitStemPredictor(self, groups, extra) if extra is not None else None

    def split_stem_extra_ms(self, groups: int) -> dict[int, float] | None:
        """Per resolution, the split stem's table entry less the whole stem's (None as
        ``split_stem``)."""
        keys = [stem_block(self.space, r, groups=groups).key for r in self.index.resolutions]
        if groups <= 1 or not all(k in self.split_stem_ms for k in keys):
            return None
        return {
            r: self.split_stem_ms[key] - float(self._values[row, self.index.stem_columns[row]])
            for row, (r, key) in enumerate(zip(self.index.resolutions, keys, strict=True))
        }

    def _block_values(self, subnets: Sequence[Subnet]) -> tuple[np.ndarray, np.ndarray]:
        """Each subnet's block figures ``[n, blocks + 2]`` (zero where skipped) and rows."""
        for subnet in subnets:
            if subnet.space == self.space.id:  # another space's subnet: rows says so
                self.header.check_resolution(subnet.r)
        rows = self.index.rows(subnets)
        at = self.index.resolution_rows(subnets)
        return self._values[at[:, None], rows], rows

    def features(self, subnets: Sequence[Subnet]) -> dict[str, np.ndarray]:
        """Per-subnet sums the calibration models use: stem, each stage, head, counts."""
        ms, rows = self._block_values(subnets)
        depth = self.space.max_depth
        slots = ms[:, 1:-1]
        out = {
            "lut_sum": ms.sum(axis=1),
            "stem": ms[:, 0],
            "head": ms[:, -1],
            "mbconv": slots.sum(axis=1),
            "blocks": (rows[:, 1:-1] >= 0).sum(axis=1).astype(np.float64),
        }
        for s in range(len(self.space.stages)):
            out[f"stage{s}"] = slots[:, s * depth : (s + 1) * depth].sum(axis=1)
        return out

    def to_dict(self) -> PredictorDocument:
        doc = PredictorDocument(
            format=PREDICTOR_FORMAT,
            kind=self.kind,
            header=self.header.to_dict(),
            space=self.space.to_dict(),
            block_ms={**self.block_ms, **self.split_stem_ms},
        )
        if self.resolution_ms:
            doc["resolution_ms"] = {str(r): dict(v) for r, v in self.resolution_ms.items()}
        return doc

    def save(self, path: Path) -> None:
        write_predictor(path, self.to_dict())


@dataclass(frozen=True)
class LinearModel:
    """``latency = features · coef + intercept`` over named features of ``LutSumPredictor``."""

    name: str
    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float

    def apply(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        x = np.stack([feats[f] for f in self.features], axis=1)
        return x @ np.asarray(self.coef) + self.intercept

    def block_weights(self, stages: int) -> BlockWeights:
        """This model as weights of a subnet's table entries (``LutSumPredictor.features``
        are sums of them: lut_sum of all, mbconv of the slots, stageN of stage N's)."""
        c = dict(zip(self.features, self.coef, strict=True))
        every = c.get("lut_sum", 0.0)
        slots = every + c.get("mbconv", 0.0)
        return BlockWeights(
            stem=every + c.get("stem", 0.0),
            head=every + c.get("head", 0.0),
            stages=tuple(slots + c.get(f"stage{s}", 0.0) for s in range(stages)),
            per_block=c.get("blocks", 0.0),
            constant=self.intercept,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "features": list(self.features),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, known: Collection[str]) -> LinearModel:
        """``ValueError`` naming what is wrong in an edited or damaged file: a feature not
        among ``known`` (those ``LutSumPredictor.features`` gives), a coefficient count other
        than the features', or a coefficient that is not finite (every prediction would be
        inf or NaN)."""
        model = cls(
            str(data["name"]),
            tuple(str(f) for f in data["features"]),
            tuple(float(c) for c in data["coef"]),
            float(data["intercept"]),
        )
        where = f"its calibration model {model.name}"
        if unknown := [f for f in model.features if f not in known]:
            raise ValueError(
                f"{where} uses feature {unknown[0]!r}, which is not one of {', '.join(known)}"
            )
        if len(model.coef) != len(model.features):
            raise ValueError(
                f"{where} has {len(model.coef)} coefficients for {len(model.features)} features"
            )
        if not all(math.isfinite(v) for v in (*model.coef, model.intercept)):
            raise ValueError(f"{where}: a coefficient is not finite")
        return model


def feature_names(space: SearchSpace) -> tuple[str, ...]:
    """Every feature a calibration model of ``space`` may use (``LutSumPredictor.features``)."""
    return tuple(dict.fromkeys(f for fs, _ in candidate_models(space).values() for f in fs))


def candidate_models(space: SearchSpace) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Name → (features, with intercept): from one scale factor to one weight per stage."""
    stages = tuple(f"stage{s}" for s in range(len(space.stages)))
    return {
        "scale": (("lut_sum",), False),
        "affine": (("lut_sum",), True),
        "affine+blocks": (("lut_sum", "blocks"), True),
        "per-kind": (("stem", "mbconv", "head", "blocks"), True),
        "per-stage": (("stem", *stages, "head", "blocks"), True),
    }


def fit_linear(
    name: str,
    feats: Mapping[str, np.ndarray],
    measured: np.ndarray,
    features: tuple[str, ...],
    *,
    intercept: bool,
    ridge: float = 1e-6,
) -> LinearModel:
    """Least squares on relative errors (each row weighted by 1/measured), lightly ridged."""
    x = np.stack([feats[f] for f in features], axis=1)
    if intercept:
        x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    w = 1.0 / measured
    xw, yw = x * w[:, None], measured * w
    scale = np.maximum(np.abs(xw).max(axis=0), 1e-12)  # ridge on a comparable scale per column
    xs = xw / scale
    beta = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ yw) / scale
    coef = tuple(float(b) for b in beta[: len(features)])
    return LinearModel(name, features, coef, float(beta[-1]) if intercept else 0.0)


class CalibratedPredictor:
    """lut-sum corrected by a linear model fitted on end-to-end measurements."""

    kind = "calibrated"

    def __init__(
        self,
        base: LutSumPredictor,
        model: LinearModel,
        *,
        validation: Mapping[str, Any],
        calibration: Mapping[str, Any],
    ) -> None:
        self.base, self.model = base, model
        self.space, self.header = base.space, base.header
        self.validation = dict(validation)
        self.calibration = dict(calibration)

    def predict(self, subnet: Subnet) -> float:
        return float(self.predict_many([subnet])[0])

    def predict_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        return self.model.apply(self.base.features(subnets))

    def lowest(self, resolution: int) -> tuple[Subnet, float]:
        return self.base.lowest(resolution, self.model.block_weights(len(self.space.stages)))

    def split_stem(self, groups: int) -> SplitStemPredictor | None:
        """This predictor for int8 files whose stem is in ``groups`` groups of channels: its
        figure plus the split's extra cost from the table (``SplitStemPredictor``)."""
        extra = self.base.split_stem_extra_ms(groups)
        return SplitStemPredictor(self, groups, extra) if extra is not None else None

    def to_dict(self) -> PredictorDocument:
        doc = self.base.to_dict()
        doc["kind"] = self.kind
        doc["model"] = self.model.to_dict()
        doc["validation"] = self.validation
        doc["calibration"] = self.calibration
        return doc

    def save(self, path: Path) -> None:
        write_predictor(path, self.to_dict())


class SplitStemPredictor:
    """A predictor's latency for int8 files whose stem is split into ``groups`` groups of
    channels (``export.stem_split``): its figure plus ``extra_ms`` at the subnet's resolution,
    the table's split-stem entry less its whole-stem entry. For a lut-sum predictor that is
    the sum with the one entry in place of the other. A calibrated predictor adds it after
    its fitted model rather than feeding the split entry through it: a table of one
    resolution gives every calibration subnet the same stem, so the model's stem coefficient
    is arbitrary there (mbv3-imagenet at 224 px: the split's cost came out at a third of
    what was measured)."""

    def __init__(
        self,
        predictor: LutSumPredictor | CalibratedPredictor,
        groups: int,
        extra_ms: Mapping[int, float],
    ) -> None:
        self.predictor, self.groups, self.extra_ms = predictor, groups, dict(extra_ms)
        self.kind, self.space, self.header = predictor.kind, predictor.space, predictor.header

    def predict(self, subnet: Subnet) -> float:
        return float(self.predict_many([subnet])[0])

    def predict_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        figures = self.predictor.predict_many(subnets)  # checks the subnets' resolutions
        return figures + np.array([self.extra_ms[s.r] for s in subnets], dtype=np.float64)

    def lowest(self, resolution: int) -> tuple[Subnet, float]:
        subnet, ms = self.predictor.lowest(resolution)  # the same stem at one resolution
        return subnet, ms + self.extra_ms[resolution]


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


CALIBRATION_FOLDS = 5
# The fewest measured subnets calibrate fits on: two per fold.
MIN_CALIBRATION = 2 * CALIBRATION_FOLDS


def calibrate(
    base: LutSumPredictor,
    subnets: Sequence[Subnet],
    measured_ms: Sequence[float],
    *,
    folds: int = CALIBRATION_FOLDS,
    seed: int = 0,
) -> CalibratedPredictor:
    """Fit every candidate model, keep the one with the lowest cross-validated RMSPE, refit it
    on all subnets. The validation figures are the cross-validated ones (held-out folds)."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    if len(subnets) != len(measured) or len(measured) < 2 * folds:
        raise ValueError(
            f"calibration needs at least {2 * folds} measured subnets (got {len(measured)}); "
            "measure more (--calibrate N)"
        )
    feats = base.features(subnets)
    splits = _folds(len(measured), folds, seed)
    scores: dict[str, dict[str, float]] = {}
    held_out: dict[str, np.ndarray] = {}
    for name, (features, intercept) in candidate_models(base.space).items():
        if len(features) + intercept > len(measured) - len(splits[0]):
            continue
        predicted = np.empty_like(measured)
        for test in splits:
            train = np.setdiff1d(np.arange(len(measured)), test)
            model = fit_linear(
                name,
                {f: v[train] for f, v in feats.items()},
                measured[train],
                features,
                intercept=intercept,
            )
            predicted[test] = model.apply({f: v[test] for f, v in feats.items()})
        scores[name] = validation_figures(predicted, measured)
        held_out[name] = predicted
    ranked = sorted(
        scores, key=lambda n: (scores[n]["rmspe"], len(candidate_models(base.space)[n][0]))
    )
    for best in ranked:
        features, intercept = candidate_models(base.space)[best]
        model = fit_linear(best, feats, measured, features, intercept=intercept)
        # A model fitted on some 40 subnets can still give others no time at all (a stage
        # weighted below zero); the next best is kept then.
        if _lowest_figure(base, model)[1] > 0:
            break
    else:
        raise ValueError(
            "no calibration model predicts a positive latency for every subnet; the "
            "end-to-end measurements disagree with the table: measure again (--calibrate N)"
        )
    return CalibratedPredictor(
        base,
        model,
        validation={
            "method": f"{folds}-fold cross-validation on the calibration subnets",
            "chosen": best,
            "calibrated": scores[best],
            "lut_sum": validation_figures(feats["lut_sum"], measured),
            "candidates": scores,
        },
        calibration={
            "subnets": [s.to_dict() for s in subnets],
            "measured_ms": [float(m) for m in measured],
            # Each subnet's prediction by the chosen model fitted without its fold: what the
            # validation figures summarise, kept for predicted-vs-measured plots.
            "held_out_ms": [float(p) for p in held_out[best]],
        },
    )


def load_predictor(path: Path) -> LutSumPredictor | CalibratedPredictor:
    """A predictor file written by ``save`` (lut-sum or calibrated)."""
    predictor = _build(read_predictor(path), path)
    if isinstance(predictor, CalibratedPredictor):
        try:
            _check_positive(predictor)
        except (TypeError, ValueError) as exc:
            # Its measurements are kept in the file: fitting them again needs no device.
            raise _damaged(
                path,
                str(exc),
                fix=f"`edgenas latency refit {path}` fits it again from the measurements it "
                "keeps (or run edgenas profile again)",
            ) from None
    return predictor


def refit_refused(path: Path) -> str | None:
    """Fit the calibrated predictor at ``path`` again, from the measurements it keeps (its
    calibration subnets and their times), where ``load_predictor`` refuses it because its
    model predicts no time for some subnet: one fitted by an older edgenas, which did not
    pass over such models as ``calibrate`` does. Nothing is measured, so no device is needed.
    Rewrites ``path`` and says what was done; None where the predictor loads as it is.
    ``TableError`` for a file that is damaged otherwise, or whose measurements no model fits
    with positive figures."""
    data = read_predictor(path)
    predictor = _build(data, path)
    if not isinstance(predictor, CalibratedPredictor):
        return None
    try:
        subnet, ms = _lowest_figure(predictor.base, predictor.model)
    except (TypeError, ValueError) as exc:
        raise _damaged(path, str(exc)) from None
    if ms > 0:
        return None
    try:
        calibration = data.get("calibration", {})
        subnets = [Subnet.from_dict(s) for s in calibration["subnets"]]
        refitted = calibrate(predictor.base, subnets, calibration["measured_ms"])
    except KeyError as exc:
        raise _damaged(path, f"it keeps no calibration {exc.args[0]!r} to refit from") from None
    except (TypeError, ValueError) as exc:
        raise _damaged(path, f"its kept measurements cannot be refitted ({exc})") from None
    refitted.save(path)
    return (
        f"its calibration model {predictor.model.name} predicted {ms:.4g} ms for subnet "
        f"{subnet.key} (fitted by an older edgenas, or edited); refitted from the {len(subnets)} subnets it "
        f"keeps: {refitted.model.name}"
    )


def _build(data: PredictorDocument, path: Path) -> LutSumPredictor | CalibratedPredictor:
    """The predictor a file's document describes, unchecked for positive figures."""
    try:
        space = SearchSpace.from_dict(data["space"])
        header = TableHeader.from_dict(data["header"])
        base = LutSumPredictor(
            space,
            header,
            data["block_ms"],
            resolution_ms={int(r): v for r, v in data.get("resolution_ms", {}).items()},
        )
        if data["kind"] == "lut-sum":
            return base
        if data["kind"] == "calibrated":
            return CalibratedPredictor(
                base,
                LinearModel.from_dict(data["model"], known=feature_names(space)),
                validation=data.get("validation", {}),
                calibration=data.get("calibration", {}),
            )
    except TableError as exc:  # its figures: named with the file they are in
        raise TableError(f"latency predictor {path}: {exc}") from None
    except KeyError as exc:
        raise _damaged(path, f"it has no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise _damaged(path, str(exc)) from None
    raise TableError(f"{path}: unknown predictor kind {data['kind']!r} (lut-sum or calibrated)")


def _damaged(
    path: Path,
    why: str,
    # profile rewrites predictor.json from lut.json and calibration.json, which it keeps.
    fix: str = "run edgenas profile again to rewrite it (or delete it)",
) -> TableError:
    return TableError(f"latency predictor {path} is damaged: {why}; {fix}")


def _lowest_figure(base: LutSumPredictor, model: LinearModel) -> tuple[Subnet, float]:
    """The subnet with the lowest figure ``model`` gives, over every profiled resolution."""
    weights = model.block_weights(len(base.space.stages))
    return min(
        (base.lowest(r, weights) for r in base.header.resolutions), key=lambda found: found[1]
    )


def _check_positive(predictor: CalibratedPredictor) -> None:
    """``ValueError`` for a model that predicts no time (<= 0 ms) for some subnet at a
    profiled resolution: an edited intercept or coefficient (``calibrate`` keeps none such).
    Refused at load rather than clamped at predict time, where a 0 ms figure would be
    search's favourite and hide the damage."""
    subnet, ms = _lowest_figure(predictor.base, predictor.model)
    if not ms > 0:
        raise ValueError(
            f"its calibration model {predictor.model.name} predicts {ms:.4g} ms for subnet "
            f"{subnet.key}, not a latency (an edited file, or a model that an older edgenas "
            "fitted)"
        )
