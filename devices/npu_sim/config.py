"""The simulated NPU's hardware: a systolic array, its SRAMs, DRAM bandwidth and clock.

Reads and writes SCALE-Sim v3's own ``.cfg`` files. SCALE-Sim has no clock, word size or
double-buffering switch in its config; those live in an extra ``[edgenas]`` section that
SCALE-Sim ignores, so one file serves both tools.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from devices.npu_sim.errors import NpuSimError
from once_for_all.errors import one_line
from once_for_all.files import write_text

Dataflow = Literal["os", "ws", "is"]
DATAFLOWS: tuple[Dataflow, ...] = ("os", "ws", "is")
DATAFLOW_NAMES: dict[Dataflow, str] = {
    "os": "output stationary",
    "ws": "weight stationary",
    "is": "input stationary",
}

# Largest values taken, and what they are in. The memory simulation's request matrices grow
# with rows x cols (one ImageNet stem: 0.9 GB at 1024x1024, 4 GB at 4096x4096, 954 GiB asked
# at 10**9 rows); word_bytes above 1024 leaves no word in a kB; the rest catch wrong units
# (a clock in Hz, SRAM in bytes) and keep cycle counts within int64.
LIMITS: dict[str, tuple[int, str]] = {
    "rows": (1024, "processing elements; the simulator's memory grows with the array"),
    "cols": (1024, "processing elements; the simulator's memory grows with the array"),
    "ifmap_sram_kb": (1 << 20, "kB: 1 GiB"),
    "filter_sram_kb": (1 << 20, "kB: 1 GiB"),
    "ofmap_sram_kb": (1 << 20, "kB: 1 GiB"),
    "word_bytes": (8, "bytes per operand: 1 for int8, 2 for fp16, 4 for fp32"),
    "clock_mhz": (100_000, "MHz"),
    "dram_bandwidth": (65_536, "bytes per cycle; null for unlimited"),
    "read_bandwidth": (65_536, "bytes per cycle"),
}
MIN_BANDWIDTH = 0.001  # bytes per cycle; less overflows the stall counts


@dataclass(frozen=True)
class NpuConfig:
    """A systolic-array NPU.

    ``rows`` x ``cols`` processing elements (SCALE-Sim's ArrayHeight x ArrayWidth); SRAM sizes
    in kB of 1024 bytes; ``dram_bandwidth`` in bytes per cycle, ``None`` for unlimited
    (SCALE-Sim's ``InterfaceBandwidth: CALC``: no stalls); ``read_bandwidth`` the ifmap and
    filter reads' share of it when it differs (SCALE-Sim's ``[layout]`` bank bandwidths, which
    its USER mode uses for those reads; ``Bandwidth`` then serves the ofmap writes only);
    ``word_bytes`` per operand element.
    With ``double_buffering`` each SRAM is split into a working and a prefetch half, so DRAM
    transfers overlap compute.
    """

    rows: int = 32
    cols: int = 32
    dataflow: Dataflow = "ws"
    ifmap_sram_kb: int = 64
    filter_sram_kb: int = 64
    ofmap_sram_kb: int = 64
    dram_bandwidth: float | None = 10.0
    read_bandwidth: float | None = None
    clock_mhz: float = 1000.0
    word_bytes: int = 1
    double_buffering: bool = True

    def __post_init__(self) -> None:
        for key in (
            "rows",
            "cols",
            "ifmap_sram_kb",
            "filter_sram_kb",
            "ofmap_sram_kb",
            "word_bytes",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NpuSimError(f"npu config: {key}={value!r}: expected a positive integer")
            _check_limit(key, value)
        if self.dataflow not in DATAFLOWS:
            raise NpuSimError(
                f"npu config: dataflow={self.dataflow!r}: allowed {', '.join(DATAFLOWS)}"
            )
        _check_positive("clock_mhz", self.clock_mhz)
        _check_limit("clock_mhz", self.clock_mhz)
        # Floats throughout, so that 1000 and 1000.0 give the same config hash.
        object.__setattr__(self, "clock_mhz", float(self.clock_mhz))
        for key in ("dram_bandwidth", "read_bandwidth"):
            bandwidth = getattr(self, key)
            if bandwidth is not None:
                _check_positive(key, bandwidth)
                _check_limit(key, bandwidth, minimum=MIN_BANDWIDTH)
                object.__setattr__(self, key, float(bandwidth))
        if not isinstance(self.double_buffering, bool):
            raise NpuSimError(
                f"npu config: double_buffering={self.double_buffering!r}: expected true or false"
            )

    @property
    def pes(self) -> int:
        """Number of processing elements."""
        return self.rows * self.cols

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "npu config") -> NpuConfig:
        """Build from a mapping with the keys of ``to_dict``; missing keys take the defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NpuSimError(
                f"{source}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}"
            )
        try:
            return cls(**dict(data))
        except NpuSimError as exc:
            raise NpuSimError(str(exc).replace("npu config", source, 1)) from None

    def config_hash(self) -> str:
        """Stable short hash of every field: tables made for another array are refused by it."""
        fields = self.to_dict()
        if fields["read_bandwidth"] is None:
            del fields["read_bandwidth"]  # hashes from before the field existed stay valid
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        bw = "unlimited" if self.dram_bandwidth is None else f"{self.dram_bandwidth:g} B/cycle"
        if self.dram_bandwidth is not None and self.read_bandwidth is not None:
            bw = f"{self.read_bandwidth:g} B/cycle reads, {self.dram_bandwidth:g} writes"
        return (
            f"{self.rows}x{self.cols} {self.dataflow}, SRAM {self.ifmap_sram_kb}/"
            f"{self.filter_sram_kb}/{self.ofmap_sram_kb} kB, DRAM {bw}, {self.clock_mhz:g} MHz"
        )

    @classmethod
    def from_scalesim_cfg(cls, path: str | os.PathLike[str]) -> NpuConfig:
        """Read a SCALE-Sim ``.cfg`` (and its optional ``[edgenas]`` section)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise NpuSimError(f"SCALE-Sim config {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise NpuSimError(
                f"SCALE-Sim config {path} is not a text file (not UTF-8): give a .cfg"
            ) from None
        return parse_scalesim_cfg(text, source=str(path))

    def to_scalesim_cfg(self, path: str | os.PathLike[str], *, run_name: str = "edgenas") -> None:
        """Write a ``.cfg`` that SCALE-Sim v3 runs as is (written to a temporary name, renamed).
        SCALE-Sim simulates the same array only at ``word_bytes`` 1: it counts 1-byte words."""
        write_text(Path(path), format_scalesim_cfg(self, run_name=run_name))


def parse_scalesim_cfg(text: str, *, source: str = "SCALE-Sim config") -> NpuConfig:
    """The ``NpuConfig`` described by the text of a SCALE-Sim ``.cfg``."""
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text, source=source)
    except configparser.MissingSectionHeaderError:
        raise NpuSimError(f"{source}: not a SCALE-Sim config: no [section] headers") from None
    except configparser.ParsingError as exc:
        # Its message lists the bad lines below a headline that names only the source.
        lineno, line = exc.errors[0]
        raise NpuSimError(
            f"{source}: not a SCALE-Sim config: line {lineno} is not 'key = value': {line}"
        ) from None
    except configparser.Error as exc:
        raise NpuSimError(f"{source}: not a SCALE-Sim config: {one_line(exc)}") from None

    def get(section: str, key: str, default: str | None = None) -> str:
        if parser.has_option(section, key):
            return parser.get(section, key).strip()
        if default is not None:
            return default
        raise NpuSimError(f"{source}: missing [{section}] {key}; see SCALE-Sim's configs/scale.cfg")

    # Every count and size here must be positive: checked here, so that the error names
    # the cfg's key (ArrayHeight), not NpuConfig's field (rows).
    def integer(section: str, key: str, default: str | None = None, *, field: str) -> int:
        raw = get(section, key, default)
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise NpuSimError(f"{source}: [{section}] {key} = {raw!r}: expected a positive integer")
        limit, unit = LIMITS[field]
        if value > limit:
            raise NpuSimError(
                f"{source}: [{section}] {key} = {raw!r}: expected at most {limit} ({unit})"
            )
        return value

    def number(section: str, key: str, default: str) -> float:
        raw = get(section, key, default)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise NpuSimError(f"{source}: [{section}] {key} = {raw!r}: expected a positive number")
        return value

    arch = "architecture_presets"
    dataflow = get(arch, "Dataflow").lower()
    if dataflow not in DATAFLOWS:
        raise NpuSimError(
            f"{source}: [{arch}] Dataflow = {dataflow!r}: allowed {', '.join(DATAFLOWS)}"
        )
    word_bytes = integer("edgenas", "word_bytes", "1", field="word_bytes")
    mode = get("run_presets", "InterfaceBandwidth", "CALC").upper()
    dram_bandwidth: float | None
    read_bandwidth: float | None = None
    if mode == "CALC":
        dram_bandwidth = None
    elif mode == "USER":
        # Words per cycle. SCALE-Sim 3.0.0 writes the ofmap at Bandwidth's first value and
        # reads the ifmap and filter at their [layout] bank bandwidths.
        raw = get(arch, "Bandwidth")
        try:
            words = float(raw.split(",")[0])
        except ValueError:
            words = math.nan
        if not math.isfinite(words) or words <= 0:
            raise NpuSimError(
                f"{source}: [{arch}] Bandwidth = {raw!r}: expected a positive number of words "
                "per cycle"
            )
        dram_bandwidth = words * word_bytes
        reads = {
            number("layout", f"{memory}SRAMBankBandwidth", f"{words:g}")
            for memory in ("Ifmap", "Filter")
        }
        if len(reads) > 1:
            raise NpuSimError(
                f"{source}: [layout] IfmapSRAMBankBandwidth and FilterSRAMBankBandwidth differ: "
                "give both the same words per cycle"
            )
        if reads != {words}:
            read_bandwidth = reads.pop() * word_bytes
    else:
        raise NpuSimError(
            f"{source}: [run_presets] InterfaceBandwidth = {mode!r}: allowed CALC, USER"
        )
    if get("sparsity", "SparsitySupport", "false").lower() == "true":
        raise NpuSimError(
            f"{source}: [sparsity] SparsitySupport = true: sparse arrays are not modelled; set it false"
        )
    double_buffering = get("edgenas", "double_buffering", "true").lower()
    if double_buffering not in ("true", "false"):
        raise NpuSimError(
            f"{source}: [edgenas] double_buffering = {double_buffering!r}: expected true or false"
        )
    try:
        return NpuConfig(
            rows=integer(arch, "ArrayHeight", field="rows"),
            cols=integer(arch, "ArrayWidth", field="cols"),
            dataflow=dataflow,
            ifmap_sram_kb=integer(arch, "IfmapSramSzkB", field="ifmap_sram_kb"),
            filter_sram_kb=integer(arch, "FilterSramSzkB", field="filter_sram_kb"),
            ofmap_sram_kb=integer(arch, "OfmapSramSzkB", field="ofmap_sram_kb"),
            dram_bandwidth=dram_bandwidth,
            read_bandwidth=read_bandwidth,
            clock_mhz=number("edgenas", "clock_mhz", "1000"),
            word_bytes=word_bytes,
            double_buffering=double_buffering == "true",
        )
    except NpuSimError as exc:
        raise NpuSimError(str(exc).replace("npu config", source, 1)) from None


def format_scalesim_cfg(config: NpuConfig, *, run_name: str = "edgenas") -> str:
    """SCALE-Sim v3 config text for ``config``, with every section scalesim 3.0.0 reads."""
    if config.dram_bandwidth is None:
        mode, words = "CALC", 10.0  # SCALE-Sim ignores Bandwidth in CALC mode but reads it
        reads, banks = 10.0, 10
    else:
        mode, words = "USER", config.dram_bandwidth / config.word_bytes
        # USER mode reads the ifmap and filter at the bank bandwidth; one bank divides any.
        reads, banks = (config.read_bandwidth or config.dram_bandwidth) / config.word_bytes, 1
    return f"""\
[general]
run_name = {run_name}

[architecture_presets]
ArrayHeight: {config.rows}
ArrayWidth: {config.cols}
IfmapSramSzkB: {config.ifmap_sram_kb}
FilterSramSzkB: {config.filter_sram_kb}
OfmapSramSzkB: {config.ofmap_sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: {words:g}
Dataflow: {config.dataflow}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {reads:g}
IfmapSRAMBankNum: {banks}
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {reads:g}
FilterSRAMBankNum: {banks}
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False

# Read by edgenas only; SCALE-Sim ignores this section.
[edgenas]
clock_mhz: {config.clock_mhz:g}
word_bytes: {config.word_bytes}
double_buffering: {str(config.double_buffering).lower()}
"""


def _check_positive(key: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise NpuSimError(f"npu config: {key}={value!r}: expected a positive number")


def _check_limit(key: str, value: float, *, minimum: float | None = None) -> None:
    """``value`` (already checked positive) within ``LIMITS[key]`` and above ``minimum``."""
    limit, unit = LIMITS[key]
    if value > limit or (minimum is not None and value < minimum):
        low = f"{minimum:g} to " if minimum is not None else "at most "
        raise NpuSimError(f"npu config: {key}={value!r}: expected {low}{limit} ({unit})")
