"""The reference model cancels machine-speed drift between device calls.

The drifting device is this host's real CPU: the runner is pinned to one core, and every
second call shares that core with a busy process, so those calls run on a slower machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devices import open_device
from devices.base import DeviceError
from devices.local import LocalDevice
from devices.measurement import Fingerprint, Measurement
from devices.runner_protocol import RunSettings
from latency.blocks import enumerate_blocks
from latency.end_to_end import MeasuredSubnets, random_subnets
from latency.model_cache import ModelCache
from latency.predictors import LutSumPredictor
from latency.profiler import (
    apply_reference,
    measure_in_batches,
    profile_blocks,
    reference_file,
    settings_for,
)
from latency.reference import (
    AGREEMENT,
    COPIES,
    Reference,
    normalised_ms,
    reference_scale,
    reference_subnet,
)
from latency.table import LatencyTable, TableError, TableHeader
from once_for_all import get_space
from once_for_all.network_config import network_config
from tests.support.sshd import Sshd

TINY = get_space("mbv3-tiny")
IMAGENET = get_space("mbv3-imagenet")
CORE = max(os.sched_getaffinity(0))
BUSY = f"import os\nos.sched_setaffinity(0, {{{CORE}}})\nwhile True:\n    pass\n"


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """A process spinning on the runner's core for the duration."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


class DriftingDevice(LocalDevice):
    """The local device whose even-numbered calls run on a contended core."""

    def __init__(self, *, runs: int) -> None:
        settings = RunSettings(threads=1, warmup=1, runs=runs, cores=(CORE,))
        super().__init__("drifting", settings=settings, timeout_s=300)
        self.calls = 0

    def measure(self, models: Sequence[Path], **kwargs: Any) -> list[Measurement]:
        self.calls += 1
        if self.calls % 2:
            return super().measure(models, **kwargs)
        with busy_core():
            return super().measure(models, **kwargs)


@pytest.fixture(scope="module")
def cache(model_cache_dir: Path) -> ModelCache:
    return ModelCache(model_cache_dir)


def test_normalised_latencies_agree_across_calls_at_different_machine_speeds(
    cache: ModelCache,
) -> None:
    # Whole networks that run for milliseconds: a busy process on the same core then takes
    # about half of every run (time slices are shorter), a slowdown like a noisy neighbour's.
    rs = (224,)
    subnets = [IMAGENET.max_subnet(r=224), *random_subnets(IMAGENET, 2, seed=3, resolutions=rs)]
    files = cache.networks([network_config(IMAGENET, s) for s in subnets], "onnx", "fp32")
    device = DriftingDevice(runs=10)
    header = TableHeader(
        IMAGENET.id,
        device.name,
        device.fingerprint(),
        "onnx",
        "fp32",
        rs,
        reference=Reference(reference_subnet(IMAGENET, rs).to_dict()),
    )
    calls: list[list[Measurement]] = []

    def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
        nonlocal header
        header, normalised = apply_reference(header, results, ref)
        calls.append(normalised)

    # Four calls of the same three models and the reference's copies; no call is measured
    # again, so the calls alternate between the quiet and the busy core.
    measure_in_batches(
        device,
        files * 4,
        batch_size=len(files) + COPIES,
        on_batch=store,
        reference=reference_file(cache, IMAGENET, header),
        retries=0,
    )
    assert len(calls) == 4 and device.calls == 4
    assert header.reference is not None and header.reference.baseline_ms is not None
    assert [reference_scale(m) for m in calls[0]] == [1.0] * 3  # the baseline's own call
    raws = [[call[i].median_ms for call in calls] for i in range(len(files))]
    # Calls 2 and 4 ran on the contended core, calls 1 and 3 on the quiet one. Each busy call
    # is compared with the faster quiet one: a first call can run slow on its own (15.2 ms,
    # then 9.4 ms in the second quiet call, in a CI run), which the reference measured beside
    # it corrects but a ratio of sums counted against the busy core.
    slowdowns = [min(raw[1], raw[3]) / min(raw[0], raw[2]) for raw in raws]
    if min(slowdowns) <= 1.5:
        # The premise, not the result: with other work loading both cores (a demo beside the
        # tests) the quiet calls slow down too, and the normalisation then has nothing to undo.
        pytest.skip(f"the busy core slowed the runner only {min(slowdowns):.2f}x (other load)")
    for i, raw in enumerate(raws):
        norm = [normalised_ms(call[i]) for call in calls]
        norm_ratio = (norm[1] + norm[3]) / (norm[0] + norm[2])
        # Within a third either way: the quiet calls alone drift by up to ~15% on this shared
        # 2-core host (8.9 against 10.2 ms once), and 10 runs time the reference no better.
        assert 0.75 < norm_ratio < 1.33, f"model {i}: normalised {norm}, raw {raw}"


def _profile(device: LocalDevice, out: Path, cache: ModelCache, **kwargs: Any) -> LatencyTable:
    return profile_blocks(
        device, TINY, out / "lut.json", cache=cache, resolutions=(28,), batch_size=8, **kwargs
    )


def test_an_interrupted_table_keeps_its_baseline_and_end_to_end_files_share_it(
    tmp_path: Path, cache: ModelCache
) -> None:
    device = LocalDevice("cpu", settings=RunSettings(threads=1, warmup=1, runs=5))

    def stop_after_two_calls(stage: str, done: int, total: int) -> None:
        if stage == "measure" and done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _profile(device, tmp_path, cache, progress=stop_after_two_calls)
    first = LatencyTable.load(tmp_path / "lut.json")
    assert len(first) == 10  # two calls of five blocks and the reference's three copies
    assert first.header.reference is not None
    assert first.header.reference.subnet == reference_subnet(TINY, (28,)).to_dict()
    baseline = first.header.reference.baseline_ms
    assert baseline is not None and baseline > 0

    table = _profile(device, tmp_path, cache)
    assert table.header.reference == first.header.reference
    assert LatencyTable.load(tmp_path / "lut.json").header.reference == first.header.reference
    for key, m in first.entries.items():
        assert table.entries[key] == m
    for key, m in table.entries.items():
        note = m.extra["reference"]
        assert note["scale"] == pytest.approx(baseline / note["median_ms"], rel=1e-12)
        assert table.ms(key) == pytest.approx(m.median_ms * note["scale"], rel=1e-12)
    predictor = LutSumPredictor.from_table(TINY, table)
    key = next(iter(table.entries))
    assert predictor.block_ms[key] == table.ms(key)

    # End-to-end measurements normalise to the table's baseline, also when reopened.
    settings = settings_for(device.fingerprint(), device.name)
    subnets = random_subnets(TINY, 3, seed=0, resolutions=(28,))
    path = tmp_path / "calibration.json"
    store = MeasuredSubnets(path, table.header)
    measured = store.measure(
        device, TINY, subnets, cache=cache, settings=settings, batch_size=2, passes=1
    )
    again = MeasuredSubnets(path, table.header)
    assert again.header.reference == table.header.reference
    for subnet, ms in zip(subnets, measured, strict=True):
        m = again.get(subnet)
        assert m is not None and ms == pytest.approx(m.median_ms * reference_scale(m))
        assert reference_scale(m) == pytest.approx(baseline / m.extra["reference"]["median_ms"])
    assert json.loads(path.read_text())["header"]["reference"]["baseline_ms"] == baseline

    other = Reference(table.header.reference.subnet, baseline * 2)
    with pytest.raises(
        TableError,
        match=r"holds timings normalised to a reference baseline of .* has timings normalised",
    ):
        MeasuredSubnets(path, replace(table.header, reference=other))


def test_the_reference_joins_every_runner_call_of_a_device_that_splits_batches(
    sshd: Sshd, device_python: Path, tmp_path: Path, cache: ModelCache
) -> None:
    profile = sshd.write_profile(
        tmp_path / "board.yaml",
        "board",
        python=device_python,
        ssh={"batch_size": 2 + COPIES},
        runs=3,
        warmup=1,
    )
    specs = enumerate_blocks(TINY, resolutions=(28,))[:5]
    files = cache.blocks(specs, "onnx", "fp32")
    with open_device(profile) as device:
        header = TableHeader(
            TINY.id,
            device.name,
            device.fingerprint(),
            "onnx",
            "fp32",
            (28,),
            reference=Reference(reference_subnet(TINY, (28,)).to_dict()),
        )
        calls_before = device.runner_calls  # type: ignore[attr-defined]
        batches: list[tuple[int, int]] = []

        def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
            assert ref is not None and len(ref.extra["copies_ms"]) == COPIES
            batches.append((len(results), ref.extra["attempts"]))

        measure_in_batches(
            device,
            [files[s.key] for s in specs],
            batch_size=32,
            on_batch=store,
            reference=reference_file(cache, TINY, header),
        )
        # Two models and the copies per call: the device runs at most five together, so
        # each device call is one runner call.
        assert [n for n, _ in batches] == [2, 2, 1]
        calls = device.runner_calls - calls_before  # type: ignore[attr-defined]
        assert calls == sum(attempts for _, attempts in batches)


def test_a_damaged_file_of_the_model_cache_is_named_with_what_to_do(
    sshd: Sshd, device_python: Path, tmp_path: Path
) -> None:
    # The board names its own copy of the file; the cache's file, which stays in the way
    # until deleted, was not named (walk-through).
    cache = ModelCache(tmp_path / "cache")
    (spec,) = enumerate_blocks(TINY, resolutions=(28,))[:1]
    damaged = cache.blocks([spec], "onnx", "fp32")[spec.key]
    damaged.write_bytes(damaged.read_bytes()[:300])
    elsewhere = tmp_path / damaged.name
    elsewhere.write_bytes(damaged.read_bytes())
    profile = sshd.write_profile(tmp_path / "board.yaml", "board", python=device_python, runs=3)
    with open_device(profile) as device:
        for files, hint in ((cache, True), (None, False)):
            with pytest.raises(DeviceError) as info:
                measure_in_batches(
                    device,
                    [damaged if files else elsewhere],
                    batch_size=4,
                    on_batch=lambda *_: None,
                    cache=files,
                )
            said = str(info.value)
            assert said.startswith("device 'board': cannot load model ")
            assert str(damaged) not in said.split(";")[0]  # the board's copy is named first
            assert (
                said.endswith(
                    f"; it is {damaged}, a file of the model cache: if it is damaged, delete it "
                    "and run again to export it anew"
                )
                is hint
            )


FP = Fingerprint("board", "Cortex-A72", 4, "performance", "onnxruntime", "1.20.0", 1)


def test_tables_and_measured_files_of_format_1_load_as_raw_timings(tmp_path: Path) -> None:
    header = TableHeader(TINY.id, "board", FP, "onnx", "fp32", (28,))
    m = Measurement.from_times("block", [0.2, 0.3, 0.4])
    old_header = {k: v for k, v in header.to_dict().items() if k != "reference"}
    lut = tmp_path / "lut.json"
    entry = {k: v for k, v in m.to_dict().items() if k != "format"}
    lut.write_text(
        json.dumps({"format": "edgenas.lut/1", "header": old_header, "entries": {"b": entry}})
    )
    table = LatencyTable.load(lut)
    assert table.header.reference is None and table.ms("b") == 0.3
    subnet = TINY.min_subnet(r=28)
    measured = tmp_path / "validation.json"
    items = [{"subnet": subnet.to_dict(), "measurement": m.to_dict()}]
    body = {"format": "edgenas.measured-subnets/1", "header": old_header, "subnets": items}
    measured.write_text(json.dumps(body))
    store = MeasuredSubnets(measured, header)
    assert store.get(subnet) == m and normalised_ms(m) == 0.3
    # A predictor normalised to a reference cannot reuse raw timings.
    ref = Reference(reference_subnet(TINY, (28,)).to_dict(), 1.0)
    with pytest.raises(
        TableError,
        match=r"holds raw timings .* has timings normalised to a reference baseline of 1 ms",
    ):
        MeasuredSubnets(measured, replace(header, reference=ref))
    lut.write_text(json.dumps({"format": "edgenas.lut/9", "header": old_header, "entries": {}}))
    with pytest.raises(TableError, match="is not a latency table"):
        LatencyTable.load(lut)


class ScriptedDevice(LocalDevice):
    """Replays scripted reference medians: a speed change in the middle of a call cannot be
    produced on demand here, so this checks only what is done about one."""

    def __init__(self, reference: Path, script: list[list[float]]) -> None:
        super().__init__("scripted")
        self.reference, self.script = reference, script

    def measure(self, models: Sequence[Path], **kwargs: Any) -> list[Measurement]:
        copies = iter(self.script.pop(0))
        return [
            Measurement.from_times(str(p), [next(copies) if p == self.reference else 1.0])
            for p in models
        ]


def test_a_call_whose_reference_copies_disagree_is_measured_again(tmp_path: Path) -> None:
    reference, model = tmp_path / "reference.onnx", tmp_path / "model.onnx"
    split, agreed = [1.0, 1.0, 1.5], [1.2, 1.21, 1.19]
    assert 1.5 - 1 > AGREEMENT > 1.21 / 1.19 - 1
    kept: list[Measurement] = []

    def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
        assert ref is not None
        kept.append(ref)

    device = ScriptedDevice(reference, [split, agreed, split, split])
    for retries in (2, 1):
        measure_in_batches(
            device, [model], batch_size=8, on_batch=store, reference=reference, retries=retries
        )
    assert device.script == []
    # First: agreed on the second attempt. Then: never agreed, the first (best) attempt kept.
    assert [r.extra["attempts"] for r in kept] == [2, 2]
    assert kept[0].median_ms == 1.2 and kept[0].extra["copies_ms"] == agreed
    assert kept[1].median_ms == 1.0 and kept[1].extra["copies_spread"] == pytest.approx(0.5)
