"""TFLite's ``benchmark_model``: its command line, and what its output says.

The tool prints its figures as log lines: with an ``INFO: `` prefix in recent LiteRT builds,
without one in older TensorFlow builds, and with logcat's ``I tflite  : `` when read from
logcat. All three are read alike. Times are microseconds in the tool's output and
milliseconds here.

Figures read: the warmup and the timed runs' statistics (``count=50 first=... curr=... min=...
max=... avg=... std=...``, with ``p5 median p95`` where the build prints them), the summary
(``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg):
...``, or the older ``Average inference timings in us: Warmup: ..., Init: ..., Inference: ...``),
the memory footprint (MB) and, with ``--enable_op_profiling=true``, the run-order table of the
regular runs (node type, avg ms, times called, name).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

# Log prefixes: "INFO: ", "ERROR: ", "WARNING: ", "VERBOSE: ", and logcat's
# "05-31 10:38:42.607 22206 22206 E tflite  : " or "I tflite  : ".
_PREFIX = re.compile(
    r"^\s*(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+)?"
    r"(?:[VDIWEF] tflite\s*: |(?:INFO|ERROR|WARNING|WARN|VERBOSE): )"
)
_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_STATS_FIELD = re.compile(rf"(\w+)=({_NUMBER})")
_SUMMARY = re.compile(
    rf"^Inference timings in us: Init: ({_NUMBER}), First inference: ({_NUMBER}), "
    rf"Warmup \(avg\): ({_NUMBER}), Inference \(avg\): ({_NUMBER})"
)
_OLD_SUMMARY = re.compile(
    rf"^Average inference timings in us: Warmup: ({_NUMBER}), Init: ({_NUMBER}), "
    rf"(?:no stats: )?Inference: ({_NUMBER})"
)
_MEMORY = re.compile(
    rf"^(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=({_NUMBER}) overall=({_NUMBER})"
)
_PEAK = re.compile(rf"^Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUMBER})")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node, yielding (\d+) "
    r"partitions"
)
# Builds before the "N out of M" form said "Replacing 49 node(s) with delegate (...) node".
_OLD_REPLACING = re.compile(r"Replacing (\d+) node\(s\) with delegate \(([^)]*)\) node")
# What benchmark_tflite_model.cc says after applying a delegate the flags asked for.
_DELEGATE_NOTE = re.compile(
    r"^(?:Explicitly applied \S+ delegate|Though \S+ delegate is explicitly applied), the "
    r"model graph will"
)
_FAILED_DELEGATE = re.compile(r"Failed to apply (?:the )?(\S+) delegate")
_INIT_SECTION = "Profiling Info for Benchmark Initialization"
_RUN_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_COLUMNS = re.compile(r"\t+|\s{2,}")


@dataclass(frozen=True)
class RunStats:
    """One ``count=... first=... ...`` line, in microseconds as printed."""

    count: int
    values: dict[str, float]  # first, curr, min, max, avg, std; p5, median, p95 if printed


@dataclass(frozen=True)
class OpTime:
    """One row of the regular runs' run-order table. ``ms`` is the time per inference
    (avg ms times the calls per run: XNNPACK's profile merges its repeated operators into
    one row)."""

    node_type: str
    name: str
    avg_ms: float
    times_called: int

    @property
    def ms(self) -> float:
        return self.avg_ms * max(self.times_called, 1)


@dataclass(frozen=True)
class BenchmarkOutput:
    """What one ``benchmark_model`` run printed; ``None`` for what it did not print."""

    warmup: RunStats | None = None
    runs: RunStats | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    ops: list[OpTime] = field(default_factory=list)
    # "Replacing 290 out of 290 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1
    # partitions": (delegated nodes, all nodes, kernel name, partitions), one per delegate.
    replaced: list[tuple[int, int, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # ERROR lines, and lines that say failed
    # WARNING lines, e.g. "GPU acceleration is unsupported on this platform." when the tool
    # could not create the delegate asked for and ran on the CPU instead.
    warnings: list[str] = field(default_factory=list)
    # The kernels that "Replacing ..." lines name, in either form (XNNPACK's included).
    delegated_to: list[str] = field(default_factory=list)
    # "Explicitly applied GPU delegate, and the model graph will be completely executed by
    # the delegate." / "Though NNAPI delegate is explicitly applied, the model graph will not
    # be executed by the delegate." (newer builds, after applying a delegate asked for)
    delegate_notes: list[str] = field(default_factory=list)


def log_lines(text: str) -> list[str]:
    """The output's lines without log prefixes or carriage returns (adb shell adds them)."""
    return [_PREFIX.sub("", line.rstrip("\r")) for line in text.splitlines()]


def parse_output(text: str) -> BenchmarkOutput:
    """The figures in one run's output (stdout and stderr together)."""
    raw = [line.rstrip("\r") for line in text.splitlines()]
    lines = log_lines(text)
    stats: list[RunStats] = []
    found: dict[str, float] = {}
    replaced: list[tuple[int, int, str, int]] = []
    errors: list[str] = []
    warnings: list[str] = []
    delegated_to: list[str] = []
    notes: list[str] = []
    for original, line in zip(raw, lines, strict=True):
        body = line.strip()
        if body.startswith("count="):
            stats.append(_run_stats(body))
        elif match := _SUMMARY.match(body):
            for key, value in zip(
                ("init", "first", "warmup", "inference"), match.groups(), strict=True
            ):
                found[key] = float(value)
        elif match := _OLD_SUMMARY.match(body):
            for key, value in zip(("warmup", "init", "inference"), match.groups(), strict=True):
                found[key] = float(value)
        elif match := _MEMORY.match(body):
            found["mem_init"], found["mem_overall"] = float(match[1]), float(match[2])
        elif match := _PEAK.match(body):
            found["peak"] = float(match[1])
        elif match := _REPLACING.search(body):
            replaced.append((int(match[1]), int(match[2]), match[3], int(match[4])))
            delegated_to.append(match[3])
        elif match := _OLD_REPLACING.search(body):
            delegated_to.append(match[2])
        elif _DELEGATE_NOTE.match(body):
            notes.append(body)
        if _is_error(original, body):
            errors.append(body)
        elif _is_warning(original):
            warnings.append(body)
    # The timed runs' line is the last before the summary; the one before it is the warmup's.
    runs = stats[-1] if stats else None
    warmup = stats[-2] if len(stats) >= 2 else None
    first = found.get("first")
    return BenchmarkOutput(
        warmup=warmup,
        runs=runs,
        init_us=found.get("init"),
        # 0 when no warmup run happened: then there is no first inference to report.
        first_inference_us=first if first else None,
        warmup_avg_us=found.get("warmup"),
        inference_avg_us=found.get("inference"),
        memory_init_mb=found.get("mem_init"),
        memory_overall_mb=found.get("mem_overall"),
        peak_memory_mb=found.get("peak"),
        ops=parse_op_profile(lines),
        replaced=replaced,
        errors=errors,
        warnings=warnings,
        delegated_to=delegated_to,
        delegate_notes=notes,
    )


def _run_stats(body: str) -> RunStats:
    """One statistics line. When every run took the same time the tool prints only
    ``count=N curr=T`` (``(all same)`` after it for N > 1: TensorFlow's
    ``stats_calculator.h``, ``Stat::OutputToStream``), so T is then also min, max and avg."""
    values = {k: float(v) for k, v in _STATS_FIELD.findall(body)}
    count = int(values.pop("count"))
    if "avg" not in values and "curr" in values:
        curr = values["curr"]
        values.update(first=values.get("first", curr), min=curr, max=curr, avg=curr, std=0.0)
    return RunStats(count, values)


def parse_op_profile(lines: Sequence[str]) -> list[OpTime]:
    """The rows of the regular runs' "Run Order" table (``--enable_op_profiling=true``).

    Builds that print section titles put the initialization's table first; older builds print
    only the regular runs' tables. Columns are found by their ``[...]`` headers, as builds
    differ in them (older ones have ``[start]``)."""
    titled = any(_RUN_SECTION in line for line in lines)
    section = None if titled else _RUN_SECTION
    rows: list[OpTime] = []
    header: list[str] | None = None
    for line in lines:
        if _RUN_SECTION in line:
            section = _RUN_SECTION
            continue
        if _INIT_SECTION in line:
            section = _INIT_SECTION
            continue
        if section != _RUN_SECTION:
            continue
        cells = [c.strip() for c in _COLUMNS.split(line.strip()) if c.strip()]
        if header is None:
            if "[node type]" in cells and "[avg ms]" in cells:
                header = cells
            continue
        if not cells or line.lstrip().startswith("="):
            break  # the end of the run-order table: the rest are summaries of it
        if len(cells) != len(header):
            continue
        row = dict(zip(header, cells, strict=True))
        called = row.get("[times called]", "1")
        rows.append(
            OpTime(
                node_type=row["[node type]"],
                name=row.get("[Name]", row["[node type]"]),
                avg_ms=float(row["[avg ms]"]),
                times_called=int(float(called)) if called else 1,
            )
        )
    return rows


def failure_reason(output: BenchmarkOutput) -> str | None:
    """What made a run fail, from its own words: the delegate it could not apply, else its
    last error line; ``None`` when it printed no error."""
    for line in output.errors:
        if match := _FAILED_DELEGATE.search(line):
            return f"benchmark_model could not apply the {match[1]} delegate ({line})"
    specific = [e for e in output.errors if e != "Benchmarking failed."]
    if specific:
        return specific[-1]
    return output.errors[-1] if output.errors else None


def delegate_flags(delegate: str | None, options: Sequence[tuple[str, str]] = ()) -> list[str]:
    """benchmark_model's flags for a profile's ``delegate`` (``None``: the build's default,
    which applies XNNPACK on the CPU)."""
    if delegate is None:
        return []
    if delegate == "xnnpack":
        return ["--use_xnnpack=true"]
    if delegate == "none":
        return ["--use_xnnpack=false"]
    if delegate == "gpu":
        return ["--use_gpu=true"]
    if delegate == "nnapi":
        return ["--use_nnapi=true"]
    if delegate.startswith("external:"):
        flags = [f"--external_delegate_path={delegate[len('external:') :]}"]
        if options:
            text = ";".join(f"{key}:{value}" for key, value in options)
            flags.append(f"--external_delegate_options={text}")
        return flags
    raise ValueError(f"unknown delegate {delegate!r}")


def command_line(
    binary: str,
    model: str,
    *,
    threads: int,
    warmup: int,
    runs: int,
    delegate: str | None = None,
    delegate_options: Sequence[tuple[str, str]] = (),
    profile_ops: bool = False,
    cores: Sequence[int] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """One ``sh`` command that runs ``binary`` on ``model``, every argument quoted.

    ``min_secs=0`` and ``warmup_min_secs=0`` make the run counts exact (the tool otherwise
    runs for at least a second). ``cores`` pin it with ``taskset`` (Android's toybox has it).
    ``extra`` flags follow the others.
    """
    args = [
        binary,
        f"--graph={model}",
        f"--num_threads={threads}",
        f"--warmup_runs={warmup}",
        "--warmup_min_secs=0",
        f"--num_runs={runs}",
        "--min_secs=0",
        *delegate_flags(delegate, delegate_options),
    ]
    if profile_ops:
        args.append("--enable_op_profiling=true")
    args += extra
    if cores:
        args = ["taskset", cpu_mask(cores), *args]
    return " ".join(shlex.quote(a) for a in args)


def cpu_mask(cores: Sequence[int]) -> str:
    """taskset's hexadecimal mask: cores 4-7 -> ``f0``."""
    return format(sum(1 << c for c in set(cores)), "x")


def _is_warning(original: str) -> bool:
    stripped = original.lstrip()
    return stripped.startswith(("WARNING: ", "WARN: ")) or bool(
        re.match(r"^\d\d-\d\d .* W tflite\s*: ", stripped)
    )


def _is_error(original: str, body: str) -> bool:
    stripped = original.lstrip()
    if stripped.startswith("ERROR: ") or re.match(r"^\d\d-\d\d .* [EF] tflite\s*: ", stripped):
        return True
    return body.startswith(("Failed to ", "Benchmarking failed")) or bool(
        _FAILED_DELEGATE.search(body)
    )
