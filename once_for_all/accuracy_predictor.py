"""OFA's accuracy predictor: an MLP over a subnet's one-hot encoding, fitted on subnets whose
accuracy was measured with inherited weights (``accuracy_dataset``), so that a search can
score thousands of candidates without evaluating them.

As in OFA, the network is ReLU hidden layers and a bias-free linear output added to a base
accuracy (the mean of the training accuracies). OFA uses 3×400 units and ~16,000 subnets;
here the default is smaller (3×128) because a few hundred evaluated subnets is the usual
budget on a CPU, and targets are also divided by their spread so that subnets differing by
a fraction of a percent still give the optimiser a usable signal.

Predictor file (a torch file, readable with ``torch.load(weights_only=True)``): format
``edgenas.accuracy-predictor/1``, the space's dict, the hidden sizes, the MLP's state dict,
``base`` and ``scale``, the validation figures and the fitting settings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from once_for_all.errors import EdgenasError, one_line
from once_for_all.files import not_a_torch_file, torch_file_head, torch_load_failure, write_torch
from once_for_all.search_space import SearchSpace
from once_for_all.subnet import Subnet, SubnetError

PREDICTOR_FORMAT = "edgenas.accuracy-predictor/1"


class AccuracyPredictorDocument(TypedDict):
    """An accuracy predictor file (a torch file of tensors and plain data only)."""

    format: str
    space: dict[str, object]  # SearchSpace.to_dict()
    hidden: list[int]  # the MLP's hidden widths
    base: float  # predictions are base + scale * the MLP's output
    scale: float
    state: dict[str, Tensor]  # the MLP's state_dict
    validation: dict[str, Any]
    settings: dict[str, Any]


DEFAULT_HIDDEN = (128, 128, 128)


class AccuracyPredictorError(EdgenasError, ValueError):
    """An accuracy predictor file that is missing, corrupt or not an accuracy predictor."""


class _MLP(nn.Module):
    """Hidden ReLU layers and a bias-free output; the caller adds the base accuracy."""

    def __init__(self, inputs: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


class AccuracyPredictor:
    """Predicted accuracy (a fraction, like ``evaluate_subnet``'s) for subnets of ``space``.

    ``validation`` holds the held-out figures measured when it was fitted: ``n_train``,
    ``n_holdout``, ``rmse``, ``kendall`` (tau-b), and ``constant`` with the ``rmse`` and
    ``kendall`` of predicting the mean training accuracy for every subnet (its tau is NaN:
    a constant ranks nothing). ``n_fit`` is how many subnets the final model was fitted on.
    Fitted with ``holdout=0``, every figure is NaN. NaN is not valid JSON: convert it before
    writing the figures to a JSON file.
    """

    def __init__(
        self,
        space: SearchSpace,
        model: nn.Module,
        *,
        hidden: Sequence[int],
        base: float,
        scale: float,
        validation: dict[str, Any],
        settings: dict[str, Any],
    ) -> None:
        self.space = space
        self.hidden = tuple(int(h) for h in hidden)
        self.base = float(base)
        self.scale = float(scale)
        self.validation = validation
        self.settings = settings
        self._model = model.eval()

    def predict_many(self, subnets: Sequence[Subnet]) -> np.ndarray:
        """Predicted accuracies, float64, one per subnet (about 0.1 s per 10,000 subnets).
        Subnets must belong to ``space`` (``SearchSpace.validate``); only their space id is
        checked here, to stay fast."""
        for subnet in subnets:
            if subnet.space != self.space.id:
                raise SubnetError(
                    f"subnet is for space {subnet.space!r}, but this predictor was fitted on {self.space.id!r}"
                )
        if not subnets:
            return np.zeros(0)
        return self._predict_encoded(self.space.encode_many(subnets))

    def predict(self, subnet: Subnet) -> float:
        return float(self.predict_many([subnet])[0])

    def _predict_encoded(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = self._model(torch.from_numpy(x))
        return y.double().numpy() * self.scale + self.base

    def to_payload(self) -> AccuracyPredictorDocument:
        """The file's contents: tensors and plain data only."""
        return AccuracyPredictorDocument(
            format=PREDICTOR_FORMAT,
            space=self.space.to_dict(),
            hidden=list(self.hidden),
            base=self.base,
            scale=self.scale,
            state={k: v.detach().clone() for k, v in self._model.state_dict().items()},
            validation=self.validation,
            settings=self.settings,
        )

    def save(self, path: str | Path) -> None:
        """Write the predictor atomically (temporary file, then rename)."""
        write_accuracy_predictor(Path(path), self.to_payload())


def write_accuracy_predictor(path: Path, doc: AccuracyPredictorDocument) -> None:
    write_torch(path, doc)


def read_accuracy_predictor(path: str | Path) -> AccuracyPredictorDocument:
    """The predictor file at ``path``, format-checked; anything else raises
    ``AccuracyPredictorError`` with a one-line message. Never unpickles arbitrary objects."""
    p = Path(path)
    if p.is_dir():
        raise AccuracyPredictorError(
            f"accuracy predictor {p} is a folder: give the predictor file in it"
        )
    if not p.is_file():
        raise AccuracyPredictorError(
            f"accuracy predictor {p} not found: fit one first or check the path"
        )

    def unreadable(why: str) -> AccuracyPredictorError:
        return AccuracyPredictorError(
            f"accuracy predictor {p} is corrupt or not a torch file ({why}): fit it again"
        )

    try:
        head = torch_file_head(p)
        if foreign := not_a_torch_file(head):
            raise unreadable(foreign)
        with warnings.catch_warnings():
            # torch warns about legacy pickle files before failing; our error says it better.
            warnings.simplefilter("ignore")
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except AccuracyPredictorError:
        raise
    except OSError as exc:
        raise AccuracyPredictorError(
            f"cannot read accuracy predictor {p}: {exc.strerror or exc}"
        ) from None
    except Exception as exc:
        raise unreadable(torch_load_failure(head, exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != PREDICTOR_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise AccuracyPredictorError(
            f"{p} is not an accuracy predictor (format {found!r}, expected {PREDICTOR_FORMAT!r})"
        )
    return cast(AccuracyPredictorDocument, payload)


def load_accuracy_predictor(path: str | Path) -> AccuracyPredictor:
    """A predictor written by ``AccuracyPredictor.save``; anything else raises
    ``AccuracyPredictorError`` with a one-line message (see ``read_accuracy_predictor``)."""
    p = Path(path)
    payload = read_accuracy_predictor(p)
    try:
        space = SearchSpace.from_dict(payload["space"])
        hidden = tuple(int(h) for h in payload["hidden"])
        model = _MLP(space.encoding_size, hidden)
        model.load_state_dict(payload["state"])
        return AccuracyPredictor(
            space,
            model,
            hidden=hidden,
            base=float(payload["base"]),
            scale=float(payload["scale"]),
            validation=dict(payload["validation"]),
            settings=dict(payload["settings"]),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise AccuracyPredictorError(
            f"accuracy predictor {p} is damaged ({one_line(exc, limit=160)}): fit it again"
        ) from None


def fit_accuracy_predictor(
    space: SearchSpace,
    subnets: Sequence[Subnet],
    accuracies: Sequence[float],
    *,
    seed: int = 0,
    holdout: float = 0.2,
    refit: bool = True,
    epochs: int = 200,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
) -> AccuracyPredictor:
    """Fit an MLP (Adam, MSE) on (subnet, accuracy) pairs.

    A random ``holdout`` fraction of the pairs (at least 2 when ``holdout`` > 0) is kept out
    of a first fit to measure the figures in ``.validation``; with ``refit`` the returned
    model is then fitted again on all pairs (same settings), else it is the first fit.
    Deterministic for a given ``seed``: it uses its own random streams and runs torch on one
    thread while fitting (restored afterwards). About 2 s for 200 subnets on one core (half
    that without ``refit``), plus about 1 s of one-time warm-up in the first call of a process.
    Raises ``ValueError`` for fewer than 10 pairs, mismatched lengths, accuracies outside
    [0, 1], or subnets of another space.
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    if len(subnets) != len(acc):
        raise ValueError(f"got {len(subnets)} subnets but {len(acc)} accuracies: give one each")
    if len(acc) < 10:
        raise ValueError(
            f"an accuracy predictor needs at least 10 evaluated subnets (got {len(acc)})"
        )
    if not np.all(np.isfinite(acc)) or acc.min() < 0.0 or acc.max() > 1.0:
        raise ValueError("accuracies must be fractions in [0, 1] (evaluate_subnet's scale)")
    if not 0.0 <= holdout <= 0.5:
        raise ValueError(f"holdout={holdout} must be in [0, 0.5]")
    if epochs < 1 or batch_size < 1 or not hidden or min(hidden) < 1:
        raise ValueError(
            f"epochs={epochs}, batch_size={batch_size} and hidden={list(hidden)} must be positive"
        )
    for subnet in subnets:
        space.validate(subnet)
    x = space.encode_many(subnets)
    settings = {
        "seed": seed,
        "holdout": holdout,
        "refit": refit,
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
    }

    n = len(acc)
    n_hold = max(2, round(holdout * n)) if holdout > 0 else 0
    order = np.random.default_rng(seed).permutation(n)
    held, train = order[:n_hold], order[n_hold:]

    threads = torch.get_num_threads()
    # Matmuls this small are fastest on one thread, and a fixed thread count keeps results
    # identical on machines with different core counts.
    torch.set_num_threads(1)
    try:
        first = _fit(space, x[train], acc[train], hidden, seed=seed, settings=settings)
        validation: dict[str, Any] = {
            "n_train": len(train),
            "n_holdout": n_hold,
            **_figures(first._predict_encoded(x[held]), acc[held]),
            "constant": _figures(np.full(n_hold, acc[train].mean()), acc[held]),
            "n_fit": len(train),
        }
        final = first
        if refit and n_hold:
            final = _fit(space, x, acc, hidden, seed=seed, settings=settings)
            validation["n_fit"] = n
    finally:
        torch.set_num_threads(threads)
    final.validation = validation
    return final


def _fit(
    space: SearchSpace,
    x: np.ndarray,
    y: np.ndarray,
    hidden: Sequence[int],
    *,
    seed: int,
    settings: dict[str, Any],
) -> AccuracyPredictor:
    base = float(y.mean())
    # Dividing by the spread makes the fit independent of how close the accuracies are;
    # the floor keeps a (nearly) constant target from blowing up.
    scale = max(float(y.std()), 1e-4)
    target = torch.from_numpy((y - base) / scale).float()
    inputs = torch.from_numpy(x)
    generator = torch.Generator().manual_seed(seed)
    # fork_rng keeps the caller's global torch RNG untouched by our weight initialisation.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MLP(space.encoding_size, hidden)
    batch_size = min(int(settings["batch_size"]), len(y))
    epochs = int(settings["epochs"])
    # foreach: one fused update for all parameters; per-step overhead dominates a model this small.
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=float(settings["lr"]),
        weight_decay=float(settings["weight_decay"]),
        foreach=True,
    )
    steps_per_epoch = math.ceil(len(y) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            idx = perm[start : start + batch_size]
            loss = nn.functional.mse_loss(model(inputs[idx]), target[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return AccuracyPredictor(
        space,
        model,
        hidden=hidden,
        base=base,
        scale=scale,
        validation={},
        settings=settings,
    )


def _figures(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """RMSE and Kendall tau-b of predictions against measurements (NaN where undefined)."""
    if len(measured) == 0:
        return {"rmse": math.nan, "kendall": math.nan}
    rmse = float(np.sqrt(np.mean((predicted - measured) ** 2)))
    ranked = len(measured) > 1 and np.ptp(predicted) > 0 and np.ptp(measured) > 0
    kendall = float(stats.kendalltau(predicted, measured).statistic) if ranked else math.nan
    return {"rmse": rmse, "kendall": kendall}
