"""`edgenas export` as a function: from a supernet checkpoint and a chosen subnet to checked
model files, measured on the target devices, with a model card.

All files appear in the output folder together at the end (they are written into a hidden
staging folder inside it first), so a failure leaves the old files as they were; a kill while
they move in leaves no card (the old one goes first, the new one last), never a card beside
files it does not describe. Fine-tuning is saved after every epoch (``finetuned.pt``): a rerun
with the same inputs resumes it, or reuses it once finished. So are the files and the devices'
measurements, once each is done (``export_progress``): a rerun of an interrupted export takes
them over.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, cast

from edgenas.run_layout import SPACE_NAME
from edgenas.stages.export_progress import (
    DoneDevice,
    DoneFile,
    ExportProgress,
    device_digest,
    export_key,
    finished_file,
    open_staging,
    save_progress,
)
from edgenas.subnet_choice import choose_subnet, searched_supernet
from export.card import CardBody, DeviceCheck, DeviceLatency, FileLatency, Int8Accuracy
from export.errors import ExportError
from export.formats import (
    AUTO_SPLIT_GROUPS,
    MODEL_FORMATS,
    PRECISIONS,
    ChannelAlignment,
    ChannelAlignmentChoice,
    GraphForm,
    graph_form,
    kernel_isa,
)
from export.onnx_export import onnx_input_shape
from export.subnet_export import (
    FILE_NAMES,
    ExportedFile,
    ExportOptions,
    ExportResult,
    TestImages,
)
from latency.profile_files import PREDICTOR_NAME
from once_for_all.data.transforms import CROP_FRACTION

if TYPE_CHECKING:
    import torch

    from devices.base import Device
    from devices.measurement import Fingerprint, Measurement
    from devices.profiles import DeviceProfile
    from latency.predictors import CalibratedPredictor, LutSumPredictor
    from latency.table import TableHeader
    from once_for_all import OFAMobileNetV3, SearchSpace, Subnet
    from once_for_all.data import DataBundle
    from once_for_all.static_net import MobileNetV3

FINETUNED_FORMAT = "edgenas.finetuned/1"
FINETUNED_NAME = "finetuned.pt"  # in the output folder
# An unfinished fine-tuning's tag: an edgenas from before resumption read only the first, and
# would have taken half-tuned weights under it for finished ones.
FINETUNING_FORMAT = "edgenas.finetuning/1"


FinetunePhase = Literal["fine-tune", "quantization-aware"]


class FinetuneProgress(TypedDict):
    """How far an unfinished fine-tuning got: what its resumption needs."""

    phase: FinetunePhase
    epochs: int  # done in that phase
    optimizer: dict[str, Any]
    # quantization-aware: the weights it started from (its int8 ranges and its teacher)
    start: NotRequired[dict[str, torch.Tensor]]


class FinetunedDocument(TypedDict):
    """``finetuned.pt``: a fine-tuned subnet's weights and the inputs they were tuned from;
    ``progress`` while the fine-tuning is unfinished (saved after each epoch)."""

    format: str
    key: str  # the inputs as sorted JSON: the weights are reused only for the same ones
    model: dict[str, torch.Tensor]
    progress: NotRequired[FinetuneProgress]


def read_finetuned(path: Path) -> FinetunedDocument | None:
    """The saved fine-tuned weights, or None for a missing, damaged or foreign file: it is
    only a cache, so the subnet is fine-tuned again."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(payload, dict):
        return None
    if payload.get("format") not in (FINETUNED_FORMAT, FINETUNING_FORMAT):
        return None
    if (payload.get("format") == FINETUNING_FORMAT) != ("progress" in payload):
        return None  # a finished tag with progress, or the reverse: not ours
    return cast(FinetunedDocument, payload)


def write_finetuned(path: Path, doc: FinetunedDocument) -> None:
    from once_for_all.files import write_torch

    write_torch(path, doc)


# Quantization-aware fine-tuning weighs matching the float subnet (the quantization error)
# above the labels, which the float subnet has already learnt.
QAT_KD_RATIO = 4.0
Say = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 0
    lr: float = 0.01
    kd_ratio: float = 1.0  # distillation from the supernet's largest subnet
    batch_size: int = 64
    seed: int = 0
    qat_epochs: int = 0  # then int8-simulated activations, distilling the float subnet


@dataclass(frozen=True)
class ExportJob:
    supernet: Path
    subnet: str  # max, min, random, a subnet JSON file, pareto.json[#K]
    out: Path
    options: ExportOptions = field(default_factory=ExportOptions)
    devices: tuple[str, ...] = ()  # device profiles to measure the files on
    profiles: Path = Path("runs/profiles")  # where their latency predictors are looked up
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    # The TFLite graph form; "auto": plain when every device is an NPU compiler (Vela),
    # else XNNPACK's (export.formats.graph_form).
    tflite_form: GraphForm | Literal["auto"] = "auto"
    # The CPU kind whose onnxruntime int8 conv kernels the int8 ONNX file's channels are
    # padded for; "auto": the devices' (resolve_channel_alignment).
    align_channels: ChannelAlignmentChoice = "auto"
    data: Path | None = None  # ImageNet-layout folder for a supernet that records no data


def run_export(
    job: ExportJob, *, say: Say = lambda message: None, warn: Say | None = None
) -> CardBody:
    """Do the job and return the model card (also written as card.json and card.md).
    ``say`` is told the progress, ``warn`` (default ``say``) what the user should know
    even when progress is not shown. The output folder is locked meanwhile: another export
    there would remove this one's staging folder as a leftover."""
    from once_for_all.folder_lock import folder_lock

    _check_devices_run_files(job)
    created = not job.out.exists()
    tuned = job.finetune.epochs > 0 or job.finetune.qat_epochs > 0
    _make_folder(job.out, also=(FINETUNED_NAME,) if tuned else ())
    with folder_lock(job.out):
        return _export(job, created, say, warn or say)


def _export(job: ExportJob, created: bool, say: Say, warn: Say) -> CardBody:
    from export.card import write_card
    from export.subnet_export import check_options, export_subnet
    from latency.proxies import costs_many
    from once_for_all import load_supernet
    from once_for_all.checkpoint import FolderReads, load_training_data, require_complete
    from once_for_all.evaluation import BN_IMAGES

    staging: Path | None = None
    progress: ExportProgress | None = None
    published = keep = False
    try:
        supernet, _, payload = load_supernet(job.supernet)
        require_complete(payload, job.supernet)
        space = supernet.space
        subnet = choose_subnet(job.subnet, space)
        _check_searched_supernet(job, supernet, warn)
        o = job.options
        check_options(o, stem_channels=space.width(space.stem_width))
        names = [_profile_name(device) for device in job.devices]
        predictors = {name: _predictor(name, space, subnet, job.profiles) for name in names}
        reached = _reach_devices(job.devices, predictors, job.profiles)
        reads = FolderReads(  # what an imported supernet's --data must provide, no more
            train=max(BN_IMAGES, o.calibration_images),
            val=o.parity_images,
            test=o.test_images or FolderReads.test,
        )
        data = load_training_data(job.supernet, payload, folder=job.data, reads=reads)
        held = len(data.test.labels)
        if o.test_images is not None and o.test_images > held:  # it was capped silently
            say(
                f"{o.test_images} test images asked, but the test split holds {held}: the "
                f"int8 checks use all {held}"
            )
        trained_on = len(data.train)
        if o.int8 and o.calibration_images > trained_on:  # calibration_images() takes them all
            say(
                f"{o.calibration_images} calibration images asked, but the training split holds "
                f"{trained_on}: int8 calibrates on all {trained_on}"
            )
        say(f"subnet {subnet.key} of {space.id}")
        for device, name in zip(job.devices, names, strict=True):
            if predictors[name] is None:
                warn(_no_predictor(device, name, space, subnet, job))  # said under --quiet too
        # Before the subnet's fine-tuning: an SSH board is asked for its CPU here.
        align_channels = resolve_channel_alignment(job, say, fingerprints=reached)
        model = _subnet_model(supernet, subnet, data, job, say)
        form = resolve_tflite_form(job, warn)
        if form != job.options.graph_form and "tflite" in job.options.formats:
            say(f"TFLite files in the {form} graph form (for {', '.join(job.devices)})")
        options = replace(job.options, graph_form=form, align_channels=align_channels)
        metadata = _metadata(space, subnet, data, dynamic_batch=job.options.dynamic_batch)

        def file_metadata(precision: str, groups: int) -> dict[str, str]:
            predicted = {
                name: _prediction(p, subnet, "onnx", precision, groups)[0]
                for name, p in predictors.items()
            }
            return {"edgenas.predicted_latency_ms": json.dumps(predicted)}

        key = export_key(model, data, options, metadata, file_metadata)
        staging, progress = open_staging(job.out, key)
        resumed = progress["files"]
        if resumed:
            say(f"resuming the interrupted export in {staging} ({len(resumed)} file(s) done)")

        def record_file(file: ExportedFile, spec: dict[str, Any]) -> None:
            assert staging is not None and progress is not None
            progress["files"][file.name] = DoneFile(file=file.to_dict(), input=spec)
            save_progress(staging, progress)

        result = export_subnet(
            model,
            data,
            staging,
            options=options,
            metadata=metadata,
            file_metadata=file_metadata,
            log=say,
            finished=lambda name: finished_file(staging, progress, name),
            on_file=record_file,
        )
        checks = _test_subset(result.test_set, o.device_check_images)
        latency = _measure(
            job.devices, staging, result.files, subnet, predictors, say, checks, progress
        )
        _compare(latency, result, job.options.min_int8_agreement)
        costs = {k: int(v[0]) for k, v in costs_many(space, [subnet]).items()}
        card = _card(job, subnet, data, result, latency, costs)
        write_card(staging, card)
        _publish(staging, job.out)
        published = True
    except BaseException:
        # Ctrl-C, SIGTERM, a board that dropped: what is finished waits for the rerun, which
        # takes it over for the same inputs only (export_progress).
        keep = progress is not None and bool(progress["files"])
        raise
    finally:
        if staging is not None and not keep:
            shutil.rmtree(staging, ignore_errors=True)
        if created and not published and not any(job.out.iterdir()):
            job.out.rmdir()  # a failed first export leaves nothing behind (but a fine-tuning)
    return card


def _make_folder(out: Path, *, also: tuple[str, ...] = ()) -> None:
    """``out``, made if needed and writable, with no folder where export writes a file, nor
    where it writes the files named in ``also`` (found after the whole export when the files
    moved in, with the old card gone; the fine-tuning's after its epochs)."""
    from once_for_all.files import output_folder

    output_folder(out, error=ExportError)  # a file in the way is named
    for name in (*FILE_NAMES.values(), *CARD_FILES, *also):
        if (out / name).is_dir():
            raise ExportError(
                f"{out / name} is a folder, where export writes its {name}: move it away, or "
                "choose another --out"
            )


CARD_FILES = ("card.json", "card.md")


def _publish(staging: Path, out: Path) -> None:
    """Move the new files into ``out`` and remove model files of an earlier export that this
    one did not produce (the card must describe every model file in the folder). The old
    card goes first and the new one comes last: a kill in between leaves model files of two
    exports but no card claiming either (a rerun completes it), never a card describing
    files that are not the ones beside it."""
    new = {p.name for p in staging.iterdir() if not p.name.startswith(".")}  # not progress
    for name in CARD_FILES:
        (out / name).unlink(missing_ok=True)
    for name in set(FILE_NAMES.values()) - new:
        (out / name).unlink(missing_ok=True)
    cards = [name for name in CARD_FILES if name in new]
    for name in sorted(new - set(cards)) + cards:
        os.replace(staging / name, out / name)


def _subnet_model(
    supernet: OFAMobileNetV3, subnet: Subnet, data: DataBundle, job: ExportJob, say: Say
) -> MobileNetV3:
    """The extracted subnet with recalibrated BN, fine-tuned when asked (reusing a saved
    fine-tuning of the same subnet, supernet and settings)."""
    import torch

    from export.stem_split import splittable
    from export.subnet_export import calibration_images
    from once_for_all import recalibrate_bn, train_static
    from once_for_all.accuracy_dataset import data_fingerprint, supernet_fingerprint
    from once_for_all.evaluation import bn_batches
    from once_for_all.memory_layout import to_training_layout
    from once_for_all.quant_aware import int8_activations

    model = supernet.extract(subnet)
    settings = job.finetune
    recalibrate_bn(model, bn_batches(data, subnet.r))
    if settings.epochs == 0 and settings.qat_epochs == 0:
        return model.eval()
    key = {
        "subnet": subnet.to_dict(),
        "supernet": supernet_fingerprint(supernet),
        "settings": settings.__dict__,
        "calibration_images": job.options.calibration_images,
        # What fine-tuning, BN recalibration and int8 calibration read: the training split.
        "data": data_fingerprint(data, "train"),
    }
    # The int8 simulation quantizes the stem as export writes it; under "auto", in the two
    # groups export falls back to when the whole stem misses the agreement target. Measured
    # on the fmnist min subnet (2 epochs): simulating the whole stem left the ONNX file at
    # 97.8% with the split not helping; simulating two groups gave 98.7% (split) and 99.0%.
    requested = job.options.stem_groups
    groups = (AUTO_SPLIT_GROUPS if splittable(model) else 1) if requested == "auto" else requested
    if settings.qat_epochs:
        key["stem_groups"] = requested
    saved = job.out / FINETUNED_NAME
    tag = json.dumps(key, sort_keys=True)
    cached = read_finetuned(saved) if saved.is_file() else None
    progress: FinetuneProgress | None = None
    if cached is not None:
        changed = _changed_inputs(cached["key"], key)
        if changed:
            say(f"{saved} is from other inputs ({', '.join(changed)} changed): fine-tuning again")
        elif "progress" not in cached:
            say(f"reusing the fine-tuned weights in {saved}")
            model.load_state_dict(cached["model"])
            return model.eval()
        else:
            progress = cached["progress"]
            done = f"{progress['phase']} epoch {progress['epochs']} done"
            say(f"resuming the fine-tuning in {saved} ({done})")

    def train(
        phase: FinetunePhase,
        epochs: int,
        teacher: torch.nn.Module,
        kd_ratio: float,
        start: dict[str, torch.Tensor] | None = None,
    ) -> None:
        resume = None
        if cached is not None and progress is not None and progress["phase"] == phase:
            model.load_state_dict(cached["model"])  # the weights after its last epoch
            resume = (progress["epochs"], progress["optimizer"])

        def save(done: tuple[int, dict[str, Any]]) -> None:
            # after every epoch: a killed fine-tuning of hours loses one epoch at most
            step = FinetuneProgress(phase=phase, epochs=done[0], optimizer=done[1])
            if start is not None:
                step["start"] = start
            doc = FinetunedDocument(format=FINETUNING_FORMAT, key=tag, model=model.state_dict())
            doc["progress"] = step
            write_finetuned(saved, doc)

        train_static(
            model,
            data,
            epochs=epochs,
            lr=settings.lr,
            batch_size=settings.batch_size,
            seed=settings.seed,
            teacher=teacher,
            kd_ratio=kd_ratio,
            on_epoch=lambda epoch, loss, acc: say(
                f"{phase} epoch {epoch}/{epochs}: loss {loss:.4f}, train accuracy {acc:.4f}"
            ),
            save=save,
            resume=resume,
        )

    resumed_qat = progress is not None and progress["phase"] == "quantization-aware"
    if settings.epochs and not resumed_qat:
        say(f"fine-tuning {settings.epochs} epoch(s), distilling the largest subnet")
        largest = supernet.extract(supernet.space.max_subnet(r=subnet.r))
        recalibrate_bn(largest, bn_batches(data, subnet.r))
        train("fine-tune", settings.epochs, largest, settings.kd_ratio)
    if settings.qat_epochs:
        # The float subnet teaches its int8-simulated self: the loss is the quantization error.
        say(f"quantization-aware fine-tuning {settings.qat_epochs} epoch(s)")
        if resumed_qat and progress is not None and "start" in progress:
            model.load_state_dict(progress["start"])  # its ranges and teacher, as at its start
        # in the layout training left it in, so that a resumed run measures the same ranges
        to_training_layout(model)
        start = copy.deepcopy(model.state_dict())
        float_self = copy.deepcopy(model).eval()
        calibration = torch.from_numpy(
            calibration_images(data, subnet.r, job.options.calibration_images)
        )
        with int8_activations(model, calibration, groups=groups):
            train("quantization-aware", settings.qat_epochs, float_self, QAT_KD_RATIO, start)
    write_finetuned(
        saved, FinetunedDocument(format=FINETUNED_FORMAT, key=tag, model=model.state_dict())
    )
    return model.eval()


def _changed_inputs(saved: str, key: dict[str, Any]) -> list[str]:
    """The fields of ``key`` whose values differ from those of ``saved`` (a saved
    fine-tuning's key; one that is not JSON differs in all)."""
    try:
        old = json.loads(saved)
    except ValueError:
        old = None
    old = old if isinstance(old, dict) else {}
    now = json.loads(json.dumps(key))  # tuples as lists, as they were saved
    return [name for name in sorted(set(old) | set(now)) if old.get(name) != now.get(name)]


def resolve_tflite_form(job: ExportJob, say: Say = lambda message: None) -> GraphForm:
    """The job's TFLite graph form; "auto": the plain form where every device that runs
    TFLite files is an NPU compiler (Vela), else XNNPACK's. Devices of other files (ONNX on
    onnxruntime, the NPU simulator) have no say: with them in the export, Vela got the XNNPACK
    form and took 1.9x its prediction (walk-through). Where both kinds run TFLite, one file
    cannot suit both: ``say`` tells which device gets a form that is not its own."""
    from devices.profiles import load_profile

    if job.tflite_form != "auto":
        return job.tflite_form
    forms: dict[str, GraphForm] = {}
    for device in job.devices:
        profile = load_profile(device)
        if profile.kind == "published":
            continue  # tables only: nothing runs there (samsung-note10)
        if "tflite" in _runtime_files(profile.files_runtime)[0]:
            forms[profile.name] = graph_form(profile.files_runtime)
    if forms and set(forms.values()) == {"plain"}:
        return "plain"
    if "plain" in forms.values() and "tflite" in job.options.formats:
        npus = ", ".join(name for name, form in forms.items() if form == "plain")
        say(
            f"TFLite files in XNNPACK's graph form for {', '.join(forms)}: {npus} compiles "
            "the plain form faster; export for it on its own, or give --tflite-form plain"
        )
    return "xnnpack"


def resolve_channel_alignment(
    job: ExportJob, say: Say, *, fingerprints: Mapping[str, Fingerprint] | None = None
) -> ChannelAlignment:
    """The job's int8 ONNX channel alignment; "auto": the CPU kind (``platform.machine()``) of
    the devices that run the file on onnxruntime's CPU provider, x86 where they differ (the
    padding is worth more there than it costs elsewhere); "none" when the file's devices all
    run it on kernels of their own (a CUDA provider); this host's kind when no device runs
    int8 ONNX files (the NPU simulator and TensorRT take fp32 ONNX). SSH devices are asked, unless ``fingerprints`` (by device as given)
    has their answers: an unreachable one fails here, before the export's work."""
    import platform

    from devices import load_profile, open_device
    from devices.profiles import provider_name

    if job.align_channels != "auto":
        return job.align_channels
    if not (job.options.int8 and "onnx" in job.options.formats):
        return "none"  # no int8 ONNX file
    onnx_devices: list[str] = []
    kinds: dict[str, ChannelAlignment] = {}
    for device in job.devices:
        profile = load_profile(device)
        runtime = profile.files_runtime
        formats, precisions = _runtime_files(runtime)
        if profile.kind == "published" or "onnx" not in formats or "int8" not in precisions:
            continue  # the NPU simulator, TensorRT: fp32 ONNX in, the int8 file not run
        onnx_devices.append(profile.name)
        first = provider_name((profile.providers or ["cpu"])[0])
        if runtime != "onnxruntime" or first != "CPUExecutionProvider":
            continue
        if device in (fingerprints or {}):
            machine = (fingerprints or {})[device].machine
        elif profile.kind == "local":
            machine = platform.machine()  # the local runner runs on this host
        else:
            with open_device(device) as opened:
                machine = opened.fingerprint().machine
        kinds[profile.name] = kernel_isa(machine)
    if not onnx_devices:
        return kernel_isa(platform.machine())
    chosen = common_alignment(kinds.values())
    if set(kinds.values()) != {"x86"}:
        # Anything but today's x86 default gets a line: the reason for a different file.
        by_device = ", ".join(f"{name}: {kind}" for name, kind in kinds.items()) or (
            f"{', '.join(onnx_devices)}: kernels of their own"
        )
        say(f"int8 ONNX channels aligned for {chosen} ({by_device}); --align-channels to choose")
    return chosen


def _check_devices_run_files(job: ExportJob) -> None:
    """Refuse, before any work, a device that runs none of the files the job writes (a
    published one runs nothing and is only predicted), and two devices of one name: the card
    keeps one entry per name, so one device's measurements would replace the other's."""
    from devices.profiles import load_profile

    given: dict[str, str] = {}
    for device in job.devices:
        profile = load_profile(device)
        if profile.name in given:
            raise ExportError(
                f"--device {given[profile.name]} and --device {device} are both device "
                f"{profile.name!r}: give each --device once, each profile its own name"
            )
        given[profile.name] = device
        if why := files_refusal(profile, job.options.formats, int8=job.options.int8):
            raise ExportError(f"{why}; export those (--format, --int8) or leave this --device out")


def files_refusal(profile: DeviceProfile, formats: Sequence[str], *, int8: bool) -> str | None:
    """Why the device of ``profile`` runs none of the files an export of ``formats`` writes
    (int8 ones too with ``int8``), or None where it runs one (a published device runs
    nothing, and is only predicted)."""
    if profile.kind == "published":
        return None
    runtime = profile.files_runtime
    runs, takes = _runtime_files(runtime)
    precisions = ("fp32", "int8") if int8 else ("fp32",)
    if any(f in runs and p in takes for f in formats for p in precisions):
        return None
    return _runs_none(profile.name, runtime)


def _runtime_files(runtime: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The model formats and precisions ``runtime`` runs."""
    from latency.profiler import RUNTIME_FORMATS, RUNTIME_PRECISIONS

    return RUNTIME_FORMATS.get(runtime, MODEL_FORMATS), RUNTIME_PRECISIONS.get(runtime, PRECISIONS)


def _runs_none(device: str, runtime: str) -> str:
    formats, precisions = _runtime_files(runtime)
    return (
        f"device {device!r} runs {runtime}, which takes {'/'.join(precisions)} "
        f"{'/'.join(formats)} files"
    )


def common_alignment(kinds: Iterable[ChannelAlignment]) -> ChannelAlignment:
    """One alignment for devices of these CPU kinds: x86 if any is (unaligned, an x86 file
    ran up to 1.18x slower; the x86 padding adds a few channels' work elsewhere), else
    theirs when they agree on one, else none."""
    found = set(kinds)
    if "x86" in found:
        return "x86"
    return found.pop() if len(found) == 1 else "none"


def _profile_name(device: str) -> str:
    """The name a device profile (bundled name or YAML path) gives its device."""
    from devices.profiles import load_profile

    return load_profile(device).name


def _predictor(
    device: str, space: SearchSpace, subnet: Subnet, profiles: Path
) -> LutSumPredictor | CalibratedPredictor | None:
    """The latency predictor profiled for the device named ``device`` under ``profiles``, if
    there is one that covers the subnet's resolution; one for another space is an error."""
    from latency.predictors import load_predictor
    from latency.table import TableError

    path = profiles / device / PREDICTOR_NAME
    if not path.is_file():
        return None
    predictor = load_predictor(path)
    if predictor.header.space_id != space.id:
        raise TableError(
            f"{path} was profiled for space {predictor.header.space_id}, the subnet is from "
            f"{space.id}: run 'edgenas profile {device} --space ... --out {path.parent}' again"
        )
    return predictor if subnet.r in predictor.header.resolutions else None


def _reach_devices(
    devices: Sequence[str],
    predictors: dict[str, LutSumPredictor | CalibratedPredictor | None],
    profiles: Path,
) -> dict[str, Fingerprint]:
    """Ask every device to measure on for its fingerprint (returned by device as given)
    before the work, not after the fine-tuning and conversions: an unreachable board, a
    missing execution provider or delegate, a device Python that will not start fail here.
    A predictor measured on another machine or setup (a copied --profiles folder, two
    profiles of one name, the profile's cores, warmup or AMX setting changed since) is
    refused: its figure on the card would be another device's, and its reference model would
    scale this device's measurements."""
    from devices import load_profile, open_device

    reached = {}
    for device in devices:
        profile = load_profile(device)
        if profile.kind == "published":
            continue  # nothing runs there
        with open_device(device) as opened:
            reached[device] = fingerprint = opened.fingerprint()
            measured_with = opened.measured_with()
        predictor = predictors.get(profile.name)
        if predictor is not None:
            path = profiles / profile.name / PREDICTOR_NAME
            predictor.header.check(
                what=f"predictor {path}",
                fingerprint=fingerprint,
                measured_with=measured_with,
                device=profile.name,
                elsewhere=f"profile {profile.name} again into {path.parent} (edgenas profile), "
                "or give another --profiles",
            )
    return reached


def _no_predictor(
    device: str, name: str, space: SearchSpace, subnet: Subnet, job: ExportJob
) -> str:
    """Why the card will give ``device`` (as given: a bundled name or a profile's path,
    whose device is ``name``) no predicted latency, and the command that profiles it where
    export looks: extending a table that lacks the subnet's resolution, and for published
    tables, importing them from their folder."""
    from devices import load_profile
    from latency.predictors import load_predictor
    from once_for_all import get_space

    path = job.profiles / name / PREDICTOR_NAME
    if not path.is_file() and (job.profiles / PREDICTOR_NAME).is_file():
        # The device's own folder given as --profiles: profiling into PATH/NAME misleads.
        return (
            f"{name}: no latency prediction (no {path}): --profiles is the folder that holds "
            f"each device's folder, and {job.profiles} is a device's own (it holds a "
            f"{PREDICTOR_NAME}): give --profiles {job.profiles.parent}"
        )
    header = load_predictor(path).header if path.is_file() else None
    have = header.resolutions if header is not None else ()
    why = f"{path} does not cover r{subnet.r}" if path.is_file() else f"no {path}"
    published = load_profile(device).published
    if published is not None and subnet.r not in published.resolutions:
        return (
            f"{name}: no latency prediction: its published tables cover "
            f"{', '.join(map(str, published.resolutions))} px, not r{subnet.r}; the card has "
            "no latency for it (export a subnet at one of those for a prediction)"
        )
    try:
        bundled = get_space(space.name).id == space.id
    except ValueError:
        bundled = False
    # a space adapted to its data: the space.json training wrote beside the supernet
    space_arg = space.name if bundled else str(job.supernet.parent / SPACE_NAME)
    args = ["edgenas", "profile", device, "--space", space_arg]
    if published is not None:
        args += ["--tables", "TABLES"]
    elif header is not None:  # extended in place, as it was measured (not the defaults)
        args += ["--format", header.model_format, "--precision", header.precision]
    for r in sorted({*have, subnet.r}) if have else ():
        args += ["--resolution", str(r)]
    command = shlex.join([*args, "--out", str(path.parent)])
    if published is not None:  # nothing is measured there either
        return (
            f"{name}: no latency prediction ({why}): the card has no latency for it; import "
            f"its tables with '{command}' (TABLES: the folder of its "
            f"{published.files.format(r='R')} files)"
        )
    return (
        f"{name}: no latency prediction ({why}): the card gives the measured latency only; "
        f"profile it with '{command}'"
    )


def _check_searched_supernet(job: ExportJob, supernet: OFAMobileNetV3, warn: Say) -> None:
    """Say so where --subnet is a front searched on another supernet of the same space (one
    trained on other data, or trained further): the subnet is valid, but was chosen by the
    other one's accuracies (the card gives this one's)."""
    from once_for_all.accuracy_dataset import supernet_fingerprint

    searched = searched_supernet(job.subnet)
    if searched is not None and searched != supernet_fingerprint(supernet):
        warn(
            f"{job.subnet.partition('#')[0]} was searched on another supernet (weights "
            f"{searched}, not those of {job.supernet}): its subnet was chosen by that one's "
            "accuracies; search this supernet for a front of its own"
        )


def input_resize(data: DataBundle) -> str:
    """How an image becomes the model's input, as the subnet was trained and evaluated:
    photos read with OFA's transforms (a streamed folder, an imported supernet's, a folder
    read with resize: center-crop) are resized so that their shorter side is r / 0.875 and
    centre-cropped ("center-crop"); anything else is resized whole to r x r ("bilinear")."""
    return "center-crop" if data.train_transforms == "ofa" else "bilinear"


def _metadata(
    space: SearchSpace, subnet: Subnet, data: DataBundle, *, dynamic_batch: bool
) -> dict[str, str]:
    """What a deployed ONNX file should carry about itself (read with read_onnx_metadata),
    but for the latency predicted for it (``_prediction``), which depends on the file."""
    r = subnet.r
    return {
        "edgenas.space": space.id,
        "edgenas.subnet": subnet.to_json(),
        "edgenas.input": json.dumps(
            {
                "layout": "NCHW",
                "shape": onnx_input_shape((1, data.spec.channels, r, r), dynamic_batch),
                "dtype": "float32",
                "resize": input_resize(data),
                # as PIL's resize, and resize_batch: what the accuracy was measured with
                "antialias": True,
                **({"crop_fraction": CROP_FRACTION} if input_resize(data) == "center-crop" else {}),
            }
        ),
        "edgenas.normalization": json.dumps(
            {"formula": "(pixel / 255 - mean) / std", "mean": data.spec.mean, "std": data.spec.std}
        ),
        "edgenas.data": json.dumps(data.spec.to_dict()),
    }


def _prediction(
    predictor: LutSumPredictor | CalibratedPredictor | None,
    subnet: Subnet,
    model_format: str,
    precision: str,
    stem_groups: int,
) -> tuple[float | None, bool]:
    """The latency ``predictor`` gives the subnet as a file of this format and precision,
    its stem in ``stem_groups`` groups, and whether its table timed that split (a table
    profiled before int8 tables did times the stem whole); ``None`` where it was made for
    another kind of file (a TFLite table says nothing of the ONNX file, an fp32 one nothing
    of the int8 file)."""
    from latency.table import PUBLISHED_RUNTIME

    if predictor is None:
        return None, False
    header = predictor.header
    if header.runtime == PUBLISHED_RUNTIME:
        # Published tables (Note10's) predict the subnet, in whatever form its publisher ran
        # it: nothing of this project's runs there, and every file carries their figure.
        return predictor.predict(subnet), False
    if (header.model_format, header.precision) != (model_format, precision):
        return None, False
    split = predictor.split_stem(stem_groups) if stem_groups > 1 else None
    return (split or predictor).predict(subnet), split is not None


def _measure(
    devices: Sequence[str],
    folder: Path,
    files: Sequence[ExportedFile],
    subnet: Subnet,
    predictors: dict[str, LutSumPredictor | CalibratedPredictor | None],
    say: Say,
    checks: TestImages | str = "no test images given",
    progress: ExportProgress | None = None,
) -> dict[str, DeviceLatency]:
    """Each device measures the exported files its runtime runs, in one interleaved call.
    Where the device's predictor has a reference model, it joins the call, and the measured
    latency is also given at the predictor's baseline conditions: the figure to compare with
    the prediction on a machine whose speed drifts. Each device then classifies the test
    images ``checks`` with the files (``_check_on_device``), or is not, for the reason it
    gives. A device that ``progress`` records as done, with its profile unchanged, is not
    measured again; each device done is recorded there (in the staging folder ``folder``)."""
    from devices import load_profile, open_device
    from latency.model_cache import ModelCache
    from latency.profiler import reference_file
    from latency.reference import normalised_ms, reference_scale

    latency: dict[str, DeviceLatency] = {}
    for name in devices:
        profile = load_profile(name)
        if profile.kind == "published":
            say(f"not measured on {profile.name}: it is published tables, not a device")
            latency[profile.name] = _published_latency(
                profile, predictors.get(profile.name), subnet
            )
            continue
        profile_key = device_digest(profile, predictors.get(profile.name))
        done = progress["devices"].get(profile.name) if progress is not None else None
        if done is not None and done.get("profile") == profile_key:
            say(f"measured on {profile.name} by the interrupted export: kept")
            latency[profile.name] = done["latency"]
            continue
        with open_device(name) as device:
            fp = device.fingerprint()
            formats, precisions = _runtime_files(fp.runtime)
            runnable = [f for f in files if f.format in formats and f.precision in precisions]
            if not runnable:  # checked before the export; a device may say otherwise
                raise ExportError(
                    f"{_runs_none(device.name, fp.runtime)}; export those (--format, --int8) "
                    "or leave this --device out"
                )
            say(f"measuring {len(runnable)} file(s) on {device.name}")
            predictor = predictors.get(device.name)
            header = predictor.header if predictor is not None else None
            reference = (
                reference_file(ModelCache(), predictor.space, header)
                if predictor is not None and header is not None and header.reference
                else None
            )
            measured = _measure_files(
                device, [folder / f.name for f in runnable], header, reference
            )
            entry = DeviceLatency(fingerprint=fp.to_dict(), files={})
            for f, m in zip(runnable, measured, strict=True):
                timing = FileLatency(
                    predicted=None,
                    measured=_summary(m.to_dict()),
                    measured_at_baseline_ms=normalised_ms(m) if reference else None,
                    reference_scale=reference_scale(m) if reference else None,
                )
                groups = len(f.execution.get("stem_groups") or ())
                predicted, split = _prediction(predictor, subnet, f.format, f.precision, groups)
                timing["predicted"] = predicted
                if split:
                    timing["predicted_stem_groups"] = groups
                entry["files"][f.name] = timing
            if isinstance(checks, str):
                entry["not_checked"] = checks
            else:
                _check_on_device(device, entry, folder, checks, say)
            latency[device.name] = entry
            if progress is not None:
                progress["devices"][profile.name] = DoneDevice(profile=profile_key, latency=entry)
                save_progress(folder, progress)
    return latency


def _test_subset(test: TestImages | None, images: int) -> TestImages | str:
    """The first ``images`` of the export's test images (``spread_head``'s: each head is spread
    over the classes) that devices check the files on, or why none."""
    if test is None:
        return "the export was not verified (--no-verify)"
    if images == 0:
        return "no test images asked (--device-check-images 0, export.device_check_images: 0)"
    return TestImages(test.x[:images], test.fp32_top1[:images], test.labels[:images])


def _check_on_device(
    device: Device, entry: DeviceLatency, folder: Path, test: TestImages, say: Say
) -> None:
    """The device classifies the test images with the files it measured: each file's top-1
    agreement with PyTorch fp32 and accuracy there go into its entry (``on_device``). A
    device that cannot says why (``not_checked``)."""
    import numpy as np

    from devices.base import DeviceError

    if device.classify_refusal is not None:
        entry["not_checked"] = device.classify_refusal
        return
    names = list(entry["files"])
    say(f"checking {len(names)} file(s) on {device.name} with {len(test.x)} test images")
    try:
        classes = device.classify([folder / n for n in names], test.x, progress=say)
    except DeviceError as exc:
        # The files are written and timed: a check that fails (a timeout, a delegate that
        # fails on real data) is reported on the card, not a lost export.
        say(f"not checked on {device.name}: {exc}")
        entry["not_checked"] = f"classifying the test images failed: {exc}"
        return
    for name, top1 in zip(names, classes, strict=True):
        predicted = np.asarray(top1)
        entry["files"][name]["on_device"] = DeviceCheck(
            images=len(test.x),
            top1_agreement=float((predicted == test.fp32_top1).mean()),
            accuracy=float((predicted == test.labels).mean()),
        )


def _published_latency(
    profile: DeviceProfile,
    predictor: LutSumPredictor | CalibratedPredictor | None,
    subnet: Subnet,
) -> DeviceLatency:
    """The card's entry for a device of kind published (samsung-note10): the latency its
    tables predict for the subnet, and why no file was measured."""
    measured_on = profile.published.measured_on if profile.published else profile.name
    return DeviceLatency(
        fingerprint=predictor.header.fingerprint.to_dict() if predictor is not None else {},
        files={},
        not_measured=(
            f"not measurable: published tables (measured by their publisher on {measured_on}), "
            "no device to run the files on"
        ),
        predicted=predictor.predict(subnet) if predictor is not None else None,
    )


def _compare(latency: dict[str, DeviceLatency], result: ExportResult, min_agreement: float) -> None:
    """Per device: each file's speed-up against the fp32 file of its format, and the
    recommended file: the fastest whose top-1 agreement with PyTorch fp32 is at least
    ``min_agreement``, else the one that agrees best (flagged; the faster of equals).
    The agreement is the one measured on the device where it checked the files, fp32 files'
    too (a GPU delegate's fp16, a runtime's own int8 kernels), or the host's where that is
    lower and on more images; elsewhere an fp32 file's is taken as 1 (its parity with PyTorch
    is checked) and an int8 file's is the host's."""
    described = {f.name: f for f in result.files}
    for entry in latency.values():
        if "not_measured" in entry:
            continue  # no files: nothing to recommend
        files = entry["files"]
        median = {name: value["measured"]["median_ms"] for name, value in files.items()}
        for name, value in files.items():
            f = described[name]
            fp32 = FILE_NAMES[(f.format, "fp32")]
            value["speedup_vs_fp32"] = (
                median[fp32] / median[name] if fp32 in median and median[name] > 0 else None
            )
        agreement = {name: _agreement(value, described[name]) for name, value in files.items()}
        acceptable = [name for name in files if agreement[name] >= min_agreement]
        # A device that runs only int8 files (an NPU) still gets the best it can run, flagged.
        entry["recommended"] = min(
            acceptable or files,
            key=lambda name: (0.0 if acceptable else -agreement[name], median[name]),
            default=None,
        )
        entry["recommended_meets_accuracy"] = bool(acceptable)


def _agreement(value: FileLatency, described: ExportedFile) -> float:
    """A file's top-1 agreement with PyTorch fp32 as ``_compare`` weighs it (-1: unknown)."""
    host = described.checks.get("top1_agreement")
    if "on_device" in value:
        there = value["on_device"]
        # A check on fewer images (the first of the host's) does not outweigh the host's:
        # 99.00% on 100 images stood against 95.50% on 200, the same runtime's.
        if host is not None and there["images"] < described.checks.get("test_images", 0):
            return min(there["top1_agreement"], host)
        return there["top1_agreement"]
    if described.precision == "fp32":
        return 1.0
    return described.checks.get("top1_agreement", -1.0)


def _measure_files(
    device: Device, paths: list[Path], header: TableHeader | None, reference: Path | None
) -> list[Measurement]:
    """``paths`` measured in one call, with ``reference`` (if any) among them and the results
    normalised to ``header``'s baseline."""
    from latency.profiler import apply_reference, measure_in_batches
    from latency.reference import COPIES

    measured: list[Measurement] = []

    def store(_start: int, results: list[Measurement], ref: Measurement | None) -> None:
        measured.extend(apply_reference(header, results, ref)[1] if header else results)

    measure_in_batches(
        device, paths, batch_size=len(paths) + COPIES, on_batch=store, reference=reference
    )
    return measured


def _summary(measurement: dict[str, Any]) -> dict[str, Any]:
    """The figures of a measurement a card needs (not the simulators' per-layer detail)."""
    from devices.measurement import placement_summary

    keep = (
        "median_ms",
        "mean_ms",
        "std_ms",
        "p10_ms",
        "p90_ms",
        "min_ms",
        "n",
        "flagged",
        "init_ms",
        "first_inference_ms",
    )
    summary = {k: measurement[k] for k in keep if measurement.get(k) is not None}
    # Where the device ran the file: nodes per execution provider, or delegated ops and
    # partitions, and what fell back to the CPU (as `edgenas devices check` shows it).
    placement = measurement.get("placement")
    if placement:
        summary["placement"] = placement
        summary["placement_text"] = placement_summary(placement)
    # An NPU compiler's operators left on the CPU (Vela), each with its reason.
    fallback = (measurement.get("extra") or {}).get("cpu_fallback_ops")
    if fallback is not None:
        summary["cpu_fallback_ops"] = fallback
    return summary


def _card(
    job: ExportJob,
    subnet: Subnet,
    data: DataBundle,
    result: ExportResult,
    latency: dict[str, DeviceLatency],
    costs: dict[str, int],
) -> CardBody:
    int8 = {
        f.name: Int8Accuracy(
            accuracy=f.checks["accuracy"],
            drop=(result.accuracy_fp32 or 0.0) - f.checks["accuracy"],
            top1_agreement=f.checks["top1_agreement"],
        )
        for f in result.files
        if f.precision == "int8" and "accuracy" in f.checks
    }
    card: CardBody = {
        "name": f"{subnet.key}",
        "edgenas_version": version("edgenas"),
        "supernet": {"path": str(job.supernet)},
        "subnet": subnet.to_dict(),
        "finetune": job.finetune.__dict__
        if job.finetune.epochs or job.finetune.qat_epochs
        else None,
        "data": {**data.spec.to_dict(), "resize": input_resize(data)},
        "macs": costs["macs"],
        "params": costs["params"],
        "peak_activation_bytes": costs["peak_activation_bytes"],
        "accuracy": {
            "split": "test",
            "images": result.test_images,
            "fp32": result.accuracy_fp32,
            "int8": int8,
        },
        "files": [f.to_dict() for f in result.files],
        "inputs": result.inputs,
        "latency": latency,
        "recommendation": {
            "rule": "per device, the fastest file with a top-1 agreement with PyTorch fp32 of "
            "at least min_int8_agreement (measured on the device where it checked the files; "
            "elsewhere fp32 files count as agreeing and int8 files by the host's check), else "
            "the file that agrees best",
            "min_int8_agreement": job.options.min_int8_agreement,
        },
    }
    if result.calibration_images is not None:
        card["int8_calibration"] = {"split": "train", "images": result.calibration_images}
    return card
