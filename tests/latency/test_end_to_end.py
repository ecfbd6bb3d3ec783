"""End-to-end subnet measurements in several passes, on this host's real CPU."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devices.local import LocalDevice
from devices.measurement import Fingerprint, Measurement
from devices.runner_protocol import RunSettings
from latency.end_to_end import (
    MEASURED_FORMAT,
    PASSES,
    MeasuredSubnets,
    combine_passes,
    default_passes,
    random_subnets,
    table_subnets,
)
from latency.model_cache import CACHE_VERSION, ModelCache
from latency.profiler import ProfileSettings, reference_file
from latency.reference import COPIES, Reference, normalised_ms, reference_subnet
from latency.table import TableError, TableHeader
from once_for_all import get_space
from once_for_all.network_config import network_config
from once_for_all.subnet import Subnet

TINY = get_space("mbv3-tiny")
RS = (28,)
SETTINGS = ProfileSettings("onnx", "fp32")


class CountingDevice(LocalDevice):
    """The local device, recording the models of every call."""

    def __init__(self) -> None:
        super().__init__("cpu", settings=RunSettings(threads=1, warmup=1, runs=3))
        self.calls: list[list[Path]] = []

    def measure(self, models: Sequence[Path], **kwargs: Any) -> list[Measurement]:
        self.calls.append(list(models))
        return super().measure(models, **kwargs)

    def distinct_calls(self) -> list[list[Path]]:
        """The calls, without the repeats of a call whose reference copies disagreed."""
        return [c for i, c in enumerate(self.calls) if i == 0 or c != self.calls[i - 1]]


@pytest.fixture(scope="module")
def cache(model_cache_dir: Path) -> ModelCache:
    return ModelCache(model_cache_dir)


@pytest.fixture(scope="module")
def device() -> CountingDevice:
    return CountingDevice()


def _header(device: LocalDevice, *, reference: bool = True) -> TableHeader:
    ref = Reference(reference_subnet(TINY, RS).to_dict()) if reference else None
    return TableHeader(
        TINY.id, device.name, device.fingerprint(), "onnx", "fp32", RS, reference=ref
    )


def _files(cache: ModelCache, subnets: Sequence[Subnet]) -> dict[Path, Subnet]:
    paths = cache.networks([network_config(TINY, s) for s in subnets], "onnx", "fp32")
    return dict(zip(paths, subnets, strict=True))


def test_default_passes_are_for_timed_devices_only() -> None:
    fp = Fingerprint("board", "Cortex-A72", 4, "performance", "onnxruntime", "1.20.0", 1)
    assert default_passes(fp) == PASSES == 3
    for runtime in ("npu-sim", "vela"):
        assert default_passes(replace(fp, runtime=runtime)) == 1


def test_each_pass_is_its_own_call_in_its_own_order_and_the_median_is_kept(
    tmp_path: Path, cache: ModelCache, device: CountingDevice
) -> None:
    subnets = random_subnets(TINY, 6, seed=5, resolutions=RS)
    files = _files(cache, subnets)
    header = _header(device)
    ref = reference_file(cache, TINY, header)
    assert ref is not None
    store = MeasuredSubnets(tmp_path / "calibration.json", header)
    device.calls.clear()
    measured = store.measure(device, TINY, subnets, cache=cache, settings=SETTINGS)

    calls = device.distinct_calls()
    assert len(calls) == PASSES  # all six and the reference's copies fit in one call
    orders = [[files[p] for p in call if p != ref] for call in calls]
    assert all(sorted(map(str, o)) == sorted(map(str, subnets)) for o in orders)
    assert all(call.count(ref) == COPIES for call in calls)
    assert len({tuple(s.to_json() for s in o) for o in orders}) == PASSES  # three orders

    body = json.loads(store.path.read_text())
    assert body["format"] == MEASURED_FORMAT
    again = MeasuredSubnets(store.path, store.header)
    items = {json.dumps(i["subnet"], sort_keys=True): i for i in body["subnets"]}
    assert len(items) == len(subnets)
    for subnet, ms in zip(subnets, measured, strict=True):
        item = items[json.dumps(subnet.to_dict(), sort_keys=True)]
        passes = again.passes(subnet)
        assert len(passes) == PASSES
        # The passes ran in separate calls, each scaled by its own call's reference.
        assert len({m.extra["reference"]["median_ms"] for m in passes}) == PASSES
        per_pass = [normalised_ms(m) for m in passes]
        assert ms == pytest.approx(statistics.median(per_pass), rel=1e-12)
        stored = again.get(subnet)
        assert stored is not None and normalised_ms(stored) == pytest.approx(ms, rel=1e-12)
        assert stored.extra["passes_ms"] == pytest.approx(per_pass, rel=1e-12)
        assert Measurement.from_dict(item["measurement"]) == stored  # readable as before
        assert [Measurement.from_dict(m) for m in item["passes"]] == passes

    # Everything measured: a rerun asks the device nothing; fewer passes asked use all kept.
    device.calls.clear()
    rerun = again.measure(device, TINY, subnets, cache=cache, settings=SETTINGS, passes=1)
    assert device.calls == [] and rerun == pytest.approx(measured, rel=1e-12)


def test_a_run_killed_between_passes_resumes_with_the_passes_it_finished(
    tmp_path: Path, cache: ModelCache, device: CountingDevice
) -> None:
    subnets = random_subnets(TINY, 4, seed=6, resolutions=RS)
    files = _files(cache, subnets)
    header = _header(device)
    path = tmp_path / "validation.json"

    def kill_in_the_second_pass(stage: str, done: int, total: int) -> None:
        if stage != "measure":
            return
        assert total == PASSES * len(subnets)
        if done >= len(subnets) + 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        MeasuredSubnets(path, header).measure(
            device,
            TINY,
            subnets,
            cache=cache,
            settings=SETTINGS,
            batch_size=2 + COPIES,  # two subnets per call
            progress=kill_in_the_second_pass,
        )
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    killed = MeasuredSubnets(path, header)
    counts = sorted(len(killed.passes(s)) for s in subnets)
    assert counts == [1, 1, 2, 2]  # the first pass and one call of the second
    assert killed.missing(subnets) == subnets and killed.missing(subnets, 1) == []
    before = {s.to_json(): killed.passes(s) for s in subnets}

    device.calls.clear()
    measured = killed.measure(
        device, TINY, subnets, cache=cache, settings=SETTINGS, batch_size=2 + COPIES
    )
    # The second pass of the two it lacks (one call), then the third of all four (two).
    calls = [[files[p] for p in c if p in files] for c in device.distinct_calls()]
    assert [len(c) for c in calls] == [2, 2, 2]
    assert {s.to_json() for s in calls[0]} == {
        s.to_json() for s in subnets if len(before[s.to_json()]) == 1
    }
    done = MeasuredSubnets(path, header)
    assert done.header.reference == killed.header.reference  # the baseline survives
    for subnet, ms in zip(subnets, measured, strict=True):
        passes = done.passes(subnet)
        kept = before[subnet.to_json()]
        assert len(passes) == PASSES and passes[: len(kept)] == kept
        assert ms == pytest.approx(statistics.median(map(normalised_ms, passes)), rel=1e-12)


def test_files_of_format_2_load_as_one_pass_and_gain_passes(
    tmp_path: Path, cache: ModelCache, device: CountingDevice
) -> None:
    header = _header(device, reference=False)  # raw timings: no reference copies in calls
    old, new = random_subnets(TINY, 2, seed=7, resolutions=RS)
    files = _files(cache, [old, new])
    m = Measurement.from_times("old", [0.2, 0.3, 0.4])
    path = tmp_path / "calibration.json"
    items = [{"subnet": old.to_dict(), "measurement": m.to_dict()}]
    body = {"format": "edgenas.measured-subnets/2", "header": header.to_dict(), "subnets": items}
    path.write_text(json.dumps(body))
    store = MeasuredSubnets(path, header)
    assert store.get(old) == m and store.passes(old) == [m]
    assert store.missing([old, new], 1) == [new] and store.missing([old], 2) == [old]

    device.calls.clear()
    measured = store.measure(device, TINY, [old, new], cache=cache, settings=SETTINGS, passes=2)
    # Pass 1 for the new subnet alone, then pass 2 for both.
    assert [sorted(files[p].to_json() for p in c) for c in device.calls] == [
        [new.to_json()],
        sorted([old.to_json(), new.to_json()]),
    ]
    reloaded = MeasuredSubnets(path, header)
    assert json.loads(path.read_text())["format"] == MEASURED_FORMAT
    assert reloaded.passes(old)[0] == m and len(reloaded.passes(old)) == 2
    assert measured[0] == pytest.approx(min(normalised_ms(x) for x in reloaded.passes(old)))
    # A header edited or cut short is one line naming the file (a ValueError or KeyError).
    for damage in ({"precision": "int4"}, {"fingerprint": None}):
        broken = {**body, "format": MEASURED_FORMAT, "header": {**header.to_dict(), **damage}}
        path.write_text(json.dumps(broken))
        with pytest.raises(TableError, match=rf"^{path} is damaged \(its header: .*\): delete it"):
            MeasuredSubnets(path, header)
    # ... and so are its measurements: each was a traceback in the fit or the sum (review).
    good = {**body, "format": MEASURED_FORMAT}
    item = items[0]
    for subnets, said in (
        (None, "subnets is not a list"),
        ([1], "subnets[0]: not an object with a subnet"),
        ([{}], "subnets[0]: not an object with a subnet"),
        ([{**item, "measurement": None}], "subnets[0]: its passes are not a list of measurements"),
        ([{**item, "passes": "x"}], "subnets[0]: its passes are not a list of measurements"),
        (
            [{**item, "measurement": {k: v for k, v in m.to_dict().items() if k != "n"}}],
            "subnets[0]: a pass has no 'n'",
        ),
        (
            [{**item, "measurement": {**m.to_dict(), "median_ms": "fast"}}],
            "subnets[0]: median_ms is 'fast', not a number",
        ),
        (
            [{**item, "measurement": {**m.to_dict(), "p90_ms": -5.0}}],
            "subnets[0]: p90_ms is -5.0: a time is a finite number, 0 or more",
        ),
        (
            [{**item, "measurement": {**m.to_dict(), "n": 2.5}}],
            "subnets[0]: n is 2.5, not a count of runs",
        ),
    ):
        path.write_text(json.dumps({**good, "subnets": subnets}))
        with pytest.raises(TableError) as err:
            MeasuredSubnets(path, header)
        assert str(err.value) == f"{path} is damaged ({said}): delete it or use another folder"
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "subnets"}))
    with pytest.raises(TableError, match=r"is damaged \(subnets is not a list\)"):
        MeasuredSubnets(path, header)


def test_combining_passes_takes_the_median_normalised_pass() -> None:
    def timed(ms: float, scale: float) -> Measurement:
        m = Measurement.from_times("m", [ms])
        return replace(m, extra={"reference": {"median_ms": 1.0, "scale": scale}})

    # Raw 1.0, 2.0, 3.0 at scales 3, 1, 0.5: normalised 3.0, 2.0, 1.5; the median is 2.0.
    passes = [timed(1.0, 3.0), timed(2.0, 1.0), timed(3.0, 0.5)]
    combined = combine_passes(passes)
    assert normalised_ms(combined) == 2.0 and combined.median_ms == 2.0
    assert combined.extra["passes_ms"] == [3.0, 2.0, 1.5]
    assert combine_passes(passes[:1]) == passes[0]
    assert normalised_ms(combine_passes(passes[:2])) == 2.0  # even: the lower middle pass
    with pytest.raises(ValueError, match="no passes"):
        combine_passes([])


def test_an_extended_tables_subnets_keep_its_earlier_ones(device: CountingDevice) -> None:
    made = _header(device)
    first = random_subnets(TINY, 6, seed=0, resolutions=RS, extremes=True)
    assert table_subnets(TINY, 6, made, seed=0, extremes=True) == first
    extended = made.extended((28, 30))
    assert extended.resolutions == (28, 30) and extended.added_resolutions == ((30,),)
    subnets = table_subnets(TINY, 6, extended, seed=0, extremes=True)
    assert subnets[:6] == first and [s.r for s in subnets[6:]] == [30] * 6
    assert subnets[6:8] == [TINY.max_subnet(r=30), TINY.min_subnet(r=30)]
    again = extended.extended((28, 30, 32))
    assert again.resolution_groups == ((28,), (30,), (32,))
    assert table_subnets(TINY, 6, again, seed=0)[:12] == table_subnets(TINY, 6, extended, seed=0)
    # The header says so in its file; one never extended writes what it always wrote.
    assert TableHeader.from_dict(again.to_dict()) == again
    assert "added_resolutions" not in made.to_dict()
    with pytest.raises(ValueError, match=r"added_resolutions \[\[28\]\] are not distinct parts"):
        TableHeader.from_dict({**made.to_dict(), "added_resolutions": [[28]]})


def test_int8_tflite_subnets_measured_before_bn_statistics_are_not_mixed_in(
    tmp_path: Path,
) -> None:
    # Their residual ADDs ran outside XNNPACK; subnets measured since do not (review).
    fingerprint = Fingerprint("vm", "EPYC", 2, "unknown", "tflite", "2.3", 1)
    m = Measurement.from_times("old", [0.2, 0.3, 0.4])
    items = [{"subnet": TINY.min_subnet(r=28).to_dict(), "measurement": m.to_dict()}]
    path = tmp_path / "calibration.json"
    for fmt, precision, models, refused in [
        ("tflite", "int8", None, True),
        ("tflite", "int8", "7", True),
        ("tflite", "int8", "8", False),
        ("tflite", "fp32", None, False),
        ("onnx", "int8", "7", False),
    ]:
        header = TableHeader(TINY.id, "litert", fingerprint, fmt, precision, RS)
        body = {"format": "edgenas.measured-subnets/3", "header": header.to_dict()}
        path.write_text(json.dumps({**body, "subnets": items, "models": models}))
        if refused:
            with pytest.raises(TableError, match="written before the profiled models had BN"):
                MeasuredSubnets(path, header)
        else:
            assert MeasuredSubnets(path, header).get(TINY.min_subnet(r=28)) == m
    # Vela, and TFLite without XNNPACK, timed the same graph either way (review)
    for runtime, accelerator in (("vela", ""), ("tflite", "none"), ("tflite", "gpu")):
        other = replace(fingerprint, runtime=runtime, accelerator=accelerator)
        header = TableHeader(TINY.id, "other", other, "tflite", "int8", RS)
        body = {"format": "edgenas.measured-subnets/3", "header": header.to_dict()}
        path.write_text(json.dumps({**body, "subnets": items}))
        assert MeasuredSubnets(path, header).get(TINY.min_subnet(r=28)) == m
    MeasuredSubnets(path, header).save()  # what is saved now says which models it timed
    assert json.loads(path.read_text())["models"] == CACHE_VERSION
