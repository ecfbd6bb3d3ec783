"""OFA's published ImageNet accuracy predictor (``acc_predictor.pth``), as OFA's tutorial
uses it with the ``ofa_mbv3_d234_e346_k357_w1.2`` supernet.

The file is a state_dict of ``Sequential(Linear(128, 400), ReLU, Linear(400, 400), ReLU,
Linear(400, 400), ReLU, Linear(400, 1))``; OFA's tutorial downloads it from
``OFA_PREDICTOR_URL``. Its input is OFA's ``AccuracyPredictor.spec2feats`` encoding: 60
kernel one-hots and 60 expand one-hots (3 per block, 20 blocks, zeros for blocks beyond a
stage's depth), then 8 resolution one-hots at ``(r - 112) // 16``. Its output is a fraction
(0.75 is 75% top-1), the scale of edgenas's own accuracies. Its encoding fits spaces of 5
stages of up to 4 blocks with kernels 3/5/7 and expand ratios 3/4/6, at 112-224 px in steps
of 16 (OFA's encoding would file 132 px under 128: such resolutions are refused instead);
its figures are the w1.2 supernet's, so other networks of that shape are refused too.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from once_for_all.accuracy_predictor import AccuracyPredictorError
from once_for_all.files import not_a_torch_file, torch_load_failure
from once_for_all.search_space import SearchSpace, get_space
from once_for_all.subnet import Subnet, SubnetError

OFA_PREDICTOR_URL = "https://raw.githubusercontent.com/han-cai/files/master/ofa/acc_predictor.pth"
OFA_RESOLUTIONS: tuple[int, ...] = tuple(range(112, 225, 16))
OFA_SPACE = "ofa-mbv3-w1.2"  # ofa_mbv3_d234_e346_k357_w1.2, the supernet it was trained for
_KERNELS, _EXPANDS, _STAGES, _DEPTH = (3, 5, 7), (3, 4, 6), 5, 4
_SHAPES = {
    "0.weight": (400, 128),
    "0.bias": (400,),
    "2.weight": (400, 400),
    "2.bias": (400,),
    "4.weight": (400, 400),
    "4.bias": (400,),
    "6.weight": (1, 400),
    "6.bias": (1,),
}


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(128, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 1),
    )


def check_ofa_space(space: SearchSpace) -> None:
    """Raise ``AccuracyPredictorError`` (one line) unless ``space`` is the network whose
    ImageNet accuracies the predictor learnt: OFA's w1.2 supernet (``OFA_SPACE``) at any of
    its resolutions. Another network of the same shape (OFA's w1.0, edgenas's mbv3-imagenet, a
    transfer to other classes) would be scored with w1.2's accuracies."""
    if (
        len(space.stages) != _STAGES
        or space.max_depth != _DEPTH
        or space.kernel_sizes != _KERNELS
        or space.expand_ratios != _EXPANDS
    ):
        raise AccuracyPredictorError(
            f"OFA's accuracy predictor encodes 5 stages x 4 blocks, kernels 3/5/7, expand "
            f"ratios 3/4/6; space {space.id} has {len(space.stages)} x {space.max_depth}, "
            f"kernels {_slash(space.kernel_sizes)}, expand ratios {_slash(space.expand_ratios)}: "
            f"search {OFA_SPACE} (the supernet whose accuracies it learnt), or evaluate this "
            "space's subnets on a supernet of it (--accuracy predictor or direct)"
        )
    ofa = get_space(OFA_SPACE)
    # The name, the resolutions offered and the dropout leave the network's accuracy alone.
    free = ("name", "resolutions", "dropout")
    differ = [
        f.name
        for f in fields(SearchSpace)
        if f.name not in free and getattr(space, f.name) != getattr(ofa, f.name)
    ]
    if differ:
        raise AccuracyPredictorError(
            f"OFA's accuracy predictor scores subnets of OFA's w1.2 ImageNet supernet "
            f"({OFA_SPACE}); space {space.id} is another network (its {', '.join(differ)} "
            f"differ), whose accuracy it does not know: search {OFA_SPACE}, or evaluate this "
            "space's subnets on a supernet of it (--accuracy predictor or direct)"
        )


class OfaAccuracyPredictor:
    """OFA's predicted ImageNet top-1 (a fraction) of subnets of ``space``."""

    resolutions = OFA_RESOLUTIONS  # the only ones its encoding has

    def __init__(self, space: SearchSpace, model: nn.Module, *, path: Path, sha256: str) -> None:
        check_ofa_space(space)
        self.space, self.path, self.sha256 = space, path, sha256
        self._model = model.eval()

    @property
    def description(self) -> str:
        """Which file gives the figures, for pareto.json and the report."""
        return f"OFA's accuracy predictor {self.path.name}, sha256 {self.sha256}"

    def encode_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        """OFA's ``spec2feats`` of each subnet, ``[n, 128]`` float32."""
        out = np.zeros((len(subnets), 128), dtype=np.float32)
        k_at = {k: i for i, k in enumerate(_KERNELS)}
        e_at = {e: i for i, e in enumerate(_EXPANDS)}
        for row, s in enumerate(subnets):
            if s.space != self.space.id:
                raise SubnetError(f"subnet is for space {s.space!r}, not {self.space.id!r}")
            if s.r not in OFA_RESOLUTIONS:
                raise AccuracyPredictorError(
                    f"r={s.r}: OFA's accuracy predictor encodes only "
                    f"{', '.join(map(str, OFA_RESOLUTIONS))} px; choose one of those"
                )
            for b in self.space.active_blocks(s):
                out[row, 3 * b + k_at[s.ks[b]]] = 1.0
                out[row, 60 + 3 * b + e_at[s.e[b]]] = 1.0
            out[row, 120 + (s.r - 112) // 16] = 1.0
        return out

    def predict_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        """OFA's predicted top-1 of each subnet, float64 fractions."""
        if not subnets:
            return np.zeros(0)
        with torch.inference_mode():
            y = self._model(torch.from_numpy(self.encode_many(subnets)))
        return y[:, 0].double().numpy()

    def predict(self, subnet: Subnet) -> float:
        return float(self.predict_many([subnet])[0])


def load_ofa_accuracy_predictor(path: str | Path, space: SearchSpace) -> OfaAccuracyPredictor:
    """OFA's ``acc_predictor.pth`` for subnets of ``space``, loaded weights-only. Anything
    else (a missing, corrupt or foreign file, a space OFA's encoding does not fit) raises
    ``AccuracyPredictorError`` with one line."""
    p = Path(path)
    check_ofa_space(space)
    fix = f"give OFA's acc_predictor.pth (OFA's tutorial downloads it from {OFA_PREDICTOR_URL})"
    if p.is_dir():  # "not found" beside a folder that is there (walk-through)
        raise AccuracyPredictorError(f"OFA accuracy predictor {p} is a folder: {fix}")
    if not p.is_file():
        raise AccuracyPredictorError(f"OFA accuracy predictor {p} not found: {fix}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AccuracyPredictorError(
            f"cannot read OFA accuracy predictor {p}: {exc.strerror or exc}"
        ) from None
    if foreign := not_a_torch_file(data[:512]):
        raise AccuracyPredictorError(f"{p} is corrupt or not a torch file ({foreign}): {fix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own warnings say less than our line
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AccuracyPredictorError(
            f"{p} is corrupt or not a torch file ({torch_load_failure(data[:512], exc)}): {fix}"
        ) from None
    if isinstance(state, dict) and "format" in state:
        raise AccuracyPredictorError(
            f"{p} is an edgenas file ({state['format']!r}), not OFA's accuracy predictor: "
            f"use --accuracy predictor for edgenas's own, or {fix}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AccuracyPredictorError(
            f"{p} is not OFA's accuracy predictor (not a state_dict of tensors): {fix}"
        )
    for key, shape in _SHAPES.items():
        if key not in state:
            raise AccuracyPredictorError(
                f"{p} is not OFA's accuracy predictor (no tensor {key!r}): {fix}"
            )
        if tuple(state[key].shape) != shape:
            raise AccuracyPredictorError(
                f"{p} is not OFA's accuracy predictor ({key} has shape "
                f"{tuple(state[key].shape)}, OFA's has {shape}): {fix}"
            )
    extra = sorted(set(state) - set(_SHAPES))
    if extra:
        raise AccuracyPredictorError(
            f"{p} is not OFA's accuracy predictor (unexpected tensor {extra[0]!r}): {fix}"
        )
    model = _mlp()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return OfaAccuracyPredictor(space, model, path=p, sha256=hashlib.sha256(data).hexdigest())


def _slash(values: Sequence[int]) -> str:
    return "/".join(map(str, values))
