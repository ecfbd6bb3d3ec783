"""A simulated systolic-array NPU: SCALE-Sim-compatible configs, topologies and cycle counts.

Importing this package registers the ``npu-sim`` device kind.
"""

from __future__ import annotations

from devices.npu_sim.config import DATAFLOWS, Dataflow, NpuConfig, parse_scalesim_cfg
from devices.npu_sim.cycle_model import LayerResult, SimResult, simulate
from devices.npu_sim.device import MODEL_VERSION, NpuSimDevice
from devices.npu_sim.errors import NpuSimError
from devices.npu_sim.topology import (
    Layer,
    format_topology_csv,
    layers_from_onnx,
    parse_topology_csv,
    read_topology_csv,
    write_topology_csv,
)

__all__ = [
    "DATAFLOWS",
    "MODEL_VERSION",
    "Dataflow",
    "Layer",
    "LayerResult",
    "NpuConfig",
    "NpuSimDevice",
    "NpuSimError",
    "SimResult",
    "format_topology_csv",
    "layers_from_onnx",
    "parse_scalesim_cfg",
    "parse_topology_csv",
    "read_topology_csv",
    "simulate",
    "write_topology_csv",
]
