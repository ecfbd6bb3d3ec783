"""Running a search as an Optuna study that lives in a persistent storage.

Samplers run on an in-memory copy of the study; finished trials are written to the storage
(a journal file by default, SQLite, or any RDB URL) every ``sync_every`` trials, and the
trials other workers wrote are read back at the same moments. Optuna's RDB storage costs tens
of milliseconds per trial even in batches (measured: 2,000 trials into SQLite take about a
minute), which would make the storage, not the search, the bottleneck; the journal file costs
a few milliseconds per trial, hence the default.

Several workers, on one machine or many, share a study through a journal file on a shared
filesystem or an RDB server such as PostgreSQL. Each trial reaches the storage already
COMPLETE, in one journal record or one transaction, so a killed worker never leaves a
RUNNING trial behind (Optuna's heartbeat and ``fail_stale_trials`` have nothing to reap):
it loses only its unsynced trials, the others go on, and a rerun continues the study.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

from edgenas.search.evolution import EvolutionSampler
from edgenas.search.guided import GuidedSampler
from edgenas.search.problem import Evaluation, SearchProblem
from edgenas.search.sampler_names import SAMPLERS
from edgenas.search.space_params import distributions, subnet_from_params, subnet_params
from once_for_all.errors import EdgenasError, one_line
from once_for_all.processes import process_token, token_ended
from once_for_all.progress import Progress
from once_for_all.stop_signals import STOP_SIGNALS, deliver, held_stop_signals
from once_for_all.subnet import Subnet


class StudyError(EdgenasError, ValueError):
    """A study that cannot be used as asked; the message names the study and the fix."""


def open_storage(url: str) -> BaseStorage:
    """``sqlite:///path``, ``postgresql://...`` (any SQLAlchemy URL), or ``journal:PATH`` /
    a path (no ``://``) ending in ``.log`` or ``.jsonl`` for Optuna's journal file storage."""
    # A URL is never a journal, whatever its file's name (sqlite:///x.log is SQLite).
    if url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".jsonl"))):
        path = url.removeprefix("journal:")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where its folder should be, a read-only place
            raise StudyError(
                f"cannot create the folder of journal {path}: {exc.strerror or exc}; give "
                "--storage journal:PATH (or --out) in a folder you can write"
            ) from None
        _check_journal(Path(path))
        try:
            backend = _BatchingBackend(path, lock_obj=_RepairingLock(path))
        except OSError as exc:  # /proc, a read-only folder: it was a traceback
            raise StudyError(
                f"cannot create journal {path}: {exc.strerror or exc}; give --storage "
                "journal:PATH (or --out) in a folder you can write"
            ) from None
        return _BatchingJournal(backend)
    if "://" not in url:
        raise StudyError(
            f"storage {url!r} is not a URL: use sqlite:///study.db, journal:study.log or an "
            "RDB URL such as postgresql://user@host/db"
        )
    return _open_rdb(url)


class _BatchingBackend(JournalFileBackend):
    """Optuna's journal file whose appends inside ``batch()`` are written at its end, in one
    append (one write, one fsync): Optuna appends and syncs each added trial on its own, so
    a search killed while storing a batch of trials (most of a search's time with a fast
    accuracy source: a journal's 5 ms per trial, OFA's predictor's microseconds per subnet)
    left part of the batch stored, and its rerun went on from it with other proposals. A
    block that raises writes nothing; a write cut by a crash leaves a torn last line, which
    the next writer drops (``_RepairingLock``). Only the thread in the block is held back
    (another thread's writes go through), and only the records of new trials: Optuna 5's
    ``Study.add_trial`` writes each trial whole, in one record, and a later Optuna that wrote
    more (by the id of a trial not yet written) fails the block loudly, writing nothing."""

    def __init__(self, file_path: str, lock_obj: JournalFileSymlinkLock) -> None:
        super().__init__(file_path, lock_obj=lock_obj)
        self._local = threading.local()  # .held: the records the thread's batch holds back

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        held: list[dict[str, Any]] | None = getattr(self._local, "held", None)
        if held is None:
            super().append_logs(logs)
            return
        others = [log.get("op_code") for log in logs if log.get("op_code") != _CREATE_TRIAL]
        if others:
            raise RuntimeError(
                f"Optuna wrote journal operation {others[0]} while adding trials, where this "
                "edgenas expects one record per trial (Optuna 5): install optuna 5"
            )
        held.extend(logs)

    @contextmanager
    def batch(self) -> Iterator[None]:
        if getattr(self._local, "held", None) is not None:
            raise RuntimeError("a journal batch is already open in this thread")
        held: list[dict[str, Any]] = []
        self._local.held = held
        try:
            yield
        finally:
            self._local.held = None
        if held:
            super().append_logs(held)


class _BatchingJournal(JournalStorage):
    """A journal storage on a ``_BatchingBackend``, whose ``batch()`` it offers. Optuna reads
    the logs held back only once they are written: a trial added in a batch is stored, and
    seen, at its end."""

    def __init__(self, backend: _BatchingBackend) -> None:
        super().__init__(backend)
        self._batching = backend

    @contextmanager
    def batch(self) -> Iterator[None]:
        # create_new_trial reads the id of the trial this process created last, which a held
        # write has not made: none before this process's first (Study.add_trial ignores the
        # id; the written logs set it).
        replay = self._replay_result
        if not hasattr(replay, "_last_created_trial_id_by_this_process"):
            replay._last_created_trial_id_by_this_process = -1
        with self._batching.batch():
            yield


def _stored_at_once(storage: BaseStorage) -> AbstractContextManager[None]:
    """The block's trials stored together: by a journal file in one append; by other storages
    (PostgreSQL), one transaction each, as Optuna stores them."""
    return storage.batch() if isinstance(storage, _BatchingJournal) else nullcontext()


_CREATE_TRIAL = JournalOperation.CREATE_TRIAL

_RDB_ATTEMPTS = 5


def _open_rdb(url: str) -> RDBStorage:
    import sqlalchemy

    shown, engine_kwargs = url, {}
    try:
        parsed = sqlalchemy.engine.make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            # An unreachable server fails in seconds, not after the OS's TCP timeout.
            engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    except sqlalchemy.exc.ArgumentError:
        pass  # RDBStorage reports the malformed URL below
    for attempt in range(1, _RDB_ATTEMPTS + 1):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=None)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Workers that open a fresh database at once race to create Optuna's tables
            # (PostgreSQL: duplicate key in pg_type); the loser finds them on a retry.
            if attempt == _RDB_ATTEMPTS:
                raise StudyError(f"cannot open storage {shown}: {one_line(exc)}") from None
            time.sleep(random.uniform(0.1, 0.5))
        except Exception as exc:  # SQLAlchemy and drivers raise many types; report one line
            raise StudyError(f"cannot open storage {shown}: {one_line(exc)}") from None
    raise AssertionError("unreachable")


_RECORD_START = b'{"op_code"'  # how Optuna's journal writes every record


def _check_journal(path: Path) -> None:
    """Refuse a journal with a line that is not a record (edited or damaged by hand): Optuna
    would fail on it later with a bare JSONDecodeError. A last line without its newline is
    skipped if it starts as a record does: a writer may be appending it (a torn one is
    repaired under the lock). Any other is not a journal's, and the repair would cut it: a
    one-line file given as the journal lost its text."""
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    if line.startswith(_RECORD_START) or _RECORD_START.startswith(line):
                        break
                    raise StudyError(
                        f"{path} line {number} is not an Optuna journal record: give "
                        "--storage a journal file of its own (a new path starts one)"
                    )
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict) or "op_code" not in record:
                    raise StudyError(
                        f"{path} line {number} is not an Optuna journal record (the file was "
                        "edited or damaged): restore it, or delete it to start the search again"
                    )
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StudyError(f"cannot read {path}: {exc.strerror or exc}") from None


def study_identity(problem: SearchProblem) -> dict[str, Any]:
    """What a study's trials mean: the space, the objectives, the budgets, and what the
    accuracy and latencies come from (``problem.sources``: the supernet, the predictors, the
    accuracy source). A study can only be continued by a search of the same."""
    return {
        "space": problem.space.id,
        "objectives": problem.objective_names,
        "budgets": {d.name: d.budget_ms for d in problem.devices if d.budget_ms is not None},
        **problem.sources,
    }


# Every stored identity has these; ``sources`` came later and some callers give none.
_ALWAYS = ("space", "objectives", "budgets")
CLASH_FIX = "give another --study-name"


def check_study(
    storage: BaseStorage, name: str, problem: SearchProblem, *, fix: str = CLASH_FIX
) -> None:
    """Refuse a stored study made for another search, before any work (``SearchRun`` checks
    the same, but only once the accuracy source is ready, minutes later). ``fix`` ends the
    message: how the caller's user picks another study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return  # a new study
    stored = storage.get_study_user_attrs(study_id).get("edgenas")
    if stored is not None:
        done = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        _compare_identity(name, stored, problem, fix=fix, empty=not done)


def _compare_identity(
    name: str, stored: object, problem: SearchProblem, *, fix: str, empty: bool = False
) -> None:
    """Refuse a study made for another search; ``empty``: it holds no completed trial (a
    start that failed left it: a damaged predictor file, say), which the line says."""
    identity = json.loads(json.dumps(study_identity(problem)))
    old = stored if isinstance(stored, dict) else {}
    # A part only one side records (a study stored before sources were) is not compared.
    differ = [
        key for key in identity if (key in _ALWAYS or key in old) and old.get(key) != identity[key]
    ]
    if not differ:
        return
    key = differ[0]  # one line: the first part that differs
    was, now = _differing(old.get(key), identity[key])
    # Not bound anew: a worker of a shared study may be on its first trials elsewhere.
    none = " (it holds no completed trial: a start that failed left it)" if empty else ""
    raise StudyError(
        f"study {name!r} was made for {key} {_shown(was)}, not {_shown(now)}{none}: {fix}"
    )


def _differing(was: object, now: object) -> tuple[object, object]:
    """Of two per-device parts (budgets, predictors), the entries that differ."""
    if not (isinstance(was, dict) and isinstance(now, dict)):
        return was, now
    keys = [k for k in now if k in was and was[k] != now[k]]
    if not keys:
        return was, now
    return {k: was[k] for k in keys}, {k: now[k] for k in keys}


def _shown(value: object, limit: int = 48) -> str:
    """A study identity's part, short: ``a, b`` for a list, ``dev=1.5 ms`` for budgets."""
    if isinstance(value, dict):
        text = ", ".join(
            f"{k}={v:g} ms" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()
        )
        text = text or "none"
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RepairingLock(JournalFileSymlinkLock):
    """Optuna's journal lock that, once held, drops a torn last record: a writer killed in
    the middle of an append leaves a line without its newline, and the next record written
    after it would make every later read of the journal fail. The torn record is a trial
    its dead worker never finished storing; readers already skip it.

    The lock's symlink points at ``JOURNAL@BOOT:PIDNS:PID:START``, the taker's
    ``process_token()`` (Optuna only checks that the link exists), so a lock left by a killed
    process of this machine is removed at once instead of after Optuna's 30 s grace period of
    warnings; plain Optuna workers still interoperate. The boot id tells machines apart where
    hostnames and PID namespace numbers repeat (a journal on a shared file system): by those
    alone, a live worker's lock on another machine was taken for a killed one's."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._journal = Path(path)
        # SIGINT's and SIGTERM's own handlers while the lock holds them back (STOP_SIGNALS)
        self._handlers: dict[signal.Signals, Any] | None = None
        self._interrupted: int | None = None  # the first held signal

    def acquire(self) -> bool:
        # The pid of the process taking the lock now (a forked worker is not its parent).
        self._lock_target_file = f"{self._journal}@{_lock_owner()}"
        self._hold_ctrl_c()
        held = False
        try:
            self._remove_if_owner_died()
            held = super().acquire()
            _drop_torn_tail(self._journal)
        except BaseException:
            if held:
                self.release()  # Optuna releases only after a successful acquire
            else:
                self._deliver_ctrl_c()  # (Optuna's acquire released it if it raised)
            raise
        return held

    def release(self) -> None:
        try:
            super().release()
        finally:
            self._deliver_ctrl_c()

    # Ctrl-C (and SIGTERM: STOP_SIGNALS) is held back from the lock's acquire to the end of its
    # release, and delivered then.
    # Interrupted inside them, Optuna's release unlinked a renamed file that did not exist
    # (a FileNotFoundError in place of Ctrl-C, the lock left behind), its acquire released
    # a lock it might not hold (another writer's), and between the two the lock leaked. The
    # block is a journal read or append: Ctrl-C waits milliseconds.

    # Each step below is ordered so that Ctrl-C arriving between any two of them is either
    # held (flagged) or raised while no lock is held.

    def _hold_ctrl_c(self) -> None:
        if threading.current_thread() is threading.main_thread() and self._handlers is None:
            self._interrupted = None
            self._handlers = {sig: signal.signal(sig, self._held) for sig in STOP_SIGNALS}

    def _held(self, signum: int, frame: FrameType | None) -> None:
        if self._interrupted is None:
            self._interrupted = signum

    def _deliver_ctrl_c(self) -> None:
        handlers, self._handlers = self._handlers, None
        if handlers is None:
            return
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        held, self._interrupted = self._interrupted, None
        if held is not None:
            deliver(held, handlers[signal.Signals(held)])

    def _remove_if_owner_died(self) -> None:
        try:
            target = os.readlink(self._lock_file)
        except OSError:
            return  # no lock
        owner = _lock_owner_token(target.rpartition("@")[2])
        if owner is None or not token_ended(owner):
            return
        try:
            super().release()  # renames the link away first: one remover wins
        except RuntimeError:
            return  # another process removed it
        logging.getLogger(__name__).warning(
            "%s: removed the lock of a killed process (pid %s)", self._lock_file, owner["pid"]
        )


def _lock_owner() -> str:
    """This process, as the journal lock's symlink names it: BOOT:PIDNS:PID:START."""
    token = process_token()
    if token is None:  # no /proc: a name no process can tell ended
        return str(os.getpid())
    return ":".join(str(token[k]) for k in ("boot", "pidns", "pid", "start"))


def _lock_owner_token(text: str) -> dict[str, str | int] | None:
    """The process_token a lock's ``_lock_owner`` text names; None for any other text (an
    older edgenas's HOST:PID, a plain Optuna worker's random name)."""
    parts = text.split(":")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[1:]):
        return None
    boot, pidns, pid, start = parts
    return {"boot": boot, "pidns": int(pidns), "pid": int(pid), "start": int(start)}


def _drop_torn_tail(path: Path) -> None:
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep, block = end, 1 << 16
        while keep > 0:
            start = max(0, keep - block)
            f.seek(start)
            newline = f.read(keep - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    logging.getLogger(__name__).warning(
        "%s: dropped %d bytes of a record torn by a killed writer", path, end - keep
    )


def make_sampler(
    name: str, problem: SearchProblem, *, seed: int | None, population: int = 50, batch: int = 25
) -> optuna.samplers.BaseSampler:
    """``batch``: the trials evaluated together, which the guided sampler proposes from one
    fit of its surrogate."""
    if name == "nsga2":
        return _NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "evolution":
        return EvolutionSampler(population=2 * population, seed=seed)
    if name == "guided":
        return GuidedSampler(problem, batch=batch, seed=seed)
    raise StudyError(f"unknown sampler {name!r}: use {', '.join(SAMPLERS)}")


class _NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II with a generation's parents always in trial order. Optuna's lists
    them in rank order from the call that selects them and in trial order from its cache
    afterwards, and the order decides which parents a child is drawn from: a resumed search,
    which selects a generation's parents at another trial than the uninterrupted search did,
    drew other children from them."""

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        parents = super().get_parent_population(study, generation)
        return sorted(parents, key=lambda t: t.number)

    # Optuna names a subclass's trial attributes after it ("_NSGAIISampler:generation"):
    # studies stored by NSGAIISampler would then look like generation 0 all over again.
    @classmethod
    def _get_generation_key(cls) -> str:
        return optuna.samplers.NSGAIISampler._get_generation_key()

    @classmethod
    def _get_parent_cache_key_prefix(cls) -> str:
        return optuna.samplers.NSGAIISampler._get_parent_cache_key_prefix()


def seed_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> bool:
    """Reseed ``sampler`` with ``seed`` in place; ``False`` when it cannot be (then make it
    afresh). Optuna's samplers reseed only from the OS (``reseed_rng``), and one made afresh
    for every batch loses its caches: NSGA-II then compares every trial's distributions
    again for each batch, 2.4x the time of a 1,000-trial search. So their generators are
    seeded where Optuna 5 keeps them (the sampler's, and its random sampler's for the
    parameters it samples independently)."""
    if isinstance(sampler, EvolutionSampler | GuidedSampler):
        sampler.seed(seed)
        return True
    holders: list[object] = [sampler]
    if not isinstance(sampler, optuna.samplers.RandomSampler):
        holders.append(getattr(sampler, "_random_sampler", None))
    generators = [getattr(h, "_rng", None) for h in holders]
    seedable = [g for g in generators if isinstance(g, LazyRandomState)]
    if len(seedable) < len(generators):
        return False  # another Optuna: a fresh sampler is slower, and as reproducible
    for generator in seedable:
        generator.rng.seed(seed)
    return True


class SearchRun:
    """One worker of a (possibly shared) study.

    Each worker registers itself in the study (user attribute ``worker:<id>``: its seed and
    its ``process_token``). Workers started with the same ``seed`` would propose the same
    subnets; when a worker finds an earlier-sorting registration with its seed, it reseeds
    its sampler from the seed and its id, so a single worker stays reproducible and
    several workers never search in lockstep, whatever seeds they were given. Registrations
    of processes of this machine that have ended (a killed run) do not count: rerunning a
    killed search reproduces what it does.

    With a seed, each batch is proposed by a sampler seeded from the seed and the number of
    trials known, so what a worker proposes depends only on the stored trials: a search
    killed at any point (SIGKILL loses the trials not yet stored) and rerun proposes what
    the uninterrupted search does, and ends on the same front. ``push`` stores a sync's
    trials in one journal append, and Ctrl-C waits for it; an RDB storage (SQLite,
    PostgreSQL) stores them one by one, so a SIGKILL there can store part of them.
    """

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
        self.sampler_name, self.seed = sampler, seed
        self.persistent = optuna.create_study(
            storage=self.storage,
            study_name=study_name,
            directions=problem.directions,
            load_if_exists=True,
        )
        self._check_study(study_name)
        self.persistent.set_user_attr(
            f"worker:{self.worker}",
            {"seed": seed, "process": process_token()},
        )
        self._seed_checked = seed is None
        self._sampler_seed = seed  # the seed each batch's sampler is derived from
        self.memory = optuna.create_study(
            directions=problem.directions,
            sampler=make_sampler(sampler, problem, seed=seed, batch=self.batch),
        )
        self.distributions: dict[str, BaseDistribution] = dict(
            distributions(problem.space, resolutions=problem.resolutions)
        )
        self._known: set[str] = set()
        self._pushed: set[str] = set()

    def _check_study(self, name: str) -> None:
        stored = self.persistent.user_attrs.get("edgenas")
        identity = json.loads(json.dumps(study_identity(self.problem)))
        if stored is not None:
            _compare_identity(name, stored, self.problem, fix=CLASH_FIX, empty=not self.completed())
        # A study stored before its sources were recorded is bound to this search's from now.
        merged = {**stored, **identity} if isinstance(stored, dict) else identity
        if merged != stored:
            self.persistent.set_user_attr("edgenas", merged)

    @property
    def stored(self) -> int:
        """Trials this worker has written to the storage."""
        return len(self._pushed)

    def completed(self) -> list[FrozenTrial]:
        return self.persistent.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def pull(self) -> int:
        """Copy trials other workers (or earlier runs) stored into the in-memory study."""
        new = [t for t in self.completed() if _uid(t) not in self._known]
        for t in new:
            self._known.add(_uid(t))
        self.memory.add_trials(new)
        self._avoid_lockstep()
        return len(new)

    def _avoid_lockstep(self) -> None:
        if self._seed_checked:
            return
        me = f"worker:{self.worker}"
        same_seed = sorted(
            k
            for k, v in self.persistent.user_attrs.items()
            if k.startswith("worker:")
            and isinstance(v, dict)
            and v.get("seed") == self.seed
            and _may_be_searching(v)
        )
        if same_seed and same_seed[0] != me:
            self._sampler_seed = _derived_seed(f"{self.seed}:{self.worker}")
            self._seed_checked = True

    def push(self) -> None:
        mine = [
            t
            for t in self.memory.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _uid(t) not in self._known and _uid(t) not in self._pushed
        ]
        # Ctrl-C waits for the batch to be stored: cut in the middle, it left part of the
        # batch stored, and the rerun went on from it with other proposals.
        with held_stop_signals(on_first=_say_storing), _stored_at_once(self.storage):
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

    def run(self, n_trials: int, *, progress: Progress | None = None) -> int:
        """Work until the study holds ``n_trials`` completed trials (from all workers; the
        count is checked at every sync, so several workers may overshoot by a batch).
        Progress is the completed trials of ``n_trials``, as stage ``"optimise"``."""
        while True:
            self.pull()
            done = len(self.completed())
            if progress:
                progress("optimise", done, n_trials)
            if done >= n_trials:
                return done
            todo = min(self.sync_every, n_trials - done)
            while todo > 0:
                size = min(self.batch, todo)
                self._step(size)
                todo -= size
            self.push()

    def _step(self, size: int) -> None:
        if self._sampler_seed is not None:
            # Each batch's sampler is seeded from the trials known, so that its state (random
            # generators, a surrogate's fit, a generation's parents) follows from them alone.
            known = len(self.memory.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            seed = _derived_seed(f"{self._sampler_seed}:{known}")
            if not seed_sampler(self.memory.sampler, seed):
                self.memory.sampler = make_sampler(
                    self.sampler_name, self.problem, seed=seed, batch=self.batch
                )
        trials = [self.memory.ask(self.distributions) for _ in range(size)]
        subnets = [subnet_from_params(self.problem.space, t.params) for t in trials]
        for trial, subnet, ev in zip(
            trials, subnets, self.problem.evaluate_many(subnets), strict=True
        ):
            _record(trial, subnet, ev, self.worker)
            self.memory.tell(trial, self.problem.values(ev))


def _say_storing() -> None:
    # os.write, not print: a signal handler that prints while the main thread prints raises
    # "reentrant call". An RDB storage takes seconds for a sync's trials.
    os.write(2, b"interrupted: stopping once the trials of this sync are stored\n")


def _derived_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _record(trial: optuna.Trial, subnet: Subnet, ev: Evaluation, worker: str) -> None:
    for name, violation in ev.violations.items():
        trial.set_constraint(f"latency_ms:{name}", violation)
    trial.set_user_attr("uid", f"{worker}:{trial.number}")
    trial.set_user_attr("subnet", subnet.to_dict())
    trial.set_user_attr("latency_ms", ev.latency_ms)
    if ev.costs:
        trial.set_user_attr("costs", ev.costs)


def _may_be_searching(worker: dict[str, Any]) -> bool:
    """Whether a registered worker may still be searching. One of this machine whose process
    is gone (a killed or finished run) is not: a rerun of a killed search then keeps its
    seed's sampler instead of reseeding from a random worker id. Another machine's, or an
    older edgenas's registration (HOST and PID), cannot be checked from here."""
    return not token_ended(worker.get("process"))


def _uid(trial: FrozenTrial) -> str:
    uid = trial.user_attrs.get("uid")
    return str(uid) if uid is not None else f"external:{trial.number}"
