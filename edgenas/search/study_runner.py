"""Running a search as an Optuna study that lives in a persistent storage.

Samplers run on an in-memory copy of the study; finished trials are written to the storage
(SQLite by default, a journal file, or any RDB URL) every ``sync_every`` trials, and the
trials other workers wrote are read back at the same moments. A SQLite write per suggested
parameter costs tens of milliseconds, which would make the storage, not the search, the
bottleneck; written in batches, 2,000 trials take seconds. A killed worker loses at most
its unsynced trials and never leaves a RUNNING trial behind; a rerun continues the study.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from edgenas.search.evolution import EvolutionSampler
from edgenas.search.problem import Evaluation, SearchProblem
from edgenas.search.space_params import distributions, subnet_from_params, subnet_params
from once_for_all.subnet import Subnet

SAMPLERS = ("nsga2", "tpe", "random", "evolution")
ProgressFn = Callable[[int, int], None]  # (completed trials, target)


class StudyError(ValueError):
    """A study that cannot be used as asked; the message names the study and the fix."""


def open_storage(url: str) -> BaseStorage:
    """``sqlite:///path``, ``postgresql://...`` (any SQLAlchemy URL), or ``journal:PATH`` /
    a path ending in ``.log`` for Optuna's journal file storage."""
    if url.startswith("journal:") or url.endswith((".log", ".jsonl")):
        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise StudyError(
            f"storage {url!r} is not a URL: use sqlite:///study.db, journal:study.log or an "
            "RDB URL such as postgresql://user@host/db"
        )
    try:
        return RDBStorage(url, heartbeat_interval=None)
    except Exception as exc:  # SQLAlchemy and drivers raise many types; report one line
        raise StudyError(f"cannot open storage {url}: {str(exc).splitlines()[0]}") from None


def make_sampler(
    name: str, *, seed: int | None, population: int = 50
) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "evolution":
        return EvolutionSampler(population=2 * population, seed=seed)
    raise StudyError(f"unknown sampler {name!r}: use {', '.join(SAMPLERS)}")


class SearchRun:
    """One worker of a (possibly shared) study."""

    def __init__(
        self,
        problem: SearchProblem,
        *,
        storage: str | BaseStorage,
        study_name: str,
        sampler: str = "nsga2",
        seed: int | None = 0,
        sync_every: int = 100,
        batch: int = 25,
        worker: str | None = None,
    ) -> None:
        self.problem = problem
        self.storage = open_storage(storage) if isinstance(storage, str) else storage
        self.sync_every, self.batch = max(1, sync_every), max(1, batch)
        self.worker = worker or uuid.uuid4().hex[:8]
        self.persistent = optuna.create_study(
            storage=self.storage,
            study_name=study_name,
            directions=problem.directions,
            load_if_exists=True,
        )
        self._check_study(study_name)
        self.memory = optuna.create_study(
            directions=problem.directions, sampler=make_sampler(sampler, seed=seed)
        )
        self.distributions: dict[str, BaseDistribution] = dict(
            distributions(problem.space, resolutions=problem.resolutions)
        )
        self._known: set[str] = set()
        self._pushed: set[str] = set()

    def _check_study(self, name: str) -> None:
        identity = {
            "space": self.problem.space.id,
            "objectives": self.problem.objective_names,
            "budgets": {
                d.name: d.budget_ms for d in self.problem.devices if d.budget_ms is not None
            },
        }
        stored = self.persistent.user_attrs.get("edgenas")
        if stored is None:
            self.persistent.set_user_attr("edgenas", identity)
        elif stored != json.loads(json.dumps(identity)):
            raise StudyError(
                f"study {name!r} was created for {stored}, not {identity}; use another "
                "--study-name or output folder"
            )

    def completed(self) -> list[FrozenTrial]:
        return self.persistent.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def pull(self) -> int:
        """Copy trials other workers (or earlier runs) stored into the in-memory study."""
        new = [t for t in self.completed() if _uid(t) not in self._known]
        for t in new:
            self._known.add(_uid(t))
        self.memory.add_trials(new)
        return len(new)

    def push(self) -> None:
        mine = [
            t
            for t in self.memory.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _uid(t) not in self._known and _uid(t) not in self._pushed
        ]
        self.persistent.add_trials(mine)
        self._pushed.update(_uid(t) for t in mine)
        self._known.update(_uid(t) for t in mine)

    def enqueue(self, subnets: Sequence[Subnet]) -> None:
        """Known good subnets are tried first (only in a fresh study: never twice)."""
        if self.completed():
            return
        for subnet in subnets:
            self.problem.space.validate(subnet)
            self.memory.enqueue_trial(subnet_params(subnet))

    def run(self, n_trials: int, *, progress: ProgressFn | None = None) -> int:
        """Work until the study holds ``n_trials`` completed trials (from all workers; the
        count is checked at every sync, so several workers may overshoot by a batch)."""
        while True:
            self.pull()
            done = len(self.completed())
            if progress:
                progress(done, n_trials)
            if done >= n_trials:
                return done
            todo = min(self.sync_every, n_trials - done)
            while todo > 0:
                size = min(self.batch, todo)
                self._step(size)
                todo -= size
            self.push()

    def _step(self, size: int) -> None:
        trials = [self.memory.ask(self.distributions) for _ in range(size)]
        subnets = [subnet_from_params(self.problem.space, t.params) for t in trials]
        for trial, subnet, ev in zip(
            trials, subnets, self.problem.evaluate_many(subnets), strict=True
        ):
            _record(trial, subnet, ev, self.worker)
            self.memory.tell(trial, self.problem.values(ev))


def _record(trial: optuna.Trial, subnet: Subnet, ev: Evaluation, worker: str) -> None:
    for name, violation in ev.violations.items():
        trial.set_constraint(f"latency_ms:{name}", violation)
    trial.set_user_attr("uid", f"{worker}:{trial.number}")
    trial.set_user_attr("subnet", subnet.to_dict())
    trial.set_user_attr("latency_ms", ev.latency_ms)
    if ev.costs:
        trial.set_user_attr("costs", ev.costs)


def _uid(trial: FrozenTrial) -> str:
    uid = trial.user_attrs.get("uid")
    return str(uid) if uid is not None else f"external:{trial.number}"
