"""What an interrupted export had finished, kept for its rerun: the model files written and
checked, and the devices that measured them. They stay in the export's staging folder,
``.partial-<key>`` inside the output folder, where ``<key>`` digests everything the files
depend on (the subnet's weights after BN recalibration and fine-tuning, the options, the
data, the converters' versions). A rerun with the same inputs takes the folder over; any
other export removes it, as it removes a killed export's leftovers.

A file counts as finished only once checked and recorded in ``.progress.json`` beside it,
and is taken over only while its bytes still hash as recorded: a kill in the middle of a
file leaves it to be written again."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from export.card import CardFile, DeviceLatency
from export.errors import ExportError
from export.subnet_export import ExportedFile, ExportOptions

if TYPE_CHECKING:
    from once_for_all.data import DataBundle
    from once_for_all.static_net import MobileNetV3

PROGRESS_FORMAT = "edgenas.export-progress/1"
PROGRESS_NAME = ".progress.json"  # hidden: publishing moves the staging folder's model files
STAGING_PREFIX = ".partial-"
# What writes the files: another version may write other bytes (edgenas itself: how it
# picks and decodes the images they are calibrated and checked on).
CONVERTERS = (
    "edgenas",
    "torch",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "litert-torch",
    "ai-edge-quantizer",
)


class DoneFile(TypedDict):
    file: CardFile  # ExportedFile.to_dict(): its checks and how runtimes run it
    input: dict[str, Any]  # how to feed it (the card's inputs entry)


class DoneDevice(TypedDict):
    # digest of the device's profile and predictor: either edited, the device measures again
    profile: str
    latency: DeviceLatency  # before the comparison between files (export's _compare)


class ExportProgress(TypedDict):
    format: str
    files: dict[str, DoneFile]
    devices: dict[str, DoneDevice]


def export_key(
    model: MobileNetV3,
    data: DataBundle,
    options: ExportOptions,
    metadata: Mapping[str, str],
    file_metadata: Callable[[str, int], Mapping[str, str]],
) -> str:
    """First 16 hex digits of a SHA-256 over what the exported files depend on."""
    from once_for_all.accuracy_dataset import data_fingerprint, evaluation_method

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    inputs = {
        "resolution": int(model.resolution),
        "options": asdict(options),
        "metadata": dict(metadata),
        # the predicted latencies written into each kind of file
        "file_metadata": [
            dict(file_metadata(p, g)) for p, g in (("fp32", 1), ("int8", 1), ("int8", 2))
        ],
        # calibration reads the training split, parity the validation split, checks the test
        "data": [data_fingerprint(data, split) for split in ("train", "val", "test")],
        # how a folder's images are read at the subnet's resolution (its held ones hashed)
        "eval_method": evaluation_method(data),
        "versions": {name: _version(name) for name in CONVERTERS},
    }
    digest.update(json.dumps(inputs, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def device_digest(profile: object, predictor: object | None) -> str:
    """A device's digest: its profile (a pydantic model, as ``devices.load_profile`` reads
    it) and its latency predictor (the card's predicted figures), if any."""
    text = profile.model_dump_json() if hasattr(profile, "model_dump_json") else repr(profile)
    if predictor is not None and hasattr(predictor, "to_dict"):
        text += json.dumps(predictor.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_staging(out: Path, key: str) -> tuple[Path, ExportProgress]:
    """The staging folder for an export of ``key`` in ``out`` and what it finished before,
    if an export of the same key was interrupted there; other staging folders go."""
    staging = out / f"{STAGING_PREFIX}{key}"
    try:
        for old in out.glob(f"{STAGING_PREFIX}*"):
            if old != staging:
                shutil.rmtree(old, ignore_errors=True)
        staging.mkdir(exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot write to output folder {out} ({exc.strerror or exc}): choose an --out "
            "you can write to"
        ) from None
    return staging, _read_progress(staging)


def _read_progress(staging: Path) -> ExportProgress:
    empty = ExportProgress(format=PROGRESS_FORMAT, files={}, devices={})
    try:
        doc = json.loads((staging / PROGRESS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty  # none yet, or damaged: it is only a cache
    if not isinstance(doc, dict) or doc.get("format") != PROGRESS_FORMAT:
        return empty
    files, devices = doc.get("files"), doc.get("devices")
    if not isinstance(files, dict) or not isinstance(devices, dict):
        return empty
    # An entry not of the shape written is not done (a hand-edited or damaged file).
    return ExportProgress(
        format=PROGRESS_FORMAT,
        files={
            name: cast(DoneFile, entry)
            for name, entry in files.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("file"), dict)
            and isinstance(entry.get("input"), dict)
        },
        devices={
            name: cast(DoneDevice, entry)
            for name, entry in devices.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("profile"), str)
            and isinstance(entry.get("latency"), dict)
        },
    )


def save_progress(staging: Path, progress: ExportProgress) -> None:
    from once_for_all.files import write_json

    write_json(staging / PROGRESS_NAME, progress)


def finished_file(
    staging: Path, progress: ExportProgress, name: str
) -> tuple[ExportedFile, dict[str, Any]] | None:
    """The file ``name`` as a previous run finished it, if it is still there unchanged."""
    done = progress["files"].get(name)
    if done is None:
        return None
    try:
        described = ExportedFile.from_dict(done["file"])
        content = (staging / name).read_bytes()
    except (OSError, KeyError, TypeError, AttributeError):
        return None
    if hashlib.sha256(content).hexdigest() != described.sha256:
        return None
    return described, done["input"]
