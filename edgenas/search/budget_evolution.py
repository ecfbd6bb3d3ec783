"""Evolution at the budget's edge: OFA's evolutionary search, made to spend its accuracy
evaluations where the answer lies.

The most accurate subnet under a latency budget sits just under that budget: a subnet well
below it leaves latency unused. OFA's finder rejects over-budget children but evaluates the
accuracy of every child under budget, near the edge or far below it. This sampler pushes each
child to the edge before it is evaluated, using only the latency predictors (table lookups,
which OFA's finder also calls freely): an over-budget child shrinks one random choice at a
time until it fits, then grows one random choice at a time (kernel, expand ratio, depth or
resolution one step up) while it still fits. Accuracy is then evaluated only on subnets that
use their budget.

A device with several budgets (``DeviceTarget.tighter_budgets_ms``) is searched at each in
turn, one generation per budget: parents for a budget are the most accurate trials that meet
it, and children are pushed to its edge. Measured against OFA's ``EvolutionFinder`` on OFA's
predictors and Note10 tables in ``benchmarks/ofa_search.py``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from edgenas.search.problem import SearchProblem
from edgenas.search.space_params import distributions, subnet_from_params, subnet_params
from once_for_all.errors import EdgenasError
from once_for_all.subnet import Subnet

Genes = list[int]  # indices into each choice list: ks per block, e per block, d per stage, r


class BudgetEvolutionSampler(BaseSampler):
    """Population ``population`` per budget; parents are the best ``parent_ratio`` of the
    trials meeting the budget; half the children by mutation (``mutation_prob`` per choice),
    half by crossover; every child is pushed to the budget's edge."""

    def __init__(
        self,
        problem: SearchProblem,
        *,
        population: int = 50,
        parent_ratio: float = 0.25,
        mutation_prob: float = 0.1,
        seed: int | None = None,
    ) -> None:
        self.levels = budget_levels(problem)
        self.problem = problem
        self.population, self.parent_ratio, self.mutation_prob = (
            population,
            parent_ratio,
            mutation_prob,
        )
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=seed)
        space = problem.space
        self._choices: list[tuple[int, ...]] = (
            [tuple(space.kernel_sizes)] * space.num_blocks
            + [tuple(space.expand_ratios)] * space.num_blocks
            + [tuple(space.depths)] * len(space.stages)
            + [tuple(problem.resolutions)]
        )
        self._distributions = distributions(space, resolutions=problem.resolutions)
        self._parents_cache: dict[int, tuple[int, list[Genes]]] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # Every trial is proposed here, the first generation too (random, then pushed to
        # the edge).
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        level = (trial.number // max(1, self.population // 2)) % len(self.levels)
        parents = self._parents(done, level) if len(done) >= self.population else []
        if len(parents) >= 2:
            if self._rng.random() < 0.5:
                parent = self._rng.choice(parents)
                genes = [
                    self._rng.randrange(len(c)) if self._rng.random() < self.mutation_prob else g
                    for g, c in zip(parent, self._choices, strict=True)
                ]
            else:
                a, b = self._rng.sample(parents, 2)
                genes = [x if self._rng.random() < 0.5 else y for x, y in zip(a, b, strict=True)]
        else:
            genes = [self._rng.randrange(len(c)) for c in self._choices]
        return subnet_params(self._subnet(self._to_edge(genes, self.levels[level])))

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _parents(self, done: Sequence[FrozenTrial], level: int) -> list[Genes]:
        # Re-selected once per generation: selection reads every trial.
        cached = self._parents_cache.get(level)
        if cached is not None and len(done) - cached[0] < self.population // 2:
            return cached[1]
        budgets = self.levels[level]
        fitting = [t for t in done if _meets(t, budgets)]
        ranked = sorted(fitting, key=lambda t: t.values[0], reverse=True)
        keep = ranked[: max(2, int(self.parent_ratio * self.population))]
        parents = [self._genes(subnet_from_params(self.problem.space, t.params)) for t in keep]
        self._parents_cache[level] = (len(done), parents)
        return parents

    def _to_edge(self, genes: Genes, budgets: dict[int, float]) -> Genes:
        """Shrink ``genes`` one random choice at a time until they meet ``budgets``, then
        grow them one random choice at a time while they still do."""
        genes = list(genes)
        while not self._fits([genes], budgets)[0]:
            lower = [i for i, g in enumerate(genes) if g > 0]
            if not lower:
                break  # the smallest subnet misses the budget: check_budgets reports it
            genes[self._rng.choice(lower)] -= 1
        while True:
            grown = []
            for i, g in enumerate(genes):
                if g + 1 < len(self._choices[i]):
                    child = list(genes)
                    child[i] = g + 1
                    grown.append(child)
            fits = self._fits(grown, budgets) if grown else []
            options = [g for g, ok in zip(grown, fits, strict=True) if ok]
            if not options:
                return genes
            genes = self._rng.choice(options)

    def _fits(self, candidates: list[Genes], budgets: dict[int, float]) -> list[bool]:
        subnets = [self._subnet(g) for g in candidates]
        ok = np.ones(len(subnets), dtype=bool)
        for i, budget in budgets.items():
            ok &= self.problem.devices[i].predictor.predict_many(subnets) <= budget
        return ok.tolist()

    def _subnet(self, genes: Genes) -> Subnet:
        space, n, s = (
            self.problem.space,
            self.problem.space.num_blocks,
            len(self.problem.space.stages),
        )
        value = [c[g] for c, g in zip(self._choices, genes, strict=True)]
        return Subnet(
            space=space.id,
            ks=tuple(value[:n]),
            e=tuple(value[n : 2 * n]),
            d=tuple(value[2 * n : 2 * n + s]),
            r=value[-1],
        )

    def _genes(self, subnet: Subnet) -> Genes:
        value = [*subnet.ks, *subnet.e, *subnet.d, subnet.r]
        return [c.index(v) for c, v in zip(self._choices, value, strict=True)]


def budget_levels(problem: SearchProblem) -> list[dict[int, float]]:
    """The budgets searched in turn, as {device index: budget}: every device at its largest
    budget, and each tighter budget of a device with the others at their largest."""
    largest = {i: d.budget_ms for i, d in enumerate(problem.devices) if d.budget_ms is not None}
    if not largest:
        raise EdgenasError(
            "sampler budget-evolution searches under latency budgets: give --budget-ms (a "
            "recipe: budget_ms), or use nsga2 for a front without budgets"
        )
    levels = [dict(largest)]
    for i, device in enumerate(problem.devices):
        levels += [{**largest, i: b} for b in device.tighter_budgets_ms]
    return sorted(levels, key=lambda lv: sorted(lv.items()))


def _meets(trial: FrozenTrial, budgets: dict[int, float]) -> bool:
    # values: accuracy, then each device's latency in the problem's order
    return all(trial.values[1 + i] <= b for i, b in budgets.items())
