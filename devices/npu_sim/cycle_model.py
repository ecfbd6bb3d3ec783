"""Analytical cycle model of a systolic array, per layer and vectorised over layers.

Compute cycles follow SCALE-Sim v3 exactly (``scalesim/compute/systolic_compute_*.py``): a
layer is a GEMM of an ifmap operand matrix (ofmap pixels E x window W = filter h*w*channels)
and a filter matrix (W x filters K). Each dataflow keeps one operand in the array and maps two
of E, W, K onto its rows and columns (S_r, S_c); the third streams through in T steps:

    os: S_r = E, S_c = K, T = W     per fold: T + rows + cols - 2 cycles
    ws: S_r = W, S_c = K, T = E     per fold: T + 2*rows + cols - 2
    is: S_r = W, S_c = E, T = K     per fold: T + 2*rows + cols - 2

Folds = ceil(S_r / rows) * ceil(S_c / cols), and SCALE-Sim counts ``folds * per_fold - 1``
cycles (the index of the last ofmap write). A depthwise layer runs channel by channel: each
channel is a one-channel convolution, as SCALE-Sim expands its ``DP`` rows.

Stalls (``dram_bandwidth`` set, double buffering on) are SCALE-Sim 3.0.0's with
``InterfaceBandwidth: USER``, request for request (``devices/npu_sim/memory.py``), and so are
the DRAM word counts then. With unlimited bandwidth (SCALE-Sim's CALC) there are no stalls and
the DRAM figures are this model's estimate: an operand that fits in half its SRAM comes from
DRAM once, otherwise once per pass the dataflow makes over it; partial sums that do not fit
spill and are read back. Without double buffering (no SCALE-Sim counterpart) that estimate's
transfers do not overlap compute at all: they are all stall cycles.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.npu_sim.config import Dataflow, NpuConfig
from devices.npu_sim.errors import NpuSimError
from devices.npu_sim.memory import StallResult, simulate_memory
from devices.npu_sim.topology import MAX_OPERAND, Layer

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LayerResult:
    """One layer on the array. Cycle, MAC and traffic figures cover all of a depthwise layer's
    ``repeats`` channels; ``sr``, ``sc``, ``t`` and the folds are those of one repeat.
    SRAM and DRAM traffic are in words (``dram_bytes`` in bytes)."""

    name: str
    depthwise: bool
    repeats: int
    sr: int
    sc: int
    t: int
    row_folds: int
    col_folds: int
    compute_cycles: int
    fill_drain_cycles: int
    stall_cycles: int
    total_cycles: int
    macs: int
    mapping_efficiency: float
    utilisation: float
    ifmap_sram_reads: int
    filter_sram_reads: int
    ofmap_sram_writes: int
    ifmap_dram_reads: int
    filter_dram_reads: int
    ofmap_dram_writes: int
    dram_bytes: int
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimResult:
    """A whole layer list on one NPU; totals are sums over the layers."""

    config: NpuConfig
    layers: tuple[LayerResult, ...]

    @property
    def compute_cycles(self) -> int:
        return sum(r.compute_cycles for r in self.layers)

    @property
    def stall_cycles(self) -> int:
        return sum(r.stall_cycles for r in self.layers)

    @property
    def total_cycles(self) -> int:
        return sum(r.total_cycles for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def dram_bytes(self) -> int:
        return sum(r.dram_bytes for r in self.layers)

    @property
    def utilisation(self) -> float:
        """MACs over PE-cycles of the whole run, stalls included."""
        cycles = self.total_cycles
        return self.macs / (cycles * self.config.pes) if cycles else 0.0

    @property
    def latency_ms(self) -> float:
        return self.total_cycles / (self.config.clock_mhz * 1e3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "total_cycles": self.total_cycles,
            "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles,
            "macs": self.macs,
            "utilisation": self.utilisation,
            "dram_bytes": self.dram_bytes,
            "latency_ms": self.latency_ms,
            "layers": [r.to_dict() for r in self.layers],
        }


def simulate(layers: Sequence[Layer], config: NpuConfig) -> SimResult:
    """Run ``layers`` one after another on ``config``'s array."""
    if not layers:
        return SimResult(config, ())
    fields = np.array(
        [
            (
                x.ofmap_h * x.ofmap_w,
                x.filter_h * x.filter_w * (1 if x.depthwise else x.channels),
                x.num_filters,
                x.channels if x.depthwise else 1,
                x.ifmap_h * x.ifmap_w * (1 if x.depthwise else x.channels),
            )
            for x in layers
        ],
        dtype=np.int64,
    )
    out = _simulate_arrays(
        fields[:, 0], fields[:, 1], fields[:, 2], fields[:, 3], fields[:, 4], config
    )
    if config.dram_bandwidth is not None and config.double_buffering:
        _apply_memory_model(out, layers, config)
    columns = {key: value.tolist() for key, value in out.items()}
    names = [x.name for x in layers]
    depthwise = [x.depthwise for x in layers]
    keys = list(columns)
    results = tuple(
        LayerResult(name=n, depthwise=d, **dict(zip(keys, values, strict=True)))
        for n, d, *values in zip(names, depthwise, *columns.values(), strict=True)
    )
    return SimResult(config, results)


def _simulate_arrays(
    e: IntArray,
    w: IntArray,
    k: IntArray,
    repeats: IntArray,
    ifmap_words: IntArray,
    config: NpuConfig,
) -> dict[str, npt.NDArray[Any]]:
    """Per-layer figures for ofmap pixels ``e``, window ``w``, filters ``k`` (one repeat each)."""
    rows, cols = config.rows, config.cols
    if config.dataflow == "os":
        sr, sc, t = e, k, w
        fill = rows + cols - 2
    elif config.dataflow == "ws":
        sr, sc, t = w, k, e
        fill = 2 * rows + cols - 2
    else:
        sr, sc, t = w, e, k
        fill = 2 * rows + cols - 2
    row_folds = -(-sr // rows)
    col_folds = -(-sc // cols)
    folds = row_folds * col_folds
    compute_one = folds * (t + fill) - 1
    macs_one = e * w * k
    mapping_efficiency = (sr * sc) / (folds * config.pes)

    filter_words = w * k
    ofmap_words = e * k
    ifmap_operand = e * w
    # How often each operand is streamed through the array, and partial-sum passes.
    if config.dataflow == "os":
        ifmap_passes, filter_passes, psum_passes = col_folds, row_folds, np.ones_like(e)
    elif config.dataflow == "ws":
        ifmap_passes, filter_passes, psum_passes = col_folds, np.ones_like(e), row_folds
    else:
        ifmap_passes, filter_passes, psum_passes = np.ones_like(e), col_folds, row_folds
    ifmap_sram = ifmap_operand * ifmap_passes
    filter_sram = filter_words * filter_passes
    ofmap_sram = ofmap_words * psum_passes

    share = 0.5 if config.double_buffering else 1.0
    words_per_kb = 1024 / config.word_bytes
    ifmap_cap = config.ifmap_sram_kb * words_per_kb * share
    filter_cap = config.filter_sram_kb * words_per_kb * share
    ofmap_cap = config.ofmap_sram_kb * words_per_kb * share
    ifmap_dram = np.where(ifmap_words <= ifmap_cap, ifmap_words, ifmap_words * ifmap_passes)
    filter_dram = np.where(filter_words <= filter_cap, filter_words, filter_words * filter_passes)
    ofmap_dram = np.where(
        (ofmap_words <= ofmap_cap) | (psum_passes == 1),
        ofmap_words,
        ofmap_words * (2 * psum_passes - 1),
    )
    dram_bytes_one = (ifmap_dram + filter_dram + ofmap_dram) * config.word_bytes

    if config.dram_bandwidth is None or config.double_buffering:
        stall_one = np.zeros_like(e)  # double buffered: _apply_memory_model's
    else:
        stall_one = np.floor(dram_bytes_one / config.dram_bandwidth).astype(np.int64)

    compute = compute_one * repeats
    stall_cycles = stall_one * repeats
    total = compute + stall_cycles
    macs = macs_one * repeats
    return {
        "repeats": repeats,
        "sr": sr,
        "sc": sc,
        "t": t,
        "row_folds": row_folds,
        "col_folds": col_folds,
        "compute_cycles": compute,
        "fill_drain_cycles": folds * fill * repeats,
        "stall_cycles": stall_cycles,
        "total_cycles": total,
        "macs": macs,
        "mapping_efficiency": mapping_efficiency,
        "utilisation": macs / (np.maximum(total, 1) * config.pes),  # 0 cycles: a 1x1 on 1 PE
        "ifmap_sram_reads": ifmap_sram * repeats,
        "filter_sram_reads": filter_sram * repeats,
        "ofmap_sram_writes": ofmap_sram * repeats,
        "ifmap_dram_reads": ifmap_dram * repeats,
        "filter_dram_reads": filter_dram * repeats,
        "ofmap_dram_writes": ofmap_dram * repeats,
        "dram_bytes": dram_bytes_one * repeats,
        "latency_ms": total / (config.clock_mhz * 1e3),
    }


def _apply_memory_model(
    out: dict[str, npt.NDArray[Any]], layers: Sequence[Layer], config: NpuConfig
) -> None:
    """Replace the stall, total and DRAM figures by SCALE-Sim's memory simulation."""
    assert config.dram_bandwidth is not None
    for x in layers:  # its operand matrices: a huge layer asked numpy for 74 GiB
        for what, elements in x.operand_sizes(per_channel=True).items():
            if elements > MAX_OPERAND:
                raise NpuSimError(
                    f"layer {x.name!r}: its {what} operand has {elements:,} elements, more "
                    f"than the memory model holds ({MAX_OPERAND:,}); check the layer's sizes, "
                    "or simulate it without a DRAM bandwidth (InterfaceBandwidth: CALC)"
                )
    words = 1024 // config.word_bytes
    write_bw = config.dram_bandwidth / config.word_bytes
    read_bw = (config.read_bandwidth or config.dram_bandwidth) / config.word_bytes
    memory = (
        config.rows,
        config.cols,
        config.dataflow,
        (config.ifmap_sram_kb * words, config.filter_sram_kb * words, config.ofmap_sram_kb * words),
        (read_bw, read_bw, write_bw),
    )
    per_layer = [
        _layer_memory(
            (x.ifmap_h, x.ifmap_w, x.filter_h, x.filter_w),
            1 if x.depthwise else x.channels,  # a depthwise layer: per channel, as SCALE-Sim
            x.num_filters,
            (x.stride_h, x.stride_w, x.ofmap_h, x.ofmap_w),
            memory,
        )
        for x in layers
    ]
    repeats = out["repeats"]
    stall = np.array([r.stall_cycles for r in per_layer], dtype=np.int64) * repeats
    total = np.array([r.total_cycles for r in per_layer], dtype=np.int64) * repeats
    out["stall_cycles"] = stall
    out["total_cycles"] = total
    out["utilisation"] = out["macs"] / (np.maximum(total, 1) * config.pes)
    out["latency_ms"] = total / (config.clock_mhz * 1e3)
    for name in ("ifmap_dram_reads", "filter_dram_reads", "ofmap_dram_writes"):
        out[name] = np.array([getattr(r, name) for r in per_layer], dtype=np.int64) * repeats
    words_moved = out["ifmap_dram_reads"] + out["filter_dram_reads"] + out["ofmap_dram_writes"]
    out["dram_bytes"] = words_moved * config.word_bytes


# Subnets of one supernet share most layer shapes: a search simulates each shape once.
@functools.lru_cache(maxsize=4096)
def _layer_memory(
    shape: tuple[int, int, int, int],
    channels: int,
    num_filters: int,
    geometry: tuple[int, int, int, int],
    memory: tuple[int, int, Dataflow, tuple[int, int, int], tuple[float, float, float]],
) -> StallResult:
    rows, cols, dataflow, sram_words, bandwidth = memory
    return simulate_memory(
        ifmap_hw=shape[:2],
        filter_hw=shape[2:],
        channels=channels,
        num_filters=num_filters,
        stride=geometry[:2],
        ofmap_hw=geometry[2:],
        rows=rows,
        cols=cols,
        dataflow=dataflow,
        sram_words=sram_words,
        bandwidth=bandwidth,
    )
