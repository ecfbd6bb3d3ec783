"""The simulated NPU as a ``Device``: ONNX models in, simulated latencies out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devices.base import Device, DeviceError, Runtime, register_device_kind
from devices.measurement import Fingerprint, Measurement, OperatorTime
from devices.npu_sim.config import NpuConfig
from devices.npu_sim.cycle_model import SimResult, simulate
from devices.npu_sim.errors import NpuSimError
from devices.npu_sim.topology import layers_from_onnx

# Bump whenever the cycle model's figures change: tables from an older model are then refused.
MODEL_VERSION = "2"  # 2: stalls are SCALE-Sim 3.0.0's (USER bandwidth)


class NpuSimDevice(Device):
    """A systolic-array NPU simulated analytically; every "run" is exact, so ``n`` is 1.

    Profile (YAML)::

        kind: npu-sim
        npu: {rows: 32, cols: 32, dataflow: ws, ifmap_sram_kb: 64, filter_sram_kb: 64,
              ofmap_sram_kb: 64, dram_bandwidth: 16, clock_mhz: 800, word_bytes: 1}

    ``dram_bandwidth`` is in bytes per cycle (``null``: unlimited); an optional
    ``read_bandwidth`` sets the ifmap and filter reads apart from it; see ``NpuConfig``.
    """

    def __init__(self, name: str, config: NpuConfig) -> None:
        self.name = name
        self.config = config

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> NpuSimDevice:
        npu = profile.get("npu")
        if not isinstance(npu, Mapping):
            raise DeviceError(
                f"device {name!r}: an npu-sim profile needs an 'npu' mapping with rows, cols, "
                "dataflow, ifmap_sram_kb, filter_sram_kb, ofmap_sram_kb, dram_bandwidth, "
                "clock_mhz, word_bytes"
            )
        try:
            return cls(name, NpuConfig.from_dict(npu, source=f"device {name!r}: npu"))
        except NpuSimError as exc:
            raise DeviceError(str(exc)) from None

    @property
    def per_op_times(self) -> bool:
        return True

    def fingerprint(self) -> Fingerprint:
        c = self.config
        digest = c.config_hash()
        return Fingerprint(
            host="npu-sim",
            # The hash here as well: same_target() then refuses another array even when the
            # caller lets the runtime version differ.
            cpu_model=f"systolic array {c.rows}x{c.cols} {c.dataflow} ({digest})",
            cores=1,
            governor="n/a",
            runtime="npu-sim",
            runtime_version=f"{MODEL_VERSION}+{digest}",
            threads=1,
        )

    def measure(
        self,
        models: Sequence[Path],
        *,
        runtime: Runtime | None = None,
        threads: int | None = None,
        warmup: int | None = None,
        runs: int | None = None,
        profile_ops: bool = False,
    ) -> list[Measurement]:
        """Simulate each ONNX model; threads, warmup and runs do not apply to a simulation.

        ``extra`` holds total, compute and stall cycles, utilisation, MACs, DRAM bytes and
        the per-layer figures; with ``profile_ops`` ``ops`` has each layer's latency.
        """
        if runtime not in (None, "onnxruntime"):
            raise DeviceError(
                f"device {self.name!r}: npu-sim simulates ONNX models; runtime {runtime!r} "
                "does not apply (leave it unset or use onnxruntime)"
            )
        return [self._measure_one(Path(model), profile_ops=profile_ops) for model in models]

    def simulate_model(self, model: Path) -> SimResult:
        try:
            return simulate(layers_from_onnx(model), self.config)
        except NpuSimError as exc:
            raise DeviceError(f"device {self.name!r}: {exc}") from None

    def _measure_one(self, model: Path, *, profile_ops: bool) -> Measurement:
        result = self.simulate_model(model)
        ms = result.latency_ms
        ops = (
            tuple(
                OperatorTime(
                    layer.name,
                    "DepthwiseConv" if layer.depthwise else "Conv",
                    layer.latency_ms,
                    "npu",
                )
                for layer in result.layers
            )
            if profile_ops
            else None
        )
        return Measurement(
            model=str(model),
            median_ms=ms,
            mean_ms=ms,
            std_ms=0.0,
            p10_ms=ms,
            p90_ms=ms,
            min_ms=ms,
            n=1,
            ops=ops,
            extra={
                "simulator": "npu-sim",
                "total_cycles": result.total_cycles,
                "compute_cycles": result.compute_cycles,
                "stall_cycles": result.stall_cycles,
                "utilisation": result.utilisation,
                "macs": result.macs,
                "dram_bytes": result.dram_bytes,
                "layers": [layer.to_dict() for layer in result.layers],
            },
        )


@register_device_kind("npu-sim")
def create_npu_sim_device(name: str, profile: dict[str, Any]) -> Device:
    return NpuSimDevice.from_profile(name, profile)
