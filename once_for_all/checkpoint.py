"""Supernet checkpoints: written atomically, loaded without unpickling arbitrary objects."""

from __future__ import annotations

import dataclasses
import errno
import logging
import pickle
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import torch
from torch import Tensor

from once_for_all.data import (
    DataBundle,
    DataSpec,
    StreamBundle,
    image_folder_classes,
    load_data,
    stream_image_folder,
)
from once_for_all.data.image_stream import hold_in_memory
from once_for_all.data.load import BUILTIN_SOURCES, names_a_path
from once_for_all.data.source_digest import SPLIT, digest_change, source_digest
from once_for_all.data.splits import validation_indices
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.errors import EdgenasError, one_line
from once_for_all.evaluation import BN_IMAGES
from once_for_all.files import not_a_torch_file, torch_file_head, torch_load_failure, write_torch
from once_for_all.search_space import SearchSpace

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "edgenas.supernet/1"


class CheckpointError(EdgenasError, ValueError):
    """A checkpoint that is missing, corrupt or made for something else."""


class CheckpointMetadata(TypedDict, total=False):
    """What the caller of the trainer records beside the training state (``edgenas train``),
    or the import records instead of it (``edgenas import``)."""

    recipe: dict[str, Any]  # the recipe, as loaded
    data: dict[str, Any]  # load_data's keyword arguments: how to load the same data again
    # training streamed data's folder (image_stream): the commands after it stream it too, or
    # decode only the images they read, never the whole folder
    streamed: bool
    imported: dict[str, Any]  # imported weights (ofa_import): their source, file and sha256
    # the supernet training started from (transfer.InitialWeights.record): path, sha256, ...
    init_from: dict[str, Any]
    # what data.source held when training started (data.source_digest): the commands after
    # it refuse a source that changed since (not in checkpoints before it was recorded)
    source_digest: str


class CheckpointBody(CheckpointMetadata):
    """A progressive-shrinking run's state (``ProgressiveShrinkingTrainer``): tensors and plain
    containers only, so it loads with ``weights_only=True``."""

    space: dict[str, object]  # SearchSpace.to_dict()
    data_spec: dict[str, object]  # DataSpec.to_dict()
    model: dict[str, Tensor]  # the supernet's state_dict
    teacher: dict[str, Any] | None  # {"config", "state"} of the distillation teacher
    optimizer: dict[str, Any] | None
    weight_average: NotRequired[dict[str, Any] | None]  # not in checkpoints before EMA
    phase_index: int
    epoch: int  # epochs done in that phase
    history: list[dict[str, Any]]  # one record per epoch
    train_config: dict[str, Any]  # TrainConfig.to_dict()
    rng: dict[str, Tensor]
    complete: bool  # every phase done


class CheckpointDocument(CheckpointBody):
    """A supernet checkpoint file: its format tag, then the body."""

    format: str


def save_checkpoint(path: Path, body: CheckpointBody) -> None:
    """Write ``body`` (tagged with the format) as a checkpoint, atomically (a kill never leaves
    half a file). Tensors are saved from host memory, so that a checkpoint trained on a GPU
    loads with a plain ``torch.load`` on a machine without one, as OFA's published files do."""
    write_torch(path, _on_host({"format": CHECKPOINT_FORMAT, **body}))


def _on_host(obj: Any) -> Any:
    """``obj`` with every tensor in its dicts, lists and tuples moved to the CPU."""
    if isinstance(obj, Tensor):
        return obj.cpu()  # the same tensor when it is there already
    if isinstance(obj, dict):
        return {key: _on_host(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_on_host(value) for value in obj)
    return obj


# What to do about a checkpoint that does not load (load_checkpoint's damaged_fix)
DAMAGED_FIX = "retrain or restore it"


def load_checkpoint(
    path: str | Path, *, damaged_fix: str = DAMAGED_FIX, mmap: bool = False
) -> CheckpointDocument:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only); a
    corrupt file's error ends in ``damaged_fix``. ``mmap`` maps the tensors rather than
    reading them: for its records alone."""
    p = Path(path)
    if p.is_dir():
        inside = p / "supernet.pt"
        hint = f" ({inside})" if inside.is_file() else ""
        raise CheckpointError(f"checkpoint {p} is a folder: give the checkpoint file in it{hint}")
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {p} not found: train one with 'edgenas train RECIPE' or check the path"
        )
    try:
        head = torch_file_head(p)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}") from None
    foreign = not_a_torch_file(head)
    if foreign:
        raise _corrupt(p, foreign, damaged_fix)
    try:
        with warnings.catch_warnings():
            # torch warns about legacy pickle files before failing; our error says it better.
            warnings.simplefilter("ignore")
            payload = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as exc:
        if exc.errno in _IO_ERRNOS:
            raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}") from None
        # torch's zip reader reports some truncated files as EINVAL ("Invalid argument").
        raise _corrupt(p, "truncated or damaged", damaged_fix) from None
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _corrupt(p, torch_load_failure(head, exc), damaged_fix) from None
        # torch's own text advises weights_only=False, which edgenas never does.
        raise _corrupt(
            p,
            "it holds Python objects besides tensors and plain containers, never unpickled here",
            damaged_fix,
        ) from None
    except Exception as exc:
        raise _corrupt(p, torch_load_failure(head, exc), damaged_fix) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{p} is not an edgenas supernet checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}): train one with 'edgenas train RECIPE', or import OFA's "
            "supernet file with 'edgenas import ofa-supernet FILE --out DIR' and give "
            "DIR/supernet.pt"
        )
    return cast(CheckpointDocument, payload)


# Failures of the disk or of permissions, where the file itself may be fine.
_IO_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EIO, errno.EISDIR, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
)


def _corrupt(path: Path, why: str, fix: str = DAMAGED_FIX) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is corrupt or not an edgenas checkpoint ({why}): {fix}"
    )


@dataclass(frozen=True)
class FolderReads:
    """How many images a command decodes into memory from a folder that is not decoded
    whole (one training streamed, or an imported supernet's ImageNet-layout folder):
    ``train`` of the training split (int8 calibration, export's fine-tune), ``val`` of the
    validation split (search, export's parity check), ``test`` of the test split (val/ of
    an ImageNet folder: export's checks), besides the ``BN_IMAGES`` that BN is recalibrated
    on. Each image costs 3 x 224 x 224 bytes (147 KiB): a command sets to 0 what it does not
    use. ``eval`` streams its split: ``val`` and ``test`` bound what it evaluates."""

    train: int = BN_IMAGES
    val: int = 2000
    test: int = 5000


def data_settings(
    payload: CheckpointDocument,
    path: str | Path,
    *,
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """The data settings (``load_data``'s keyword arguments) the commands that evaluate or
    calibrate the checkpoint's subnets load: those it records, or, for one that records none
    (an imported supernet), ``folder`` read with the recorded spec's size, OFA's eval
    transform (a centre crop) and the spec's fixed normalisation (``stream_folder_data``
    streams it). ``folder`` for a checkpoint that records its data must be that data."""
    if "data" in payload:
        settings = payload["data"]
        recorded = str(settings.get("source"))
        if folder is None:
            _require_source(recorded, path)
            return settings
        if not _same_source(str(folder), recorded):
            _require_same_content(payload, str(folder), recorded, path)
            return settings | {"source": str(folder)}  # the same data, moved
        return settings
    imported = payload.get("imported")
    if imported is None:
        raise CheckpointError(
            f"checkpoint {path} does not record its data settings: retrain it with 'edgenas train'"
        )
    if folder is None:
        raise CheckpointError(
            f"checkpoint {path} holds {imported.get('ofa_net_id', 'a supernet')} "
            f"{imported.get('source', 'imported')}, which records no data to evaluate or "
            "calibrate its subnets on: give --data FOLDER, an ImageNet-layout folder "
            "(FOLDER/train/<wnid>/*.JPEG, FOLDER/val/<wnid>/*.JPEG)"
        )
    spec = DataSpec.from_dict(payload["data_spec"])
    return {
        "source": str(folder),
        "image_size": spec.image_size,
        "resize": "center-crop",
        "mean": list(spec.mean),
        "std": list(spec.std),
    }


def _same_source(given: str, recorded: str) -> bool:
    if given == recorded:
        return True
    a, b = Path(given).expanduser(), Path(recorded).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _require_source(recorded: str, path: str | Path) -> None:
    """Refuse a recorded data folder or file that is gone (moved, deleted), saying how to
    give its new place, before the loader calls it an unknown data source."""
    if names_a_path(recorded) and not Path(recorded).expanduser().exists():
        raise CheckpointError(
            f"the data {path} was trained on, {recorded}, does not exist (moved or deleted): "
            "give its new place with --data (in a recipe, data.source), or restore it"
        )


def _require_same_content(
    payload: CheckpointDocument, given: str, recorded: str, path: str | Path
) -> None:
    """Refuse ``given`` as the checkpoint's data unless it holds what training recorded of
    its source (``source_digest``): the same data, moved or copied elsewhere."""
    trained_on = (
        f"data {given}: checkpoint {path} was trained on {recorded}, the only data its "
        "subnets are evaluated on"
    )
    if recorded in BUILTIN_SOURCES:
        raise CheckpointError(
            f"{trained_on}: leave out --data (in a recipe, give that data.source)"
        )
    if given in BUILTIN_SOURCES:  # a data set's name, not a missing path
        raise CheckpointError(
            f"{trained_on}: give that data (or where it moved), or leave out --data (in a "
            "recipe, give that data.source)"
        )
    if not Path(given).expanduser().exists():
        raise CheckpointError(
            f"data {given} does not exist: give the data {path} was trained on ({recorded}, "
            "or where it moved), or leave out --data"
        )
    digest = payload.get("source_digest")
    if digest is None or digest_change(digest, str(source_digest(given, like=digest))) not in (
        None,
        "held-out",  # said when the data is loaded (_check_source)
    ):
        why = (
            "records no digest of it to compare" if digest is None else f"{given} holds other files"
        )
        raise CheckpointError(
            f"{trained_on}, and {why}: give that data (or where it moved), or leave out "
            "--data (in a recipe, give that data.source)"
        )


def evaluated_on_held_folder(path: str | Path) -> bool:
    """Whether the commands after training evaluate the supernet at ``path`` on a folder
    they do not hold whole (one training streamed, or an imported supernet's): the data
    whose evaluation methods 3 and 4 changed (``accuracy_dataset.evaluation_method``).
    Read memory-mapped: the weights are not loaded."""
    payload = load_checkpoint(path, mmap=True)
    return "data" not in payload or bool(payload.get("streamed"))


def load_training_data(
    path: str | Path,
    payload: CheckpointDocument,
    *,
    folder: str | Path | None = None,
    reads: FolderReads = FolderReads(),
) -> DataBundle:
    """The data the checkpoint at ``path`` was trained on, loaded again from its recorded
    settings, and checked against its recorded data spec: data replaced since (grayscale for
    RGB, other classes, another size) would give wrong accuracies or fail deep in a conv.
    For an imported supernet, ``folder`` (see ``data_settings``) must hold as many class
    folders as the spec has classes; the bundle's class names are the folder's. A folder that
    training streamed is not decoded whole: ``reads`` images of training's own splits are
    (``hold_in_memory``)."""
    # A folder is listed as eval streams it, so that one subnet's accuracy is the same in
    # every command (an imported supernet's val split held out of all of train/).
    bundle = None
    if "data" not in payload:
        bundle = stream_folder_data(path, payload, folder=folder, reads=reads)
    elif payload.get("streamed"):
        bundle = _stream_recorded(path, payload, folder=folder, reads=reads, workers=None)
    if bundle is not None:
        return hold_in_memory(bundle, train=reads.train, val=reads.val, test=reads.test)
    settings = data_settings(payload, path, folder=folder)
    _check_source(payload, settings, path)
    data = load_data(**settings)
    _check_spec(data.spec, DataSpec.from_dict(payload["data_spec"]), settings, path)
    return data


def _check_spec(
    now: DataSpec,
    trained: DataSpec,
    settings: dict[str, Any],
    path: str | Path,
) -> None:
    """Refuse data that no longer matches the checkpoint's data spec."""
    for what, then, found in (
        ("channels", trained.channels, now.channels),
        ("image size", trained.image_size, now.image_size),
        ("classes", list(trained.class_names), list(now.class_names)),
    ):
        if then != found:
            raise CheckpointError(
                f"the data at {settings.get('source')} no longer matches what {path} was "
                f"trained on ({what}: {_short(found)} now, {_short(then)} then): restore that "
                "data, or train a supernet on the new data"
            )


def _check_source(payload: CheckpointDocument, settings: dict[str, Any], path: str | Path) -> None:
    """Refuse a data source whose files changed since training (``source_digest``): its
    validation split, drawn from the training images, would hold images training saw."""
    recorded = payload.get("source_digest")
    if recorded is None:
        return
    source = str(settings.get("source"))
    now = source_digest(source, like=recorded)
    if now is None:  # a missing source: loading it says so
        return
    change = digest_change(recorded, now)
    if change == "held-out":
        # Training read train/ alone: its data and validation split are as they were.
        log.warning(
            "the held-out images of %s (test/ or val/) changed since %s was trained: test "
            "accuracies are on the images there now",
            source,
            path,
        )
    elif change is not None:
        where = " in train/" if recorded.startswith(SPLIT) else ""
        raise CheckpointError(
            f"the data at {source} changed since {path} was trained on it (files added, "
            f"removed or rewritten{where}): its validation split would now hold other images, "
            "some of them training images; restore that data, or train a supernet on the new "
            "data"
        )


def open_training_data(
    path: str | Path,
    payload: CheckpointDocument,
    *,
    folder: str | Path | None = None,
    reads: FolderReads = FolderReads(),
    workers: int | None = None,
) -> DataBundle | StreamBundle:
    """The data the checkpoint's subnets are evaluated on, as an evaluation reads it: a folder
    that training streamed (or an imported supernet's ``folder``) streamed, with training's
    own validation hold-out, so the val split is images training never saw; anything else
    loaded into memory (``load_training_data``). ``reads.test`` bounds a streamed test split
    (0: all of it); ``workers`` decode processes (default: the core count)."""
    if "data" not in payload:
        return stream_folder_data(path, payload, folder=folder, reads=reads, workers=workers)
    if not payload.get("streamed"):
        return load_training_data(path, payload, folder=folder, reads=reads)
    return _stream_recorded(path, payload, folder=folder, reads=reads, workers=workers)


def _stream_recorded(
    path: str | Path,
    payload: CheckpointDocument,
    *,
    folder: str | Path | None,
    reads: FolderReads,
    workers: int | None,
) -> StreamBundle:
    """The folder training streamed, listed with training's own splits (the same val
    hold-out) and normalisation, its test split bounded by ``reads.test`` (0: all of it),
    checked against the checkpoint's data spec; ``folder`` (--data), if given, must be it."""
    settings = data_settings(payload, path, folder=folder)
    _check_source(payload, settings, path)
    bundle = stream_image_folder(
        Path(settings["source"]).expanduser(),
        image_size=settings["image_size"],
        channels=len(settings["mean"]),
        mean=settings["mean"],
        std=settings["std"],
        val_size=settings["val_size"],
        seed=settings["seed"],
        train_limit=settings.get("train_limit"),
        test_limit=reads.test or None,
        workers=workers,
    )
    _check_spec(bundle.spec, DataSpec.from_dict(payload["data_spec"]), settings, path)
    return bundle


def _check_folder_classes(folder: Path, trained: DataSpec, path: str | Path) -> None:
    # OFA's labels index the sorted synset folders
    classes = image_folder_classes(folder)
    if len(classes) != trained.num_classes:
        raise CheckpointError(
            f"data folder {folder} has {len(classes)} class folders, {path} "
            f"classifies {trained.num_classes} ({trained.name}): give the folder holding "
            f"all {trained.num_classes} class folders (train/<wnid>/, val/<wnid>/)"
        )


def stream_folder_data(
    path: str | Path,
    payload: CheckpointDocument,
    *,
    folder: str | Path | None,
    reads: FolderReads = FolderReads(),
    workers: int | None = None,
) -> StreamBundle:
    """``load_training_data``'s folder for an imported supernet, listed for streaming instead of
    decoded into memory: ``imported_val_size`` images held out of train/ (seed 0) as the val
    split, whatever the command (the rest of train/ is where BN's images are drawn from, so a
    subnet's accuracy does not depend on how many images a command evaluates), ``reads.test``
    images of val/ spread over the classes (``load_data``'s choice) as the test split (all
    of val/ when 0); the recorded spec's size, channels and normalisation; ``workers`` decode
    processes (default: the core count). The same refusals as ``load_training_data``."""
    if "data" in payload:
        raise CheckpointError(
            f"checkpoint {path} records the data it was trained on: load it with "
            "load_training_data (only an imported supernet's folder is streamed)"
        )
    settings = data_settings(payload, path, folder=folder)
    trained = DataSpec.from_dict(payload["data_spec"])
    source = Path(settings["source"])
    _check_folder_classes(source, trained, path)
    listed = stream_image_folder(
        source,
        image_size=trained.image_size,
        channels=trained.channels,
        mean=trained.mean,
        std=trained.std,
        val_size=0,
        seed=0,
        test_limit=reads.test or None,
        workers=workers,
    )
    images = len(listed.train)
    kept, held = validation_indices(
        images, val_size=imported_val_size(images), seed=0, train_limit=None, name=source.name
    )
    train = listed.train
    return dataclasses.replace(
        listed, train=train.select(kept.numpy()), val=train.select(held.numpy())
    )


# OFA holds 10,000 ImageNet training images out as its validation split (valid_size in its
# train_ofa_net.py).
IMPORTED_VAL_SIZE = 10_000


def imported_val_size(train_images: int) -> int:
    """The validation images held out of an imported supernet's train/ folder of
    ``train_images``: OFA's 10,000, or a tenth of a smaller folder."""
    return min(IMPORTED_VAL_SIZE, train_images // 10)


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def require_complete(payload: CheckpointDocument, path: str | Path, *, role: str = "") -> None:
    """Refuse a training checkpoint whose schedule has not finished (a run's checkpoint.pt
    mid-run): most of its subnets are not trained yet. ``role`` prefixes the path
    (``"init_from "``)."""
    if not payload.get("complete"):
        raise CheckpointError(
            f"{role}{path} is an unfinished training checkpoint: finish it (edgenas train "
            "--resume) and give its supernet.pt"
        )


def state_mismatch(
    state: object, expected: Mapping[str, Tensor], *, any_shape: Collection[str] = ()
) -> str:
    """How the weights ``state`` differ from the state dict a model ``expected``, in words
    (empty: they fit): the first unknown or missing key, or the first tensor of another shape
    (but those named in ``any_shape``). torch's own error spans many lines."""
    if not isinstance(state, dict):
        return f"its weights are a {type(state).__name__}, not a dict of tensors"
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    for keys, what in ((unknown, "unknown key"), (missing, "missing key")):
        if keys:
            return f"{what} {keys[0]!r}, {len(keys)} in all"
    for key, tensor in state.items():
        if not isinstance(tensor, Tensor):
            return f"{key} is a {type(tensor).__name__}, not a tensor"
        if key not in any_shape and tensor.shape != expected[key].shape:
            return f"{key} has shape {list(tensor.shape)}, the supernet {list(expected[key].shape)}"
    return ""


def load_supernet(path: str | Path) -> tuple[OFAMobileNetV3, DataSpec, CheckpointDocument]:
    """The trained supernet, the data spec it was trained on, and the checkpoint's metadata."""
    payload = load_checkpoint(path)
    try:
        space = SearchSpace.from_dict(payload["space"])
        spec = DataSpec.from_dict(payload["data_spec"])
        model = OFAMobileNetV3(space)
        mismatch = state_mismatch(payload["model"], model.state_dict())
        if not mismatch:
            model.load_state_dict(payload["model"])
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not hold a valid supernet ({one_line(exc, limit=160)})"
        ) from None
    if mismatch:
        raise CheckpointError(
            f"checkpoint {path} does not hold a valid supernet ({mismatch}, for space "
            f"{space.id}): retrain or restore it"
        )
    model.eval()
    return model, spec, payload
