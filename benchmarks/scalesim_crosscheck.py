"""Cross-check the NPU cycle model against SCALE-Sim v3 and regenerate the test data.

    python -m benchmarks.scalesim_crosscheck --scalesim-python /tmp/scalesim-venv/bin/python

SCALE-Sim (``scalesim`` on PyPI) needs numpy < 2.4, so it lives in its own environment:

    python3 -m venv /tmp/scalesim-venv
    /tmp/scalesim-venv/bin/pip install scalesim==3.0.0 "numpy<2.4"

This script never imports scalesim: it writes the configs (one per array size and dataflow) and
one topology with this project's writers, runs SCALE-Sim on them in that environment, and
saves what SCALE-Sim reports per layer to ``tests/devices/data/scalesim_cases.json`` beside
the ``.cfg``/``.csv`` files, which ``tests/devices/test_npu_sim.py`` checks against:

* ``cases``: SCALE-Sim's compute report column "Total Cycles" with ``InterfaceBandwidth:
  CALC``, where it reports no stalls: its compute cycles, for every layer of the topology
  (``LAYERS`` and ``MBCONV_LAYERS``).
* ``stall_cases``: "Total Cycles" and "Stall Cycles" with ``InterfaceBandwidth: USER`` at a
  few bandwidths (words per cycle) and SRAM sizes small enough for stalls, plus issue 23's
  layer (a 3x3 conv, 16 -> 32 channels, 32x32 ofmap) on a 32x32 ws array at 10 words/cycle.
  Only the small ``LAYERS`` are run here: SCALE-Sim's request-by-request memory model takes
  seconds to many minutes per MBConv-sized layer and config (the 960 -> 160 projection on 8x8
  ws with 1 kB SRAMs had not finished after 15 minutes).

A depthwise (``DP``) row is simulated by SCALE-Sim channel by channel; its cycles are the
channels' sum.

Prints one JSON object on stdout (the agreement summary); progress goes to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.command_line import ArgumentParser, Refused, require_folder, run_main
from devices.npu_sim import (
    DATAFLOWS,
    Layer,
    NpuConfig,
    read_topology_csv,
    simulate,
    write_topology_csv,
)
from once_for_all.files import write_text

DATA = Path(__file__).resolve().parents[1] / "tests" / "devices" / "data"
FORMAT = "edgenas.scalesim-cases/2"  # /2 added stall_cases; cases are as in /1

ARRAYS = [(8, 8), (16, 16), (32, 32), (16, 8)]  # rows x cols; 16x8 catches a row/col swap
# Small enough that SCALE-Sim's request-by-request memory model runs in seconds.
LAYERS = [
    Layer("conv3x3_s1", 12, 12, 3, 3, 8, 16),
    Layer("conv3x3_s2", 12, 12, 3, 3, 8, 24, 2, 2),  # even ifmap: SCALE-Sim rounds the ofmap up
    Layer("conv3x3_wide", 16, 16, 3, 3, 16, 40),
    Layer("conv5x5_rect", 9, 11, 5, 5, 3, 10),
    Layer("pw1x1", 8, 8, 1, 1, 32, 48),
    Layer("pw1x1_s2", 8, 8, 1, 1, 16, 8, 2, 2),
    Layer("dw3x3_s1_DP", 10, 10, 3, 3, 6, 1, depthwise=True),
    Layer("dw3x3_s2_DP", 11, 11, 3, 3, 4, 1, 2, 2, depthwise=True),
    Layer("dw5x5_DP", 9, 9, 5, 5, 3, 1, depthwise=True),
    Layer("fc", 1, 1, 1, 1, 64, 10),
]
# MBConv-sized layers (MobileNetV3) as layers_from_onnx writes them: the padded ifmap, so that
# the ofmap is the network's. Compute cycles only (see the docstring); depthwise channel
# counts stay moderate as SCALE-Sim runs each channel as a layer of its own.
MBCONV_LAYERS = [
    Layer("mb_pw_expand_14_40_240", 14, 14, 1, 1, 40, 240),
    Layer("mb_dw7x7_s2_28_DP", 33, 33, 7, 7, 24, 1, 2, 2, depthwise=True),  # 28x28, pad 3
    Layer("mb_dw5x5_14_DP", 18, 18, 5, 5, 40, 1, depthwise=True),  # 14x14, pad 2
    Layer("mb_pw_project_7_960_160", 7, 7, 1, 1, 960, 160),
]

# USER-mode memories: (name, SRAM kB each, read words/cycle, write words/cycle).
MEMORIES = [("bw10_1kB", 1, 10, 10), ("bw50_2kB", 2, 50, 50), ("rd4_wr16_4kB", 4, 4, 16)]
ISSUE_LAYER = Layer("issue23_conv3x3", 34, 34, 3, 3, 16, 32)
ISSUE_CONFIG = NpuConfig(rows=32, cols=32, dataflow="ws", dram_bandwidth=10)

# Runs inside the scalesim environment: argv = cfg, topology, layout, work folder.
RUNNER = r"""
import contextlib, importlib.metadata, io, json, sys
import numpy
from scalesim.scale_sim import scalesim
cfg, topo, layout, work = sys.argv[1:5]
with contextlib.redirect_stdout(io.StringIO()):
    sim = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout)
    sim.run_scale(top_path=work)
rows = []
for i, layer in enumerate(sim.runner.single_layer_sim_object_list):
    _, total, stall, util, mapping, _ = layer.get_compute_report_items()
    cs = layer.compute_system
    rows.append({
        "name": sim.topo.get_layer_name(i),
        "total_cycles": int(total),
        "stall_cycles": int(stall),
        "overall_util_pct": float(util),
        "mapping_efficiency_pct": float(mapping),
        "ifmap_sram_reads": int(cs.get_ifmap_requests()),
        "filter_sram_reads": int(cs.get_filter_requests()),
        "ofmap_sram_writes": int(cs.get_ofmap_requests()),
    })
json.dump({"scalesim": importlib.metadata.version("scalesim"),
           "numpy": numpy.__version__, "layers": rows}, sys.stdout)
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m benchmarks.scalesim_crosscheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--scalesim-python", required=True, type=Path, help="python of the scalesim venv"
    )
    parser.add_argument(
        "--out", type=Path, default=DATA, help="test data folder (default tests/devices/data)"
    )
    args = parser.parse_args(argv)
    if not args.scalesim_python.is_file():
        raise Refused(
            f"--scalesim-python {args.scalesim_python}: no such file; make the environment "
            "with: python3 -m venv /tmp/scalesim-venv && /tmp/scalesim-venv/bin/pip install "
            "scalesim==3.0.0 'numpy<2.4'"
        )
    require_folder("--out", args.out)

    folder = args.out / "scalesim"
    folder.mkdir(parents=True, exist_ok=True)
    topology = folder / "topology.csv"
    write_topology_csv(LAYERS + MBCONV_LAYERS, topology)
    layers = read_topology_csv(topology)  # what the tests will read
    # The stall runs' topology: the rows of LAYERS only, as in topology.csv (which their
    # cases name: the tests read each layer from there by name).
    small = tempfile.TemporaryDirectory()
    small_topology = Path(small.name) / "topology.csv"
    write_topology_csv(LAYERS, small_topology)
    small_layers = read_topology_csv(small_topology)
    assert small_layers == layers[: len(small_layers)]
    cases: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    agree = 0
    started = time.perf_counter()
    for rows, cols in ARRAYS:
        for dataflow in DATAFLOWS:
            config = NpuConfig(rows=rows, cols=cols, dataflow=dataflow, dram_bandwidth=None)
            cfg = folder / f"npu_{rows}x{cols}_{dataflow}.cfg"
            config.to_scalesim_cfg(cfg, run_name=cfg.stem)
            print(f"scalesim {cfg.name} ...", file=sys.stderr, flush=True)
            report = _run_scalesim(args.scalesim_python, cfg, topology, layers)
            versions = {"scalesim": report["scalesim"], "numpy": report["numpy"]}
            ours = simulate(layers, config).layers
            for layer, mine in zip(layers, ours, strict=True):
                case = _case(layer, report["layers"], cfg.relative_to(args.out), config)
                agree += case["compute_cycles"] == mine.compute_cycles
                cases.append(case)
    stall_cases: list[dict[str, Any]] = []
    stall_agree = 0
    runs: list[tuple[NpuConfig, str, Path, Path, list[Layer]]] = []
    for rows, cols in ARRAYS:
        for dataflow in DATAFLOWS:
            for name, kb, reads, writes in MEMORIES:
                config = NpuConfig(
                    rows=rows,
                    cols=cols,
                    dataflow=dataflow,
                    ifmap_sram_kb=kb,
                    filter_sram_kb=kb,
                    ofmap_sram_kb=kb,
                    dram_bandwidth=writes,
                    read_bandwidth=None if reads == writes else reads,
                )
                stem = f"npu_{rows}x{cols}_{dataflow}_{name}"
                runs.append((config, stem, topology, small_topology, small_layers))
    issue_topology = folder / "issue23.csv"
    write_topology_csv([ISSUE_LAYER], issue_topology)
    runs.append(
        (ISSUE_CONFIG, "npu_32x32_ws_issue23", issue_topology, issue_topology, [ISSUE_LAYER])
    )
    for config, stem, topo, run_topo, topo_layers in runs:
        cfg = folder / f"{stem}.cfg"
        config.to_scalesim_cfg(cfg, run_name=stem)
        print(f"scalesim {cfg.name} ...", file=sys.stderr, flush=True)
        report = _run_scalesim(args.scalesim_python, cfg, run_topo, topo_layers)
        ours = simulate(topo_layers, config).layers
        for layer, mine in zip(topo_layers, ours, strict=True):
            rows_reported = _reported(layer, report["layers"], cfg.relative_to(args.out))
            case = {
                "config": str(cfg.relative_to(args.out)),
                "topology": str(topo.relative_to(args.out)),
                "rows": config.rows,
                "cols": config.cols,
                "dataflow": config.dataflow,
                "layer": layer.name,
                "read_words_per_cycle": (config.read_bandwidth or config.dram_bandwidth),
                "write_words_per_cycle": config.dram_bandwidth,
                "sram_kb": config.ifmap_sram_kb,
                "scalesim_layers": len(rows_reported),
                "total_cycles": sum(r["total_cycles"] for r in rows_reported),
                "stall_cycles": sum(r["stall_cycles"] for r in rows_reported),
            }
            stall_agree += (mine.total_cycles, mine.stall_cycles) == (
                case["total_cycles"],
                case["stall_cycles"],
            )
            stall_cases.append(case)
    small.cleanup()
    data = {
        "format": FORMAT,
        "readme": (
            f"generated with scalesim {versions['scalesim']} by benchmarks/scalesim_crosscheck.py "
            f"(numpy {versions['numpy']}): SCALE-Sim's compute cycles ('Total Cycles' "
            "with InterfaceBandwidth CALC, no stalls) per layer of scalesim/topology.csv on "
            "each CALC scalesim/*.cfg; a DP (depthwise) row is the sum of SCALE-Sim's "
            "per-channel layers. stall_cases: SCALE-Sim's 'Total Cycles' and 'Stall Cycles' with "
            "InterfaceBandwidth USER (read words per cycle: [layout] Ifmap/FilterSRAMBankBandwidth; "
            "write: Bandwidth) and small SRAMs, per layer of their topology (of topology.csv only "
            "the small layers, not the MBConv-sized mb_* ones). "
            f"At generation the project's model matched {agree} of {len(cases)} cases exactly "
            f"(compute cycles) and {stall_agree} of {len(stall_cases)} "
            "stall cases exactly (total and stall cycles). Regenerate with: python -m "
            "benchmarks.scalesim_crosscheck --scalesim-python /tmp/scalesim-venv/bin/python"
        ),
        "scalesim_version": versions["scalesim"],
        "topology": str(topology.relative_to(args.out)),
        "cases": cases,
        "stall_cases": stall_cases,
    }
    target = args.out / "scalesim_cases.json"
    # One case per line: small diffs when regenerated.
    body = json.dumps({**data, "cases": [], "stall_cases": []}, indent=1)
    for key in ("cases", "stall_cases"):
        lines = ",\n  ".join(json.dumps(c) for c in data[key])
        body = body.replace(f'"{key}": []', f'"{key}": [\n  {lines}\n ]')
    write_text(target, body + "\n")  # a temporary name, renamed when whole
    summary = {
        "scalesim_version": versions["scalesim"],
        "cases": len(cases),
        "compute_cycles_equal": agree,
        "stall_cases": len(stall_cases),
        "stall_and_total_cycles_equal": stall_agree,
        "seconds": round(time.perf_counter() - started, 1),
        "written": str(target),
    }
    print(json.dumps(summary))


def _run_scalesim(python: Path, cfg: Path, topology: Path, layers: list[Layer]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        # SCALE-Sim insists on a layout file; with custom layouts off its values are unused.
        layout = Path(work) / "layout.csv"
        layout.write_text(
            "Layer name,"
            + ",".join(f"c{i}" for i in range(20))
            + ",\n"
            + "".join(f"{x.name}," + "1," * 20 + "\n" for x in layers)
        )
        proc = subprocess.run(
            [str(python), "-c", RUNNER, str(cfg), str(topology), str(layout), work],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        sys.exit(f"scalesim failed on {cfg.name}:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout))


def _reported(layer: Layer, reported: list[dict[str, Any]], cfg: Path) -> list[dict[str, Any]]:
    """SCALE-Sim's report rows for ``layer``: one, or a DP row's channels ("<name>Channel_<i>")."""
    mine = [
        r
        for r in reported
        if r["name"] == layer.name
        or (layer.depthwise and r["name"].startswith(f"{layer.name}Channel_"))
    ]
    expected = layer.channels if layer.depthwise else 1
    if len(mine) != expected:
        sys.exit(f"{cfg}: {layer.name}: scalesim reported {len(mine)} layers, expected {expected}")
    return mine


def _case(
    layer: Layer, reported: list[dict[str, Any]], cfg: Path, config: NpuConfig
) -> dict[str, Any]:
    mine = _reported(layer, reported, cfg)
    if any(r["stall_cycles"] for r in mine):
        sys.exit(f"{cfg}: {layer.name}: scalesim reports stalls in CALC mode")
    return {
        "config": str(cfg),
        "rows": config.rows,
        "cols": config.cols,
        "dataflow": config.dataflow,
        "layer": layer.name,
        "depthwise": layer.depthwise,
        "scalesim_layers": len(mine),
        "compute_cycles": sum(r["total_cycles"] for r in mine),
        "per_layer_compute_cycles": sorted({r["total_cycles"] for r in mine}),
        "overall_util_pct": mine[0]["overall_util_pct"],
        "mapping_efficiency_pct": mine[0]["mapping_efficiency_pct"],
        "ifmap_sram_reads": sum(r["ifmap_sram_reads"] for r in mine),
        "filter_sram_reads": sum(r["filter_sram_reads"] for r in mine),
        "ofmap_sram_writes": sum(r["ofmap_sram_writes"] for r in mine),
    }


if __name__ == "__main__":
    run_main(main)
