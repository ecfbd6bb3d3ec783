"""Filling a latency table: enumerate blocks, export them (cached), measure in batches.

The table is saved after every batch and a rerun measures only what is missing, so a killed
run resumes where it stopped. Every call to a timed device also measures the table's
reference model, and entries are normalised to its baseline (``latency.reference``).
Simulated devices (npu-sim, vela) fill it the same way: their ``measure`` simulates instead
of timing, and they need no reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from devices.base import PER_OP_TARGETS, Device, DeviceError
from devices.measurement import Fingerprint, MeasuredWith, Measurement
from export.formats import (
    MODEL_FORMATS,
    PRECISIONS,
    ChannelAlignment,
    GraphForm,
    ModelFormat,
    Precision,
    graph_form,
    kernel_isa,
)
from latency.blocks import (
    SPLIT_STEM_GROUPS,
    BlockSpec,
    enumerate_blocks,
    profiled_resolutions,
    stem_block,
    stem_channels,
)
from latency.model_cache import ModelCache
from latency.reference import (
    AGREEMENT,
    COPIES,
    RETRIES,
    Reference,
    combine_copies,
    copies_spread,
    needs_reference,
    normalise,
    reference_subnet,
)
from latency.table import LatencyTable, TableError, TableHeader
from once_for_all.network_config import network_config
from once_for_all.progress import Progress
from once_for_all.search_space import SearchSpace

# (start, results, the reference's measurement in that call or None)
BatchFn = Callable[[int, list[Measurement], Measurement | None], None]

# Which model files each runtime measures; simulators have one each.
RUNTIME_FORMATS: dict[str, tuple[ModelFormat, ...]] = {
    "onnxruntime": ("onnx",),
    "tflite": ("tflite",),
    "openvino": ("onnx",),  # OpenVINO reads ONNX itself
    "tensorrt": ("onnx",),
    "npu-sim": ("onnx",),
    "vela": ("tflite",),
}
RUNTIME_PRECISIONS: dict[str, tuple[Precision, ...]] = {
    "onnxruntime": ("fp32", "int8"),
    "tflite": ("fp32", "int8"),
    "openvino": ("fp32", "int8"),
    # fp32 ONNX in; the engine's precision is the profile's tensorrt.precision.
    "tensorrt": ("fp32",),
    "npu-sim": ("fp32",),  # the simulator takes the word size from its profile
    "vela": ("int8",),
}


@dataclass(frozen=True)
class ProfileSettings:
    model_format: ModelFormat
    precision: Precision
    graph_form: GraphForm = "xnnpack"  # how TFLite blocks are laid out for the runtime
    # how int8 ONNX blocks pad their channels for the device's kernels (channel_alignment)
    align_channels: ChannelAlignment = "none"
    # the numbers of groups an int8 table also times the stem in (export.stem_split); fp32
    # tables none: export splits only int8 files' stems
    split_stems: tuple[int, ...] = ()

    @classmethod
    def of(cls, header: TableHeader) -> ProfileSettings:
        """The settings ``header``'s table (or predictor) was measured with."""
        fp = header.fingerprint
        return cls(
            header.model_format,
            header.precision,
            graph_form(fp.runtime),
            channel_alignment(fp, header.model_format, header.precision),
        )


def channel_alignment(
    fingerprint: Fingerprint, model_format: ModelFormat, precision: Precision
) -> ChannelAlignment:
    """The channel alignment of the int8 ONNX models measured on a device: onnxruntime's CPU
    provider gets the rules of the runner's CPU kind (``export.onnx_channel_alignment``), as
    ``edgenas export --align-channels auto`` writes the file it ships for that device; other
    providers, runtimes and files none. A fingerprint without a CPU kind (a table from before
    runners reported it) keeps the x86 rules those tables were measured with."""
    if (model_format, precision) != ("onnx", "int8") or fingerprint.runtime != "onnxruntime":
        return "none"
    if fingerprint.accelerator.split(",")[0] not in ("", "CPUExecutionProvider"):
        return "none"  # another provider's kernels run the file
    return kernel_isa(fingerprint.machine) if fingerprint.machine else "x86"


def settings_for(
    fingerprint: Fingerprint,
    device: str,
    *,
    model_format: ModelFormat | None = None,
    precision: Precision | None = None,
    stem_groups: Sequence[int] = (),
) -> ProfileSettings:
    """The model format and precision a device measures (its defaults when not given). An
    int8 table times the stem split in ``SPLIT_STEM_GROUPS`` groups, as export's ``auto``
    splits it, and in each of ``stem_groups`` (``edgenas export --stem-groups N``)."""
    runtime = fingerprint.runtime
    refused = unmeasured(device, runtime, model_format, precision)
    if refused is not None:
        option, problem, instead = refused
        raise TableError(f"{problem}; use --{option} {instead}")
    formats = RUNTIME_FORMATS.get(runtime, MODEL_FORMATS)
    precisions = RUNTIME_PRECISIONS.get(runtime, PRECISIONS)
    chosen_format, chosen_precision = model_format or formats[0], precision or precisions[0]
    return ProfileSettings(
        chosen_format,
        chosen_precision,
        graph_form(runtime),
        channel_alignment(fingerprint, chosen_format, chosen_precision),
        split_stems(chosen_precision, stem_groups),
    )


def unmeasured(
    device: str, runtime: str, model_format: str | None, precision: str | None
) -> tuple[str, str, str] | None:
    """Why ``runtime`` cannot measure the model format or precision asked of ``device`` (None:
    it can): the setting (format or precision), the problem in words and what to give
    instead."""
    formats = RUNTIME_FORMATS.get(runtime, MODEL_FORMATS)
    precisions = RUNTIME_PRECISIONS.get(runtime, PRECISIONS)
    if model_format is not None and model_format not in formats:
        return (
            "format",
            f"device {device!r} runs {runtime}, which measures {'/'.join(formats)} models, "
            f"not {model_format}",
            formats[0],
        )
    if precision is not None and precision not in precisions:
        return (
            "precision",
            f"device {device!r} ({runtime}) measures {'/'.join(precisions)} models, not "
            f"{precision}",
            precisions[0],
        )
    return None


def split_stems(precision: Precision | None, stem_groups: Sequence[int]) -> tuple[int, ...]:
    """The numbers of groups a table of ``precision`` times the stem in: for int8,
    ``SPLIT_STEM_GROUPS`` and each of ``stem_groups`` above 1; none for fp32 (or not yet
    known), whose files keep the stem whole."""
    if precision != "int8":
        return ()
    return tuple(sorted({SPLIT_STEM_GROUPS, *(g for g in stem_groups if g > 1)}))


def profiled_blocks(
    space: SearchSpace, resolutions: tuple[int, ...], settings: ProfileSettings
) -> list[BlockSpec]:
    """The blocks a table of ``settings`` holds: every block of ``space`` at ``resolutions``,
    and for int8 also the stem as int8 files split it (``latency.blocks.stem_block``)."""
    return enumerate_blocks(space, resolutions=resolutions, split_stems=settings.split_stems)


def open_table(
    path: Path,
    *,
    space: SearchSpace,
    device: str,
    fingerprint: Fingerprint,
    settings: ProfileSettings,
    resolutions: tuple[int, ...],
    measured_with: MeasuredWith,
) -> LatencyTable:
    """The table at ``path`` to continue, or a new empty one; refuses one for another setup,
    or measured with other settings (``Device.measured_with``). Asked for more resolutions
    than it covers, the table is extended (``TableHeader.extended``): what it lacks is what
    the new ones add, and its header covers them from the first batch saved (there is one:
    a stem's key names its input resolution). Fewer or other resolutions are refused
    (``TableHeader.check``)."""
    if not path.exists():
        reference = (
            Reference(reference_subnet(space, resolutions).to_dict())
            if needs_reference(fingerprint)
            else None
        )
        header = TableHeader(
            space_id=space.id,
            device=device,
            fingerprint=fingerprint,
            model_format=settings.model_format,
            precision=settings.precision,
            resolutions=resolutions,
            reference=reference,
            measured_with=measured_with,
        )
        return LatencyTable(header)
    table = LatencyTable.load(path)
    table.header.check(
        what=f"existing table {path}",
        space_id=space.id,
        fingerprint=fingerprint,
        model_format=settings.model_format,
        precision=settings.precision,
        resolutions=resolutions,
        measured_with=measured_with,
        device=device,
    )
    if table.header.measured_with is None:  # older table: recorded from now on (check's why)
        table.header = replace(table.header, measured_with=measured_with)
    # Kept as it is, the reference baseline normalises the new entries as it did the others.
    table.header = table.header.extended(resolutions)
    if table.header.fingerprint.runtime_version != fingerprint.runtime_version:
        raise TableError(
            f"existing table {path} was measured with {fingerprint.runtime} "
            f"{table.header.fingerprint.runtime_version}, the device now has "
            f"{fingerprint.runtime_version}; delete it or write to another folder"
        )
    return table


def with_table_stems(
    settings: ProfileSettings, space: SearchSpace, table: LatencyTable
) -> ProfileSettings:
    """``settings`` also timing the stem in every number of groups ``table`` has an entry
    for: a rerun without ``--stem-groups N`` (an extension to more resolutions, or a resume)
    gives the table those entries at each of its resolutions."""
    have = [
        g
        for g in range(2, stem_channels(space) + 1)
        if any(stem_block(space, r, groups=g).key in table for r in table.header.resolutions)
    ]
    if not have:
        return settings
    return replace(settings, split_stems=tuple(sorted({*settings.split_stems, *have})))


def check_per_op(device: Device, fingerprint: Fingerprint) -> None:
    """Raise a one-line ``DeviceError`` when ``device`` cannot time each op of a model."""
    if device.per_op_times:
        return
    if fingerprint.runtime == "tflite":
        why = (
            "the on-device runner times tflite models with LiteRT's Python interpreter, which "
            "has no per-op profiler"
        )
        fix = "measure a phone with kind adb (benchmark_model), or leave out --per-op"
    elif fingerprint.runtime == "openvino":
        why = (
            "the runner reads OpenVINO's performance counters on its CPU device only (their "
            "meaning on other devices is not verified)"
        )
        fix = "profile openvino.device CPU, or leave out --per-op"
    else:
        why = f"its {fingerprint.runtime} measurements have no per-op times"
        fix = "leave out --per-op"
    raise DeviceError(
        f"device {device.name!r} cannot give per-op times: {why}; they come from "
        f"{PER_OP_TARGETS}: {fix} (per_op in a recipe)"
    )


def blocks_to_measure(
    specs: Sequence[BlockSpec], table: LatencyTable, *, per_op: bool = False
) -> list[BlockSpec]:
    """The blocks ``table`` lacks; with ``per_op`` also those measured without per-op times
    (a table started without them gets them on a rerun with them)."""
    return [
        spec
        for spec in specs
        if spec.key not in table or (per_op and table.entries[spec.key].ops is None)
    ]


def profile_blocks(
    device: Device,
    space: SearchSpace,
    table_path: Path,
    *,
    cache: ModelCache,
    model_format: ModelFormat | None = None,
    precision: Precision | None = None,
    resolutions: Sequence[int] | None = None,
    batch_size: int = 32,
    workers: int = 2,
    per_op: bool = False,
    stem_groups: Sequence[int] = (),
    progress: Progress | None = None,
) -> LatencyTable:
    """Measure every distinct block of ``space`` (at ``resolutions``, default all) on
    ``device`` into the table at ``table_path``; progress stages are ``"export"`` and
    ``"measure"``. With ``per_op`` each entry also gets its ``ops`` (per-op times; a
    ``DeviceError`` where the device cannot give them); an int8 table also times the stem
    split in ``stem_groups`` groups (``settings_for``)."""
    chosen = profiled_resolutions(space, resolutions)
    fingerprint = device.fingerprint()
    if per_op:
        check_per_op(device, fingerprint)
    settings = settings_for(
        fingerprint,
        device.name,
        model_format=model_format,
        precision=precision,
        stem_groups=stem_groups,
    )
    table = open_table(
        table_path,
        space=space,
        device=device.name,
        fingerprint=fingerprint,
        settings=settings,
        resolutions=chosen,
        measured_with=device.measured_with(),
    )
    settings = with_table_stems(settings, space, table)
    todo = blocks_to_measure(profiled_blocks(space, chosen, settings), table, per_op=per_op)
    files = cache.blocks(
        todo,
        settings.model_format,
        settings.precision,
        graph_form=settings.graph_form,
        align_channels=settings.align_channels,
        workers=workers,
        progress=progress,
    )

    def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
        table.header, results = apply_reference(table.header, results, ref)
        for spec, result in zip(todo[start : start + len(results)], results, strict=True):
            if per_op and result.ops is None:
                raise DeviceError(
                    f"device {device.name!r} returned no per-op times for block {spec.key} "
                    "although they were asked for; is its runtime's profiler output readable?"
                )
            table.add(spec.key, result)
        table.save(table_path)

    measure_in_batches(
        device,
        [files[spec.key] for spec in todo],
        batch_size=batch_size,
        on_batch=store,
        progress=progress,
        reference=reference_file(cache, space, table.header) if todo else None,
        profile_ops=per_op,
        cache=cache,
    )
    if not table_path.exists():
        table.save(table_path)  # nothing was left to measure, but the file should exist
    return table


def reference_file(cache: ModelCache, space: SearchSpace, header: TableHeader) -> Path | None:
    """The exported reference model of ``header`` (``None`` where it has none)."""
    if header.reference is None:
        return None
    subnet = space.subnet_from_dict(header.reference.subnet)
    config = network_config(space, subnet)
    settings = ProfileSettings.of(header)
    return cache.networks(
        [config],
        settings.model_format,
        settings.precision,
        graph_form=settings.graph_form,
        align_channels=settings.align_channels,
        workers=1,
    )[0]


def apply_reference(
    header: TableHeader, results: list[Measurement], reference: Measurement | None
) -> tuple[TableHeader, list[Measurement]]:
    """``results`` normalised to the header's reference baseline, and the header (with the
    baseline set from ``reference`` if this is the first call that measured it)."""
    if reference is None or header.reference is None:
        return header, results
    ref = header.reference
    if ref.baseline_ms is None:
        ref = ref.with_baseline(reference)
        header = replace(header, reference=ref)
    baseline = ref.baseline_ms if ref.baseline_ms is not None else reference.median_ms
    return header, [normalise(m, reference, baseline) for m in results]


def measure_in_batches(
    device: Device,
    files: Sequence[Path],
    *,
    batch_size: int,
    on_batch: BatchFn,
    progress: Progress | None = None,
    reference: Path | None = None,
    retries: int = RETRIES,
    profile_ops: bool = False,
    cache: ModelCache | None = None,
) -> None:
    """Measure ``files`` at most ``batch_size`` per device call (the runner interleaves a
    call's models, so they are compared under the same conditions); ``on_batch(start,
    results, ref)`` stores each batch before the next starts, which is what makes a killed
    run resumable. With ``reference``, its copies join every call and ``ref`` is their
    measurement in that call (else ``None``); a call whose copies disagree is measured
    again, at most ``retries`` times, keeping the attempt where they agreed best.
    ``profile_ops`` asks the device for per-op times (the reference's copies too: on
    benchmark_model profiling runs within the timed runs, and the reference should see the
    same overhead as the blocks it normalises). Files from ``cache``: a device's refusal of
    one names it there, with what to do if it is damaged."""
    per_call = min(batch_size, device.models_per_call or batch_size)
    chunk = max(per_call - COPIES, 1) if reference is not None else per_call
    if progress:
        progress("measure", 0, len(files))
    for start in range(0, len(files), chunk):
        models = list(files[start : start + chunk])
        try:
            if reference is None:
                results, ref = device.measure(models, profile_ops=profile_ops), None
            else:
                results, ref = _measure_with_reference(
                    device, models, reference, retries, profile_ops
                )
        except DeviceError as exc:
            called = [*models, reference] if reference is not None else models
            raise _naming_cached_file(exc, called, cache) from None
        on_batch(start, results, ref)
        if progress:
            progress("measure", start + len(results), len(files))


# How devices say that a model file could not be read, as opposed to a runtime that refused
# what the file holds: the Python runners (devices/runner.py), Vela's device (devices/vela.py)
# and TFLite's benchmark_model on phones and boards (benchmark_tflite_model.cc's "Failed to
# mmap model", its words for a file it cannot map or that is no TFLite model).
_CANNOT_READ = (
    "cannot load model",
    "model file not found",
    "model file is not readable",
    "is not a TFLite model",
    "cannot be read as a TFLite model",
    "Failed to mmap model",
)


def _naming_cached_file(
    exc: DeviceError, models: list[Path], cache: ModelCache | None
) -> DeviceError:
    """``exc``, and where it names one of ``models`` (by file name: an SSH board's copy is in a
    folder of its own) that is a file of ``cache``, that file and what to do if it is damaged:
    a cut-short or edited file is not exported again while it is there."""
    named = [m for m in models if m.name in str(exc)]
    unreadable = any(words in str(exc) for words in _CANNOT_READ)
    if cache is None or not named or not unreadable or not named[0].is_relative_to(cache.root):
        return exc
    said = str(exc).rstrip(".")
    which = "it is" if str(named[0]) in said else f"it is {named[0]},"
    return DeviceError(
        f"{said}; {which} a file of the model cache: if it is damaged, delete it and run "
        "again to export it anew"
    )


def _measure_with_reference(
    device: Device, models: list[Path], reference: Path, retries: int, profile_ops: bool
) -> tuple[list[Measurement], Measurement]:
    n = len(models)
    call = [*models, *[reference] * COPIES]
    results = device.measure(call, profile_ops=profile_ops)
    best = (copies_spread(results[n:]), results)
    attempts = 1
    while best[0] > AGREEMENT and attempts <= retries:
        attempts += 1
        results = device.measure(call, profile_ops=profile_ops)
        best = min(best, (copies_spread(results[n:]), results), key=lambda b: b[0])
    return best[1][:n], combine_copies(best[1][n:], attempts=attempts)
