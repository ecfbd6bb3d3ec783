"""Start training from another supernet's weights (a recipe's ``train.init_from``): a
``supernet.pt`` that ``edgenas train`` or ``edgenas import ofa-supernet`` wrote, transferred
to new data whose classes may differ.

Every weight is loaded as it is, in the checkpoint's channel order (an imported OFA
supernet's order is OFA's), except the classifier, which keeps its fresh initialisation when
the classes differ. A later channel sort keeps in front the channels of every expand ratio
the weights were already trained at (``trained_expand_ratios``), as OFA's second expand
phase does for the ratios of its first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from once_for_all.checkpoint import (
    CheckpointDocument,
    CheckpointError,
    load_checkpoint,
    require_complete,
    state_mismatch,
)
from once_for_all.data import DataSpec
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.errors import one_line
from once_for_all.files import file_sha256
from once_for_all.search_space import SearchSpace

# The classifier's state dict keys (once_for_all.head): the only weights that depend on the classes.
CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


@dataclass(frozen=True)
class InitialWeights:
    """A checkpoint's supernet as a starting point: its space, the data spec it was trained
    on (its normalisation is what the weights expect), its weights, and the expand ratios
    its subnets were trained at."""

    path: Path
    sha256: str
    space: SearchSpace
    spec: DataSpec
    state: dict[str, Tensor]
    expand_ratios: tuple[int, ...]
    # A start as a training checkpoint recorded it (``recorded``): its words, not the file's
    recorded_start: dict[str, Any] | None = None

    @classmethod
    def recorded(cls, payload: CheckpointDocument) -> InitialWeights | None:
        """The start a training checkpoint records (``init_from``), without its file: what
        resuming needs of it (the normalisation the run reads its data with, the expand
        ratios its weights came trained at, its record). The run's own weights win over the
        file, which may be gone or replaced since. None where the run had no start."""
        start = payload.get("init_from")
        if start is None:
            return None
        try:
            data = DataSpec.from_dict(payload["data_spec"])
            settings = payload["data"]
            spec = dataclasses.replace(
                data, mean=tuple(settings["mean"]), std=tuple(settings["std"])
            )
            return cls(
                Path(start["path"]),
                str(start["sha256"]),
                SearchSpace.from_dict(payload["space"]),
                spec,
                {},
                tuple(int(e) for e in start["expand_ratios"]),
                recorded_start=dict(start),
            )
        except (KeyError, TypeError, ValueError):
            return None  # an older record: the file is read as before

    def record(self, data: DataSpec) -> dict[str, Any]:
        """What a run records of its start (the checkpoint's ``init_from``)."""
        if self.recorded_start is not None:
            return self.recorded_start
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "space": self.space.id,
            "classifier": "reset" if self.resets_classifier(data) else "kept",
            "expand_ratios": list(self.expand_ratios),
        }

    def resets_classifier(self, data: DataSpec) -> bool:
        """Whether ``data``'s classes (their count or names) differ from those the weights
        were trained on, so that the classifier starts afresh."""
        if self.recorded_start is not None:
            return self.recorded_start.get("classifier") == "reset"
        return data.class_names != self.spec.class_names

    def check_space(self, space: SearchSpace) -> None:
        """Refuse a space the weights cannot start: it must be the checkpoint's but for its
        number of classes (input channels are named on their own)."""
        mine = self.space
        # The whole space setting: following a fix that named less met the next refusal
        # (the name fixed, then the channels; walk-through).
        setting = (
            f"space: {{name: {mine.name}, in_channels: {mine.in_channels}, num_classes: "
            f"{space.num_classes}}}"
        )
        same = dataclasses.replace(mine, num_classes=space.num_classes)
        if (
            space.in_channels != mine.in_channels
            and same.id == dataclasses.replace(space, in_channels=mine.in_channels).id
        ):
            raise CheckpointError(
                f"init_from {self.path} takes {mine.in_channels} input channel(s), the recipe's "
                f"space {space.in_channels}: set {setting}, or train from scratch (leave "
                "init_from out)"
            )
        if same.id != space.id:
            a, b = dataclasses.asdict(same), dataclasses.asdict(space)
            fields = [k for k in a if a[k] != b[k]] or ["content"]
            raise CheckpointError(
                f"init_from {self.path} holds a supernet of space {mine.id}, not the recipe's "
                f"{space.id} ({', '.join(fields)} differ{'s' if len(fields) == 1 else ''}): set "
                f"{setting}, or give a supernet of the recipe's space"
            )

    def load_into(self, model: OFAMobileNetV3, data: DataSpec) -> None:
        """Copy the weights into ``model`` (built for ``data``'s classes), all of them strictly
        but the classifier, which keeps its initialisation when the classes differ."""
        target = model.state_dict()
        reset = self.resets_classifier(data)
        mismatch = state_mismatch(self.state, target, any_shape=CLASSIFIER_KEYS if reset else ())
        if mismatch:
            raise CheckpointError(
                f"init_from {self.path}: {mismatch}, for a supernet of space {self.space.id}: "
                "the file is damaged; re-create it"
            )
        state = dict(self.state)
        if reset:
            state |= {key: target[key] for key in CLASSIFIER_KEYS}
        model.load_state_dict(state)


def read_initial_weights(path: str | Path) -> InitialWeights:
    """A finished supernet checkpoint at ``path`` as a starting point; anything else (a
    missing file, another kind of file, an unfinished training checkpoint) is refused in one
    line."""
    p = Path(path).expanduser()
    try:
        payload = load_checkpoint(p)
    except CheckpointError as exc:
        raise CheckpointError(f"init_from: {one_line(exc)}") from None
    require_complete(payload, p, role="init_from ")
    try:
        space = SearchSpace.from_dict(payload["space"])
        spec = DataSpec.from_dict(payload["data_spec"])
        state = dict(payload["model"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(
            f"init_from {p} does not hold a valid supernet ({one_line(exc, limit=160)})"
        ) from None
    return InitialWeights(p, file_sha256(p), space, spec, state, trained_ratios(payload, space))


def trained_ratios(payload: CheckpointDocument, space: SearchSpace) -> tuple[int, ...]:
    """The expand ratios the checkpoint's subnets were trained at: every one of the space's
    for an imported OFA supernet (OFA trained them all), else those its phases sampled and
    those of its own start (``init_from``)."""
    if "imported" in payload:
        return space.expand_ratios
    phases = payload.get("train_config", {}).get("phases", ())
    ratios = {e for phase in phases for e in phase.get("e") or ()}
    ratios |= set(payload.get("init_from", {}).get("expand_ratios", ()))
    return tuple(sorted(ratios))
