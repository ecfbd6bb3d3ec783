"""Per-op times in lookup tables (``edgenas profile --per-op``) and the report's per-op split:
measured for real with onnxruntime's profiler and OpenVINO's performance counters on this host,
on a micro space's blocks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from devices import DeviceError
from devices.local import LocalDevice
from devices.measurement import Measurement, OperatorTime
from devices.profiles import load_profile
from devices.runner_protocol import RunSettings
from edgenas.report import build_report
from latency.blocks import enumerate_blocks, subnet_blocks
from latency.fleet import ProfileOptions, profile_published
from latency.model_cache import ModelCache
from latency.op_split import op_kind, split_by_kind
from latency.predictors import LutSumPredictor
from latency.profiler import blocks_to_measure, check_per_op, profile_blocks
from latency.reference import reference_scale
from latency.table import LatencyTable, TableError
from once_for_all import get_space
from tests.latency.test_tflite_profiles import MICRO
from tests.support.cli_here import edgenas_here
from tests.support.openvino import OPENVINO_PYTHON, require_openvino

QUICK = RunSettings(warmup=1, runs=5)


def _profile_per_op(device: LocalDevice, folder: Path) -> Path:
    path = folder / "lut.json"
    profile_blocks(device, MICRO, path, cache=ModelCache(folder / "cache"), per_op=True, workers=1)
    return path


@pytest.fixture(scope="module")
def per_op_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _profile_per_op(LocalDevice(settings=QUICK), tmp_path_factory.mktemp("per-op"))


@pytest.fixture(scope="module")
def openvino_per_op_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_openvino()
    settings = replace(QUICK, runtime="openvino")
    device = LocalDevice("ov", python=OPENVINO_PYTHON, settings=settings)
    return _profile_per_op(device, tmp_path_factory.mktemp("per-op-openvino"))


@pytest.mark.parametrize(
    ("table_fixture", "where"),
    [("per_op_table", "CPUExecutionProvider"), ("openvino_per_op_table", "CPU")],
)
def test_per_op_times_are_stored_per_block(
    request: pytest.FixtureRequest, table_fixture: str, where: str
) -> None:
    table = LatencyTable.load(request.getfixturevalue(table_fixture))  # as written, read back
    assert set(table.entries) == {s.key for s in enumerate_blocks(MICRO)}
    ratios = []
    for key, m in table.entries.items():
        assert m.ops, key
        assert all(op.ms >= 0 and op.op_type and op.name for op in m.ops), key
        assert {op.where for op in m.ops} == {where}
        total = sum(op.ms for op in m.ops)
        # The kernels run inside the profiled runs: their times add up to at most a run (for
        # OpenVINO, only if its first run, often many times slower, is left out).
        assert total <= m.extra["profile"]["run_ms"] + 1e-9, key
        ratios.append(total / m.median_ms)
    if where == "CPUExecutionProvider":
        # Profiled and timed runs are separate: op sums are on the order of the block's time.
        # (OpenVINO counts whole microseconds per node and run: on these blocks of a few
        # microseconds its sums are mostly rounded away, so only the bound above holds.)
        assert min(ratios) > 0 and 0.1 < sorted(ratios)[len(ratios) // 2] < 10
    se = next(m for k, m in table.entries.items() if "-se1-" in k)
    assert {"Conv", "depthwise", "SE"} <= set(split_by_kind(se.ops or ()))
    plain = next(m for k, m in table.entries.items() if "-se0-" in k)
    assert "SE" not in split_by_kind(plain.ops or ())


def test_tables_with_and_without_per_op_times_read(per_op_table: Path, tmp_path: Path) -> None:
    table = LatencyTable.load(per_op_table)
    doc = json.loads(per_op_table.read_text())
    assert doc["format"] == "edgenas.lut/2"  # readers of /2 read it: they skip "ops"
    key, m = next(iter(table.entries.items()))
    assert doc["entries"][key]["ops"][0] == m.ops[0].to_dict()  # type: ignore[index]
    # Without per-op times the entries have no "ops", and read as before.
    bare = LatencyTable(table.header, {k: replace(v, ops=None) for k, v in table.entries.items()})
    bare.save(tmp_path / "bare.json")
    assert "ops" not in json.loads((tmp_path / "bare.json").read_text())["entries"][key]
    again = LatencyTable.load(tmp_path / "bare.json")
    assert again.entries[key].ops is None and again.ms(key) == table.ms(key)
    # Entries written before ops had types hold per_op_ms: they read as ops of no type.
    old = {**m.to_dict(), "per_op_ms": {"/a/Conv": 0.5, "/b/Add": 0.25}}
    del old["ops"]
    assert Measurement.from_dict(old).ops == (
        OperatorTime("/a/Conv", "", 0.5),
        OperatorTime("/b/Add", "", 0.25),
    )
    # A rerun with --per-op measures the blocks that have none; without it, nothing.
    specs = enumerate_blocks(MICRO)
    assert blocks_to_measure(specs, bare, per_op=True) == specs
    assert blocks_to_measure(specs, bare) == blocks_to_measure(specs, table, per_op=True) == []


def test_op_kinds_across_runtimes() -> None:
    def kind(name: str, op_type: str) -> str:
        return op_kind(OperatorTime(name, op_type, 1.0))

    assert kind("/depthwise/conv/Conv_output_0_nchwc", "Conv") == "depthwise"
    assert kind("/expand/conv/Conv", "FusedConv") == "Conv"
    assert kind("/expand/act/HardSwish", "HardSwish") == "HardSwish"
    assert kind("/se/gate/HardSigmoid_output_0_nchwc", "Conv") == "SE"
    assert kind("[x]:3", "DEPTHWISE_CONV_2D") == "depthwise"
    assert kind("Delegate/Convolution (NHWC, F32) DWConv:1", "Convolution (NHWC, F32) DWConv") == (
        "depthwise"
    )
    assert kind("Delegate/Convert (NC, F32, QD8):0", "Convert (NC, F32, QD8)") == "other"
    assert kind("[y]:4", "HARD_SWISH") == "HardSwish"
    # TensorRT's layers have names only.
    assert kind("/depthwise/conv/Conv + /depthwise/act/HardSwish", "") == "depthwise"
    assert kind("/se/reduce/Conv + /se/relu/Relu", "") == "SE"
    assert kind("Reformatting CopyNode for Input Tensor 0 to /Add", "") == "other"
    # OpenVINO's performance counters (2026.4, the demo's int8 file): types with the kernel,
    # and element-wise ops fused into a Subgraph named after one of them.
    ov_dw = "GroupConvolution (brgconv_avx512_dw_I8)"
    assert kind("/blocks/blocks.1/depthwise/conv/Conv/WithoutBiases", ov_dw) == "depthwise"
    assert kind("/conv/Conv/WithoutBiases", ov_dw) == "depthwise"
    assert kind("/stem/conv/Conv/WithoutBiases", "Convolution (brgconv_avx512_amx_I8)") == "Conv"
    assert kind("/stem/act/HardSwish_output_0_QuantizeLinear", "Subgraph (jit_avx512_I8)") == (
        "HardSwish"
    )
    assert kind("input_QuantizeLinear", "Subgraph (jit_avx512_I8)") == "other"
    # The kernel says how, not what: a layout change on a GEMM kernel is no matrix product.
    assert kind(
        "input_abcd_acdb_/stem/conv/Conv/WithoutBiases", "Reorder (reorder_brgemm_f32)"
    ) == ("other")
    assert kind("/blocks/blocks.2/expand/act/HardSwish", "HSwish (jit_avx512_f32)") == "HardSwish"
    assert kind("/blocks/blocks.2/gate/HardSigmoid", "HSigmoid (jit_avx512_f32)") == "SE"
    assert kind(
        "input_QuantizeLinear_Output_aligned_pad_abcd_acdb_/stem", "Reorder (jit_uni_I8)"
    ) == ("other")


def test_a_runtime_without_per_op_times_refuses_in_one_line(tmp_path: Path) -> None:
    profile = tmp_path / "litert.yaml"
    profile.write_text("name: host-litert\nkind: local\nruntime: tflite\n")
    out = tmp_path / "out"
    proc = edgenas_here("profile", profile, "--space", "mbv3-tiny", "--out", out, "--per-op")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "device 'host-litert' cannot give per-op times" in lines[0]
    assert "LiteRT's Python interpreter" in lines[0]
    for source in ("onnxruntime", "benchmark_model", "trtexec", "--per-op"):
        assert source in lines[0], source
    assert not (out / "lut.json").exists()


def test_openvino_gives_per_op_times_on_its_cpu_only(openvino_per_op_table: Path) -> None:
    # The CPU plugin's counters are totals of whole microseconds per run, read after the first
    # run and after the last; other devices' counters are not verified to mean the same, so
    # their tables are refused --per-op.
    fingerprint = LatencyTable.load(openvino_per_op_table).header.fingerprint
    for name in ("CPU", "CPU.0"):
        device = LocalDevice(
            "ov", settings=replace(QUICK, runtime="openvino", openvino_device=name)
        )
        assert device.per_op_times
        check_per_op(device, fingerprint)
    gpu = LocalDevice("ov-gpu", settings=replace(QUICK, runtime="openvino", openvino_device="GPU"))
    assert not gpu.per_op_times
    with pytest.raises(DeviceError) as info:
        check_per_op(gpu, fingerprint)
    (line,) = str(info.value).splitlines()
    assert "device 'ov-gpu' cannot give per-op times" in line
    assert "OpenVINO's performance counters on its CPU device only" in line
    assert "profile openvino.device CPU, or leave out --per-op" in line


def test_published_tables_have_no_per_op_times(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="hold no per-op times; leave out --per-op"):
        profile_published(
            load_profile("samsung-note10"),
            get_space("mbv3-imagenet"),
            tmp_path,
            ProfileOptions(per_op=True),
        )


def _run_folder(root: Path, table: LatencyTable) -> Path:
    folder = root / "devices" / "test-cpu"
    folder.mkdir(parents=True)
    table.save(folder / "lut.json")
    LutSumPredictor.from_table(MICRO, table).save(folder / "predictor.json")
    (root / "run.json").write_text(
        json.dumps({"format": "edgenas.run/1", "recipe": {"name": "r", "space": "micro"}})
    )
    return build_report(root)


def test_the_block_view_splits_each_block_by_kind_of_op(per_op_table: Path, tmp_path: Path) -> None:
    table = LatencyTable.load(per_op_table)
    text = _run_folder(tmp_path / "with", table).read_text()
    assert "test-cpu: time per kind of op" in text
    largest = subnet_blocks(MICRO, MICRO.max_subnet(r=16))  # the blocks the view shows
    block = next(b.key for b in largest if "-se1-" in b.key)
    row = text[text.index(f"<code>{block}</code>", text.index("time per kind of op")) :]
    row = row[: row.index("</tr>")]
    m = table.entries[block]
    split = split_by_kind(m.ops or ())
    scale = reference_scale(m)  # op times normalised as the block's latency is
    for kind, ms in split.items():
        assert f"{ms * scale:.4g} ({100 * ms / sum(split.values()):.0f}%)" in row, kind
    assert "CPUExecutionProvider" in text
    # How much of the profiled runs the ops account for, over the blocks shown.
    shown = [table.entries[b.key] for b in largest]
    share = sum(sum(op.ms for op in m.ops or ()) for m in shown) / sum(
        m.extra["profile"]["run_ms"] for m in shown
    )
    assert f"The op times add up to {share:.0%} of the time of the profiled runs" in text
    # Without per-op times the block view is as before: no split.
    bare = LatencyTable(table.header, {k: replace(v, ops=None) for k, v in table.entries.items()})
    plain = _run_folder(tmp_path / "without", bare).read_text()
    assert "time per kind of op" not in plain and "block-latency" in plain
