"""The search samplers, by name: what `edgenas search --sampler` and a recipe's
``search.sampler`` accept. ``study_runner.make_sampler`` builds them; this module imports
nothing, so the CLI can offer the names without loading Optuna."""

from __future__ import annotations

from typing import Literal, get_args

# NSGA-II, TPE and random search from Optuna; OFA's evolutionary finder (edgenas.search.evolution);
# surrogate-guided evolution under budgets (edgenas.search.guided).
SamplerName = Literal["nsga2", "tpe", "random", "evolution", "guided"]
SAMPLERS: tuple[SamplerName, ...] = get_args(SamplerName)
