"""`edgenas profile` and `edgenas latency ...` as a user runs them, on real devices: this
host's CPU through onnxruntime, and the simulated NPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devices.measurement import Fingerprint, Measurement
from latency.blocks import enumerate_blocks, stem_channels
from latency.metrics import validation_figures
from latency.predictors import CalibratedPredictor, LutSumPredictor, load_predictor
from latency.reference import normalised_ms
from latency.table import LatencyTable, TableError, TableHeader
from once_for_all import get_space
from tests.edgenas.conftest import MICRO_RECIPE
from tests.support.cli_here import edgenas_here
from tests.support.sshd import Sshd

TINY = get_space("mbv3-tiny")
FINGERPRINT = Fingerprint(
    host="board",
    cpu_model="Cortex-A72",
    cores=4,
    governor="performance",
    runtime="onnxruntime",
    runtime_version="1.32.0",
    threads=1,
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

LOCAL_PROFILE = """\
name: {name}
kind: local
runtime: onnxruntime
threads: {threads}
warmup: 3
runs: {runs}
"""


def edgenas(*args: str | Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """The command in this process: only the killed run needs a process of its own."""
    return edgenas_here(*args, "--cache", cache)


@pytest.fixture(scope="module")
def cache(model_cache_dir: Path) -> Path:
    return model_cache_dir


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "cpu.yaml"
    path.write_text(LOCAL_PROFILE.format(name="test-cpu", threads=1, runs=15))
    return path


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory, cpu: Path, cache: Path) -> Path:
    out = tmp_path_factory.mktemp("profile")
    proc = edgenas(
        "profile",
        cpu,
        "--space",
        "mbv3-tiny",
        "--out",
        out,
        "--calibrate",
        "24",
        "--passes",
        "2",
        "--json",
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["blocks"] == len(enumerate_blocks(TINY))
    assert summary["kind"] == "calibrated"
    return out


def test_profile_measures_every_block_and_fits_a_calibrated_predictor(profiled: Path) -> None:
    table = LatencyTable.load(profiled / "lut.json")
    assert set(table.entries) == {s.key for s in enumerate_blocks(TINY)}
    assert table.header.space_id == TINY.id
    assert table.header.model_format == "onnx" and table.header.runtime == "onnxruntime"
    assert all(m.median_ms > 0 and m.n == 15 for m in table.entries.values())
    predictor = load_predictor(profiled / "predictor.json")
    assert isinstance(predictor, CalibratedPredictor)
    assert len(predictor.calibration["subnets"]) == 24
    stored = json.loads((profiled / "calibration.json").read_text())["subnets"]
    assert [len(s["passes"]) for s in stored] == [2] * 24  # --passes 2


def test_a_rerun_measures_nothing_again(profiled: Path, cpu: Path, cache: Path) -> None:
    before = {name: (profiled / name).read_bytes() for name in ("lut.json", "calibration.json")}
    proc = edgenas(
        "profile",
        cpu,
        "--space",
        "mbv3-tiny",
        "--out",
        profiled,
        "--calibrate",
        "24",
        "--passes",
        "2",
        "--quiet",
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    assert before == {name: (profiled / name).read_bytes() for name in before}


@pytest.mark.parametrize(
    ("calibrate", "would"),
    [
        ("0", "would fit a lut-sum predictor without them"),
        ("12", "would leave 12 of them out of the predictor's fit"),
    ],
)
def test_a_rerun_with_fewer_calibration_subnets_is_refused(
    profiled: Path, cpu: Path, cache: Path, calibrate: str, would: str
) -> None:
    # A rerun resumes: fewer subnets than were measured refitted the predictor silently
    # (--calibrate 0 replaced it with the lut-sum one; review).
    names = ("predictor.json", "calibration.json")
    before = {name: (profiled / name).read_bytes() for name in names}
    args = ["profile", cpu, "--space", "mbv3-tiny", "--out", profiled, "--calibrate", calibrate]
    proc = edgenas(*args, cache=cache)
    assert proc.returncode == 2, proc.stderr
    assert (
        f"calibration.json holds 24 calibration subnets measured before, and --calibrate "
        f"{calibrate} (calibrate in a recipe) {would}: give --calibrate 24 (or more) to resume, "
        "or use another output folder"
    ) in " ".join(proc.stderr.split())
    assert before == {name: (profiled / name).read_bytes() for name in before}


def test_a_rerun_with_more_calibration_subnets_measures_only_those(
    profiled: Path, cpu: Path, cache: Path, tmp_path: Path
) -> None:
    # What the refusal above relies on: a larger --calibrate's subnets begin with a smaller
    # one's, so the 24 measured stay as they are and 2 are added.
    out = tmp_path / "more"
    shutil.copytree(profiled, out, ignore=shutil.ignore_patterns("*.lock"))
    before = json.loads((out / "calibration.json").read_text())["subnets"]
    args = ["profile", cpu, "--space", "mbv3-tiny", "--out", out, "--calibrate", "26"]
    proc = edgenas(*args, "--passes", "2", "--quiet", cache=cache)
    assert proc.returncode == 0, proc.stderr
    after = json.loads((out / "calibration.json").read_text())["subnets"]
    assert len(after) == 26 and after[:24] == before
    assert len(load_predictor(out / "predictor.json").calibration["subnets"]) == 26


def test_calibrated_beats_lut_sum_on_held_out_subnets(
    profiled: Path, cpu: Path, cache: Path
) -> None:
    proc = edgenas(
        "latency",
        "validate",
        cpu,
        "--predictor",
        profiled / "predictor.json",
        "--n",
        "30",
        "--json",
        "--quiet",
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert set(figures) == {
        "n",
        "rmse_ms",
        "rmspe",
        "within_5pct",
        "within_10pct",
        "spearman",
        "kendall",
        "reference",
    }
    assert figures["n"] == 30
    # Validation compares with measurements normalised to the table's reference baseline.
    baseline = LatencyTable.load(profiled / "lut.json").header.reference.baseline_ms  # type: ignore[union-attr]
    assert figures["reference"]["baseline_ms"] == baseline
    assert figures["reference"]["scale_min"] <= figures["reference"]["scale_max"]
    assert (profiled / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The held-out subnets are not calibration subnets; compare both predictors on them.
    stored = json.loads((profiled / "validation.json").read_text())["subnets"]
    assert {len(s["passes"]) for s in stored} == {3}  # a timed device's default
    calibration = json.loads((profiled / "calibration.json").read_text())["subnets"]
    assert not {json.dumps(s["subnet"]) for s in stored} & {
        json.dumps(s["subnet"]) for s in calibration
    }
    subnets = [TINY.subnet_from_dict(s["subnet"]) for s in stored]
    measured = np.array([normalised_ms(Measurement.from_dict(s["measurement"])) for s in stored])
    calibrated = load_predictor(profiled / "predictor.json")
    plain = LutSumPredictor.from_table(TINY, LatencyTable.load(profiled / "lut.json"))
    cal = validation_figures(calibrated.predict_many(subnets), measured)
    lut = validation_figures(plain.predict_many(subnets), measured)
    assert cal["rmspe"] < lut["rmspe"]
    assert cal["rmspe"] == pytest.approx(figures["rmspe"])


def test_predict_prints_the_latency_of_a_subnet(profiled: Path, cache: Path) -> None:
    proc = edgenas_here(
        "latency",
        "predict",
        "--predictor",
        profiled / "predictor.json",
        "--subnet",
        "max",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = load_predictor(profiled / "predictor.json").predict(TINY.max_subnet())
    assert out["latency_ms"] == pytest.approx(expected)
    # Without --json: which subnet, at which resolution, was predicted
    args = ["latency", "predict", "--predictor", profiled / "predictor.json", "--subnet", "max"]
    proc = edgenas_here(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"{expected:.4f} ms on test-cpu (calibrated), subnet {TINY.max_subnet().key}\n"
    )
    # the folder edgenas profile wrote stands for its predictor.json, as search takes it
    args[args.index(profiled / "predictor.json")] = profiled
    assert edgenas_here(*args).stdout == proc.stdout


def test_a_folder_without_a_predictor_says_why(profiled: Path, tmp_path: Path) -> None:
    # A profile cut short leaves lut.json and no predictor.json; the line said "not a latency
    # predictor (Is a directory)" (walk-through).
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(profiled / "lut.json", unfinished)
    for folder, said in (
        (
            unfinished,
            "holds a table (lut.json) but no predictor.json: its profile did not "
            "finish; run the same edgenas profile command again to finish it",
        ),
        (
            tmp_path,
            "is a folder without predictor.json: give the predictor.json that edgenas "
            "profile wrote, or the --out folder that holds it",
        ),
    ):
        proc = edgenas_here("latency", "predict", "--predictor", folder, "--subnet", "max")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"--predictor': {folder} {said}" in " ".join(proc.stderr.split())


def test_predict_keeps_max_min_random_to_the_tables_resolutions(tmp_path: Path) -> None:
    # A table of 30 and 32 px of a space that starts at 28, as OFA's Note10 tables are of
    # theirs: max, min and random are chosen among 30 and 32, never 28.
    header = TableHeader(TINY.id, "board", FINGERPRINT, "onnx", "fp32", (30, 32))
    table = LatencyTable(header)
    for spec in enumerate_blocks(TINY, resolutions=(30, 32)):
        table.add(spec.key, Measurement.from_times(spec.key, [0.1]))
    path = tmp_path / "predictor.json"
    LutSumPredictor.from_table(TINY, table).save(path)
    chosen = {}
    for choice in ("max", "min", "random"):
        proc = edgenas_here("latency", "predict", "--predictor", path, "--subnet", choice, "--json")
        assert proc.returncode == 0, proc.stderr
        chosen[choice] = json.loads(proc.stdout)["subnet"]["r"]
    assert chosen["max"] == 32 and chosen["min"] == 30 and chosen["random"] in (30, 32)
    # A subnet file at 28 px: one line saying which resolutions there are and how to get 28.
    subnet = tmp_path / "subnet.json"
    subnet.write_text(json.dumps(TINY.min_subnet(r=28).to_dict()))
    proc = edgenas_here("latency", "predict", "--predictor", path, "--subnet", subnet)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # The options that extend the table in its folder: the profiled ones and 28.
    assert (
        "resolution 28 was not profiled on board (profiled: 30, 32): choose a profiled "
        "resolution, or profile the device again into the same --out with --resolution 28 "
        "--resolution 30 --resolution 32 (a recipe: add 28 to the device's resolution; the "
        "table is extended: only what 28 adds is measured)"
    ) in " ".join(proc.stderr.split())


def test_a_table_for_another_device_is_refused(profiled: Path, tmp_path: Path, cache: Path) -> None:
    other = tmp_path / "cpu2.yaml"
    other.write_text(LOCAL_PROFILE.format(name="test-cpu", threads=2, runs=15))
    proc = edgenas(
        "profile", other, "--space", "mbv3-tiny", "--out", profiled, "--calibrate", "0", cache=cache
    )
    assert proc.returncode == 2
    # The same machine with other threads: a setting of the profile, named as one.
    assert (
        "was measured with threads 1, but the device profile now gives threads 2; set "
        "threads: 1 in the device profile again, or use another output folder"
    ) in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    proc = edgenas(
        "latency",
        "validate",
        other,
        "--predictor",
        profiled / "predictor.json",
        "--n",
        "4",
        cache=cache,
    )
    assert proc.returncode == 2 and "measured with threads 1" in " ".join(proc.stderr.split())


def test_a_predictor_of_another_device_is_not_replaced(
    profiled: Path, tmp_path: Path, cache: Path
) -> None:
    # A folder holding another device's predictor.json, without its lut.json: profile
    # replaced it without a word (walk-through); it is refused as the table would be.
    out = tmp_path / "out"
    out.mkdir()
    kept = (profiled / "predictor.json").read_bytes()
    (out / "predictor.json").write_bytes(kept)
    other = tmp_path / "cpu2.yaml"
    other.write_text(LOCAL_PROFILE.format(name="test-cpu", threads=2, runs=15))
    proc = edgenas(
        "profile", other, "--space", "mbv3-tiny", "--out", out, "--calibrate", "0", cache=cache
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"existing predictor {out / 'predictor.json'} was measured with threads 1, but the "
        "device profile now gives threads 2"
    ) in " ".join(proc.stderr.split())
    assert (out / "predictor.json").read_bytes() == kept
    assert sorted(p.name for p in out.iterdir()) == ["predictor.json"]


def test_a_killed_profiling_run_resumes(tmp_path: Path, cache: Path) -> None:
    # One resolution and few runs a block: what is checked is what a kill leaves, not timings.
    quick = tmp_path / "quick-cpu.yaml"
    quick.write_text(LOCAL_PROFILE.format(name="test-cpu", threads=1, runs=3))
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "edgenas",
        "profile",
        str(quick),
        "--space",
        "mbv3-tiny",
        "--resolution",
        "28",
        "--out",
        str(out),
        "--calibrate",
        "0",
        "--batch-size",
        "8",
        "--quiet",
        "--cache",
        str(cache),
    ]
    proc = subprocess.Popen(args, env=ENV)
    lut = out / "lut.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if lut.exists() and len(json.loads(lut.read_text())["entries"]) >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = LatencyTable.load(lut)
    total = len(enumerate_blocks(TINY, resolutions=(28,)))
    assert 8 <= len(first) < total, "the run finished before it could be killed"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary file left"
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    final = LatencyTable.load(lut)
    assert len(final) == total
    assert first.header.reference is not None and first.header.reference.baseline_ms
    assert final.header.reference == first.header.reference  # the baseline survives resume
    for key, m in first.entries.items():
        assert final.entries[key] == m  # measured once, kept


def test_the_simulated_npu_fills_the_table(tmp_path: Path, cache: Path) -> None:
    proc = edgenas(
        "profile",
        "npu-32x32-ws",
        "--space",
        "mbv3-tiny",
        "--out",
        tmp_path,
        "--calibrate",
        "12",
        "--json",
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    table = LatencyTable.load(tmp_path / "lut.json")
    assert len(table) == len(enumerate_blocks(TINY))
    assert table.header.runtime == "npu-sim"
    assert table.header.reference is None  # deterministic: nothing to normalise
    assert not any("reference" in m.extra for m in table.entries.values())
    assert all(m.n == 1 and m.extra["total_cycles"] > 0 for m in table.entries.values())
    # A simulator adds no per-call overhead: the calibrated model stays close to the sum.
    predictor = load_predictor(tmp_path / "predictor.json")
    assert isinstance(predictor, CalibratedPredictor)
    assert predictor.validation["calibrated"]["within_10pct"] >= 0.9
    stored = json.loads((tmp_path / "calibration.json").read_text())["subnets"]
    assert {len(s["passes"]) for s in stored} == {1}  # deterministic: one pass is enough


def test_profile_errors_are_one_line(tmp_path: Path, cache: Path, cpu: Path) -> None:
    proc = edgenas(
        "profile", "no-such-board", "--space", "mbv3-tiny", "--out", tmp_path, cache=cache
    )
    assert proc.returncode == 2 and "unknown device profile 'no-such-board'" in proc.stderr
    proc = edgenas(
        "profile",
        "npu-32x32-ws",
        "--space",
        "mbv3-tiny",
        "--out",
        tmp_path,
        "--format",
        "tflite",
        cache=cache,
    )
    assert proc.returncode == 2 and "use --format onnx" in proc.stderr
    profile = ["profile", cpu, "--space", "mbv3-tiny", "--out", tmp_path, "--stem-groups"]
    proc = edgenas(*profile, "3", "--precision", "fp32", cache=cache)
    assert (
        proc.returncode == 2
        and "measures fp32 files here, which keep the stem whole" in proc.stderr
    )
    proc = edgenas(*profile, "3", cache=cache)  # the device's default, fp32: silently left out
    assert proc.returncode == 2 and "give --precision int8" in proc.stderr
    # a device that measures int8 unless asked otherwise (Vela) takes it as it is
    from edgenas.cli.profile import _default_precision

    assert _default_precision("ethos-u55-128") == "int8"
    assert _default_precision("npu-32x32-ws") == _default_precision(str(cpu)) == "fp32"
    proc = edgenas(*profile, "99", "--precision", "int8", cache=cache)
    channels = stem_channels(TINY)
    assert proc.returncode != 0
    assert f"stem groups 99: the stem of space {TINY.id} has {channels} channels" in proc.stderr
    assert not list(tmp_path.iterdir())
    proc = edgenas("latency", "validate", cpu, "--predictor", tmp_path / "none.json", cache=cache)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    # A cache that is a file was a NotADirectoryError traceback (review).
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    args = ["profile", cpu, "--space", "mbv3-tiny", "--resolution", "28", "--calibrate", "0"]
    proc = edgenas(*args, "--out", tmp_path / "p", cache=in_the_way)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        f"error: cannot use {in_the_way}/onnx-fp32 as the model cache (--cache, or "
        f"$EDGENAS_CACHE): {in_the_way} is a file, not a folder; choose a folder you can write to"
    ) in " ".join(proc.stderr.split())


def test_validating_split_stems_needs_an_int8_table_that_timed_them(
    profiled: Path, cpu: Path, cache: Path
) -> None:
    predictor = profiled / "predictor.json"
    proc = edgenas(
        "latency", "validate", cpu, "--predictor", predictor, "--stem-groups", "2", cache=cache
    )
    assert proc.returncode == 2
    assert f"predictor {predictor} has no entry for the stem in 2 groups: it is for fp32 files" in (
        proc.stderr
    )
    assert not (profiled / "validation-stem2.json").exists()


def test_profile_over_ssh(sshd: Sshd, device_python: Path, tmp_path: Path, cache: Path) -> None:
    """The board path: blocks copied to a real sshd and timed by the board's own Python."""
    remote = tmp_path / "board tmp"
    remote.mkdir()
    profile = sshd.write_profile(
        tmp_path / "board.yaml",
        "test-board",
        python=device_python,
        ssh={"remote_tmpdir": str(remote)},
        runs=10,
        warmup=2,
    )
    out = tmp_path / "board"
    proc = edgenas(
        "profile",
        profile,
        "--space",
        "mbv3-tiny",
        "--out",
        out,
        "--calibrate",
        "12",
        "--json",
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    table = LatencyTable.load(out / "lut.json")
    assert len(table) == len(enumerate_blocks(TINY))
    assert table.header.device == "test-board"
    assert all(m.n == 10 for m in table.entries.values())
    assert list(remote.iterdir()) == []  # the device's temporary folders are cleaned up
    assert isinstance(load_predictor(out / "predictor.json"), CalibratedPredictor)


@pytest.mark.skipif(
    not (sys.platform == "linux" and os.uname().machine == "x86_64"),
    reason="refusing AMX is for x86-64 Linux",
)
def test_a_table_measured_with_amx_refused_says_so(tmp_path: Path, cache: Path) -> None:
    profile = tmp_path / "no-amx.yaml"
    text = LOCAL_PROFILE.format(name="no-amx", threads=1, runs=3)
    profile.write_text(text + "x86_amx: false\n")
    out = tmp_path / "out"
    args = ["profile", profile, "--space", "mbv3-tiny", "--resolution", "28", "--calibrate", "0"]
    proc = edgenas(*args, "--out", out, "--quiet", cache=cache)
    assert proc.returncode == 0, proc.stderr
    header = json.loads((out / "lut.json").read_text())["header"]
    assert header["measured_with"] == {"warmup": "3", "x86_amx": "false"}
    from devices.runner import x86_amx_state

    amx = "refused" if x86_amx_state() else None  # None: no AMX on this CPU
    assert header["fingerprint"].get("x86_amx") == amx
    # Granted, the runtime's kernels are others: the table is not resumed with them.
    profile.write_text(text)
    proc = edgenas(*args, "--out", out, cache=cache)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "was measured with x86_amx false, but the device profile now gives x86_amx true (the "
        "default); set x86_amx: false in the device profile again, or use another output folder"
    ) in " ".join(proc.stderr.split())
    # A table from before headers recorded settings was measured with AMX available: it is
    # not resumed as one measured with AMX refused.
    lut = out / "lut.json"
    doc = json.loads(lut.read_text())
    doc["header"]["measured_with"] = None
    lut.write_text(json.dumps(doc))
    before = lut.read_bytes()
    profile.write_text(text + "x86_amx: false\n")
    proc = edgenas(*args, "--out", out, cache=cache)
    assert proc.returncode == 2 and lut.read_bytes() == before
    assert (
        "was measured with x86_amx true (the default), but the device profile now gives x86_amx "
        "false; remove x86_amx from the device profile, or use another output folder"
    ) in " ".join(proc.stderr.split())


def _refusal(header: TableHeader, **given: Any) -> str:
    """The one line with which ``header`` refuses what the caller ``given`` (check's keywords,
    ``what`` being "predictor P")."""
    with pytest.raises(TableError) as info:
        header.check(what="predictor P", **given)
    return str(info.value)


def test_cpu_provider_options_an_old_table_recorded_are_not_compared() -> None:
    # onnxruntime ignores them, and profiles now refuse them: a table that recorded them
    # asked for them back, which no profile can give (review).
    fingerprint = Fingerprint("vm", "EPYC", 2, "unknown", "onnxruntime", "1.32.0", 1)
    old = (("provider_options.CPUExecutionProvider.use_arena", "0"), ("warmup", "10"))
    header = TableHeader("space", "cpu", fingerprint, "onnx", "fp32", (28,), measured_with=old)
    header.check(what="table T", fingerprint=fingerprint, measured_with=(("warmup", "10"),))
    with pytest.raises(TableError, match="measured with warmup 10, but the device profile now"):
        header.check(what="table T", fingerprint=fingerprint, measured_with=(("warmup", "3"),))


def test_a_predictor_of_the_other_amx_profile_names_it() -> None:
    """local-cpu-litert and local-cpu-litert-no-amx differ by x86_amx alone (one fingerprint):
    a predictor of one given for the other names the profile it was measured with."""
    fingerprint = Fingerprint("vm", "Xeon", 2, "unknown", "tflite", "2.3", 1, x86_amx="refused")
    header = TableHeader(
        "space",
        "local-cpu-litert-no-amx",
        fingerprint,
        "tflite",
        "int8",
        (28,),
        measured_with=(("warmup", "10"), ("x86_amx", "false")),
    )
    granted = replace(fingerprint, x86_amx="available")
    litert = {"device": "local-cpu-litert", "elsewhere": "profile local-cpu-litert again"}
    assert _refusal(header, fingerprint=granted, measured_with=(("warmup", "10"),), **litert) == (
        "predictor P was measured with x86_amx false, but the device profile now gives x86_amx "
        "true (the default); use the profile it was measured with (local-cpu-litert-no-amx, "
        "which refuses AMX), or profile local-cpu-litert again"
    )
    # With another setting changed too, the profile is named after the edits that would mend
    # the one given.
    changed = (("cores", "[0, 1]"), ("warmup", "3"))
    assert _refusal(header, fingerprint=granted, measured_with=changed, **litert) == (
        "predictor P was measured with no cores and warmup 10 and x86_amx false, but the device "
        "profile now gives cores [0, 1] and warmup 3 and x86_amx true (the default); use the "
        "profile it was measured with (local-cpu-litert-no-amx), or set warmup: 10 and "
        "x86_amx: false in the device profile and remove cores from it, or profile "
        "local-cpu-litert again"
    )
    # Threads are the profile's too: named with the rest, not as another machine.
    two_threads = replace(fingerprint, threads=2)
    assert _refusal(
        header,
        fingerprint=two_threads,
        measured_with=(("warmup", "3"), ("x86_amx", "false")),
        elsewhere="profile local-cpu-litert-no-amx again",
    ) == (
        "predictor P was measured with threads 1 and warmup 10, but the device profile now "
        "gives threads 2 and warmup 3; set threads: 1 and warmup: 10 in the device profile "
        "again, or profile local-cpu-litert-no-amx again"
    )
    # Settings unknown on one side (a file from before they were recorded) are not compared,
    # threads still are; an old table's AMX counts as granted, and is named with them.
    assert _refusal(header, fingerprint=two_threads).startswith(
        "predictor P was measured with threads 1, but the device profile now gives threads 2; "
    )
    old = replace(header, measured_with=None)
    refused = (("warmup", "10"), ("x86_amx", "false"))
    assert _refusal(old, fingerprint=two_threads, measured_with=refused).startswith(
        "predictor P was measured with threads 1 and x86_amx true (the default), but the "
        "device profile now gives threads 2 and x86_amx false; "
    )
    # Another machine (here another CPU) is not a setting to mend.
    assert _refusal(header, fingerprint=replace(two_threads, cpu_model="EPYC")).startswith(
        "predictor P was measured on vm (Xeon, tflite, 1 thread(s)), not on vm (EPYC, tflite, 2 "
    )
    # TFLite's builtin kernels are no device "none"; the fix names a folder (walk-through)
    assert _refusal(header, fingerprint=replace(header.fingerprint, accelerator="none")) == (
        "predictor P was measured on vm (Xeon, tflite, 1 thread(s)), not on vm (Xeon, tflite "
        "with no delegate, 1 thread(s)); profile this device into a folder of its own instead "
        "of reusing it"
    )


def test_a_resume_with_other_measurement_settings_is_refused(tmp_path: Path, cache: Path) -> None:
    profile = tmp_path / "fast-cpu.yaml"
    profile.write_text(LOCAL_PROFILE.format(name="fast-cpu", threads=1, runs=3))
    out = tmp_path / "out"
    args = ["profile", profile, "--space", "mbv3-tiny", "--resolution", "28", "--calibrate", "0"]
    proc = edgenas(*args, "--out", out, "--quiet", cache=cache)
    assert proc.returncode == 0, proc.stderr
    lut = out / "lut.json"
    assert json.loads(lut.read_text())["header"]["measured_with"] == {"warmup": "3"}
    # What the entries mean changes with pinned cores and warmup: refused, naming both values.
    profile.write_text(LOCAL_PROFILE.format(name="fast-cpu", threads=1, runs=20) + "cores: [0]\n")
    proc = edgenas(*args, "--out", out, cache=cache)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"existing table {lut} was measured with no cores, but the device profile now " in (
        " ".join(proc.stderr.split())
    )
    assert "gives cores [0]; remove cores from the device profile" in " ".join(proc.stderr.split())
    profile.write_text(
        LOCAL_PROFILE.format(name="fast-cpu", threads=1, runs=3).replace("warmup: 3", "warmup: 0")
    )
    proc = edgenas(*args, "--out", out, cache=cache)
    assert proc.returncode == 2
    assert "measured with warmup 3, but the device profile now gives warmup 0; set warmup: 3" in (
        " ".join(proc.stderr.split())
    )
    proc = edgenas(
        "latency", "validate", profile, "--predictor", out / "predictor.json", cache=cache
    )
    assert proc.returncode == 2 and "measured with warmup 3" in " ".join(proc.stderr.split())
    # Two settings changed: both named in the one line, so that one edit mends the profile.
    profile.write_text(profile.read_text() + "cores: [0]\n")
    proc = edgenas(
        "latency", "validate", profile, "--predictor", out / "predictor.json", cache=cache
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "was measured with no cores and warmup 3, but the device profile now gives cores [0] "
        "and warmup 0; set warmup: 3 in the device profile again and remove cores from it, or "
    ) in " ".join(proc.stderr.split())
    # More runs only make the missing entries steadier (each keeps its n): accepted.
    doc = json.loads(lut.read_text())
    dropped = sorted(doc["entries"])[:2]
    for key in dropped:
        del doc["entries"][key]
    del doc["header"]["measured_with"]  # and a table from before headers recorded settings
    lut.write_text(json.dumps(doc))
    profile.write_text(LOCAL_PROFILE.format(name="fast-cpu", threads=1, runs=7))
    proc = edgenas(*args, "--out", out, "--quiet", cache=cache)
    assert proc.returncode == 0, proc.stderr
    table = LatencyTable.load(lut)
    assert table.header.measured_with == (("warmup", "3"),)  # recorded from now on
    assert [table.entries[k].n for k in dropped] == [7, 7]


@pytest.fixture(scope="module")
def npu_profiled(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    out = tmp_path_factory.mktemp("npu")
    proc = edgenas(
        "profile",
        "npu-32x32-ws",
        *("--space", "mbv3-tiny", "--resolution", "28", "--calibrate", "20", "--out", out),
        "--quiet",
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            {"model": {"features": ["bogus"]}},
            "uses feature 'bogus', which is not one of lut_sum, blocks, stem, ",
        ),
        ({"model": {"coef": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]}}, "has 7 coefficients for"),
        ({"model": {"intercept": -100}}, "ms for subnet r28-d"),
        ({"resolution_ms": {"28": {"KEY": -5.0}}}, "at 28 px -5.0 ms, not a time"),
        ({"resolution_ms": {"28": {"KEY": float("inf")}}}, "at 28 px inf ms, not a time"),
    ],
)
def test_a_damaged_calibrated_predictor_is_one_line(
    npu_profiled: Path, tmp_path: Path, edit: dict, message: str
) -> None:
    doc = json.loads((npu_profiled / "predictor.json").read_text())
    key = next(iter(doc["block_ms"]))
    for field, values in edit.items():
        if field == "resolution_ms":  # KEY: the table's first block
            doc[field] = {r: {key: figures["KEY"]} for r, figures in values.items()}
        else:
            doc[field].update(values)
    path = tmp_path / "predictor.json"
    path.write_text(json.dumps(doc))
    proc = edgenas_here("latency", "predict", "--predictor", path, "--subnet", "max")
    assert proc.returncode == 2, proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    line = " ".join(proc.stderr.split())
    assert message in line and "Traceback" not in line
    if "model" in edit:
        assert f"latency predictor {path} is damaged: its calibration model " in line
    else:  # the figure is named with its file (it named a table, not predictor.json)
        assert f"latency predictor {path}: the table for npu-32x32-ws gives block" in line
    if "intercept" in edit.get("model", {}):  # refused, yet its measurements fit again
        assert f"`edgenas latency refit {path}` fits it again from the measurements" in line
    elif "model" in edit:
        assert "run edgenas profile again to rewrite it" in line


def test_latency_refit_fits_a_refused_predictor_again_without_the_device(
    npu_profiled: Path, tmp_path: Path
) -> None:
    # The command the refusal names: the standalone search and export load the predictor as
    # edgenas latency predict does, so it refuses the file until the refit.
    doc = json.loads((npu_profiled / "predictor.json").read_text())
    doc["model"]["intercept"] = -100
    path = tmp_path / "predictor.json"
    path.write_text(json.dumps(doc))
    assert (
        edgenas_here("latency", "predict", "--predictor", path, "--subnet", "max").returncode == 2
    )

    proc = edgenas_here("latency", "refit", path)
    assert proc.returncode == 0, proc.stderr
    assert " ".join(proc.stdout.split()).startswith(
        f"{path}: its calibration model {doc['model']['name']} predicted -"
    )
    assert "refitted from the 20 subnets it keeps" in " ".join(proc.stdout.split())
    refitted = json.loads(path.read_text())
    assert refitted["calibration"]["measured_ms"] == doc["calibration"]["measured_ms"]
    assert (
        edgenas_here("latency", "predict", "--predictor", path, "--subnet", "max").returncode == 0
    )

    again = edgenas_here("latency", "refit", path)
    assert again.returncode == 0 and "loads as it is: nothing to refit" in again.stdout
    # A run folder's: edgenas run refits it and records that; a refit here would not be.
    run = tmp_path / "run"
    (run / "devices" / "npu-32x32-ws").mkdir(parents=True)
    in_run = run / "devices" / "npu-32x32-ws" / "predictor.json"
    in_run.write_text(json.dumps(doc))
    digest = hashlib.sha256(in_run.read_bytes()).hexdigest()
    finished = {"inputs": {}, "seconds": 1.0, "finished": "2026-12-08T00:00:00+00:00"}
    made = {**finished, "outputs": {"devices/npu-32x32-ws/predictor.json": digest}}
    made_here = {"profile:npu-32x32-ws": made}
    replaced = {**finished, "outputs": {"devices/npu-32x32-ws/predictor.json": "0" * 64}}
    lut_changed = {**made, "outputs": {**made["outputs"], "devices/npu-32x32-ws/lut.json": "0"}}
    recipe = {**MICRO_RECIPE, "stages": ["search"], "devices": [{"name": "npu-32x32-ws"}]}

    def refit_in_run(record: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        # as edgenas run writes run.json ({} stands for one that does not read)
        as_written = {"format": "edgenas.run/1", "recipe_path": "r.yaml", "versions": {}}
        (run / "run.json").write_text(json.dumps({**as_written, **record} if record else {}))
        in_run.write_text(json.dumps(doc))
        return edgenas_here("latency", "refit", in_run)

    started = {"profile:npu-32x32-ws": {}}  # a profile that stopped: a rerun profiles again
    profiles = {**recipe, "stages": ["profile"]}
    for record in (
        {},
        {"recipe": recipe, "stages": made_here},
        {"recipe": profiles, "stages": {}, "started": started},
        {"recipe": {**recipe, "stages": None}, "stages": made_here},  # all of them (review)
    ):
        proc = refit_in_run(record)
        assert proc.returncode == 2 and " ".join(proc.stderr.split()) == (
            f"error: {in_run} belongs to the run folder {run}: "
            "rerun edgenas run on its recipe, which refits it and records the refit"
        )
    # What a rerun would not refit is the user's to refit; refused, it went round in a loop:
    # a copy that no stage of the run made, one put in place of the run's, a device that the
    # recipe no longer names, a recipe that neither profiles, searches nor exports.
    for record in (
        {"recipe": recipe, "stages": {"profile:other": made}},
        {"recipe": recipe, "stages": {"profile:npu-32x32-ws": replaced}},
        {"recipe": {**recipe, "devices": [{"name": "local-cpu"}]}, "stages": made_here},
        {"recipe": {**recipe, "stages": ["train"]}, "stages": made_here},
        {"recipe": recipe, "stages": {}, "started": started},
        # its table changed since: the rerun's search refits nothing either (review)
        {"recipe": recipe, "stages": {"profile:npu-32x32-ws": lut_changed}},
    ):
        proc = refit_in_run(record)
        assert proc.returncode == 0 and "refitted from the 20 subnets" in proc.stdout, (
            record,
            proc.stderr,
        )
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps({**doc, "calibration": {}}))
    proc = edgenas_here("latency", "refit", damaged)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "it keeps no calibration 'subnets' to refit from" in " ".join(proc.stderr.split())


@pytest.mark.parametrize("ms", [-5.0, float("inf")])
def test_a_per_resolution_figure_in_a_table_is_range_checked(
    npu_profiled: Path, tmp_path: Path, ms: float
) -> None:
    doc = json.loads((npu_profiled / "lut.json").read_text())
    key = next(iter(doc["entries"]))
    doc["entries"][key]["extra"]["ms_by_resolution"] = {"28": ms}
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TableError, match=rf"gives block {key} at 28 px {ms} ms, not a time"):
        LutSumPredictor.from_table(TINY, LatencyTable.load(path))


@pytest.mark.parametrize(
    "field, value, allowed", [("precision", "int4", "fp32, int8"), ("model_format", "pt", "onnx")]
)
def test_a_header_value_edgenas_does_not_measure_is_refused(
    npu_profiled: Path, tmp_path: Path, field: str, value: str, allowed: str
) -> None:
    for name in ("predictor.json", "lut.json"):
        doc = json.loads((npu_profiled / name).read_text())
        doc["header"][field] = value
        (tmp_path / name).write_text(json.dumps(doc))
    proc = edgenas_here(
        "latency", "predict", "--predictor", tmp_path / "predictor.json", "--subnet", "max"
    )
    line = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in line
    assert f"its header's {field} is '{value}', not one of {allowed}" in line
    with pytest.raises(TableError, match=f"its header's {field} is '{value}', not one of"):
        LatencyTable.load(tmp_path / "lut.json")


@pytest.mark.parametrize("baseline", [0, -1, float("nan")])
def test_an_edited_reference_baseline_is_a_damaged_table(
    profiled: Path, cpu: Path, cache: Path, tmp_path: Path, baseline: float
) -> None:
    # Every time is scaled by it: 0 ended in a NaN traceback, after a message that blamed
    # calibration.json (walk-through).
    out = tmp_path / "out"
    shutil.copytree(profiled, out, ignore=shutil.ignore_patterns("*.lock"))
    doc = json.loads((out / "lut.json").read_text())
    doc["header"]["reference"]["baseline_ms"] = baseline
    (out / "lut.json").write_text(json.dumps(doc))
    args = ["profile", cpu, "--space", "mbv3-tiny", "--calibrate", "24", "--out", out]
    proc = edgenas(*args, cache=cache)
    line = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in line, proc.stderr
    assert f"latency table {out / 'lut.json'} is damaged" in line
    assert f"reference baseline_ms {baseline:g} is not a time above 0 ms" in line


def test_a_damaged_table_in_out_says_to_delete_it_and_names_the_entry(
    npu_profiled: Path, tmp_path: Path, cache: Path
) -> None:
    # A rerun keeps a table's entries, so 'profile again' alone would fail the same way.
    out = tmp_path / "out"
    out.mkdir()
    doc = json.loads((npu_profiled / "lut.json").read_text())
    key = sorted(doc["entries"])[3]
    del doc["entries"][key]["median_ms"]
    (out / "lut.json").write_text(json.dumps(doc))
    args = ["profile", "npu-32x32-ws", "--space", "mbv3-tiny", "--resolution", "28"]
    proc = edgenas(*args, "--calibrate", "0", "--out", out, cache=cache)
    line = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in line and "__init__" not in line
    assert f"latency table {out / 'lut.json'} is damaged: entry {key}: it has no 'median_ms'; " in (
        line
    )
    assert "delete it (or use another output folder) and run edgenas profile again" in line
    (out / "lut.json").write_text("{not json")
    proc = edgenas(*args, "--calibrate", "0", "--out", out, cache=cache)
    line = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "not valid JSON" in line
    assert "delete it (or use another output folder) and run edgenas profile again" in line
    (out / "lut.json").unlink()  # what the message says: then the rerun works
    proc = edgenas(*args, "--calibrate", "0", "--out", out, "--quiet", cache=cache)
    assert proc.returncode == 0, proc.stderr


def _profile_npu(out: Path, cache: Path, *resolutions: int) -> subprocess.CompletedProcess[str]:
    options = [a for r in resolutions for a in ("--resolution", str(r))]
    return edgenas(
        "profile",
        "npu-32x32-ws",
        *("--space", "mbv3-tiny", *options, "--calibrate", "10", "--out", out),
        cache=cache,
    )


def _entries(path: Path) -> dict[str, str]:
    """Each entry of a table as the file writes it."""
    return {k: json.dumps(v) for k, v in json.loads(path.read_text())["entries"].items()}


def _passes(path: Path) -> dict[str, str]:
    """Each subnet's passes in a measured subnets file, as it writes them."""
    stored = json.loads(path.read_text())["subnets"]
    return {json.dumps(s["subnet"], sort_keys=True): json.dumps(s["passes"]) for s in stored}


@pytest.fixture(scope="module")
def npu_extended(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, object]:
    """A table of 28 px, then the same command with 30 px too into its folder."""
    out = tmp_path_factory.mktemp("extended")
    assert _profile_npu(out, cache, 28).returncode == 0
    before = {name: out / f"{name}.28" for name in ("lut.json", "calibration.json")}
    for name, copy in before.items():
        copy.write_bytes((out / name).read_bytes())
    proc = _profile_npu(out, cache, 28, 30)
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "before": before, "stderr": proc.stderr}


def test_more_resolutions_extend_a_table_in_place(npu_extended: dict) -> None:
    out, before = npu_extended["out"], npu_extended["before"]
    table = LatencyTable.load(out / "lut.json")
    assert table.header.resolutions == (28, 30)
    assert table.header.added_resolutions == ((30,),)
    assert set(table.entries) == {s.key for s in enumerate_blocks(TINY, resolutions=(28, 30))}
    old = _entries(before["lut.json"])
    assert {k: v for k, v in _entries(out / "lut.json").items() if k in old} == old
    # Only the blocks 30 px adds were measured (some of its blocks are 28 px's too).
    new = len(table) - len(old)
    assert 0 < new < len(enumerate_blocks(TINY, resolutions=(30,)))
    assert f"measure blocks {new}/{new}" in npu_extended["stderr"]
    # Calibration keeps the 10 subnets of 28 px and measures 10 at 30 px.
    calibrated = _passes(before["calibration.json"])
    extended = _passes(out / "calibration.json")
    assert {k: extended[k] for k in calibrated} == calibrated
    assert sorted(json.loads(k)["r"] for k in extended.keys() - calibrated.keys()) == [30] * 10
    assert "measure calibration subnets 10/10" in npu_extended["stderr"]
    predictor = load_predictor(out / "predictor.json")
    assert isinstance(predictor, CalibratedPredictor)
    assert predictor.header.resolutions == (28, 30)
    assert [s["r"] for s in predictor.calibration["subnets"]] == [28] * 10 + [30] * 10
    assert predictor.predict(TINY.max_subnet(r=30)) > predictor.predict(TINY.min_subnet(r=30)) > 0


def test_resolutions_that_do_not_cover_a_table_are_refused(npu_extended: dict, cache: Path) -> None:
    out = npu_extended["out"]
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    for asked, message in (
        ((30,), "covers resolutions 28, 30, more than 30; give --resolution 28 --resolution 30 "),
        ((28, 32), "covers resolutions 28, 30, not 28, 32; give --resolution 28 --resolution 30 "),
    ):
        proc = _profile_npu(out, cache, *asked)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"error: existing table {out / 'lut.json'} {message}" in proc.stderr
        assert files == {p.name: p.read_bytes() for p in out.iterdir()}
    assert "--resolution 32 to extend it in place" in proc.stderr


def test_an_extension_resumes_what_is_missing(
    npu_extended: dict, tmp_path: Path, cache: Path
) -> None:
    # What a killed extension leaves: the new header, some of the new blocks and subnets.
    out = tmp_path / "out"
    out.mkdir()
    for name in ("lut.json", "calibration.json"):
        (out / name).write_bytes((npu_extended["out"] / name).read_bytes())
    doc = json.loads((out / "lut.json").read_text())
    old = _entries(npu_extended["before"]["lut.json"])
    dropped = sorted(doc["entries"].keys() - old.keys())[:5]
    for key in dropped:
        del doc["entries"][key]
    (out / "lut.json").write_text(json.dumps(doc))
    doc = json.loads((out / "calibration.json").read_text())
    doc["subnets"] = doc["subnets"][:-3]  # three subnets of 30 px
    (out / "calibration.json").write_text(json.dumps(doc))
    kept = _entries(out / "lut.json")
    proc = _profile_npu(out, cache, 28, 30)
    assert proc.returncode == 0, proc.stderr
    assert "measure blocks 5/5" in proc.stderr
    assert "measure calibration subnets 3/3" in proc.stderr
    assert _entries(out / "lut.json") == _entries(npu_extended["out"] / "lut.json")
    assert {k: v for k, v in _entries(out / "lut.json").items() if k in kept} == kept
    assert _passes(out / "calibration.json") == _passes(npu_extended["out"] / "calibration.json")


def test_a_killed_extension_resumes(tmp_path: Path, cache: Path) -> None:
    quick = tmp_path / "quick-cpu.yaml"
    quick.write_text(LOCAL_PROFILE.format(name="test-cpu", threads=1, runs=3))
    out = tmp_path / "extended"
    args = ["profile", quick, "--space", "mbv3-tiny", "--resolution", "28", "--out", out]
    args += ["--calibrate", "0", "--batch-size", "8", "--quiet"]
    assert edgenas(*args, cache=cache).returncode == 0
    lut = out / "lut.json"
    made = LatencyTable.load(lut)
    extend = [sys.executable, "-m", "edgenas", *map(str, args), "--resolution", "30"]
    extend += ["--cache", str(cache)]
    proc = subprocess.Popen(extend, env=ENV)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(json.loads(lut.read_text())["entries"]) > len(made):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = LatencyTable.load(lut)
    total = len(enumerate_blocks(TINY, resolutions=(28, 30)))
    assert len(made) < len(killed) < total, "the run finished before it could be killed"
    # The header covers 30 px from the first batch; a rerun without it says what to give.
    assert killed.header.resolutions == (28, 30)
    proc = edgenas(*args, cache=cache)
    assert proc.returncode == 2 and "give --resolution 28 --resolution 30 to go on" in proc.stderr
    done = subprocess.run(extend, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    final = LatencyTable.load(lut)
    assert set(final.entries) == {s.key for s in enumerate_blocks(TINY, resolutions=(28, 30))}
    assert final.header.reference == made.header.reference  # one baseline for all entries
    for key, m in killed.entries.items():
        assert final.entries[key] == m  # measured once, kept
