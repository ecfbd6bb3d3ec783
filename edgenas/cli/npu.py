"""`edgenas npu ...`: the simulated systolic-array NPU from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from devices.npu_sim import (
    NpuConfig,
    NpuSimError,
    SimResult,
    layers_from_onnx,
    read_topology_csv,
    simulate,
)

npu_app = typer.Typer(
    help="Simulated systolic-array NPU (SCALE-Sim v3 configs and topologies).",
    no_args_is_help=True,
)


@npu_app.command("simulate")
def simulate_command(
    config: Annotated[Path, typer.Option(help="SCALE-Sim config (.cfg)")],
    topology: Annotated[Path | None, typer.Option(help="SCALE-Sim conv topology (.csv)")] = None,
    onnx: Annotated[Path | None, typer.Option(help="ONNX model, instead of --topology")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON to stdout")] = False,
) -> None:
    """Per-layer and total cycles of a topology or an ONNX model on an NPU config."""
    npu = NpuConfig.from_scalesim_cfg(config)
    if topology is not None and onnx is None:
        layers = read_topology_csv(topology)
    elif onnx is not None and topology is None:
        layers = layers_from_onnx(onnx)
        if not layers:
            raise NpuSimError(f"{onnx}: no Conv, Gemm or MatMul layers to run on the array")
    else:
        raise NpuSimError("give exactly one of --topology and --onnx")
    result = simulate(layers, npu)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        Console().print(_table(result))


def _table(result: SimResult) -> Table:
    table = Table(title=f"NPU {result.config.describe()}", title_justify="left")
    for header in ("layer", "folds", "compute", "stall", "total", "util %"):
        table.add_column(header, justify="left" if header == "layer" else "right")
    for r in result.layers:
        folds = f"{r.row_folds}x{r.col_folds}" + (f" x{r.repeats}" if r.repeats > 1 else "")
        table.add_row(
            r.name,
            folds,
            f"{r.compute_cycles:,}",
            f"{r.stall_cycles:,}",
            f"{r.total_cycles:,}",
            f"{100 * r.utilisation:.1f}",
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        f"{result.compute_cycles:,}",
        f"{result.stall_cycles:,}",
        f"{result.total_cycles:,}",
        f"{100 * result.utilisation:.1f}",
    )
    table.caption = f"{result.latency_ms:.4f} ms at {result.config.clock_mhz:g} MHz"
    return table
