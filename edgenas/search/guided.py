"""Surrogate-guided evolution: spend accuracy evaluations only on children a cheap model of
the trials so far ranks highest, at each latency budget in turn.

Accuracy is the expensive call of a search (a subnet scored on held-out images, or a
published predictor that the benchmark counts as such); latency predictors are table lookups
that cost microseconds per subnet. This sampler therefore screens many children per accuracy
evaluation:

1. Each batch serves one budget level (each device at its largest budget, then each tighter
   budget of a device; ``DeviceTarget.tighter_budgets_ms``), in turn.
2. Parents are the most accurate trials that meet the level's budgets. Thousands of children
   are bred from them by mutation and crossover, as in OFA's evolution; the first batches
   are drawn at random, with sizes spread so that tight budgets get candidates too.
3. Children over the budget are dropped by the latency predictors.
4. The rest are ranked by a ridge regression of accuracy on the trials so far (one-hot kernel
   and expand ratio per active block, depth per stage, resolution), refitted every batch. The
   best-ranked unseen children are the batch's trials, and only they are scored for accuracy.

Measured against OFA's ``EvolutionFinder`` (50,100 evaluations per budget) and NSGA-II in
``benchmarks/ofa_search.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from edgenas.search.problem import SearchProblem
from edgenas.search.space_params import distributions, subnet_params
from once_for_all.errors import EdgenasError
from once_for_all.subnet import Subnet

Level = dict[int, float]  # device index -> budget (ms)


class GuidedSampler(BaseSampler):
    """``batch`` trials per level at a time (it should equal the search's evaluation batch,
    25, so that each batch is chosen with every earlier trial known); ``warmup`` trials drawn
    at random before the surrogate is trusted; ``children`` screened per batch."""

    def __init__(
        self,
        problem: SearchProblem,
        *,
        batch: int = 25,
        warmup: int = 200,
        children: int = 4000,
        parents: int = 25,
        mutation_prob: float = 0.1,
        ridge: float = 1e-2,
        seed: int | None = None,
    ) -> None:
        self.levels = budget_levels(problem, sampler="guided")
        self.problem = problem
        self.batch, self.warmup, self.children, self.n_parents = batch, warmup, children, parents
        self.mutation_prob, self.ridge = mutation_prob, ridge
        self._np = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._genes = _Genes(problem)
        self._distributions = distributions(problem.space, resolutions=problem.resolutions)
        self._queue: list[dict[str, Any]] = []
        # Every trial seen, as genes and values (filled from the study as it grows).
        self._seen_numbers: set[int] = set()
        self._rows: list[np.ndarray] = []
        self._values: list[Sequence[float]] = []
        self._seen_keys: set[bytes] = set()
        # The ridge regression's sufficient statistics over every trial seen.
        self._gram: np.ndarray | None = None
        self._moment: np.ndarray | None = None

    def reseed_rng(self) -> None:
        self._np = np.random.default_rng()
        self._random.reseed_rng()

    def seed(self, seed: int) -> None:
        """Propose the next batch afresh from ``seed``: what it proposes then depends on the
        seed and the trials alone (a resumed search's too)."""
        self._np = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._queue = []

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not self._queue:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._learn(done)
            # The level follows from the trials known (a batch per level in turn), so that a
            # sampler made afresh for a batch, or for a resumed search, takes the same one.
            level = self.levels[len(done) // self.batch % len(self.levels)]
            self._queue = [subnet_params(s) for s in self._genes.subnets(self._propose(level))]
        return self._queue.pop(0)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    # ---- the batch

    def _learn(self, done: Sequence[FrozenTrial]) -> None:
        fresh = [t for t in done if t.number not in self._seen_numbers and t.values is not None]
        self._seen_numbers.update(t.number for t in fresh)
        # A trial outside this search's choices (an enqueued subnet at a resolution the
        # tables lack) teaches the model nothing it could propose.
        pairs = [(t, self._genes.row(t.params)) for t in fresh]
        new = [t for t, row in pairs if row is not None]
        rows = [row for _, row in pairs if row is not None]
        if not new:
            return
        self._rows += rows
        self._values += [t.values for t in new]
        self._seen_keys.update(self._genes.keys(np.array(rows)))
        # The ridge regression's statistics are summed over every trial at once, not grown
        # batch by batch: a resumed search, which learns them in one go, then fits the same
        # surrogate to the bit (milliseconds for thousands of trials).
        x = self._genes.features(np.array(self._rows))
        y = np.array([v[0] for v in self._values], dtype=float)
        self._gram, self._moment = x.T @ x, x.T @ y

    def _propose(self, level: Level) -> np.ndarray:
        if len(self._rows) < self.warmup:
            pool = self._genes.random(self._np, self.children)
        else:
            pool = self._breed(self._parents(level))
        pool = pool[self._unseen(pool)]
        latency = self._genes.latency(pool, level)
        fits = np.all([latency[i] <= b for i, b in level.items()], axis=0)
        pool = pool[fits]
        if len(self._rows) < self.warmup or len(pool) == 0:
            return self._edge_sample(pool, latency, fits, level)
        score = self._genes.features(pool) @ self._surrogate()
        return pool[np.argsort(-score, kind="stable")[: self.batch]]

    def _edge_sample(
        self, pool: np.ndarray, latency: dict[int, np.ndarray], fits: np.ndarray, level: Level
    ) -> np.ndarray:
        """Random picks among the fitting children, the ones nearest the budget first: a
        subnet far below a budget leaves latency unused."""
        if len(pool) == 0:
            return self._genes.random(self._np, self.batch)  # nothing fits: let trials say so
        slack = np.min([(b - latency[i][fits]) / b for i, b in level.items()], axis=0)
        near = pool[slack <= np.quantile(slack, min(1.0, 4 * self.batch / len(pool)))]
        pick = self._np.choice(len(near), size=min(self.batch, len(near)), replace=False)
        return near[pick]

    def _parents(self, level: Level) -> np.ndarray:
        values = np.array(self._values, dtype=float)
        meets = np.all([values[:, 1 + i] <= b for i, b in level.items()], axis=0)
        order = np.argsort(-np.where(meets, values[:, 0], -np.inf), kind="stable")
        keep = [i for i in order[: self.n_parents] if meets[i]]
        rows = np.array(self._rows)
        return rows[keep] if len(keep) >= 2 else self._genes.random(self._np, self.n_parents)

    def _breed(self, parents: np.ndarray) -> np.ndarray:
        n, half = self.children, self.children // 2
        rng = self._np
        mutants = parents[rng.integers(len(parents), size=half)]
        resample = rng.random(mutants.shape) < self.mutation_prob
        mutants = np.where(resample, self._genes.random(rng, half), mutants)
        a = parents[rng.integers(len(parents), size=n - half)]
        b = parents[rng.integers(len(parents), size=n - half)]
        crossed = np.where(rng.random(a.shape) < 0.5, a, b)
        return np.concatenate([mutants, crossed])

    def _unseen(self, pool: np.ndarray) -> np.ndarray:
        keys = self._genes.keys(pool)
        out, fresh = np.zeros(len(pool), dtype=bool), set()
        for i, k in enumerate(keys):
            if k not in self._seen_keys and k not in fresh:
                out[i] = True
                fresh.add(k)
        return out

    def _surrogate(self) -> np.ndarray:
        """Weights of the ridge regression of accuracy on the trials' features."""
        assert self._gram is not None and self._moment is not None
        return np.linalg.solve(self._gram + self.ridge * np.eye(len(self._gram)), self._moment)


class _Genes:
    """Subnets as integer rows: the choice index of each block's kernel, each block's expand
    ratio, each stage's depth, and the resolution."""

    def __init__(self, problem: SearchProblem) -> None:
        space = problem.space
        self.problem, self.space = problem, space
        self.n, self.s = space.num_blocks, len(space.stages)
        self.kernels = np.array(space.kernel_sizes)
        self.expands = np.array(space.expand_ratios)
        self.depths = np.array(space.depths)
        self.resolutions = np.array(problem.resolutions)
        self.sizes = np.array(
            [len(self.kernels)] * self.n
            + [len(self.expands)] * self.n
            + [len(self.depths)] * self.s
            + [len(self.resolutions)]
        )
        self._k_at = {int(v): i for i, v in enumerate(self.kernels)}
        self._e_at = {int(v): i for i, v in enumerate(self.expands)}
        self._d_at = {int(v): i for i, v in enumerate(self.depths)}
        self._r_at = {int(v): i for i, v in enumerate(self.resolutions)}
        # the position of each block slot in its stage, for the active mask
        self.position = np.arange(self.n) % space.max_depth
        self.stage = np.arange(self.n) // space.max_depth

    def random(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Random rows whose sizes are spread: each row draws its choices leaning towards
        small or large by a size drawn per row, so tight budgets get candidates too."""
        lean = rng.random((count, 1))
        u = rng.random((count, len(self.sizes)))
        # an exponent above 1 (lean < 0.5) pushes draws towards small choices, below 1 up
        exponent = np.exp(4.0 * (0.5 - lean))
        return np.minimum((u**exponent * self.sizes).astype(np.int64), self.sizes - 1)

    def active(self, rows: np.ndarray) -> np.ndarray:
        depth = self.depths[rows[:, 2 * self.n : 2 * self.n + self.s]]
        return self.position[None, :] < depth[:, self.stage]

    def keys(self, rows: np.ndarray) -> list[bytes]:
        """Equal for rows that are the same network (choices of inactive blocks ignored)."""
        canon = rows.copy()
        inactive = ~self.active(rows)
        canon[:, : self.n][inactive] = 0
        canon[:, self.n : 2 * self.n][inactive] = 0
        return [r.tobytes() for r in canon]

    def features(self, rows: np.ndarray) -> np.ndarray:
        active = self.active(rows)[:, :, None]
        k = np.eye(len(self.kernels))[rows[:, : self.n]] * active
        e = np.eye(len(self.expands))[rows[:, self.n : 2 * self.n]] * active
        d = np.eye(len(self.depths))[rows[:, 2 * self.n : 2 * self.n + self.s]]
        r = np.eye(len(self.resolutions))[rows[:, -1]]
        bias = np.ones((len(rows), 1))
        return np.concatenate(
            [k.reshape(len(rows), -1), e.reshape(len(rows), -1), d.reshape(len(rows), -1), r, bias],
            axis=1,
        )

    def subnets(self, rows: np.ndarray) -> list[Subnet]:
        n, s, sid = self.n, self.s, self.space.id
        # tolist() converts to Python ints in one call: per-element int() dominated otherwise
        ks = self.kernels[rows[:, :n]].tolist()
        es = self.expands[rows[:, n : 2 * n]].tolist()
        ds = self.depths[rows[:, 2 * n : 2 * n + s]].tolist()
        rs = self.resolutions[rows[:, -1]].tolist()
        return [
            Subnet(space=sid, ks=tuple(k), e=tuple(e), d=tuple(d), r=r)
            for k, e, d, r in zip(ks, es, ds, rs, strict=True)
        ]

    def row(self, params: dict[str, Any]) -> np.ndarray | None:
        """The row of a trial's parameters; None for choices outside this search."""
        try:
            blocks = [str(params[f"b{b}"]).split("-") for b in range(self.n)]
            return np.array(
                [self._k_at[int(c[0][1:])] for c in blocks]
                + [self._e_at[int(c[1][1:])] for c in blocks]
                + [self._d_at[int(params[f"d{s}"])] for s in range(self.s)]
                + [self._r_at[int(params["r"])]],
                dtype=np.int64,
            )
        except (KeyError, IndexError, ValueError):
            return None

    def latency(self, rows: np.ndarray, level: Level) -> dict[int, np.ndarray]:
        if len(rows) == 0:
            return {i: np.zeros(0) for i in level}
        subnets = self.subnets(rows)
        return {i: self.problem.devices[i].predictor.predict_many(subnets) for i in level}


def budget_levels(problem: SearchProblem, *, sampler: str) -> list[Level]:
    """The budgets searched in turn, as {device index: budget}: every device at its largest
    budget, and each tighter budget of a device with the others at their largest."""
    largest = {i: d.budget_ms for i, d in enumerate(problem.devices) if d.budget_ms is not None}
    if not largest:
        raise EdgenasError(
            f"sampler {sampler} searches under latency budgets: give --budget-ms (a recipe: "
            "budget_ms), or use nsga2 for a front without budgets"
        )
    levels = [dict(largest)]
    for i, device in enumerate(problem.devices):
        levels += [{**largest, i: b} for b in device.tighter_budgets_ms]
    return levels
