"""Tables and predictors on synthetic block latencies (the device tests measure real ones)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from devices.measurement import Fingerprint, Measurement
from latency.blocks import enumerate_blocks, stem_block, subnet_blocks
from latency.predictors import (
    CalibratedPredictor,
    LinearModel,
    LutSumPredictor,
    calibrate,
    load_predictor,
    refit_refused,
)
from latency.table import PUBLISHED_RUNTIME, LatencyTable, TableError, TableHeader
from once_for_all import get_space
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet

FP = Fingerprint(
    host="board",
    cpu_model="Cortex-A72",
    cores=4,
    governor="performance",
    runtime="onnxruntime",
    runtime_version="1.32.0",
    threads=1,
)


def _table(space_name: str = "mbv3-tiny", *, seed: int = 0) -> LatencyTable:
    space = get_space(space_name)
    rng = np.random.default_rng(seed)
    header = TableHeader(space.id, "board", FP, "onnx", "fp32", space.resolutions)
    table = LatencyTable(header)
    for spec in enumerate_blocks(space):
        ms = float(rng.uniform(0.05, 0.5))
        table.add(spec.key, Measurement.from_times(spec.key, [ms, ms * 1.01, ms * 0.99]))
    return table


def test_lut_sum_is_the_sum_of_the_blocks_entries() -> None:
    space = get_space("mbv3-tiny")
    table = _table()
    predictor = LutSumPredictor.from_table(space, table)
    rng = random.Random(0)
    subnets = [space.sample(rng) for _ in range(50)] + [space.max_subnet(), space.min_subnet()]
    by_hand = [sum(table.ms(b.key) for b in subnet_blocks(space, s)) for s in subnets]
    assert predictor.predict_many(subnets) == pytest.approx(by_hand, rel=1e-12)
    assert predictor.predict(subnets[0]) == pytest.approx(by_hand[0], rel=1e-12)
    assert predictor.predict(space.max_subnet()) > predictor.predict(space.min_subnet())


def test_table_round_trip_and_incomplete_table(tmp_path: Path) -> None:
    space = get_space("mbv3-tiny")
    table = _table()
    path = tmp_path / "lut.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded.header == table.header
    assert {k: m.median_ms for k, m in loaded.entries.items()} == {
        k: m.median_ms for k, m in table.entries.items()
    }
    del loaded.entries[next(iter(loaded.entries))]
    with pytest.raises(TableError, match=r"lacks 1 of .* run edgenas profile again"):
        LutSumPredictor.from_table(space, loaded)


def test_a_table_for_another_space_or_device_is_refused() -> None:
    header = _table().header
    header.check(what="t", space_id=header.space_id, fingerprint=FP)
    other_space = get_space("mbv3-imagenet").id
    with pytest.raises(
        TableError, match=f"is for search space {header.space_id}, not {other_space}"
    ):
        header.check(what="t", space_id=other_space)
    with pytest.raises(TableError, match=r"measured on board .* not on laptop"):
        header.check(what="t", fingerprint=replace(FP, host="laptop"))
    with pytest.raises(TableError, match="holds fp32 measurements, not int8"):
        header.check(what="t", precision="int8")
    with pytest.raises(TableError, match="is for search space"):
        LutSumPredictor(get_space("mbv3-imagenet"), header, {})


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something/1"}', "is not a latency table"),
        ('{"format": "edgenas.lut/1", "header": {}}', "is damaged"),
    ],
)
def test_damaged_table_files_give_one_clear_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "lut.json"
    path.write_text(content)
    with pytest.raises(TableError, match=message):
        LatencyTable.load(path)


def _end_to_end(predictor: LutSumPredictor, subnets: list, seed: int) -> np.ndarray:
    """A device where each block measured alone paid a 0.03 ms call overhead and the
    network runs 10% faster than the sum of its parts, with 2% noise."""
    f = predictor.features(subnets)
    n_calls = f["blocks"] + 2
    rng = np.random.default_rng(seed)
    return (0.9 * (f["lut_sum"] - 0.03 * n_calls) + 0.05) * rng.normal(1, 0.02, len(subnets))


def test_calibration_beats_lut_sum_on_held_out_subnets_and_round_trips(tmp_path: Path) -> None:
    from latency.metrics import validation_figures

    space = get_space("mbv3-tiny")
    base = LutSumPredictor.from_table(space, _table())
    rng = random.Random(0)
    train = [space.sample(rng) for _ in range(40)]
    test = [space.sample(rng) for _ in range(100)]
    predictor = calibrate(base, train, list(_end_to_end(base, train, 0)))
    measured = _end_to_end(base, test, 1)
    calibrated = validation_figures(predictor.predict_many(test), measured)
    plain = validation_figures(base.predict_many(test), measured)
    assert calibrated["rmspe"] < plain["rmspe"] / 3
    assert calibrated["within_10pct"] >= 0.95
    assert predictor.validation["calibrated"]["rmspe"] < predictor.validation["lut_sum"]["rmspe"]
    assert predictor.validation["chosen"] in predictor.validation["candidates"]

    path = tmp_path / "predictor.json"
    predictor.save(path)
    loaded = load_predictor(path)
    assert isinstance(loaded, CalibratedPredictor)
    assert loaded.predict_many(test) == pytest.approx(predictor.predict_many(test), rel=1e-12)
    assert loaded.header == base.header
    assert json.loads(path.read_text())["kind"] == "calibrated"


def test_calibration_needs_enough_subnets() -> None:
    space = get_space("mbv3-tiny")
    base = LutSumPredictor.from_table(space, _table())
    subnets = [space.sample(random.Random(i)) for i in range(5)]
    with pytest.raises(ValueError, match="at least 10 measured subnets"):
        calibrate(base, subnets, [1.0] * 5)


def test_predict_many_is_vectorised_and_matches_predict() -> None:
    space = get_space("mbv3-imagenet")
    base = LutSumPredictor.from_table(space, _table("mbv3-imagenet"))
    rng = random.Random(2)
    subnets = [space.sample(rng) for _ in range(10_000)]
    many = base.predict_many(subnets)
    assert many.shape == (10_000,)
    assert [base.predict(s) for s in subnets[:20]] == pytest.approx(list(many[:20]), rel=1e-12)


def test_lut_sum_predictor_file_round_trip(tmp_path: Path) -> None:
    space = get_space("mbv3-tiny")
    base = LutSumPredictor.from_table(space, _table())
    base.save(tmp_path / "p.json")
    loaded = load_predictor(tmp_path / "p.json")
    assert isinstance(loaded, LutSumPredictor)
    s = space.sample(random.Random(0))
    assert loaded.predict(s) == pytest.approx(base.predict(s))
    (tmp_path / "bad.json").write_text('{"format": "edgenas.predictor/1", "kind": "lut-sum"}')
    with pytest.raises(TableError, match="is damaged"):
        load_predictor(tmp_path / "bad.json")


@pytest.mark.parametrize("value", [-22.99, float("nan"), float("inf")])
def test_a_predictor_file_with_a_block_time_that_is_not_a_time_is_refused(
    tmp_path: Path, value: float
) -> None:
    # Negative times let search pick a subnet at -22.99 ms; NaN made --json invalid (issue 24).
    space = get_space("mbv3-tiny")
    LutSumPredictor.from_table(space, _table()).save(tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    key = next(iter(doc["block_ms"]))
    doc["block_ms"][key] = value
    (tmp_path / "p.json").write_text(
        json.dumps(doc)
    )  # Python's json writes NaN, as an editor might
    with pytest.raises(
        TableError, match=rf"gives block {key} {value} ms, not a time .* profile again$"
    ):
        load_predictor(tmp_path / "p.json")


@pytest.mark.parametrize("field", ["coef", "intercept"])
def test_a_calibration_model_that_is_not_finite_is_refused(tmp_path: Path, field: str) -> None:
    # Infinity coefficients predicted inf ms, exit 0 (issue 24's adversarial round).
    base = LutSumPredictor.from_table(get_space("mbv3-tiny"), _table())
    model = LinearModel("scale", ("lut_sum",), (1.0,), 0.0)
    CalibratedPredictor(base, model, validation={}, calibration={}).save(tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["model"][field] = [float("inf")] if field == "coef" else float("nan")
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(TableError, match=r"is damaged: its calibration model scale: .* not finite"):
        load_predictor(tmp_path / "p.json")


def test_a_table_of_one_resolution_predicts_that_resolution_only() -> None:
    space = get_space("mbv3-imagenet")
    rng = np.random.default_rng(0)
    header = TableHeader(space.id, "board", FP, "onnx", "fp32", (224,))
    table = LatencyTable(header)
    for spec in enumerate_blocks(space, resolutions=(224,)):
        table.add(spec.key, Measurement.from_times(spec.key, [float(rng.uniform(0.1, 1))]))
    assert len(table) < len(enumerate_blocks(space)) / 10
    predictor = LutSumPredictor.from_table(space, table)
    assert predictor.predict(space.max_subnet(r=224)) > predictor.predict(space.min_subnet(r=224))
    with pytest.raises(
        TableError,
        match=r"^resolution 160 was not profiled on board \(profiled: 224\): choose a profiled "
        r"resolution, or profile the device again into the same --out with --resolution 160 "
        r"--resolution 224 \(a recipe: add 160 to the device's resolution; the table is "
        r"extended: only what 160 adds is measured\)$",
    ):
        predictor.predict(space.max_subnet(r=160))


def test_a_published_table_names_its_resolutions_instead_of_profiling_more() -> None:
    space = get_space("mbv3-tiny")
    published = replace(FP, runtime=PUBLISHED_RUNTIME)
    header = TableHeader(space.id, "phone", published, "tflite", "fp32", (30, 32))
    table = LatencyTable(header)
    for spec in enumerate_blocks(space, resolutions=(30, 32)):
        table.add(spec.key, Measurement.from_times(spec.key, [0.1]))
    predictor = LutSumPredictor.from_table(space, table)
    assert predictor.predict(space.min_subnet(r=30)) > 0
    for many in ([space.min_subnet(r=28)], [space.max_subnet(), space.min_subnet()]):
        with pytest.raises(
            TableError,
            match=r"^phone's published tables cover resolutions 30, 32, not 28: choose a "
            r"subnet at one of those$",
        ):
            predictor.predict_many(many)


def _int8_table(space_name: str, *, split: Sequence[int]) -> LatencyTable:
    """A synthetic int8 table, with the stem split in each of ``split`` numbers of groups as
    profile writes them for int8, or none as tables from before it did."""
    space = get_space(space_name)
    rng = np.random.default_rng(3)
    header = TableHeader(space.id, "board", FP, "onnx", "int8", space.resolutions)
    table = LatencyTable(header)
    for spec in enumerate_blocks(space, split_stems=split):
        ms = float(rng.uniform(0.05, 0.5))
        table.add(spec.key, Measurement.from_times(spec.key, [ms, ms * 1.01, ms * 0.99]))
    return table


@pytest.mark.parametrize("space_name", ["mbv3-tiny", "mbv3-imagenet"])
def test_a_split_stems_prediction_takes_the_split_entry_for_the_whole_one(
    space_name: str, tmp_path: Path
) -> None:
    space = get_space(space_name)
    table = _int8_table(space_name, split=(2,))
    whole = LutSumPredictor.from_table(space, table)
    split = whole.split_stem(2)
    assert split is not None and whole.split_stem(3) is None and whole.split_stem(1) is None
    rng = random.Random(4)
    subnets = [space.sample(rng) for _ in range(30)] + [space.min_subnet(), space.max_subnet()]
    by_hand = [
        whole.predict(s)
        - table.ms(stem_block(space, s.r).key)
        + table.ms(stem_block(space, s.r, groups=2).key)
        for s in subnets
    ]
    assert split.predict_many(subnets) == pytest.approx(by_hand, rel=1e-12)
    assert whole.predict_many(subnets) == pytest.approx(  # the predictor itself is unchanged
        [sum(table.ms(b.key) for b in subnet_blocks(space, s)) for s in subnets], rel=1e-12
    )
    # A calibrated predictor adds the split's cost (the two entries' difference) to its own
    # figure: its model's stem coefficient is arbitrary where the stem never varied.
    train = [space.sample(rng) for _ in range(40)]
    calibrated = calibrate(whole, train, list(_end_to_end(whole, train, 0)))
    calibrated_split = calibrated.split_stem(2)
    assert calibrated_split is not None
    extra = np.array(by_hand) - whole.predict_many(subnets)
    expected = calibrated.predict_many(subnets) + extra
    assert calibrated_split.predict_many(subnets) == pytest.approx(expected, rel=1e-12)
    assert (calibrated_split.kind, calibrated_split.header) == ("calibrated", whole.header)
    # The split entries survive the predictor file.
    calibrated.save(tmp_path / "p.json")
    loaded = load_predictor(tmp_path / "p.json").split_stem(2)
    assert loaded is not None
    assert loaded.predict_many(subnets) == pytest.approx(expected, rel=1e-12)


def test_a_table_profiled_with_more_stem_groups_predicts_each(tmp_path: Path) -> None:
    # edgenas profile --stem-groups 3: the table times the stem in 2 and in 3 groups.
    space = get_space("mbv3-tiny")
    table = _int8_table("mbv3-tiny", split=(2, 3))
    whole = LutSumPredictor.from_table(space, table)
    subnets = [space.sample(random.Random(5)) for _ in range(10)]
    for groups in (2, 3):
        split = whole.split_stem(groups)
        assert split is not None
        by_hand = [
            whole.predict(s)
            - table.ms(stem_block(space, s.r).key)
            + table.ms(stem_block(space, s.r, groups=groups).key)
            for s in subnets
        ]
        assert split.predict_many(subnets) == pytest.approx(by_hand, rel=1e-12)
    assert whole.split_stem(4) is None
    whole.save(tmp_path / "p.json")
    assert load_predictor(tmp_path / "p.json").split_stem(3) is not None
    # The entry at one resolution missing: no prediction for that split, not a partial one.
    key = stem_block(space, space.resolutions[-1], groups=3).key
    partial = {k: table.ms(k) for k in table.entries if k != key}
    predictor = LutSumPredictor(space, table.header, partial)
    assert predictor.split_stem(3) is None and predictor.split_stem(2) is not None


def test_a_table_without_the_split_stem_gives_no_split_prediction(tmp_path: Path) -> None:
    space = get_space("mbv3-tiny")
    old = LutSumPredictor.from_table(space, _int8_table("mbv3-tiny", split=()))
    assert old.split_stem(2) is None
    assert LutSumPredictor.from_table(space, _table()).split_stem(2) is None  # fp32
    # A damaged split entry is refused like any other block's.
    table = _int8_table("mbv3-tiny", split=(2,))
    key = stem_block(space, space.resolutions[0], groups=2).key
    figures = {k: table.ms(k) for k in table.entries} | {key: -1.0}
    with pytest.raises(TableError, match=f"gives block {key} -1.0 ms, not a time"):
        LutSumPredictor(space, table.header, figures)


def _small_space_predictor(seed: int) -> LutSumPredictor:
    """mbv3-tiny cut to two stages, kernels 3 and 5, expand ratios 3 and 6, depths 1-2: few
    enough subnets (3,072) to try every one. Some blocks have figures of their own at 30 px,
    as OFA's published tables do."""
    tiny = get_space("mbv3-tiny")
    space = replace(
        tiny,
        name="tiny-2",
        stages=tiny.stages[:2],
        kernel_sizes=(3, 5),
        expand_ratios=(3, 6),
        depths=(1, 2),
    )
    rng = np.random.default_rng(seed)
    header = TableHeader(space.id, "board", FP, "onnx", "fp32", space.resolutions)
    figures = {spec.key: float(rng.uniform(0.05, 0.5)) for spec in enumerate_blocks(space)}
    at_30 = {k: float(rng.uniform(0.05, 0.5)) for k in list(figures)[::3]}
    return LutSumPredictor(space, header, figures, resolution_ms={30: at_30})


def _every_subnet(space: SearchSpace) -> list[Subnet]:
    choices = list(itertools.product(space.kernel_sizes, space.expand_ratios))
    return [
        space.make(ks=[k for k, _ in slots], e=[e for _, e in slots], d=list(d), r=r)
        for r in space.resolutions
        for d in itertools.product(space.depths, repeat=len(space.stages))
        for slots in itertools.product(choices, repeat=space.num_blocks)
    ]


@pytest.mark.parametrize(
    "model",
    [
        None,  # the plain sum
        LinearModel("affine+blocks", ("lut_sum", "blocks"), (0.9, -0.2), 0.5),
        LinearModel(
            "per-stage",
            ("stem", "stage0", "stage1", "head", "blocks"),
            (1.1, -0.7, 1.3, 0.8, 0.05),
            0.2,
        ),
    ],
)
def test_lowest_is_the_least_prediction_over_every_subnet(model: LinearModel | None) -> None:
    # Sampling 20,000 subnets put the fastest 3% too high, and a reachable budget was refused.
    base = _small_space_predictor(seed=3)
    predictor = (
        base if model is None else CalibratedPredictor(base, model, validation={}, calibration={})
    )
    every = _every_subnet(base.space)
    figures = predictor.predict_many(every)
    for r in base.space.resolutions:
        at_r = [i for i, s in enumerate(every) if s.r == r]
        subnet, ms = predictor.lowest(r)
        assert ms == pytest.approx(float(figures[at_r].min()), rel=1e-12)
        assert subnet.r == r and predictor.predict(subnet) == pytest.approx(ms, rel=1e-12)


def _stage_weight_below_zero(base: LutSumPredictor) -> LinearModel:
    """lut_sum less a multiple of the last stage's sum: 10% of lut-sum for the smallest
    subnet, and less than nothing once the last stage is deep enough."""
    f = base.features([base.space.min_subnet(r=r) for r in base.header.resolutions])
    last = f"stage{len(base.space.stages) - 1}"
    weight = 0.9 * float(np.min(f["lut_sum"] / f[last]))
    return LinearModel("per-stage", ("lut_sum", last), (1.0, -weight), 0.0)


def test_a_calibration_model_below_zero_for_any_subnet_is_refused_at_load(
    tmp_path: Path,
) -> None:
    # The check tried the smallest subnet only, and a deeper one could be given -2 ms.
    base = LutSumPredictor.from_table(get_space("mbv3-tiny"), _table())
    model = _stage_weight_below_zero(base)
    predictor = CalibratedPredictor(base, model, validation={}, calibration={})
    assert predictor.predict(base.space.min_subnet()) > 0
    assert predictor.lowest(base.space.resolutions[0])[1] < 0
    predictor.save(tmp_path / "p.json")
    with pytest.raises(TableError, match=r"predicts -[\d.]+ ms for subnet r\d+-d.*, not a"):
        load_predictor(tmp_path / "p.json")


def _below_zero_truth() -> tuple[CalibratedPredictor, list[Subnet]]:
    """End-to-end figures that the per-stage model fits exactly, and 40 subnets where it is
    positive: fitted as it is, it gives the deepest last stage less than nothing."""
    space = get_space("mbv3-tiny")
    base = LutSumPredictor.from_table(space, _table())
    truth = CalibratedPredictor(base, _stage_weight_below_zero(base), validation={}, calibration={})
    rng = random.Random(0)
    pool = [space.sample(rng) for _ in range(2_000)]
    subnets = [s for s, ms in zip(pool, truth.predict_many(pool), strict=True) if ms > 0.5][:40]
    return truth, subnets


def test_calibration_keeps_no_model_that_predicts_no_time() -> None:
    truth, subnets = _below_zero_truth()
    base, space = truth.base, truth.base.space
    predictor = calibrate(base, subnets, list(truth.predict_many(subnets)))
    scores = predictor.validation["candidates"]
    assert min(scores, key=lambda name: scores[name]["rmspe"]) == "per-stage"  # the best fit
    assert predictor.model.name != "per-stage"
    assert min(predictor.lowest(r)[1] for r in space.resolutions) > 0


def test_an_older_fit_that_predicts_no_time_is_refitted_from_what_it_keeps(
    tmp_path: Path,
) -> None:
    # The predictor of an older edgenas, whose calibrate kept the per-stage model: edgenas
    # run refits it from its own calibration subnets and times, with no device at hand.
    truth, subnets = _below_zero_truth()
    base = truth.base
    measured = [float(ms) for ms in truth.predict_many(subnets)]
    calibration = {"subnets": [s.to_dict() for s in subnets], "measured_ms": measured}
    path = tmp_path / "predictor.json"
    CalibratedPredictor(base, truth.model, validation={}, calibration=calibration).save(path)

    done = refit_refused(path)
    assert done is not None and "its calibration model per-stage predicted -" in done
    assert "refitted from the 40 subnets it keeps" in done
    refitted = load_predictor(path)
    assert isinstance(refitted, CalibratedPredictor) and refitted.model.name != "per-stage"
    assert refitted.calibration["measured_ms"] == measured
    assert refit_refused(path) is None  # it loads now: left as it is
    base.save(tmp_path / "lut-sum.json")
    assert refit_refused(tmp_path / "lut-sum.json") is None

    # Nothing kept to refit from: one line naming the file.
    CalibratedPredictor(base, truth.model, validation={}, calibration={}).save(path)
    with pytest.raises(TableError, match=r"is damaged: it keeps no calibration 'subnets'"):
        refit_refused(path)
