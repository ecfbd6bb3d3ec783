"""The simulated NPU: agreement with SCALE-Sim v3, the cycle model, files, ONNX and the device."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from devices.base import DeviceError, create_device
from devices.measurement import Measurement
from devices.npu_sim import (
    MODEL_VERSION,
    Layer,
    NpuConfig,
    NpuSimDevice,
    NpuSimError,
    format_topology_csv,
    layers_from_onnx,
    parse_scalesim_cfg,
    parse_topology_csv,
    read_topology_csv,
    simulate,
    write_topology_csv,
)
from devices.npu_sim.topology import MAX_OPERAND

DATA = Path(__file__).parent / "data"
CASES_FILE = DATA / "scalesim_cases.json"
CASES: dict[str, Any] = json.loads(CASES_FILE.read_text())
TOPOLOGY = {layer.name: layer for layer in read_topology_csv(DATA / CASES["topology"])}


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['rows']}x{case['cols']}-{case['dataflow']}-{case['layer']}"


# Agreement with SCALE-Sim (cases and its figures: benchmarks/scalesim_crosscheck.py)


def test_scalesim_cases_cover_what_was_asked() -> None:
    assert CASES["format"] == "edgenas.scalesim-cases/2"
    assert CASES["readme"].startswith("generated with scalesim 3.0.0 by")
    cases = CASES["cases"]
    assert {c["dataflow"] for c in cases} == {"os", "ws", "is"}
    assert {(8, 8), (16, 16), (32, 32)} <= {(c["rows"], c["cols"]) for c in cases}
    layers = [TOPOLOGY[c["layer"]] for c in cases]
    assert any(x.depthwise for x in layers)
    assert any(x.filter_h == 1 and not x.depthwise for x in layers)  # pointwise
    assert any(x.filter_h == 3 and not x.depthwise for x in layers)
    assert {x.stride_h for x in layers} == {1, 2}
    assert {x.stride_h for x in layers if x.depthwise} == {1, 2}
    # MBConv-sized layers too, not only toy ones: a network's ifmap (28 px or more, padded)
    # and channel count (240 or more, in or out).
    assert any(min(x.ifmap_h, x.ifmap_w) >= 28 for x in layers)
    assert any(max(x.channels, x.out_channels) >= 240 for x in layers)


@pytest.mark.parametrize("case", CASES["cases"], ids=_case_id)
def test_compute_cycles_equal_scalesim(case: dict[str, Any]) -> None:
    config = NpuConfig.from_scalesim_cfg(DATA / case["config"])
    assert (config.rows, config.cols, config.dataflow) == (
        case["rows"],
        case["cols"],
        case["dataflow"],
    )
    layer = TOPOLOGY[case["layer"]]
    result = simulate([layer], config).layers[0]

    assert result.compute_cycles == case["compute_cycles"]
    assert result.repeats == case["scalesim_layers"]
    # Depthwise: SCALE-Sim simulates each channel as its own layer, all alike.
    assert case["per_layer_compute_cycles"] == [result.compute_cycles // result.repeats]
    # Utilisation (MACs per PE-cycle) and mapping efficiency are SCALE-Sim's too.
    assert 100 * result.utilisation == pytest.approx(case["overall_util_pct"], rel=1e-12)
    assert 100 * result.mapping_efficiency == pytest.approx(
        case["mapping_efficiency_pct"], rel=1e-12
    )
    assert result.ifmap_sram_reads == case["ifmap_sram_reads"]
    assert result.filter_sram_reads == case["filter_sram_reads"]
    if config.dataflow == "os":
        # SCALE-Sim's OS model also adds the padded fold's height + width to its ofmap write
        # count per fold (systolic_compute_os.py, create_ofmap_demand_mat): not data written.
        folds = result.row_folds * result.col_folds * result.repeats
        extra = folds * (config.rows + config.cols)
        assert result.ofmap_sram_writes + extra == case["ofmap_sram_writes"]
    else:
        assert result.ofmap_sram_writes == case["ofmap_sram_writes"]


def _stall_case_id(case: dict[str, Any]) -> str:
    return f"{Path(case['config']).stem}-{case['layer']}"


def test_stall_cases_cover_what_was_asked() -> None:
    cases = CASES["stall_cases"]
    assert len(cases) >= 30
    assert {c["dataflow"] for c in cases} == {"os", "ws", "is"}
    assert len({c["write_words_per_cycle"] for c in cases}) >= 2
    assert any(c["read_words_per_cycle"] != c["write_words_per_cycle"] for c in cases)
    assert sum(c["stall_cycles"] > 0 for c in cases) >= 30
    # Issue 23's report: 29,355 cycles, 23,766 of them stalls, at 10 words per cycle.
    (issue,) = [c for c in cases if c["layer"] == "issue23_conv3x3"]
    assert (issue["total_cycles"], issue["stall_cycles"]) == (29355, 23766)


_TOPOLOGIES: dict[str, list[Layer]] = {}


@pytest.mark.parametrize("case", CASES["stall_cases"], ids=_stall_case_id)
def test_stall_and_total_cycles_equal_scalesim(case: dict[str, Any]) -> None:
    config = NpuConfig.from_scalesim_cfg(DATA / case["config"])
    assert config.dram_bandwidth == case["write_words_per_cycle"]
    assert (config.read_bandwidth or config.dram_bandwidth) == case["read_words_per_cycle"]
    if case["topology"] not in _TOPOLOGIES:
        _TOPOLOGIES[case["topology"]] = read_topology_csv(DATA / case["topology"])
    (layer,) = [x for x in _TOPOLOGIES[case["topology"]] if x.name == case["layer"]]
    result = simulate([layer], config).layers[0]
    assert result.repeats == case["scalesim_layers"]
    assert (result.total_cycles, result.stall_cycles) == (
        case["total_cycles"],
        case["stall_cycles"],
    )


# The cycle model on hand-worked examples


UNLIMITED_8X8 = NpuConfig(rows=8, cols=8, dram_bandwidth=None)


@pytest.mark.parametrize(
    ("dataflow", "row_folds", "col_folds", "per_fold"),
    [
        # 10x10 ifmap, 3x3x4 window, 20 filters: E = 64 ofmap pixels, W = 36, K = 20.
        ("os", 8, 3, 36 + 8 + 8 - 2),  # S_r = E = 64, S_c = K = 20, T = W = 36
        ("ws", 5, 3, 64 + 16 + 8 - 2),  # S_r = W = 36, S_c = K = 20, T = E = 64
        ("is", 5, 8, 20 + 16 + 8 - 2),  # S_r = W = 36, S_c = E = 64, T = K = 20
    ],
)
def test_folds_cycles_and_utilisation_by_hand(
    dataflow: str, row_folds: int, col_folds: int, per_fold: int
) -> None:
    layer = Layer("conv", 10, 10, 3, 3, 4, 20)
    config = replace(UNLIMITED_8X8, dataflow=dataflow)  # type: ignore[arg-type]
    r = simulate([layer], config).layers[0]
    assert (r.row_folds, r.col_folds) == (row_folds, col_folds)
    assert r.compute_cycles == row_folds * col_folds * per_fold - 1
    assert r.macs == 64 * 36 * 20
    assert r.utilisation == pytest.approx(64 * 36 * 20 / (r.compute_cycles * 64))
    used = (r.sr * r.sc) / (row_folds * col_folds * 64)
    assert r.mapping_efficiency == pytest.approx(used)
    assert r.stall_cycles == 0 and r.total_cycles == r.compute_cycles


def test_a_gemm_that_fills_the_array_once() -> None:
    # A 4x4 output on a 4x4 array, depth 4: one fold, 4 + 4 + 4 - 2 cycles, less one.
    config = NpuConfig(rows=4, cols=4, dataflow="os", dram_bandwidth=None)
    r = simulate([Layer("gemm", 4, 1, 1, 1, 4, 4)], config).layers[0]
    assert (r.row_folds, r.col_folds, r.compute_cycles) == (1, 1, 9)
    assert r.mapping_efficiency == 1.0
    assert r.utilisation == pytest.approx(64 / (9 * 16))
    assert r.fill_drain_cycles == 4 + 4 - 2


BIG = Layer("big", 58, 58, 3, 3, 64, 64)  # 56x56x64 -> 64, 3x3
MID = Layer("mid", 30, 30, 3, 3, 32, 32)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_stalls_appear_when_dram_is_slow_and_vanish_when_fast(dataflow: str) -> None:
    # 4 kB SRAMs: the operands stream through them (a smaller layer than BIG keeps it quick).
    base = NpuConfig(
        rows=16,
        cols=16,
        dataflow=dataflow,  # type: ignore[arg-type]
        ifmap_sram_kb=4,
        filter_sram_kb=4,
        ofmap_sram_kb=4,
    )
    slow = simulate([MID], replace(base, dram_bandwidth=0.05)).layers[0]
    fast = simulate([MID], replace(base, dram_bandwidth=65536)).layers[0]  # the most taken
    unlimited = simulate([MID], replace(base, dram_bandwidth=None)).layers[0]
    assert slow.compute_cycles == fast.compute_cycles == unlimited.compute_cycles
    assert slow.stall_cycles > 0
    assert slow.total_cycles == slow.compute_cycles + slow.stall_cycles
    # Slow DRAM dominates. Each memory has its own channel (as in SCALE-Sim), so the total is
    # at least the busiest read stream's time, less the first fill (before cycle 0).
    busiest = max(slow.ifmap_dram_reads, slow.filter_dram_reads) - 2048
    assert slow.total_cycles >= busiest / 0.05
    assert fast.stall_cycles == 0 and unlimited.stall_cycles == 0
    assert slow.utilisation < fast.utilisation
    assert slow.latency_ms > fast.latency_ms


def test_without_double_buffering_no_transfer_overlaps_compute() -> None:
    # No SCALE-Sim counterpart: the estimate's traffic, all of it stalling the array.
    config = NpuConfig(rows=16, cols=16, dataflow="ws", dram_bandwidth=8, double_buffering=False)
    serial = simulate([MID], config).layers[0]
    assert serial.stall_cycles == math.floor(serial.dram_bytes / 8) > 0
    assert serial.total_cycles == serial.compute_cycles + serial.stall_cycles


def test_operands_that_do_not_fit_the_sram_come_from_dram_again() -> None:
    # The estimate's traffic (unlimited bandwidth; with a limit the counts are SCALE-Sim's).
    roomy = NpuConfig(
        rows=16,
        cols=16,
        dataflow="os",
        ifmap_sram_kb=1024,
        filter_sram_kb=1024,
        dram_bandwidth=None,
    )
    tight = replace(roomy, ifmap_sram_kb=1, filter_sram_kb=1)
    r_roomy = simulate([BIG], roomy).layers[0]
    r_tight = simulate([BIG], tight).layers[0]
    assert r_roomy.ifmap_dram_reads == 58 * 58 * 64
    assert r_roomy.filter_dram_reads == 3 * 3 * 64 * 64
    assert r_tight.ifmap_dram_reads == 58 * 58 * 64 * r_tight.col_folds
    assert r_tight.filter_dram_reads == 3 * 3 * 64 * 64 * r_tight.row_folds
    assert r_tight.dram_bytes > r_roomy.dram_bytes


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_a_bigger_array_takes_fewer_cycles_for_a_big_layer(dataflow: str) -> None:
    cycles = [
        simulate(
            [BIG], NpuConfig(rows=n, cols=n, dataflow=dataflow, dram_bandwidth=None)
        ).compute_cycles  # type: ignore[arg-type]
        for n in (8, 16, 32, 64)
    ]
    assert cycles == sorted(cycles, reverse=True) and len(set(cycles)) == 4


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_depthwise_runs_channel_by_channel(dataflow: str) -> None:
    config = NpuConfig(rows=8, cols=8, dataflow=dataflow, dram_bandwidth=4)  # type: ignore[arg-type]
    dw = Layer("dw_DP", 18, 18, 3, 3, 24, 1, depthwise=True)
    one_channel = Layer("one", 18, 18, 3, 3, 1, 1)
    r_dw = simulate([dw], config).layers[0]
    r_one = simulate([one_channel], config).layers[0]
    assert r_dw.repeats == 24
    for key in ("compute_cycles", "stall_cycles", "macs", "dram_bytes", "ifmap_sram_reads"):
        assert getattr(r_dw, key) == 24 * getattr(r_one, key), key
    assert r_dw.macs == dw.macs == 16 * 16 * 9 * 24
    assert r_dw.utilisation == pytest.approx(r_one.utilisation)


def test_totals_are_sums_over_layers() -> None:
    layers = [TOPOLOGY[name] for name in ("conv3x3_s1", "dw3x3_s1_DP", "fc")]
    config = NpuConfig(rows=8, cols=8, dram_bandwidth=2, clock_mhz=500)
    result = simulate(layers, config)
    assert result.total_cycles == sum(r.total_cycles for r in result.layers)
    assert result.compute_cycles + result.stall_cycles == result.total_cycles
    assert result.latency_ms == pytest.approx(result.total_cycles / 500e3)
    assert sum(r.latency_ms for r in result.layers) == pytest.approx(result.latency_ms)
    assert [r.name for r in result.layers] == ["conv3x3_s1", "dw3x3_s1_DP", "fc"]
    assert json.loads(json.dumps(result.to_dict()))["total_cycles"] == result.total_cycles
    assert simulate([], config).total_cycles == 0


# SCALE-Sim's files

# configs/scale.cfg as shipped with SCALE-Sim v3 (no [layout] or [sparsity] sections).
SCALESIM_V3_EXAMPLE_CFG = """\
[general]
run_name = scale_example_run_32x32_ws

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     32
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : os
MemoryBanks:   1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def test_reads_scalesim_v3_example_config() -> None:
    config = parse_scalesim_cfg(SCALESIM_V3_EXAMPLE_CFG)
    assert config == NpuConfig(rows=32, cols=32, dataflow="os", dram_bandwidth=None)
    user = SCALESIM_V3_EXAMPLE_CFG.replace("CALC", "USER")
    assert parse_scalesim_cfg(user).dram_bandwidth == 10.0


@pytest.mark.parametrize(
    "config",
    [
        NpuConfig(),
        NpuConfig(rows=16, cols=8, dataflow="is", dram_bandwidth=None),
        NpuConfig(
            rows=4,
            cols=64,
            dataflow="os",
            ifmap_sram_kb=8,
            filter_sram_kb=16,
            ofmap_sram_kb=2,
            dram_bandwidth=16,
            clock_mhz=800,
            word_bytes=2,
            double_buffering=False,
        ),
        NpuConfig(dram_bandwidth=20, read_bandwidth=5),
    ],
)
def test_cfg_round_trip(config: NpuConfig, tmp_path: Path) -> None:
    path = tmp_path / "npu.cfg"
    config.to_scalesim_cfg(path)
    again = NpuConfig.from_scalesim_cfg(path)
    assert again == config
    assert again.config_hash() == config.config_hash()
    assert NpuConfig.from_dict(config.to_dict()) == config
    assert not list(tmp_path.glob(".*tmp"))


def test_binary_cfg_and_topology_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(NpuSimError, match=r"config .*binary is not a text file \(not UTF-8\)"):
        NpuConfig.from_scalesim_cfg(path)
    with pytest.raises(NpuSimError, match=r"topology .*binary: .*can't decode"):
        read_topology_csv(path)


def test_user_cfg_reads_at_the_layout_bandwidth() -> None:
    # SCALE-Sim 3.0.0 in USER mode reads ifmap and filter at the [layout] bank bandwidths
    # and writes the ofmap at Bandwidth's first value.
    user = SCALESIM_V3_EXAMPLE_CFG.replace("CALC", "USER").replace(
        "Bandwidth : 10", "Bandwidth : 16,8"
    )
    layout = "\n[layout]\nIfmapSRAMBankBandwidth: {}\nFilterSRAMBankBandwidth: {}\n"
    config = parse_scalesim_cfg(user + layout.format(4, 4))
    assert (config.dram_bandwidth, config.read_bandwidth) == (16.0, 4.0)
    assert "4 B/cycle reads, 16 writes" in config.describe()
    assert parse_scalesim_cfg(user + layout.format(16, 16)).read_bandwidth is None
    assert parse_scalesim_cfg(user).read_bandwidth is None  # no [layout]: Bandwidth for all
    with pytest.raises(NpuSimError, match="FilterSRAMBankBandwidth differ"):
        parse_scalesim_cfg(user + layout.format(4, 8))
    slow_reads = simulate([MID], replace(config, ifmap_sram_kb=1, filter_sram_kb=1))
    fast_reads = simulate(
        [MID], replace(config, ifmap_sram_kb=1, filter_sram_kb=1, read_bandwidth=None)
    )
    assert slow_reads.stall_cycles > fast_reads.stall_cycles


def test_cfg_bandwidth_is_words_per_cycle_for_scalesim(tmp_path: Path) -> None:
    path = tmp_path / "npu.cfg"
    NpuConfig(dram_bandwidth=16, word_bytes=2).to_scalesim_cfg(path)
    text = path.read_text()
    assert "Bandwidth: 8\n" in text and "InterfaceBandwidth: USER" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("Dataflow : os", "Dataflow : rs"), "Dataflow = 'rs': allowed os, ws, is"),
        (("ArrayHeight:    32\n", ""), "missing [architecture_presets] ArrayHeight"),
        (
            ("ArrayWidth:     32", "ArrayWidth: wide"),
            "ArrayWidth = 'wide': expected a positive integer",
        ),
        # the cfg's key, not NpuConfig's field (cols)
        (("ArrayWidth:     32", "ArrayWidth: 0"), "ArrayWidth = '0': expected a positive integer"),
        (("ArrayHeight:    32", "ArrayHeight: -4"), "ArrayHeight = '-4': expected a positive"),
        (("InterfaceBandwidth: CALC", "InterfaceBandwidth: FAST"), "allowed CALC, USER"),
        (("[general]", "general"), "no [section] headers"),
    ],
)
def test_bad_cfg_is_refused_with_the_reason(change: tuple[str, str], message: str) -> None:
    text = SCALESIM_V3_EXAMPLE_CFG.replace(*change)
    assert text != SCALESIM_V3_EXAMPLE_CFG
    with pytest.raises(NpuSimError) as err:
        parse_scalesim_cfg(text, source="x.cfg")
    assert message in str(err.value) and str(err.value).startswith("x.cfg")


def test_sparse_cfg_is_refused() -> None:
    text = SCALESIM_V3_EXAMPLE_CFG + "\n[sparsity]\nSparsitySupport: true\n"
    with pytest.raises(NpuSimError, match="sparse arrays are not modelled"):
        parse_scalesim_cfg(text)


def test_a_zero_array_height_names_the_cfg_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "npu.cfg"
    path.write_text(SCALESIM_V3_EXAMPLE_CFG.replace("ArrayHeight:    32", "ArrayHeight: 0"))
    with pytest.raises(NpuSimError) as err:
        NpuConfig.from_scalesim_cfg(path)
    assert str(err.value) == (
        f"{path}: [architecture_presets] ArrayHeight = '0': expected a positive integer"
    )


def test_missing_cfg_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(NpuSimError, match=r"absent\.cfg: No such file"):
        NpuConfig.from_scalesim_cfg(tmp_path / "absent.cfg")


def test_config_dict_errors_name_the_key() -> None:
    with pytest.raises(NpuSimError, match="unknown key 'row'; allowed: "):
        NpuConfig.from_dict({"row": 8})
    with pytest.raises(NpuSimError, match="dram_bandwidth=-1: expected a positive number"):
        NpuConfig.from_dict({"dram_bandwidth": -1})
    assert NpuConfig(clock_mhz=500).config_hash() == NpuConfig(clock_mhz=500.0).config_hash()
    assert NpuConfig(rows=16).config_hash() != NpuConfig().config_hash()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # the memory simulation asked numpy for 954 GiB: a 79-line traceback (input audit)
        ("rows", 10**9, "rows=1000000000: expected at most 1024 (processing elements;"),
        ("cols", 4096, "cols=4096: expected at most 1024 (processing elements;"),
        ("ifmap_sram_kb", 2**30, "ifmap_sram_kb=1073741824: expected at most 1048576 (kB"),
        ("ofmap_sram_kb", 2**40, "ofmap_sram_kb=1099511627776: expected at most 1048576"),
        # 1024 // word_bytes words per kB: ZeroDivisionError
        ("word_bytes", 2048, "word_bytes=2048: expected at most 8 (bytes per operand"),
        # a clock in Hz
        ("clock_mhz", 5e8, "clock_mhz=500000000.0: expected at most 100000 (MHz)"),
        # OverflowError (Python int too large to convert to C long)
        ("dram_bandwidth", 1e300, "dram_bandwidth=1e+300: expected 0.001 to 65536 (bytes"),
        ("dram_bandwidth", 1e-300, "dram_bandwidth=1e-300: expected 0.001 to 65536"),
        ("read_bandwidth", 1e-9, "read_bandwidth=1e-09: expected 0.001 to 65536"),
    ],
)
def test_config_values_beyond_what_the_simulator_takes_are_refused(
    key: str, value: float, message: str
) -> None:
    with pytest.raises(NpuSimError) as err:
        NpuConfig.from_dict({key: value}, source="device 'n': npu")
    assert str(err.value).startswith(f"device 'n': npu: {message}")
    assert "\n" not in str(err.value)


def test_the_largest_array_taken_simulates() -> None:
    layer = Layer("pw", 8, 8, 1, 1, 16, 16)
    result = simulate([layer], NpuConfig(rows=1024, cols=1024, dram_bandwidth=10))
    assert result.total_cycles > 0


def test_a_cfg_array_beyond_the_limit_names_the_cfg_key() -> None:
    text = SCALESIM_V3_EXAMPLE_CFG.replace("ArrayHeight:    32", "ArrayHeight: 100000")
    with pytest.raises(NpuSimError) as err:
        parse_scalesim_cfg(text, source="x.cfg")
    assert str(err.value).startswith(
        "x.cfg: [architecture_presets] ArrayHeight = '100000': expected at most 1024"
    )


def test_a_huge_array_in_a_profile_is_one_line_from_devices_check(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgenas.cli import app

    profile = tmp_path / "npu.yaml"
    profile.write_text("name: big\nkind: npu-sim\nnpu: {rows: 1000000000, cols: 32}\n")
    result = CliRunner().invoke(app, ["devices", "check", str(profile)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: device 'big': npu: rows=1000000000: expected at most 1024 (processing elements; "
        "the simulator's memory grows with the array)"
    ]


def test_topology_csv_round_trip(tmp_path: Path) -> None:
    layers = list(TOPOLOGY.values())
    path = tmp_path / "net.csv"
    write_topology_csv(layers, path)
    assert read_topology_csv(path) == layers
    # A depthwise layer is written with SCALE-Sim's DP mark and read back as depthwise.
    dw = Layer("dw", 10, 10, 3, 3, 8, 1, depthwise=True)
    (back,) = parse_topology_csv(format_topology_csv([dw]))
    assert back == replace(dw, name="dw_DP")


def test_reads_scalesim_topology_rows_with_comments() -> None:
    # Rows as in SCALE-Sim's topologies/conv_nets/mobilnet_paper.csv.
    text = (
        "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
        "Num Filter, Strides,\n"
        "Conv1,224,224,3,3,3,32,2,\n"
        "Conv2_dw,112,112,3,3,1,1,1,#dw\n"
        "\n"
        "Conv14_DP,14,14,3,3,512,1,1,1:1,\n"
        "FC,1,1,1,1,1024,1000,1\n"
    )
    conv, dw, dp, fc = parse_topology_csv(text)
    assert conv == Layer("Conv1", 224, 224, 3, 3, 3, 32, 2, 2)
    assert (conv.ofmap_h, conv.ofmap_w) == (112, 112)  # SCALE-Sim rounds up
    assert not dw.depthwise and dp.depthwise and dp.channels == 512
    assert fc.macs == 1024 * 1000


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("c,8,8,3,3,4", "6 columns, expected 8"),
        ("c,8,8,3,x,4,4,1,", "expected 7 integers"),
        ("c,2,2,3,3,4,4,1,", "filter 3x3 is larger than its ifmap 2x2"),
        ("c,8,8,3,3,0,4,1,", "channels=0"),
        ("c,8,8,3,3,4,4,1,2:4,", "only dense layers"),
        # the cycle model's int64 overflowed: an OverflowError (review)
        (
            "c,100000000,100000000,3,3,100000,100000,1,",
            "its ifmap operand has 1,000,000,000,000,000,000,000 elements, more than the "
            "simulator counts; check the layer's sizes",
        ),
    ],
)
def test_bad_topology_rows_are_refused_with_line_numbers(row: str, message: str) -> None:
    with pytest.raises(NpuSimError) as err:
        parse_topology_csv("header\n" + row + "\n", source="net.csv")
    assert message in str(err.value) and str(err.value).startswith("net.csv line 2")


def test_the_memory_model_refuses_a_layer_whose_operands_it_cannot_hold() -> None:
    # It asked numpy for 74 GiB (review). The cycle model alone builds no operand matrix and
    # takes such a layer: SCALE-Sim's own Resnet50_4k topology starts with this conv.
    conv = Layer("Conv1", 2160, 4096, 7, 7, 3, 64, 2, 2)
    assert conv.operand_sizes(per_channel=True)["im2col (ofmap pixels x window)"] > MAX_OPERAND
    assert simulate([conv], UNLIMITED_8X8).layers[0].macs == conv.macs
    with pytest.raises(NpuSimError) as err:
        simulate([conv], replace(UNLIMITED_8X8, dram_bandwidth=10.0))
    assert str(err.value) == (
        "layer 'Conv1': its im2col (ofmap pixels x window) operand has 324,221,436 elements, "
        "more than the memory model holds (268,435,456); check the layer's sizes, or simulate "
        "it without a DRAM bandwidth (InterfaceBandwidth: CALC)"
    )
    # A depthwise layer is simulated a channel at a time, and counted so.
    dw = Layer("dw_DP", 130, 130, 3, 3, 16000, 1, depthwise=True)
    assert dw.operand_sizes(per_channel=True)["ifmap"] == 130 * 130


def test_topology_writer_refuses_what_scalesim_would_misread() -> None:
    with pytest.raises(NpuSimError, match="as depthwise; rename the layer"):
        format_topology_csv([Layer("ADPool", 4, 4, 1, 1, 2, 2)])
    with pytest.raises(NpuSimError, match="one stride for both directions"):
        format_topology_csv([Layer("c", 8, 8, 3, 3, 2, 2, 1, 2)])
    with pytest.raises(NpuSimError, match="cannot hold"):
        format_topology_csv([Layer("a,b", 8, 8, 3, 3, 2, 2)])
    with pytest.raises(NpuSimError, match="no layers"):
        parse_topology_csv("header only\n")
    with pytest.raises(NpuSimError, match="line 1 is a layer, but SCALE-Sim reads the first"):
        parse_topology_csv("conv,8,8,3,3,4,4,1,\n")


# ONNX models


class _ConvDwLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = self.pw(torch.relu(self.dw(x)))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "conv_dw_linear.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _ConvDwLinear().eval(),
            (torch.randn(1, 3, 32, 32),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},  # a symbolic batch counts as one image
        )
    return path


def test_layers_from_an_exported_torch_model(torch_onnx: Path) -> None:
    layers = layers_from_onnx(torch_onnx)
    assert [(x.name, x.depthwise) for x in layers] == [
        ("/stem/Conv", False),
        ("/dw/Conv", True),
        ("/pw/Conv", False),
        ("/head/Gemm", False),
    ]
    stem, dw, pw, head = layers
    # The ifmap is the one that yields ONNX's output size with no further padding.
    assert stem == Layer("/stem/Conv", 33, 33, 3, 3, 3, 16, 2, 2)
    assert (stem.ofmap_h, stem.ofmap_w) == (16, 16)
    assert dw == Layer("/dw/Conv", 20, 20, 5, 5, 16, 1, depthwise=True)
    assert pw == Layer("/pw/Conv", 16, 16, 1, 1, 16, 24)
    assert head == Layer("/head/Gemm", 1, 1, 1, 1, 24, 10)
    macs = 16 * 16 * 27 * 16 + 16 * 16 * 25 * 16 + 16 * 16 * 16 * 24 + 24 * 10
    assert sum(x.macs for x in layers) == macs
    assert layers_from_onnx(onnx.load(str(torch_onnx))) == layers


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_int8_models_give_the_same_layers(
    quant_format: str, torch_onnx: Path, tmp_path: Path
) -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    class OneImage(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter([{"x": np.random.default_rng(0).random((1, 3, 32, 32), "f4")}])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.images, None)

    int8 = tmp_path / "int8.onnx"
    quantize_static(torch_onnx, int8, OneImage(), quant_format=QuantFormat[quant_format])
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert ("QLinearConv" in ops) == (quant_format == "QOperator")
    float_layers = layers_from_onnx(torch_onnx)
    int8_layers = layers_from_onnx(int8)
    assert [replace(x, name="") for x in int8_layers] == [replace(x, name="") for x in float_layers]


def _graph_model(nodes: list[Any], inputs: list[Any], inits: list[Any]) -> onnx.ModelProto:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights(name: str, *dims: int) -> Any:
    return helper.make_tensor(name, TensorProto.FLOAT, dims, [0.0] * math.prod(dims))


def test_grouped_conv_and_matmuls_from_onnx() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])
    seq = helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 5, 32])
    heads = helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 3, 5, 8])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["s", "m"], ["y"], name="proj"),
        helper.make_node("Transpose", ["s"], ["st"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["s", "st"], ["att"], name="attn"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["h", "ht"], ["hh"], name="heads"),
        # Gemm's rows are a GEMM's rows as MatMul's are, whether or not A is transposed
        helper.make_node("Reshape", ["s", "shape"], ["s2"]),
        helper.make_node("Gemm", ["s2", "m"], ["g"], name="fc"),
        helper.make_node("Transpose", ["s2"], ["s2t"], perm=[1, 0]),
        helper.make_node("Gemm", ["s2t", "mt"], ["gt"], name="fct", transA=1, transB=1),
    ]
    inputs = [x, seq, heads]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [5, 32])
    inits = [_weights("w", 6, 4, 3, 3), _weights("m", 32, 16), _weights("mt", 16, 32), shape]
    model = _graph_model(nodes, inputs, inits)
    grouped0, grouped1, proj, attn, *per_head, fc, fct = layers_from_onnx(model)
    assert (fc, fct) == (replace(proj, name="fc"), replace(proj, name="fct"))
    assert grouped0 == Layer("grouped/group0", 12, 12, 3, 3, 4, 3)  # padded 10x10
    assert grouped1.name == "grouped/group1"
    assert proj == Layer("proj", 5, 1, 1, 1, 32, 16)  # 5 rows of 32 -> 16
    assert attn == Layer("attn", 5, 1, 1, 1, 32, 5)
    # A batched product of two activations: one GEMM per batch entry (here per head).
    assert per_head == [Layer(f"heads/batch{i}", 5, 1, 1, 1, 8, 5) for i in range(3)]


def test_onnx_errors_name_the_model_and_node(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(NpuSimError, match=r"bad\.onnx: cannot be read"):
        layers_from_onnx(bad)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 8, 8])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c1")
    model = _graph_model([conv], [x], [_weights("w", 2, 3, 3, 3)])
    with pytest.raises(NpuSimError, match=r"node 'c1' \(Conv\): batch 4"):
        layers_from_onnx(model)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", 8])
    model = _graph_model([conv], [x], [_weights("w", 2, 3, 3, 3)])
    with pytest.raises(NpuSimError, match="height is not a fixed number"):
        layers_from_onnx(model)
    # Array work the model does not map is refused, not left out of the latency.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    up = helper.make_node("ConvTranspose", ["y", "wt"], ["z"], name="up", strides=[2, 2])
    model = _graph_model([conv, up], [x], [_weights("w", 2, 3, 3, 3), _weights("wt", 2, 2, 2, 2)])
    with pytest.raises(
        NpuSimError, match=r"node 'up' \(ConvTranspose\) would run on the array but is not modelled"
    ):
        layers_from_onnx(model)


# The device


NPU_PROFILE = {
    "npu": {
        "rows": 16,
        "cols": 16,
        "dataflow": "ws",
        "ifmap_sram_kb": 1,  # small: the model's operands stream through, so it stalls
        "filter_sram_kb": 1,
        "ofmap_sram_kb": 1,
        "dram_bandwidth": 4,
        "clock_mhz": 500,
        "word_bytes": 1,
    }
}


def test_device_measures_onnx_models(torch_onnx: Path) -> None:
    device = create_device("npu-sim", "npu16", NPU_PROFILE)
    assert isinstance(device, NpuSimDevice)
    m1, m2 = device.measure([torch_onnx, torch_onnx], profile_ops=True)
    assert m1 == m2
    assert m1.model == str(torch_onnx)
    assert m1.n == 1 and m1.std_ms == 0.0 and not m1.flagged
    assert m1.median_ms == m1.mean_ms == m1.p10_ms == m1.p90_ms == m1.min_ms > 0
    extra = m1.extra
    assert extra["total_cycles"] == extra["compute_cycles"] + extra["stall_cycles"]
    assert extra["stall_cycles"] > 0  # 4 bytes per cycle is slow for this model
    assert m1.median_ms == pytest.approx(extra["total_cycles"] / 500e3)
    assert 0 < extra["utilisation"] < 1
    assert [layer["name"] for layer in extra["layers"]] == [
        "/stem/Conv",
        "/dw/Conv",
        "/pw/Conv",
        "/head/Gemm",
    ]
    assert sum(layer["total_cycles"] for layer in extra["layers"]) == extra["total_cycles"]
    assert m1.per_op_ms is not None
    assert sum(m1.per_op_ms.values()) == pytest.approx(m1.median_ms)
    assert Measurement.from_dict(json.loads(json.dumps(m1.to_dict()))) == m1
    assert device.measure([torch_onnx])[0].per_op_ms is None


def test_fingerprint_tells_array_configs_apart() -> None:
    a = NpuSimDevice("a", NpuConfig()).fingerprint()
    again = NpuSimDevice("renamed", NpuConfig()).fingerprint()
    other = NpuSimDevice("a", NpuConfig(dram_bandwidth=20)).fingerprint()
    assert a == again
    assert a.runtime == "npu-sim" and a.runtime_version.startswith(f"{MODEL_VERSION}+")
    assert a.runtime_version != other.runtime_version
    assert not a.same_target(other)


def test_device_refuses_what_it_cannot_simulate(torch_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"device 'n': an npu-sim profile needs an 'npu'"):
        create_device("npu-sim", "n", {})
    with pytest.raises(DeviceError, match=r"device 'n': npu: unknown key 'colz'"):
        create_device("npu-sim", "n", {"npu": {"colz": 8}})
    with pytest.raises(DeviceError, match=r"device 'n': npu: dataflow='rs'"):
        create_device("npu-sim", "n", {"npu": {"dataflow": "rs"}})
    device = create_device("npu-sim", "n", NPU_PROFILE)
    with pytest.raises(DeviceError, match="runtime 'tflite' does not apply"):
        device.measure([torch_onnx], runtime="tflite")
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(
        DeviceError, match=r"device 'n': ONNX model .*model\.tflite: cannot be read"
    ):
        device.measure([model])


def test_bundled_npu_profile_opens_this_device() -> None:
    from devices.profiles import open_device

    device = open_device("npu-32x32-ws")
    assert isinstance(device, NpuSimDevice)
    assert (device.config.rows, device.config.cols, device.config.dataflow) == (32, 32, "ws")
