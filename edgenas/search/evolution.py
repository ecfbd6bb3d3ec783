"""OFA's evolutionary finder as an Optuna sampler: the baseline the other samplers are
compared with.

OFA keeps a population, takes the top-k subnets by accuracy among those within the latency
budget as parents, and makes children by mutation (each choice resampled with a probability)
and crossover (each choice from either parent). It optimises accuracy alone under the
constraint, so its front is narrow by design; that is the point of comparing it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState


class EvolutionSampler(BaseSampler):
    """Population ``population``, parents = the best ``parent_ratio`` of the feasible trials
    by the first objective (accuracy, maximised); half the children by mutation with
    ``mutation_prob`` per choice, half by crossover."""

    def __init__(
        self,
        *,
        population: int = 100,
        parent_ratio: float = 0.25,
        mutation_prob: float = 0.1,
        mutation_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        self.population = population
        self.parent_ratio = parent_ratio
        self.mutation_prob = mutation_prob
        self.mutation_ratio = mutation_ratio
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=seed)
        # Parents are re-selected every half population, not per child: selection reads every
        # trial, and doing it per child makes a long search quadratic.
        self._parents_at = -1
        self._parents_cache: list[FrozenTrial] = []
        self._space: dict[str, BaseDistribution] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def seed(self, seed: int) -> None:
        """Draw from ``seed`` from now on: with the parents a function of the trials (below),
        what it proposes depends on the seed and the trials alone (a resumed search's too)."""
        self._rng.seed(seed)
        self._random = RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if not self._space:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(done) >= self.population:
                self._space = optuna.search_space.intersection_search_space(done)
        return self._space

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.population or not search_space:
            return {}  # the first generation is random
        # Every half population, from the trials up to that count (not to whichever trial
        # asked first), so that a search resumed between two counts picks the same parents.
        half = max(1, self.population // 2)
        cut = len(done) // half * half
        if cut != self._parents_at:
            self._parents_cache, self._parents_at = self._parents(done[:cut]), cut
        parents = self._parents_cache
        if not parents:
            return {}
        if self._rng.random() < self.mutation_ratio or len(parents) < 2:
            parent = self._rng.choice(parents)
            return {
                name: self._rng.choice(_choices(dist))
                if self._rng.random() < self.mutation_prob
                else parent.params[name]
                for name, dist in search_space.items()
            }
        a, b = self._rng.sample(parents, 2)
        return {name: (a if self._rng.random() < 0.5 else b).params[name] for name in search_space}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _parents(self, done: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())]
        # Elitist, as OFA's finder: parents are the best seen so far.
        ranked = sorted(feasible, key=lambda t: t.values[0], reverse=True)
        return ranked[: max(2, int(self.parent_ratio * self.population))]


def _choices(dist: BaseDistribution) -> Sequence[Any]:
    if not isinstance(dist, CategoricalDistribution):
        raise TypeError(f"the evolution sampler handles categorical parameters, not {dist}")
    return dist.choices
