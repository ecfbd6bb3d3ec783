"""After the search: the Pareto front, re-evaluated directly, the best subnet per budget,
``pareto.json`` and the Pareto plot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.study import StudyDirection

# Optuna's own non-dominated filter (Study.best_trials'), here on one read of the trials.
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState

from edgenas.search.accuracy_sources import accuracy_label
from edgenas.search.problem import SearchProblem
from edgenas.search.space_params import subnet_from_params
from edgenas.search.study_runner import StudyError
from latency.proxies import costs_many
from once_for_all.errors import EdgenasError
from once_for_all.files import atomic_path, read_json, write_json
from once_for_all.subnet import Subnet

PARETO_FORMAT = "edgenas.pareto/1"


class Choice(TypedDict):
    """The front member chosen under one device's budget."""

    device: str
    budget_ms: float
    index: int  # into the front


class ParetoDocument(TypedDict):
    """``pareto.json``: the study's front, and the member chosen under each budget. Front
    members are ``FrontMember.to_dict()``; devices name their predictor and fingerprint."""

    format: str
    space: str
    study: str
    trials: int
    objectives: list[str]
    devices: list[dict[str, Any]]
    accuracy: str  # where the accuracies come from
    # supernet_fingerprint of the supernet whose accuracies they are (not for OFA's predictor)
    supernet: NotRequired[str]
    front: list[dict[str, Any]]
    chosen: list[Choice]


def read_pareto(path: Path, *, needs: Mapping[str, type] | None = None) -> ParetoDocument:
    """The search's ``pareto.json`` (any other file is refused with one line), checked as
    ``check_pareto`` does."""
    doc = read_json(
        path,
        formats=PARETO_FORMAT,
        what="a search's pareto.json",
        fix="run 'edgenas search' (or the recipe's search stage) to write it",
        error=StudyError,
    )
    check_pareto(doc, path, error=StudyError, needs=needs)
    return cast(ParetoDocument, doc)


def check_pareto(
    doc: dict[str, Any],
    path: str | Path,
    *,
    error: type[EdgenasError],
    needs: Mapping[str, type] | None = None,
) -> None:
    """Raise ``error`` naming what in the tagged pareto.json at ``path`` is not as the search
    writes it: its front and choices, and the parts a reader ``needs`` (key -> type). The
    tag alone let KeyErrors and IndexErrors through."""
    if problem := _malformed(doc, needs or {}):
        raise error(
            f"{path} is a damaged pareto.json ({problem}): run the search again to rewrite it"
        )


def _malformed(doc: dict[str, Any], needs: Mapping[str, type]) -> str | None:
    front, chosen = doc.get("front"), doc.get("chosen")
    if not isinstance(front, list) or not all(
        isinstance(m, dict) and isinstance(m.get("subnet"), dict) for m in front
    ):
        return "'front' is not a list of members with a subnet"
    if not isinstance(chosen, list) or not all(isinstance(c, dict) for c in chosen):
        return "'chosen' is not a list of choices"
    for c in chosen:
        index = c.get("index")
        if not isinstance(index, int) or not 0 <= index < len(front):
            return f"a choice's index {index!r} is not a member of the {len(front)} on the front"
        budget = c.get("budget_ms")
        if not isinstance(c.get("device"), str) or not isinstance(budget, int | float):
            return "a choice lacks its device or budget_ms"
    for key, kind in needs.items():
        if not isinstance(doc.get(key), kind):
            return f"'{key}' is not a {kind.__name__}"
    return None


MeasureAccuracy = Callable[[Sequence[Subnet]], list[float]]


class InfeasibleBudget(EdgenasError, ValueError):
    """No subnet meets a budget; the message gives the lowest latency achievable and ends
    with ``fix``: a caller that took the budget from elsewhere than --budget-ms (a recipe)
    names its own key (``with_fix``)."""

    def __init__(
        self, device: str, budget_ms: float, fastest_ms: float, fix: str = "raise --budget-ms"
    ) -> None:
        self.device, self.budget_ms, self.fastest_ms, self.fix = device, budget_ms, fastest_ms, fix
        super().__init__(
            f"no subnet meets the {budget_ms:g} ms budget on {device}: the lowest latency "
            f"achievable there is about {fastest_ms:.4g} ms; {fix}"
        )

    def __reduce__(self) -> tuple[type[InfeasibleBudget], tuple[str, float, float, str]]:
        return InfeasibleBudget, (self.device, self.budget_ms, self.fastest_ms, self.fix)

    def with_fix(self, fix: str) -> InfeasibleBudget:
        return InfeasibleBudget(self.device, self.budget_ms, self.fastest_ms, fix)


class TooFewTrials(EdgenasError, ValueError):
    """A budget no trial met though subnets meet it: the search was too short to find one."""

    def __init__(
        self, device: str, budget_ms: float, fastest_ms: float, trials: int, *, others: bool
    ) -> None:
        # With other devices, their budgets may rule out the subnets fast enough on this one.
        also = " and within the other devices' budgets" if others else ""
        super().__init__(
            f"none of the {trials} trials meets the {budget_ms:g} ms budget on {device}{also}, "
            f"though subnets meet it there (the fastest takes about {fastest_ms:.4g} ms): search "
            "longer (--trials, a recipe's search.trials) or let the sampler aim at the budgets "
            "(--sampler guided, search.sampler)"
            + (", or loosen the other devices' budgets" if others else "")
        )


@dataclass(frozen=True)
class FrontMember:
    subnet: Subnet
    trial: int
    accuracy_predicted: float
    accuracy_measured: float | None
    latency_ms: dict[str, float]
    costs: dict[str, int]

    @property
    def accuracy(self) -> float:
        """The measured accuracy where known: the predictor only screens."""
        return (
            self.accuracy_measured
            if self.accuracy_measured is not None
            else self.accuracy_predicted
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "subnet": self.subnet.to_dict(),
            "trial": self.trial,
            "accuracy": {"predicted": self.accuracy_predicted, "measured": self.accuracy_measured},
            "latency_ms": {
                name: {"predicted": ms, "measured": None} for name, ms in self.latency_ms.items()
            },
            **self.costs,
        }


def pareto_front(
    problem: SearchProblem,
    stored: Sequence[FrozenTrial],
    *,
    measure: MeasureAccuracy | None = None,
    reevaluate: int = 20,
) -> list[FrontMember]:
    """Feasible non-dominated trials of ``stored`` (a study's trials, read once: other workers
    may be adding theirs), by latency on the first device. With ``measure``, ``reevaluate``
    members are evaluated directly (with inherited weights): half of them the most accurate
    by prediction (where the choice under a budget falls), half spread along the front (for
    the plot); a front can hold hundreds of members."""
    feasible = [
        t
        for t in stored
        if t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())
    ]
    directions = [StudyDirection[d.upper()] for d in problem.directions]
    trials = _get_pareto_front_trials_by_trials(feasible, directions)
    subnets = [subnet_from_params(problem.space, t.params) for t in trials]
    # Several trials can be the same network (Optuna also samples the choices of skipped
    # blocks); keep each network once.
    unique: dict[str, int] = {}
    for i, s in enumerate(subnets):
        unique.setdefault(problem.space.canonical(s).to_json(), i)
    keep = sorted(
        unique.values(), key=lambda i: trials[i].values[1] if len(trials[i].values) > 1 else 0
    )
    trials, subnets = [trials[i] for i in keep], [subnets[i] for i in keep]
    measured: list[float | None] = [None] * len(subnets)
    if measure and subnets:
        # The members meeting each budget of each device: its best is where its choice falls.
        fits = [
            [i for i, t in enumerate(trials) if t.values[1 + j] <= budget]
            for j, device in enumerate(problem.devices)
            for budget in device.budgets_ms
        ]
        picked = _to_reevaluate([t.values[0] for t in trials], reevaluate, fits)
        for i, acc in zip(picked, measure([subnets[i] for i in picked]), strict=True):
            measured[i] = acc
    costs = costs_many(problem.space, subnets) if subnets else {}
    names = [d.name for d in problem.devices]
    return [
        FrontMember(
            subnet=s,
            trial=t.number,
            accuracy_predicted=float(t.values[0]),
            accuracy_measured=None if m is None else float(m),
            latency_ms={n: float(t.values[1 + j]) for j, n in enumerate(names)},
            costs={k: int(v[i]) for k, v in costs.items()},
        )
        for i, (t, s, m) in enumerate(zip(trials, subnets, measured, strict=True))
    ]


def _to_reevaluate(
    predicted: Sequence[float], k: int, fits: Sequence[Sequence[int]] = ()
) -> list[int]:
    """About ``k`` members to evaluate directly: half the most accurate by prediction, the
    best under each budget first (``fits``: the members meeting each budget), half spread
    along the front. Every budget's best predicted is among them, beyond ``k`` if there are
    more budgets than half of it: ``choose`` takes measured members where any meet a budget,
    and with the most accurate overall alone measured, a tighter budget fell to the fastest
    member though better ones met it (walk-through)."""
    n = len(predicted)
    if k >= n:
        return list(range(n))
    order = sorted(range(n), key=lambda i: predicted[i], reverse=True)
    rank = {i: r for r, i in enumerate(order)}
    top = {min(fit, key=rank.__getitem__) for fit in fits if fit}  # each budget's best
    for i in order:
        if len(top) >= (k + 1) // 2:
            break
        top.add(i)
    spread = [round(j * (n - 1) / max(1, k // 2 - 1)) for j in range(k // 2)]
    return sorted(top | set(spread))


def choose(
    problem: SearchProblem, front: Sequence[FrontMember], *, trials: int = 0
) -> list[Choice]:
    """The most accurate front member under each budget of each device (every device's
    largest budget holds for all members: the search constrained by it). A budget no member
    meets is ``InfeasibleBudget`` where no subnet meets it, else ``TooFewTrials`` (of
    ``trials``, the study's)."""
    chosen: list[Choice] = []
    for device in problem.devices:
        for budget in device.budgets_ms:
            fitting = [m for m in front if m.latency_ms[device.name] <= budget]
            if not fitting:
                _, fastest = problem.fastest(device)
                if fastest <= budget:
                    others = len(problem.devices) > 1
                    raise TooFewTrials(device.name, budget, fastest, trials, others=others)
                raise InfeasibleBudget(device.name, budget, fastest)
            # The predictor only screens: measured members decide where there are any.
            known = [m for m in fitting if m.accuracy_measured is not None]
            best = max(known or fitting, key=lambda m: m.accuracy)
            chosen.append(Choice(device=device.name, budget_ms=budget, index=front.index(best)))
    return chosen


def check_budgets(problem: SearchProblem) -> None:
    """Fail before searching when a budget is below what any subnet can reach."""
    for device in problem.devices:
        if not device.budgets_ms:
            continue
        lowest = device.budgets_ms[0]
        _, fastest = problem.fastest(device)
        if fastest > lowest:
            raise InfeasibleBudget(device.name, lowest, fastest)


def pareto_document(
    problem: SearchProblem,
    study_name: str,
    stored: Sequence[FrozenTrial],
    front: Sequence[FrontMember],
    chosen: Sequence[Choice],
    *,
    accuracy_source: str,
) -> ParetoDocument:
    """The document of ``front``, taken from the study's trials ``stored`` (``pareto_front``'s:
    the count is of the trials the front is of)."""
    document: ParetoDocument = {
        "format": PARETO_FORMAT,
        "space": problem.space.id,
        "study": study_name,
        "trials": len(stored),
        "objectives": problem.objective_names,
        "devices": [
            {
                "name": d.name,
                "budget_ms": d.budget_ms,
                **({"budgets_ms": list(d.budgets_ms)} if d.tighter_budgets_ms else {}),
                "predictor": d.predictor.kind,
                "fingerprint": d.predictor.header.fingerprint.to_dict(),
            }
            for d in problem.devices
        ],
        "accuracy": accuracy_source,
        "front": [m.to_dict() for m in front],
        "chosen": list(chosen),
    }
    if "supernet" in problem.sources:  # its accuracies are that supernet's
        document["supernet"] = str(problem.sources["supernet"])
    return document


def write_pareto(path: Path, document: ParetoDocument) -> None:
    write_json(path, document)


TRIALS, FRONT, MEASURED, BUDGET, CHOSEN = "#c8c8c8", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"


def pareto_figure(
    document: Mapping[str, Any], trial_values: Sequence[Sequence[float]] | None = None
) -> Figure:
    """Accuracy against latency, one panel per device of a ``pareto.json`` document: every
    trial (``trial_values``, rows in the document's objective order), the front (predicted
    accuracy, and measured with inherited weights), the budget and the chosen subnet."""
    devices = list(document["devices"])
    fig = Figure(figsize=(max(5.0, 4.6 * len(devices)), 3.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(devices)), squeeze=False)[0]
    objectives = list(document["objectives"])
    front = document["front"]
    chosen: dict[str, list[int]] = {}
    for c in document.get("chosen", []):
        chosen.setdefault(c["device"], []).append(c["index"])
    for ax, device in zip(axes, devices, strict=False):
        name = device["name"]
        if trial_values:
            acc_i, lat_i = objectives.index("accuracy"), objectives.index(f"latency_ms:{name}")
            ax.scatter(
                [v[lat_i] for v in trial_values],
                [v[acc_i] for v in trial_values],
                s=4,
                c=TRIALS,
                label=f"trials ({len(trial_values)})",
            )
        xs = [m["latency_ms"][name]["predicted"] for m in front]
        # Points, not a line: with several objectives the front seen on one device's axis
        # is not a monotone curve.
        ax.scatter(
            xs,
            [m["accuracy"]["predicted"] for m in front],
            s=10,
            c=FRONT,
            label="front (predicted accuracy)",
        )
        known = [(x, m["accuracy"]["measured"]) for x, m in zip(xs, front, strict=True)]
        known = [(x, y) for x, y in known if y is not None]
        if known:
            ax.scatter(
                [x for x, _ in known],
                [y for _, y in known],
                marker="x",
                c=MEASURED,
                s=16,
                zorder=3,
                label="front (measured, inherited weights)",
            )
        budgets = device.get("budgets_ms") or (
            [device["budget_ms"]] if device.get("budget_ms") is not None else []
        )
        for k, budget in enumerate(budgets):
            ax.axvline(
                budget,
                c=BUDGET,
                ls="--",
                label=f"budget{'s' if len(budgets) > 1 else ''} "
                f"{', '.join(f'{b:g}' for b in budgets)} ms"
                if k == 0
                else None,
            )
        if name in chosen:
            members = [front[i] for i in chosen[name]]
            ax.scatter(
                [m["latency_ms"][name]["predicted"] for m in members],
                [m["accuracy"]["measured"] or m["accuracy"]["predicted"] for m in members],
                marker="*",
                s=160,
                c=CHOSEN,
                edgecolors="black",
                zorder=4,
                label="chosen",
            )
        ax.set(
            title=name,
            xlabel="predicted latency (ms)",
            ylabel=accuracy_label(document.get("accuracy")),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def pareto_plot(document: Mapping[str, Any], stored: Sequence[FrozenTrial], path: Path) -> Path:
    """``pareto_figure`` of the document with every completed trial of ``stored`` (the trials
    its front is of), as PNG."""
    values = [list(t.values) for t in stored if t.state == TrialState.COMPLETE]
    fig = pareto_figure(document, values)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
