"""Arm Ethos-U NPUs as a ``Device``: int8 TFLite models compiled by Vela, its estimates out.

Vela (``pip install ethos-u-vela``) runs as a subprocess of this Python, one compilation per
model in a fresh temporary folder. Its figures come from the files it writes there: the
summary CSV (inference time, cycles, memory traffic) and the per-layer CSV (which operators
run on the NPU and which fall back to the CPU).
"""

from __future__ import annotations

import configparser
import csv
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from devices.base import Device, DeviceError, Runtime, register_device_kind
from devices.measurement import Fingerprint, Measurement, OperatorTime
from devices.profiles import validate_profile
from once_for_all.errors import one_line

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "Arm/vela.ini"  # Vela's own system configs, shipped with ethos-u-vela
DEFAULT_TIMEOUT_S = 600.0
# Bump when the figures this module reports change meaning: tables from older ones are refused.
FORMAT_VERSION = "1"

_MEMORY_AREAS = ("sram", "dram", "on_chip_flash", "off_chip_flash")
_SUMMARY_REQUIRED = ("inference_time", "core_clock", "cycles_total", "cycles_npu")
_PER_LAYER_REQUIRED = ("Original Operator", "Target", "Op Cycles", "Name")
# Vela's stdout names the TFLite operator and the reason for each operator left on the CPU.
_UNSUPPORTED = re.compile(
    r"^Warning \(supported operators\) operator: (?P<op>\S+), ofm: '(?P<name>.*)'\s*\n"
    r"Reason: (?P<reason>.*)$",
    re.MULTILINE,
)
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]*(?:Error|Exception)|vela: error): (?P<message>.*)$")


class VelaDevice(Device):
    """An Arm Ethos-U55/U65/U85 as estimated by Vela; an estimate is deterministic, so ``n`` is 1.

    Profile (YAML)::

        kind: vela
        vela: {accelerator_config: ethos-u55-128, system_config: Ethos_U55_High_End_Embedded,
               memory_mode: Shared_Sram, config: my_vela.ini}

    ``config`` is optional (Vela's ``Arm/vela.ini`` by default); a relative path is taken from
    the working directory, and ``Vendor/name.ini`` also names a file of Vela's own
    ``config_files`` folder, as on Vela's command line.
    """

    def __init__(
        self,
        name: str,
        *,
        accelerator_config: str,
        system_config: str,
        memory_mode: str,
        config: str | Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.vela_version = _vela_version(name)
        valid = _accelerator_configs(name)
        if accelerator_config not in valid:
            raise DeviceError(
                f"device {name!r}: unknown accelerator_config {accelerator_config!r} for Vela "
                f"{self.vela_version}; valid: {', '.join(valid)}"
            )
        self.accelerator_config = accelerator_config
        self.config_file = _resolve_config(name, config)
        try:
            self._config_text = self.config_file.read_text()
        except OSError as exc:
            raise DeviceError(
                f"device {name!r}: cannot read Vela config {self.config_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise _not_a_vela_config(name, self.config_file, "not a text file") from None
        _check_sections(name, self.config_file, self._config_text, system_config, memory_mode)
        self.system_config = system_config
        self.memory_mode = memory_mode
        self.timeout_s = timeout_s

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> VelaDevice:
        checked = validate_profile({**profile, "name": name, "kind": "vela"}, where=repr(name))
        vela = checked.vela
        if vela is None:  # the profile's validator already requires it
            raise DeviceError(f"device {name!r}: a vela profile needs a 'vela' section")
        return cls(
            name,
            accelerator_config=vela.accelerator_config,
            system_config=vela.system_config,
            memory_mode=vela.memory_mode,
            config=vela.config,
        )

    def config_hash(self) -> str:
        """Stable short hash of the options and the ini file: tables made for another setup
        are refused by it."""
        text = json.dumps(
            {
                "format": FORMAT_VERSION,
                "accelerator_config": self.accelerator_config,
                "system_config": self.system_config,
                "memory_mode": self.memory_mode,
                "config": self._config_text,
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def per_op_times(self) -> bool:
        return True

    def fingerprint(self) -> Fingerprint:
        digest = self.config_hash()
        return Fingerprint(
            host="vela",
            # The hash here as well: same_target() then refuses another setup even when the
            # caller lets the runtime version differ.
            cpu_model=(
                f"{self.accelerator_config} {self.system_config} {self.memory_mode} ({digest})"
            ),
            cores=1,
            governor="n/a",
            runtime="vela",
            runtime_version=f"{self.vela_version}+{digest}",
            threads=1,
        )

    def command(self, model: Path, output_dir: Path) -> list[str]:
        """The Vela command line that compiles ``model`` into ``output_dir``."""
        return [
            sys.executable,
            "-m",
            "ethosu.vela",
            str(model),
            "--output-dir",
            str(output_dir),
            "--accelerator-config",
            self.accelerator_config,
            "--system-config",
            self.system_config,
            "--memory-mode",
            self.memory_mode,
            "--config",
            str(self.config_file),
            "--verbose-performance",  # writes the per-layer CSV: NPU and CPU operators
        ]

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
        """Compile each int8 TFLite model; threads, warmup and runs do not apply to Vela.

        ``median_ms`` (and the other statistics) is Vela's estimated inference time on the
        NPU; operators that fall back to the CPU are not in it. ``extra`` holds the cycles
        (total, NPU, per memory), memory traffic and use, MACs, the NPU operators and
        ``cpu_fallback_ops`` (each ``{"op", "name", "reason"}``), which are also logged as a
        warning. With ``profile_ops`` ``ops`` has each NPU operator's estimate.
        """
        if runtime not in (None, "tflite"):
            raise DeviceError(
                f"device {self.name!r}: Vela compiles TFLite models; runtime {runtime!r} does "
                "not apply (leave it unset or use tflite)"
            )
        paths = [Path(model) for model in models]
        for path in paths:  # every model is checked before the first compilation
            self._check_model(path)
        with tempfile.TemporaryDirectory(prefix="edgenas-vela-") as tmp:
            return [
                self._compile(path, Path(tmp) / str(i), profile_ops=profile_ops)
                for i, path in enumerate(paths)
            ]

    def _check_model(self, model: Path) -> None:
        try:
            data = model.read_bytes()
        except OSError as exc:
            raise DeviceError(
                f"device {self.name!r}: cannot read {model}: {exc.strerror}"
            ) from None
        if data[4:8] != b"TFL3":
            raise DeviceError(
                f"device {self.name!r}: {model} is not a TFLite model; Vela compiles int8 "
                ".tflite models (export with --format tflite --int8)"
            )
        schema = _tflite_schema(self.name)
        try:
            float_op = _float_operator(schema, data)
        except Exception as exc:  # a damaged flatbuffer raises anything
            raise DeviceError(
                f"device {self.name!r}: {model} cannot be read as a TFLite model: {exc}"
            ) from None
        if float_op is not None:
            raise DeviceError(
                f"device {self.name!r}: {model} is a float model ({float_op}); Vela runs only "
                "int8/int16-quantized operators on the Ethos-U NPU: export it with --int8"
            )

    def _compile(self, model: Path, folder: Path, *, profile_ops: bool) -> Measurement:
        folder.mkdir()
        # A copy under a plain name: Vela names its output files after the model's stem.
        local = folder / "model.tflite"
        shutil.copyfile(model, local)
        output_dir = folder / "out"
        try:
            proc = subprocess.run(
                self.command(local, output_dir),
                cwd=folder,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"device {self.name!r}: Vela did not finish compiling {model} within "
                f"{self.timeout_s:g} s"
            ) from None
        if proc.returncode != 0:
            raise DeviceError(
                f"device {self.name!r}: Vela failed on {model}: "
                f"{_vela_error(proc.stderr, proc.stdout, proc.returncode)}"
            )
        where = f"device {self.name!r}: Vela {self.vela_version} on {model}"
        summary = _read_summary(output_dir, where)
        layers = _read_per_layer(output_dir, where)
        reasons = {m["name"]: m["reason"].strip() for m in _UNSUPPORTED.finditer(proc.stdout)}
        return self._measurement(model, summary, layers, reasons, profile_ops=profile_ops)

    def _measurement(
        self,
        model: Path,
        summary: dict[str, float],
        layers: list[dict[str, Any]],
        reasons: dict[str, str],
        *,
        profile_ops: bool,
    ) -> Measurement:
        clock = summary["core_clock"]
        npu_ops = [layer for layer in layers if layer["target"] == "NPU"]
        cpu_ops = [
            {"op": layer["op"], "name": layer["name"], "reason": reasons.get(layer["name"], "")}
            for layer in layers
            if layer["target"] != "NPU"
        ]
        if cpu_ops:
            listed = ", ".join(
                f"{op['op']} {op['name']!r}" + (f" ({op['reason']})" if op["reason"] else "")
                for op in cpu_ops
            )
            log.warning(
                "device %r: %s: %d operator(s) fall back to the CPU and are not in Vela's "
                "estimate: %s",
                self.name,
                model,
                len(cpu_ops),
                listed,
            )
        extra: dict[str, Any] = {
            "simulator": "vela",
            "accelerator_config": self.accelerator_config,
            "system_config": self.system_config,
            "memory_mode": self.memory_mode,
            "core_clock_hz": clock,
        }
        extra.update({k: int(v) for k, v in summary.items() if k.startswith("cycles_")})
        if "nn_macs" in summary:
            extra["macs"] = int(summary["nn_macs"])
        for area in _MEMORY_AREAS:
            if f"{area}_total_bytes" in summary:
                extra[f"{area}_access_bytes"] = int(summary[f"{area}_total_bytes"])
            if f"{area}_memory_used" in summary:  # Vela writes KiB
                extra[f"{area}_used_bytes"] = round(summary[f"{area}_memory_used"] * 1024)
        extra["npu_op_count"] = len(npu_ops)
        extra["cpu_op_count"] = len(cpu_ops)
        extra["npu_ops"] = [
            {"op": layer["op"], "name": layer["name"], "cycles": layer["cycles"]}
            for layer in npu_ops
        ]
        extra["cpu_fallback_ops"] = cpu_ops
        ops = (
            tuple(
                OperatorTime(layer["name"], layer["op"], layer["cycles"] / clock * 1e3, "npu")
                for layer in npu_ops
            )
            if profile_ops
            else None
        )
        ms = summary["inference_time"] * 1e3
        return Measurement(
            model=str(model),
            median_ms=ms,
            mean_ms=ms,
            std_ms=0.0,
            p10_ms=ms,
            p90_ms=ms,
            min_ms=ms,
            n=1,
            # The working memory Vela allocates (feature maps, staged weights); weights that
            # stay in flash are in extra.
            peak_memory_bytes=extra.get("sram_used_bytes", 0) + extra.get("dram_used_bytes", 0),
            ops=ops,
            extra=extra,
        )


@register_device_kind("vela")
def create_vela_device(name: str, profile: dict[str, Any]) -> Device:
    return VelaDevice.from_profile(name, profile)


def _vela_module(device: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(f"ethosu.vela.{module}")
    except ImportError:
        raise DeviceError(
            f"device {device!r}: Arm's Vela is not installed in {sys.executable}; "
            "run: pip install ethos-u-vela"
        ) from None


def _vela_version(device: str) -> str:
    try:
        return importlib.metadata.version("ethos-u-vela")
    except importlib.metadata.PackageNotFoundError:
        raise DeviceError(
            f"device {device!r}: Arm's Vela is not installed in {sys.executable}; "
            "run: pip install ethos-u-vela"
        ) from None


@functools.cache
def _accelerator_configs_cached() -> tuple[str, ...]:
    features = importlib.import_module("ethosu.vela.architecture_features")
    return tuple(str(a.value) for a in features.Accelerator)


def _accelerator_configs(device: str) -> tuple[str, ...]:
    _vela_module(device, "architecture_features")  # a clear error where Vela is missing
    return _accelerator_configs_cached()


def _resolve_config(device: str, config: str | Path | None) -> Path:
    """The Vela ini file as an absolute path (Vela reads a two-part relative path such as
    ``Arm/vela.ini`` from its own folder, so ours are made absolute)."""
    features = _vela_module(device, "architecture_features")
    bundled_root = Path(features.CONFIG_FILES_PATH)
    given = Path(config) if config is not None else Path(DEFAULT_CONFIG)
    candidates = [given] if config is not None else []
    if not given.is_absolute():
        candidates.append(bundled_root / given)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    bundled = sorted(str(p.relative_to(bundled_root)) for p in bundled_root.glob("*/*.ini"))
    raise DeviceError(
        f"device {device!r}: Vela config {str(given)!r} not found; give the path of a .ini "
        f"file or one of Vela's own: {', '.join(bundled) or '(none)'}"
    )


def _check_sections(
    device: str, config_file: Path, text: str, system_config: str, memory_mode: str
) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=str(config_file))
    except configparser.Error as exc:
        raise _not_a_vela_config(device, config_file, one_line(exc)) from None
    for option, prefix, value in (
        ("system_config", "System_Config.", system_config),
        ("memory_mode", "Memory_Mode.", memory_mode),
    ):
        names = [s[len(prefix) :] for s in parser.sections() if s.startswith(prefix)]
        if not names:
            raise _not_a_vela_config(device, config_file, f"no [{prefix}NAME] section")
        if value not in names:
            raise DeviceError(
                f"device {device!r}: {option} {value!r} is not defined in {config_file}; "
                f"it defines: {', '.join(names) or '(none)'}"
            )


def _not_a_vela_config(device: str, config_file: Path, why: str) -> DeviceError:
    return DeviceError(
        f"device {device!r}: Vela config {config_file} is not a Vela .ini file ({why}); "
        "vela.config takes an ini with [System_Config.NAME] and [Memory_Mode.NAME] sections, "
        f"like Vela's own {DEFAULT_CONFIG}, which is used when vela.config is left out"
    )


def _tflite_schema(device: str) -> dict[str, Any]:
    """The classes of Vela's own TFLite flatbuffer schema that ``_float_operator`` reads."""
    return {
        name: getattr(_vela_module(device, f"tflite.{name}"), name)
        for name in ("Model", "TensorType", "BuiltinOperator")
    }


def _float_operator(schema: Mapping[str, Any], data: bytes) -> str | None:
    """The first float operator, if no operator of the model computes in int8 or int16.

    QUANTIZE and DEQUANTIZE at the edges do not count: an int8 model with float inputs and
    outputs is fine. A partly float model is left to Vela, which reports its float operators
    as CPU fallbacks.
    """
    builtin, types = schema["BuiltinOperator"], schema["TensorType"]
    op_names = {v: k for k, v in vars(builtin).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(types).items() if not k.startswith("_")}
    floats = {types.FLOAT32, types.FLOAT16, types.FLOAT64, types.BFLOAT16}
    quantized = {types.INT8, types.INT16, types.UINT8}
    edges = {builtin.QUANTIZE, builtin.DEQUANTIZE}
    model = schema["Model"].GetRootAs(data, 0)
    first_float: str | None = None
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            op_code = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if op_code in edges:
                continue
            outputs = [
                graph.Tensors(op.Outputs(k))
                for k in range(op.OutputsLength())
                if op.Outputs(k) >= 0
            ]
            out_types = {t.Type() for t in outputs}
            if out_types & quantized:
                return None
            if first_float is None and out_types & floats:
                tensor = next(t for t in outputs if t.Type() in floats)
                first_float = (
                    f"{op_names.get(op_code, op_code)} {tensor.Name().decode(errors='replace')!r} "
                    f"outputs {type_names.get(tensor.Type(), tensor.Type())}"
                )
    return first_float


def _one_file(output_dir: Path, pattern: str, where: str) -> Path:
    found = sorted(output_dir.glob(pattern))
    if len(found) != 1:
        raise DeviceError(
            f"{where}: expected one {pattern} in Vela's output, found {len(found)}; "
            "is ethos-u-vela >= 5 installed?"
        )
    return found[0]


def _read_summary(output_dir: Path, where: str) -> dict[str, float]:
    """Vela's per-model summary CSV (``<model>_summary_<system config>.csv``), numbers only."""
    path = _one_file(output_dir, "*_summary_*.csv", where)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise DeviceError(f"{where}: {path.name} has {len(rows)} rows, expected 1")
    summary: dict[str, float] = {}
    for key, value in rows[0].items():
        try:
            summary[key] = float(value)
        except (TypeError, ValueError):
            continue  # names: network, accelerator_configuration, ...
    missing = [key for key in _SUMMARY_REQUIRED if key not in summary]
    if missing:
        raise DeviceError(f"{where}: {path.name} lacks the column(s) {', '.join(missing)}")
    return summary


def _read_per_layer(output_dir: Path, where: str) -> list[dict[str, Any]]:
    """Vela's per-layer CSV grouped into the model's operators, in order:
    ``{"op", "name", "target" ("NPU"/"CPU"), "cycles"}``; fused parts add to their operator."""
    path = _one_file(output_dir, "*_per-layer.csv", where)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DeviceError(f"{where}: {path.name} is empty")
    header = rows[0]
    missing = [key for key in _PER_LAYER_REQUIRED if key not in header]
    if missing or header[-1] != "Name":
        raise DeviceError(f"{where}: {path.name} lacks the column(s) {', '.join(missing)}")
    index = {key: header.index(key) for key in _PER_LAYER_REQUIRED}
    ops: dict[tuple[str, str], dict[str, Any]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < len(header):
            raise DeviceError(f"{where}: {path.name} line {number} has too few fields")
        # Vela writes this file without quoting: a name with commas spills into more fields.
        name = ",".join(row[len(header) - 1 :])
        op = row[index["Original Operator"]]
        try:
            cycles = round(float(row[index["Op Cycles"]] or 0))
        except ValueError:
            raise DeviceError(
                f"{where}: {path.name} line {number}: Op Cycles {row[index['Op Cycles']]!r} "
                "is not a number"
            ) from None
        entry = ops.setdefault(
            (op, name), {"op": op, "name": name, "target": row[index["Target"]], "cycles": 0}
        )
        entry["cycles"] += cycles
    return list(ops.values())


def _vela_error(stderr: str, stdout: str, returncode: int) -> str:
    """The message of Vela's error: its exception or argparse line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            message = match["message"].strip()
            quoted = len(message) > 1 and message[0] == message[-1] and message[0] in "'\""
            return message[1:-1] if quoted else message
    if lines:
        return lines[-1]
    errors = [line.strip() for line in stdout.splitlines() if line.strip().startswith("Error")]
    return errors[0] if errors else f"exit status {returncode} and no message"
