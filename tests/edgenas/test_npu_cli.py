"""`edgenas npu simulate` as a user runs it: a real process on SCALE-Sim files and ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from devices.npu_sim import NpuConfig, read_topology_csv, simulate

DATA = Path(__file__).parents[1] / "devices" / "data" / "scalesim"
CFG = DATA / "npu_16x16_ws.cfg"
TOPOLOGY = DATA / "topology.csv"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def npu(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenas", "npu", "simulate", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def test_simulate_prints_per_layer_and_total_cycles_with_stalls() -> None:
    # Issue 23's layer: SCALE-Sim 3.0.0 reports 29,355 cycles, 23,766 of them stalls, with
    # InterfaceBandwidth USER at 10 words per cycle (tests/devices/data/scalesim_cases.json).
    cfg, topology = DATA / "npu_32x32_ws_issue23.cfg", DATA / "issue23.csv"
    proc = npu("--config", cfg, "--topology", topology)
    assert proc.returncode == 0, proc.stderr
    expected = simulate(read_topology_csv(topology), NpuConfig.from_scalesim_cfg(cfg))
    for layer in expected.layers:
        assert layer.name in proc.stdout
    assert "total" in proc.stdout and "stall" in proc.stdout
    assert (expected.total_cycles, expected.stall_cycles) == (29355, 23766)
    assert "29,355" in proc.stdout and "23,766" in proc.stdout
    assert "10 B/cycle" in proc.stdout


def test_simulate_json_on_an_onnx_model(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4, 3, 3], [0.0] * 288)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph([conv], "g", [x], [y], initializer=[w])
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)

    proc = npu("--config", CFG, "--onnx", model, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [layer["name"] for layer in result["layers"]] == ["conv"]
    # 7x7 ofmap = 49 pixels, window 36, 8 filters on 16x16 ws: 3 row folds x 1 col fold.
    assert result["layers"][0]["compute_cycles"] == 3 * (49 + 2 * 16 + 16 - 2) - 1
    assert result["total_cycles"] == result["compute_cycles"] + result["stall_cycles"]
    assert result["config"] == NpuConfig.from_scalesim_cfg(CFG).to_dict()


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "net.csv"
    bad.write_text("header\nconv,8,8,3,3,4,4\n")
    for args, message in [
        (("--config", tmp_path / "none.cfg", "--topology", TOPOLOGY), "none.cfg: No such file"),
        (("--config", CFG, "--topology", bad), "net.csv line 2: 7 columns, expected 8"),
        (("--config", CFG), "give exactly one of --topology and --onnx"),
    ]:
        proc = npu(*args)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
        assert proc.stdout == ""
