"""Import OFA's published MobileNetV3 supernets (``ofa_mbv3_d234_e346_k357_w1.0`` and
``_w1.2``) as edgenas supernet checkpoints.

OFA's state dict fills the supernet of space ``ofa-mbv3-w1.0`` or ``ofa-mbv3-w1.2`` one
tensor to one tensor: only the names differ, and the kernel-transform matrices are used the
same way (``F.linear`` of the flattened kernel centre with the matrix, in both codebases), so
they are copied as they are. The weights are never re-sorted: the elastic expand ratios take
channel prefixes in OFA's order.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from once_for_all.checkpoint import CheckpointBody, save_checkpoint
from once_for_all.data import DataSpec
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.errors import EdgenasError
from once_for_all.files import not_a_torch_file, torch_load_failure
from once_for_all.search_space import SearchSpace, get_space

# OFA's net id (ofa.model_zoo.ofa_net) of each width, and edgenas's space for it.
OFA_NETS = {
    "1.0": ("ofa_mbv3_d234_e346_k357_w1.0", "ofa-mbv3-w1.0"),
    "1.2": ("ofa_mbv3_d234_e346_k357_w1.2", "ofa-mbv3-w1.2"),
}
SOURCE = "imported from OFA"

# OFA trained on ImageNet at 224 px with torchvision's normalisation. Its labels are the
# indices of the sorted synset folders (ImageFolder's order); the class names are those
# indices, as edgenas has no list of synsets.
IMAGENET_SPEC = DataSpec(
    name="imagenet",
    channels=3,
    image_size=224,
    num_classes=1000,
    class_names=tuple(str(i) for i in range(1000)),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)

_FIX = "give one of OFA's ofa_mbv3_d234_e346_k357_w1.0 / _w1.2 files (see README)"
# Where OFA's model zoo (ofa.model_zoo.ofa_net) downloads its supernets from.
OFA_NETS_URL = "https://raw.githubusercontent.com/han-cai/files/master/ofa/ofa_nets/"


class OfaImportError(EdgenasError, ValueError):
    """A file that is not an OFA MobileNetV3 supernet, or not the one asked for."""


@dataclass(frozen=True)
class ImportedSupernet:
    """An OFA supernet as edgenas holds it, and where it came from."""

    space: SearchSpace
    state: dict[str, Tensor]  # the edgenas supernet's state dict
    source: str  # the file's name
    sha256: str  # of the file's bytes
    width: str  # "1.0" or "1.2"

    @property
    def ofa_net_id(self) -> str:
        return OFA_NETS[self.width][0]

    @property
    def parameters(self) -> int:
        return sum(t.numel() for k, t in self.state.items() if _is_parameter(k))


def ofa_name(name: str) -> str:
    """OFA's state dict name of the edgenas supernet's tensor ``name`` (``conv`` spelling)."""
    head, _, rest = name.partition(".")
    if head == "stem":
        return f"first_conv.{rest}"
    if head == "first_block":
        part, _, tail = rest.partition(".")
        return f"blocks.0.conv.{_FIRST_BLOCK[part]}.{tail}"
    if head == "blocks":
        index, _, tail = rest.partition(".")
        if m := re.fullmatch(r"depthwise\.transform_(\d+to\d+)", tail):
            return f"blocks.{int(index) + 1}.conv.depth_conv.conv.{m[1]}_matrix"
        for ours, theirs in _BLOCK_PARTS:
            if tail.startswith(ours):
                return f"blocks.{int(index) + 1}.conv.{theirs}{tail[len(ours) :]}"
    if head in _HEAD:
        return f"{_HEAD[head]}.{rest}"
    raise ValueError(f"no OFA name for {name}")  # a supernet layout this module does not know


_FIRST_BLOCK = {"depthwise": "depth_conv", "project": "point_linear"}
_BLOCK_PARTS = (
    ("expand_conv.", "inverted_bottleneck.conv.conv."),
    ("expand_bn.", "inverted_bottleneck.bn.bn."),
    ("depthwise.", "depth_conv.conv.conv."),
    ("depthwise_bn.", "depth_conv.bn.bn."),
    ("se.", "depth_conv.se.fc."),
    ("project_conv.", "point_linear.conv.conv."),
    ("project_bn.", "point_linear.bn.bn."),
)
_HEAD = {
    "final_expand": "final_expand_layer",
    "feature_mix": "feature_mix_layer",
    "classifier": "classifier.linear",
}
# The renamings OFA's own OFAMobileNetV3.load_state_dict applies to older files, tried in
# this order (the first that matches applies): its first releases called each block's layer
# mobile_inverted_conv (now conv), and nested the dynamic layers' conv, bn and linear
# differently.
_OLD_BLOCK = (".mobile_inverted_conv.", ".conv.")
_OLD_NESTING = (
    (".bn.bn.", ".bn."),
    (".conv.conv.weight", ".conv.weight"),
    (".linear.linear.", ".linear."),
    (".linear.", ".linear.linear."),
    ("bn.", "bn.bn."),
    ("conv.weight", "conv.conv.weight"),
)


def current_name(key: str, known: Container[str]) -> str | None:
    """The name OFA's current code gives the file's tensor ``key`` (one of ``known``), as
    OFA's loader renames it, or None if it names none."""
    key = key.replace(*_OLD_BLOCK)
    if key in known:
        return key
    for old, new in _OLD_NESTING:
        if old in key:
            key = key.replace(old, new)
            return key if key in known else None
    return None


def _is_parameter(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def read_ofa_state(path: Path) -> tuple[dict[str, Tensor], str]:
    """OFA's state dict from ``path`` (a raw state dict or ``{"state_dict": ...}``), loaded
    with ``weights_only=True``, and the sha256 of the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise OfaImportError(
            f"no file {path}: download OFA's supernet ({OFA_NETS_URL}"
            "ofa_mbv3_d234_e346_k357_w1.0 or ...w1.2) and give its path"
        ) from None
    except OSError as exc:
        raise OfaImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    foreign = not_a_torch_file(raw[:512])
    if foreign:  # torch's unpickler said such bytes held objects to unpickle if trusted
        raise OfaImportError(f"{path} cannot be OFA's supernet ({foreign}): {_FIX}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns before failing on legacy files
            payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise _unreadable(path, raw, exc) from None
        raise OfaImportError(
            f"{path} holds objects other than tensors and plain containers, which edgenas does "
            "not unpickle: if you trust it, save its state dict alone (torch.save(torch.load(FILE, "
            "weights_only=False)['state_dict'], NEW)) and import that"
        ) from None
    except Exception as exc:
        # torch's readers fail on bad bytes with many exception types (see load_checkpoint).
        raise _unreadable(path, raw, exc) from None
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()
    ):
        found = ", ".join(map(repr, list(payload)[:3])) if isinstance(payload, Mapping) else ""
        raise OfaImportError(
            f"{path} holds no state dict (a {type(payload).__name__}"
            f"{' with keys ' + found if found else ''}): {_FIX}"
        )
    return dict(payload), hashlib.sha256(raw).hexdigest()


def _unreadable(path: Path, raw: bytes, exc: Exception) -> OfaImportError:
    return OfaImportError(
        f"{path} is not a readable PyTorch file ({torch_load_failure(raw[:512], exc)}): download "
        f"it again; {_FIX}"
    )


def detect_width(state: Mapping[str, Tensor], path: Path) -> str:
    """``"1.0"`` or ``"1.2"``: which of OFA's MobileNetV3 supernets ``state`` is."""
    if any(k.startswith("input_stem.") for k in state):
        raise OfaImportError(f"{path} is OFA's ResNet50 supernet, not a MobileNetV3 one: {_FIX}")
    if "feature_mix_layer.bn.weight" in state and "final_expand_layer.conv.weight" not in state:
        raise OfaImportError(
            f"{path} is OFA's ProxylessNAS supernet, not a MobileNetV3 one: {_FIX}"
        )
    final = state.get("final_expand_layer.conv.weight")
    if "first_conv.conv.weight" not in state or final is None:
        raise OfaImportError(
            f"{path} is not an OFA MobileNetV3 supernet (no first_conv and final_expand_layer "
            f"weights; keys start {', '.join(list(state)[:2]) or '(none)'}): {_FIX}"
        )
    widths = {_final_expand(width): width for width in OFA_NETS}
    channels = final.shape[0] if final.dim() > 0 else -1
    if channels not in widths:
        known = ", ".join(f"w{w}: {c}" for c, w in widths.items())
        raise OfaImportError(
            f"{path}: final_expand_layer.conv.weight has {channels} output channels, which is "
            f"neither of OFA's MobileNetV3 supernets ({known}): {_FIX}"
        )
    return widths[channels]


def _final_expand(width: str) -> int:
    space = get_space(OFA_NETS[width][1])
    return space.width(space.final_expand_width)


def import_ofa_state(
    state: Mapping[str, Tensor], *, path: Path, sha256: str, width: str | None = None
) -> ImportedSupernet:
    """The edgenas supernet holding OFA's ``state``; ``width`` (``"1.0"``/``"1.2"``, default:
    the file's) must match the file. Every key, shape and value is checked first."""
    found = detect_width(state, path)
    if width is not None and width != found:
        raise OfaImportError(
            f"{path} is OFA's w{found} supernet ({OFA_NETS[found][0]}), not w{width}: "
            f"import it with --width {found}, or leave --width out"
        )
    space = get_space(OFA_NETS[found][1])
    model = OFAMobileNetV3(space)
    target = model.state_dict()
    names = {ofa_name(ours): ours for ours in target}
    in_file: dict[str, str] = {}  # OFA's current name -> the file's
    unknown = []
    for key in state:
        current = current_name(key, names)
        if current is None or current in in_file:
            unknown.append(key)
        else:
            in_file[current] = key
    if unknown:
        raise OfaImportError(
            f"{path}: unknown key {unknown[0]!r} ({len(unknown)} in all) for OFA's w{found} "
            f"MobileNetV3 supernet: {_FIX}"
        )
    # Checkpoints of older torch versions have no BN batch counters; nothing reads them.
    missing = [k for k in names if k not in in_file and not k.endswith("num_batches_tracked")]
    if missing:
        raise OfaImportError(
            f"{path}: key {missing[0]!r} is missing ({len(missing)} in all) for OFA's w{found} "
            f"MobileNetV3 supernet: the file is incomplete; download it again"
        )
    mapped: dict[str, Tensor] = {}
    for current, ours in names.items():
        expected = target[ours]
        key = in_file.get(current, current)  # errors name the file's own key
        tensor = state[key] if current in in_file else torch.zeros_like(expected)
        if tensor.shape != expected.shape:
            raise OfaImportError(
                f"{path}: {key} has shape {list(tensor.shape)}, OFA's w{found} MobileNetV3 "
                f"supernet has {list(expected.shape)}: {_FIX}"
            )
        if expected.is_floating_point() and not (
            tensor.is_floating_point() and bool(torch.isfinite(tensor).all())
        ):
            raise OfaImportError(
                f"{path}: {key} is not finite floating-point data ({tensor.dtype}): "
                "the file is damaged; download it again"
            )
        mapped[ours] = tensor
    model.load_state_dict(mapped)
    state_out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ImportedSupernet(space, state_out, path.name, sha256, found)


def import_ofa_file(path: Path, *, width: str | None = None) -> ImportedSupernet:
    """Read and check OFA's supernet file ``path`` (see ``import_ofa_state``)."""
    state, digest = read_ofa_state(path)
    return import_ofa_state(state, path=path, sha256=digest, width=width)


def checkpoint_body(imported: ImportedSupernet) -> CheckpointBody:
    """An edgenas supernet checkpoint of ``imported``: complete, without training state, and
    recording its source (``imported``)."""
    return CheckpointBody(
        space=imported.space.to_dict(),
        data_spec=IMAGENET_SPEC.to_dict(),
        model=imported.state,
        teacher=None,
        optimizer=None,
        weight_average=None,
        phase_index=0,
        epoch=0,
        history=[],
        train_config={},
        rng={},
        complete=True,
        imported=imported_record(imported),
    )


def imported_record(imported: ImportedSupernet) -> dict[str, Any]:
    """Where an imported checkpoint's weights came from (its ``imported`` field)."""
    return {
        "source": SOURCE,
        "ofa_net_id": imported.ofa_net_id,
        "file": imported.source,
        "sha256": imported.sha256,
    }


def write_imported(imported: ImportedSupernet, path: Path) -> None:
    """Save ``imported`` as an edgenas supernet checkpoint at ``path`` (atomically)."""
    save_checkpoint(path, checkpoint_body(imported))
