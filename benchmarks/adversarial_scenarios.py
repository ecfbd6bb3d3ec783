"""The adversarial round's second part: interruptions, concurrency, networks and disks.
A library module of benchmarks/adversarial.py, not a script of its own: run it as

    python -m benchmarks.adversarial --run runs/quickstart --part scenarios

Each scenario drives real ``python -m edgenas`` processes: real signals (kill -9, Ctrl-C as
SIGINT), two commands on one --out started together (the folder lock), a real stalled TCP
server and a throwaway sshd on 127.0.0.1 (tests/support), a real small full tmpfs and a real
read-only tmpfs (both need root to mount; without it those scenarios say so). Trainings use
a nano recipe (128 images, 3 epochs); searches and exports start from a copy of
the finished run folder. Outcomes: ``as documented``, or what went wrong: ``lost work``,
``silent wrong result``, ``traceback``, ``unclear message``, ``hang``, ``partial file left``,
``refused`` (a valid command failed), ``skipped`` (this machine cannot stage it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.adversarial import CPU, Outcome, error_lines, partial_files

NANO_RECIPE: dict[str, Any] = {
    "name": "nano",
    "space": "mbv3-tiny",
    "data": {"source": "fashion-mnist", "val_size": 100, "train_limit": 128, "seed": 0},
    "train": {
        "seed": 0,
        "threads": 1,
        "batch_size": 32,
        "eval_images": 50,
        "bn_images": 32,
        "phases": [
            {"name": "full", "epochs": 1, "lr": 0.05, "kd_ratio": 0},
            {"name": "kernel", "epochs": 2, "lr": 0.02, "ks": [3, 5, 7]},
        ],
    },
}
QUICK_CPU = "name: quick-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\nwarmup: 1\nruns: 3\n"
IN_USE = "is in use: another edgenas command is writing to it"


class Finding(Exception):
    """What went wrong in a scenario: ``kind`` is the outcome class."""

    def __init__(self, kind: str, line: str, **detail: Any) -> None:
        super().__init__(line)
        self.kind, self.line, self.detail = kind, line, detail


class Skip(Exception):
    """This machine cannot stage the scenario (no root for a mount, no sshd)."""


@dataclass
class Ctx:
    run: Path  # the copy of the finished run folder
    folder: Path  # this scenario's own folder
    env: dict[str, str]

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def nano(self) -> Path:
        """The nano recipe, written to the scenario's folder."""
        path = self.path("nano.yaml")
        path.write_text(yaml.safe_dump(NANO_RECIPE, sort_keys=False))
        return path

    def argv(self, args: list[str | Path]) -> list[str]:
        return [sys.executable, "-m", "edgenas", *map(str, args)]

    def edgenas(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.argv(list(args)), capture_output=True, text=True, errors="replace",
                env=self.env, cwd=self.folder, timeout=timeout, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise Finding(
                "hang", f"edgenas {args[0]} gave no answer within {timeout:g} s"
            ) from None

    def start(self, *args: str | Path, tag: str) -> subprocess.Popen[str]:
        """A process whose stderr goes to ``tag.err`` in the scenario's folder."""
        with self.path(f"{tag}.err").open("w") as stderr:  # the child keeps its own copy
            return subprocess.Popen(
                self.argv(list(args)), stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                env=self.env, cwd=self.folder, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def finish(self, proc: subprocess.Popen[str], tag: str, timeout: float = 300) -> str:
        """Wait for ``proc``; returns its stderr."""
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise Finding("hang", f"{tag} gave no answer within {timeout:g} s") from None
        return self.path(f"{tag}.err").read_text(errors="replace")

    # the search, profile and export arguments of a quick valid command, but --out
    def search(self, trials: int = 40) -> list[str | Path]:
        return [
            "search", "--supernet", self.run / "supernet.pt", "--device", self.run / CPU,
            "--budget-ms", "0.15", "--trials", str(trials), "--accuracy-samples", "10",
            "--eval-images", "50", "--reevaluate", "2", "--quiet",
        ]  # fmt: skip

    def profile(self) -> list[str | Path]:
        quick = self.path("quick-cpu.yaml")
        quick.write_text(QUICK_CPU)
        return [
            "profile", quick, "--space", self.run / "space.json", "--resolution", "28",
            "--calibrate", "0", "--batch-size", "8", "--quiet",
        ]  # fmt: skip

    def export(self, *formats: str, quiet: bool = True) -> list[str | Path]:
        fmt = [a for f in formats or ("onnx",) for a in ("--format", f)]
        args: list[str | Path] = ["export", "--supernet", self.run / "supernet.pt"]
        return [*args, "--subnet", "min", *fmt, *(["--quiet"] if quiet else [])]

    def command(self, name: str) -> list[str | Path]:
        """A quick valid ``edgenas NAME`` command, but its --out."""
        if name in ("train", "run"):  # run: the nano recipe's only stage is train
            return [name, self.nano(), "--quiet"]
        return {"search": lambda: self.search(20), "profile": self.profile, "export": self.export}[
            name
        ]()


# --- checks -----------------------------------------------------------------------------


def no_traceback(stderr: str, rc: int | None, what: str) -> None:
    if "Traceback (most recent call last)" in stderr:
        last = [line for line in stderr.splitlines() if line.strip()]
        raise Finding("traceback", f"{what}: {last[-1] if last else ''}")
    if rc is not None and rc < 0:
        raise Finding("traceback", f"{what} died of signal {-rc}")


def succeeded(proc: subprocess.CompletedProcess[str], what: str) -> None:
    no_traceback(proc.stderr, proc.returncode, what)
    if proc.returncode != 0:
        lines = error_lines(proc.stderr)
        raise Finding("refused", f"{what}: {lines[0] if lines else f'exit {proc.returncode}'}")


def one_line_error(stderr: str, rc: int | None, what: str, *needles: str) -> str:
    """The refusal's one line; a Finding when it is not one clean line naming ``needles``."""
    no_traceback(stderr, rc, what)
    if rc == 0:
        raise Finding("silent wrong result", f"{what} exited 0")
    lines = error_lines(stderr)
    if len(lines) != 1 or len(lines[0]) > 300:
        raise Finding("unclear message", f"{what}: {lines[0] if lines else ''}", lines=len(lines))
    missing = [n for n in needles if n.lower() not in lines[0].lower()]
    if missing:
        raise Finding("unclear message", f"{what}: {lines[0]}", should_name=missing)
    return lines[0]


def ctrl_c_line(stderr: str, rc: int | None, what: str) -> str:
    """Ctrl-C's one line (what was saved, how to continue) with exit code 130, --quiet or
    not; a Finding otherwise (profile --quiet printed nothing at all)."""
    no_traceback(stderr, rc, what)
    if rc == 0:
        raise Finding("silent wrong result", f"{what} exited 0")
    lines = error_lines(stderr)
    if rc != 130 or len(lines) != 1 or not lines[0].startswith("interrupted"):
        shown = lines[0] if lines else "nothing on stderr"
        raise Finding("unclear message", f"{what}: exit {rc}, {shown}", lines=len(lines))
    return lines[0]


def nothing_partial(out: Path, what: str) -> None:
    left = partial_files(out)
    if left:
        raise Finding("partial file left", f"{what} left {left[0]} in {out}", left=left)


def both(c: Ctx, a: subprocess.Popen[str], b: subprocess.Popen[str]) -> list[tuple[int, str]]:
    """The exit codes and stderr of two processes started together, once both ended."""
    errors = [c.finish(a, "a", timeout=600), c.finish(b, "b", timeout=600)]
    return [(a.returncode, errors[0]), (b.returncode, errors[1])]


def wait_until(
    done: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise Finding("refused", f"{what} ended (exit {proc.returncode}) before the signal")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise Finding("hang", f"{what}: the moment to interrupt it never came")
        time.sleep(0.05)


def journal_trials(path: Path) -> dict[int, dict[str, Any]]:
    """The finished trials of the study in ``path``: number -> params."""
    import optuna

    from edgenas.search.study_runner import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"journal:{path}")
    found: dict[int, dict[str, Any]] = {}
    for study in storage.get_all_studies():
        for t in storage.get_all_trials(study._study_id):
            if t.state == optuna.trial.TrialState.COMPLETE:
                found[t.number] = t.params
    return found


def lut_entries(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text())["entries"])
    except (OSError, ValueError, KeyError):
        return {}


def same_weights(a: Path, b: Path) -> list[str]:
    """The tensors that differ between two checkpoints' models."""
    import torch

    from once_for_all import load_checkpoint

    left, right = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    if set(left) != set(right):
        return sorted(set(left) ^ set(right))
    return [name for name in left if not torch.equal(left[name], right[name])]


@contextmanager
def tmpfs(where: Path, size_kb: int, *, read_only: bool = False) -> Iterator[Path]:
    """A real small tmpfs at ``where`` (tests/support/full_disk.py's, without pytest)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# --- the scenarios ----------------------------------------------------------------------


def train_reference(c: Ctx) -> None:
    """Two trainings of one recipe on one --out, started together: one is refused by the
    lock, the other completes. The completed one is the reference the resumed runs match."""
    recipe = c.nano()
    out = c.run.parent / "reference"
    a = c.start("train", recipe, "--out", out, "--quiet", tag="a")
    b = c.start("train", recipe, "--out", out, "--quiet", tag="b")
    results = both(c, a, b)
    ok = [r for r in results if r[0] == 0]
    if len(ok) != 1:
        for rc, err in results:
            no_traceback(err, rc, "train")
        raise Finding("lost work", f"{len(ok)} of the 2 trainings completed")
    (refused,) = [r for r in results if r[0] != 0]
    one_line_error(refused[1], refused[0], "the second train", IN_USE)
    if not (out / "supernet.pt").is_file():
        raise Finding("lost work", "the completed training left no supernet.pt")


def _reference(c: Ctx) -> Path:
    reference = c.run.parent / "reference" / "supernet.pt"
    if not reference.is_file():
        raise Skip("needs the reference training of 'train: two on one --out'")
    return reference


def train_kill(c: Ctx, sig: signal.Signals) -> None:
    reference = _reference(c)
    recipe, out = c.nano(), c.path("out")
    proc = c.start("train", recipe, "--out", out, "--quiet", tag="killed")
    wait_until((out / "checkpoint.pt").exists, proc, "train")
    proc.send_signal(sig)
    err = c.finish(proc, "killed")
    if (out / "supernet.pt").exists():
        raise Skip("train finished before the signal (nothing to resume): the machine is slow")
    if sig == signal.SIGINT:
        ctrl_c_line(err, proc.returncode, "train after Ctrl-C")
    nothing_partial(out, "the interrupted train")
    again = c.edgenas("train", recipe, "--out", out, "--quiet")
    one_line_error(again.stderr, again.returncode, "train again, no --resume", "--resume")
    resumed = c.edgenas("train", recipe, "--out", out, "--resume", "--quiet")
    succeeded(resumed, "train --resume")
    differ = same_weights(reference, out / "supernet.pt")
    if differ:
        raise Finding(
            "silent wrong result",
            f"the resumed supernet differs from an uninterrupted run in {differ[0]}",
            tensors=len(differ),
        )


# Long enough that the signal comes before the end: 60 trials were done before the journal
# was seen holding 10 on a quiet machine (each trial takes milliseconds; reading it, more).
SEARCH_TRIALS = 300


def search_kill(c: Ctx, sig: signal.Signals) -> None:
    """Search interrupted mid-study, then run again: its trials kept, none twice. After a
    kill -9 a study.log.lock of the dead process is left (planted if the kill did not catch
    the journal locked): the rerun must not wait on it with lock warnings."""
    out = c.path("o")
    args = [*c.search(SEARCH_TRIALS), "--out", out]
    journal = out / "study.log"
    proc = c.start(*args, tag="killed")
    wait_until(lambda: journal.exists() and len(journal_trials(journal)) >= 10, proc, "search")
    proc.send_signal(sig)
    err = c.finish(proc, "killed")
    before = journal_trials(journal)
    if len(before) >= SEARCH_TRIALS:
        raise Skip("search finished before the signal (nothing to resume)")
    if sig == signal.SIGINT:
        what = f"search after Ctrl-C ({len(before)}/{SEARCH_TRIALS} trials)"
        ctrl_c_line(err, proc.returncode, what)
    nothing_partial(out, "the interrupted search")
    lock = Path(f"{journal}.lock")
    if sig == signal.SIGKILL and not lock.is_symlink():
        lock.symlink_to(f"{journal}@{socket.gethostname()}:{proc.pid}")
    rerun = c.edgenas(*args)
    succeeded(rerun, "search again")
    if "taking longer" in rerun.stderr or (
        "lock" in rerun.stderr.lower() and "removed" not in (rerun.stderr.lower())
    ):
        raise Finding("unclear message", "lock warnings on the rerun", stderr=rerun.stderr[:300])
    after = journal_trials(journal)
    lost = [n for n, p in before.items() if after.get(n) != p]
    if lost:
        raise Finding("lost work", f"{len(lost)} of {len(before)} finished trials lost or changed")
    if len(after) != SEARCH_TRIALS:
        raise Finding(
            "silent wrong result",
            f"{len(after)} finished trials, not {SEARCH_TRIALS} (duplicates?)",
        )


def profile_kill(c: Ctx, sig: signal.Signals) -> None:
    """Profile interrupted after 8 blocks, then run again: the rest measured, the 8 kept."""
    out = c.path("p")
    args = [*c.profile(), "--out", out]
    lut = out / "lut.json"
    proc = c.start(*args, tag="killed")
    wait_until(lambda: len(lut_entries(lut)) >= 8, proc, "profile")
    proc.send_signal(sig)
    err = c.finish(proc, "killed")
    if sig == signal.SIGINT:
        no_traceback(err, proc.returncode, "profile after Ctrl-C")
    nothing_partial(out, "the interrupted profile")
    first = lut_entries(lut)
    rerun = c.edgenas(*args)
    succeeded(rerun, "profile again")
    final = lut_entries(lut)
    if len(final) <= len(first):
        raise Skip("profile finished before the signal (nothing to resume): the machine is slow")
    if sig == signal.SIGINT:
        what = f"profile after Ctrl-C ({len(first)} of {len(final)} blocks measured)"
        ctrl_c_line(err, proc.returncode, what)
    changed = [k for k, m in first.items() if final.get(k) != m]
    if changed:
        raise Finding("lost work", f"{len(changed)} of {len(first)} measured blocks measured again")


def export_ctrl_c(c: Ctx) -> None:
    """Ctrl-C when the TFLite conversion starts (it once crashed, leaving .partial-*)."""
    out = c.path("e")
    args = [*c.export("tflite", quiet=False), "--out", out]  # its progress says when
    proc = subprocess.Popen(
        c.argv(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=c.env,
        cwd=c.folder, stdin=subprocess.DEVNULL, errors="replace",
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if "tflite fp32" in line:
            proc.send_signal(signal.SIGINT)
            break
    try:
        rest = proc.communicate(timeout=300)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise Finding("hang", "export gave no answer within 300 s of Ctrl-C") from None
    stderr = "".join(seen) + rest
    no_traceback(stderr, proc.returncode, "export after Ctrl-C")
    if proc.returncode == 0:
        raise Finding("refused", "export finished before Ctrl-C")
    nothing_partial(out, "the interrupted export")
    succeeded(c.edgenas(*args), "export again")


def two_on_one_out(command: str) -> Callable[[Ctx], None]:
    def scenario(c: Ctx) -> None:
        out = c.path("busy")
        args = c.command(command)
        a = c.start(*args, "--out", out, tag="a")
        b = c.start(*args, "--out", out, tag="b")
        results = both(c, a, b)
        ok = [r for r in results if r[0] == 0]
        if len(ok) != 1:
            for rc, err in results:
                no_traceback(err, rc, command)
            if not ok:
                raise Finding("lost work", f"neither {command} completed")
            raise Finding("lost work", f"both {command}s completed on one --out: no lock")
        (refused,) = [r for r in results if r[0] != 0]
        one_line_error(refused[1], refused[0], f"the second {command}", IN_USE)
        nothing_partial(out, command)

    scenario.__doc__ = f"Two {command}s on one --out started together: one refused, one done."
    return scenario


def run_more_trials(c: Ctx) -> None:
    """`edgenas run` on the finished run folder after only search.trials grew: the study is
    continued, its trials kept (the export stage is left out to keep this short)."""
    record = json.loads((c.run / "run.json").read_text())
    recipe = record["recipe"]
    recipe["stages"] = [s for s in recipe["stages"] if s != "export"]
    trials = int(recipe["search"]["trials"])
    recipe["search"]["trials"] = trials + 10
    path = c.path("more.yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = c.path("run")
    shutil.copytree(c.run, out, ignore=shutil.ignore_patterns("export"))
    before = journal_trials(out / "search" / "study.log")
    proc = c.edgenas("run", path, "--out", out, "--quiet", timeout=600)
    succeeded(proc, "run with more trials")
    after = journal_trials(out / "search" / "study.log")
    lost = [n for n, p in before.items() if after.get(n) != p]
    if lost:
        raise Finding("lost work", f"{len(lost)} of {len(before)} trials discarded or changed")
    if len(after) != trials + 10:
        raise Finding("silent wrong result", f"{len(after)} trials, not {trials + 10}")


def _history(checkpoint: Path) -> list[dict[str, Any]]:
    """A training checkpoint's epoch records (each with the seconds it took)."""
    from once_for_all import load_checkpoint

    return list(load_checkpoint(checkpoint)["history"])


def run_kill_in_training(c: Ctx) -> None:
    """`edgenas run` on the finished run folder after its recipe's training changed (to the
    nano recipe's; the train stage only), killed with kill -9 once the new training saved an
    epoch, then run again: the training continues (the saved epochs are not trained again:
    their records, seconds included, are kept as they were) and the run completes."""
    recipe = json.loads((c.run / "run.json").read_text())["recipe"]
    recipe.update(stages=["train"], data=NANO_RECIPE["data"], train=NANO_RECIPE["train"])
    path = c.path("changed.yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = c.path("run")
    shutil.copytree(c.run, out, ignore=shutil.ignore_patterns("export"))
    (out / "checkpoint.pt").unlink(missing_ok=True)  # the demo's, which this one replaces
    args: list[str | Path] = ["run", path, "--out", out, "--quiet"]
    checkpoint = out / "checkpoint.pt"
    proc = c.start(*args, tag="killed")
    wait_until(checkpoint.exists, proc, "run")
    proc.send_signal(signal.SIGKILL)
    c.finish(proc, "killed")
    if (out / "supernet.pt").exists():
        raise Skip("training finished before the kill (nothing to resume): the machine is slow")
    nothing_partial(out, "the killed run")
    saved = _history(checkpoint)
    succeeded(c.edgenas(*args, timeout=600), "run again")
    final = _history(out / "supernet.pt")
    epochs = sum(phase["epochs"] for phase in NANO_RECIPE["train"]["phases"])
    if final[: len(saved)] != saved:
        raise Finding(
            "lost work",
            f"the rerun trained again the {len(saved)} epoch(s) saved before the kill",
        )
    if len(final) != epochs:
        raise Finding("silent wrong result", f"{len(final)} epochs trained, not {epochs}")
    if not (out / "summary.json").is_file():
        raise Finding("lost work", "the rerun exited 0 but wrote no summary.json")
    reference = c.run.parent / "reference" / "supernet.pt"  # 'train: two on one --out'
    differ = same_weights(reference, out / "supernet.pt") if reference.is_file() else []
    if differ:
        raise Finding(
            "silent wrong result",
            f"the resumed supernet differs from an uninterrupted training in {differ[0]}",
            tensors=len(differ),
        )


RUN_TRIALS = 300


def run_ctrl_c_in_search(c: Ctx) -> None:
    """`edgenas run` on the finished run folder after its search settings changed (a new
    seed, a shorter search), Ctrl-C once the new study has 10 trials: one line, exit 130, no
    traceback; the rerun keeps the finished trials, duplicates none, and completes (the
    export stage is left out to keep this short)."""
    recipe = json.loads((c.run / "run.json").read_text())["recipe"]
    recipe["stages"] = [s for s in recipe["stages"] if s != "export"]
    search = recipe["search"]
    search.update(
        trials=RUN_TRIALS,
        seed=int(search.get("seed") or 0) + 1,
        accuracy_samples=10,
        eval_images=100,
        reevaluate=2,
    )
    path = c.path("changed.yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = c.path("run")
    shutil.copytree(c.run, out, ignore=shutil.ignore_patterns("export"))
    args: list[str | Path] = ["run", path, "--out", out, "--quiet"]
    journal = out / "search" / "study.log"
    proc = c.start(*args, tag="stopped")

    def searching() -> bool:  # the old study discarded, the new one 10 trials long
        log = out / "run.log"  # the copy's, then this run's lines after it
        started = f"search: {RUN_TRIALS} trials" in log.read_text()
        return started and journal.exists() and len(journal_trials(journal)) >= 10

    wait_until(searching, proc, "run")
    proc.send_signal(signal.SIGINT)
    err = c.finish(proc, "stopped")
    before = journal_trials(journal)
    if len(before) >= RUN_TRIALS:
        raise Skip("search finished before Ctrl-C (nothing to resume)")
    ctrl_c_line(err, proc.returncode, f"run after Ctrl-C ({len(before)}/{RUN_TRIALS} trials)")
    nothing_partial(out, "the interrupted run")
    succeeded(c.edgenas(*args, timeout=600), "run again")
    after = journal_trials(journal)
    lost = [n for n, p in before.items() if after.get(n) != p]
    if lost:
        raise Finding("lost work", f"{len(lost)} of {len(before)} finished trials lost or changed")
    if len(after) != RUN_TRIALS:
        raise Finding("silent wrong result", f"{len(after)} trials, not {RUN_TRIALS}")
    if not (out / "search" / "pareto.json").is_file():
        raise Finding("lost work", "the rerun exited 0 but wrote no search/pareto.json")


# SSH: a profile given as a YAML path, for a server on 127.0.0.1


def ssh_profile(c: Ctx, port: int, **ssh: Any) -> Path:
    from tests.support.sshd import generate_key

    key = c.path("id_ed25519")
    if not key.exists():
        generate_key(key)
    section = {
        "host": "127.0.0.1",
        "port": port,
        "user": "root",
        "key_file": str(key),
        "known_hosts": str(c.path("known_hosts")),
        "allow_agent": False,
        "look_for_keys": False,
        "connect_timeout": 2.0,
        "python": sys.executable,
        **ssh,
    }
    path = c.path("board.yaml")
    path.write_text(yaml.safe_dump({"name": "board", "kind": "ssh", "ssh": section}))
    return path


def ssh_stalled(banner: bool) -> Callable[[Ctx], None]:
    def scenario(c: Ctx) -> None:
        from tests.support.stalled_server import stalled_server

        with stalled_server(banner) as port:
            proc = c.edgenas("devices", "check", ssh_profile(c, port), timeout=120)
        needle = "did not complete the handshake" if banner else "no SSH server answered"
        line = one_line_error(proc.stderr, proc.returncode, "devices check", needle)
        if "key" in line.split(";")[0] and "accepted" in line:
            raise Finding("unclear message", line)

    scenario.__doc__ = "A server that accepts and then " + (
        "sends only its banner." if banner else "says nothing."
    )
    return scenario


def ssh_refused(c: Ctx) -> None:
    from tests.support.sshd import free_port

    port = free_port()  # nobody listens there
    proc = c.edgenas("devices", "check", ssh_profile(c, port), timeout=120)
    one_line_error(proc.stderr, proc.returncode, "devices check", f"127.0.0.1:{port}")


def ssh_unknown_host_key(c: Ctx) -> None:
    """A profile given as a YAML path, its server's key unknown: the message names the
    command that trusts it, and that command works."""
    from tests.support.sshd import sshd_missing, start_sshd

    why = sshd_missing()
    if why:
        raise Skip(why)
    home = c.path("home")
    home.mkdir()
    env = {**c.env, "HOME": str(home)}
    env.pop("SSH_AUTH_SOCK", None)
    server = start_sshd(c.path("sshd"))
    try:
        profile = server.write_profile(
            c.path("board.yaml"), "board", python=_device_python(), ssh={"known_hosts": None}
        )
        c.env = env
        proc = c.edgenas("devices", "check", profile, timeout=120)
        fix = f"edgenas devices trust {profile}"
        one_line_error(proc.stderr, proc.returncode, "devices check", fix)
        succeeded(c.edgenas("devices", "trust", profile, "--yes", timeout=120), fix)
        succeeded(c.edgenas("devices", "check", profile, timeout=120), "check once trusted")
    finally:
        server.stop()


def _device_python() -> str:
    from benchmarks.devices import device_python

    return device_python()


# disks


def full_disk(command: str) -> Callable[[Ctx], None]:
    def scenario(c: Ctx) -> None:
        args = c.command(command)
        with tmpfs(c.path("disk"), 256) as disk:
            # Nearly full: the first sizeable write (a checkpoint, a cache, a model) fails.
            (disk / "filler").write_bytes(b"\0" * 200 * 1024)
            proc = c.edgenas(*args, "--out", disk / "out")
            one_line_error(proc.stderr, proc.returncode, command, "No space left on device")
            nothing_partial(disk / "out", command)

    scenario.__doc__ = f"{command} --out on a real 256 kB tmpfs, 200 kB of it full."
    return scenario


def read_only(command: str, under: bool) -> Callable[[Ctx], None]:
    def scenario(c: Ctx) -> None:
        args = c.command(command)
        with tmpfs(c.path("ro"), 64, read_only=True) as ro:
            out = ro / "out" if under else ro
            proc = c.edgenas(*args, "--out", out)
            one_line_error(proc.stderr, proc.returncode, f"{command} --out {out}", str(ro))

    where = "a folder to create on" if under else "the root of"
    scenario.__doc__ = f"{command} --out {where} a read-only file system."
    return scenario


SCENARIOS: list[tuple[str, Callable[[Ctx], None]]] = [
    ("train: two on one --out", train_reference),
    ("train: kill -9, then --resume", lambda c: train_kill(c, signal.SIGKILL)),
    ("train: Ctrl-C, then --resume", lambda c: train_kill(c, signal.SIGINT)),
    ("search: two on one --out", two_on_one_out("search")),
    ("search: kill -9 (stale study.log.lock), rerun", lambda c: search_kill(c, signal.SIGKILL)),
    ("search: Ctrl-C, rerun", lambda c: search_kill(c, signal.SIGINT)),
    ("profile: two on one --out", two_on_one_out("profile")),
    ("profile: kill -9, rerun", lambda c: profile_kill(c, signal.SIGKILL)),
    ("profile: Ctrl-C, rerun", lambda c: profile_kill(c, signal.SIGINT)),
    ("export: two on one --out", two_on_one_out("export")),
    ("export: Ctrl-C in the TFLite conversion, rerun", export_ctrl_c),
    ("run: only search.trials changed", run_more_trials),
    ("run: kill -9 during training, rerun", run_kill_in_training),
    ("run: Ctrl-C during search, rerun", run_ctrl_c_in_search),
    ("run: two on one --out", two_on_one_out("run")),
    ("ssh: server silent, no banner", ssh_stalled(banner=False)),
    ("ssh: server silent after its banner", ssh_stalled(banner=True)),
    ("ssh: connection refused", ssh_refused),
    ("ssh: unknown host key, profile as a YAML path", ssh_unknown_host_key),
    ("full disk: train", full_disk("train")),
    ("full disk: search", full_disk("search")),
    ("full disk: export", full_disk("export")),
    ("read-only --out: train, a folder to create", read_only("train", under=True)),
    ("read-only --out: search, the file system's root", read_only("search", under=False)),
    ("read-only --out: profile, a folder to create", read_only("profile", under=True)),
    ("read-only --out: export, the file system's root", read_only("export", under=False)),
]


def run_scenario(name: str, scenario: Callable[[Ctx], None], run: Path, folder: Path) -> Outcome:
    folder.mkdir()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "OMP_NUM_THREADS": "1",
        "EDGENAS_CACHE": str(run.parent / "cache"),
    }
    started = time.monotonic()

    def outcome(kind: str, line: str = "", **detail: Any) -> Outcome:
        return Outcome(name, kind, None, round(time.monotonic() - started, 1), line[:300], detail)

    try:
        scenario(Ctx(run, folder, env))
    except Finding as found:
        return outcome(found.kind, found.line, **found.detail)
    except Skip as why:
        return outcome("skipped", str(why))
    return outcome("as documented")


def scenarios(wanted: list[str]) -> list[tuple[str, Callable[[Ctx], None]]]:
    return [(n, s) for n, s in SCENARIOS if any(text in n.lower() for text in wanted)]


if __name__ == "__main__":
    print(
        "error: benchmarks.adversarial_scenarios is a part of benchmarks.adversarial: run "
        "'python -m benchmarks.adversarial --part scenarios' (add --list to list them)",
        file=sys.stderr,
    )
    sys.exit(2)
