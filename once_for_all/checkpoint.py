"""Supernet checkpoints: written atomically, loaded without unpickling arbitrary objects."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import torch
from torch import Tensor

from once_for_all.data import DataBundle, DataSpec, load_data
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.errors import EdgenasError, one_line
from once_for_all.files import write_torch
from once_for_all.search_space import SearchSpace

CHECKPOINT_FORMAT = "edgenas.supernet/1"


class CheckpointError(EdgenasError, ValueError):
    """A checkpoint that is missing, corrupt or made for something else."""


class CheckpointMetadata(TypedDict, total=False):
    """What the caller of the trainer records beside the training state (``edgenas train``),
    or the import records instead of it (``edgenas import``)."""

    recipe: dict[str, Any]  # the recipe, as loaded
    data: dict[str, Any]  # load_data's keyword arguments: how to load the same data again
    imported: dict[str, Any]  # imported weights (ofa_import): their source, file and sha256


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
    half a file)."""
    write_torch(path, {"format": CHECKPOINT_FORMAT, **body})


def load_checkpoint(path: str | Path) -> CheckpointDocument:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {p} not found: train one with 'edgenas train RECIPE' or check the path"
        )
    try:
        with warnings.catch_warnings():
            # torch warns about legacy pickle files before failing; our error says it better.
            warnings.simplefilter("ignore")
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}") from None
    except Exception as exc:
        # Bytes that are not a checkpoint can fail anywhere in torch's readers and unpicklers
        # (RuntimeError, UnpicklingError, EOFError, but also IndexError, KeyError, AssertionError...).
        raise CheckpointError(
            f"checkpoint {p} is corrupt or not an edgenas checkpoint ({one_line(exc, limit=120)}): retrain or restore it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{p} is not an edgenas supernet checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    return cast(CheckpointDocument, payload)


def data_settings(payload: CheckpointDocument, path: str | Path) -> dict[str, Any]:
    """The data settings (``load_data``'s keyword arguments) a checkpoint records: what the
    commands that evaluate or calibrate its subnets load."""
    if "data" in payload:
        return payload["data"]
    imported = payload.get("imported")
    if imported is not None:
        raise CheckpointError(
            f"checkpoint {path} holds {imported.get('ofa_net_id', 'a supernet')} "
            f"{imported.get('source', 'imported')}, which records no data to evaluate or "
            "calibrate its subnets on: this command needs a supernet trained with 'edgenas train'"
        )
    raise CheckpointError(
        f"checkpoint {path} does not record its data settings: retrain it with 'edgenas train'"
    )


def load_training_data(path: str | Path, payload: CheckpointDocument) -> DataBundle:
    """The data the checkpoint at ``path`` was trained on, loaded again from its recorded
    settings, and checked against its recorded data spec: data replaced since (grayscale for
    RGB, other classes, another size) would give wrong accuracies or fail deep in a conv."""
    settings = data_settings(payload, path)
    data = load_data(**settings)
    trained = DataSpec.from_dict(payload["data_spec"])
    now = data.spec
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
    return data


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_supernet(path: str | Path) -> tuple[OFAMobileNetV3, DataSpec, CheckpointDocument]:
    """The trained supernet, the data spec it was trained on, and the checkpoint's metadata."""
    payload = load_checkpoint(path)
    try:
        space = SearchSpace.from_dict(payload["space"])
        spec = DataSpec.from_dict(payload["data_spec"])
        model = OFAMobileNetV3(space)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not hold a valid supernet ({one_line(exc, limit=160)})"
        ) from None
    model.eval()
    return model, spec, payload
