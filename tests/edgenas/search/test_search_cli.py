"""`edgenas search` as a user runs it, on a supernet trained by `edgenas train` (micro
recipe, real Fashion-MNIST) and latency predictor files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from once_for_all import load_supernet
from once_for_all.accuracy_dataset import supernet_fingerprint
from tests.edgenas.search.synthetic import predictor
from tests.support.cli_here import edgenas_here

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def search(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenas", "search", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


def search_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return edgenas_here("search", *args)


@pytest.fixture(scope="module")
def predictors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("predictors")
    a, b = folder / "board0" / "predictor.json", folder / "board1.json"
    predictor("board0", seed=0).save(a)
    predictor("board1", seed=1, scale=3.0).save(b)
    return a.parent, b


def test_joint_search_for_two_devices_writes_front_choices_and_plot(
    trained: Path, predictors: tuple[Path, Path], tmp_path: Path
) -> None:
    board0, board1 = predictors
    supernet = trained / "run" / "supernet.pt"
    common = [
        "--supernet",
        supernet,
        "--device",
        board0,
        "--budget-ms",
        "0.9,0.7",  # two budgets for one device: a subnet chosen under each
        "--device",
        board1,
        "--budget-ms",
        "2.5",
        "--out",
        tmp_path,
        "--accuracy-samples",
        "12",
        "--eval-images",
        "100",
    ]
    proc = search_here(*common, "--trials", "150", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: the accuracy predictor's fit was reported all the same
    doc = json.loads(proc.stdout)
    assert doc == json.loads((tmp_path / "pareto.json").read_text())
    assert doc["trials"] >= 150 and doc["front"]
    # whose accuracies these are: export says so of a front searched on another supernet
    assert doc["supernet"] == supernet_fingerprint(load_supernet(supernet)[0])
    assert [(c["device"], c["budget_ms"]) for c in doc["chosen"]] == [
        ("board0", 0.7),
        ("board0", 0.9),
        ("board1", 2.5),
    ]
    for choice in doc["chosen"]:
        chosen = doc["front"][choice["index"]]
        assert chosen["latency_ms"][choice["device"]]["predicted"] <= choice["budget_ms"]
    for member in doc["front"]:
        assert member["latency_ms"]["board0"]["predicted"] <= 0.9
        assert member["latency_ms"]["board1"]["predicted"] <= 2.5
        measured = member["accuracy"]["measured"]
        assert measured is None or 0 <= measured <= 1
        assert member["macs"] > 0 and member["params"] > 0
    # The choices were re-evaluated with inherited weights; so were up to 20 members.
    measured_members = [m for m in doc["front"] if m["accuracy"]["measured"] is not None]
    assert len(measured_members) == min(len(doc["front"]), 20) or len(measured_members) >= 10
    for choice in doc["chosen"]:
        assert doc["front"][choice["index"]]["accuracy"]["measured"] is not None
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "accuracy_predictor.pt").exists()
    # Asking for more trials continues the stored study (and reuses the evaluations).
    proc = search_here(*common, "--trials", "250", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    held = json.loads(proc.stdout)["trials"]
    assert held >= 250
    # Fewer than it holds: it printed "optimise 250/100 (250%)" without a word (walk-through).
    proc = search_here(*common, "--trials", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trials"] == held
    assert f"the study already holds {held} completed trials (--trials 100): none is run" in (
        " ".join(proc.stderr.split())
    )
    assert "optimise" not in proc.stderr
    # A device profiled again has other latencies: its trials are not this study's.
    reprofiled = tmp_path / "board1-again.json"
    predictor("board1", seed=5, scale=3.0).save(reprofiled)
    changed = [str(reprofiled) if a == board1 else a for a in common]
    proc = search_here(*changed, "--trials", "250", "--quiet")
    assert proc.returncode == 2
    assert "study 'edgenas' was made for predictors board1=" in proc.stderr
    assert "accuracy (inherited weights)" not in proc.stderr  # refused before any work
    # Other accuracy settings fit another predictor: the study went on under it, and its
    # front mixed the two predictors' accuracies (search audit).
    for option, was, now in (("--accuracy-samples", 12, 24), ("--eval-images", 100, 50)):
        proc = search_here(*_with(common, option, now), "--trials", "260", "--quiet")
        assert proc.returncode == 2, proc.stderr
        said = " ".join(proc.stderr.split())
        key = option.removeprefix("--").replace("-", "_").replace("accuracy_", "")
        assert f"was made for accuracy_settings {key}={was}, not {key}={now}" in said
    # The accuracy cache of another --eval-images, met by a study stored elsewhere, names
    # the options to change (it said "choose another cache path", which search has no option for).
    storage = f"journal:{tmp_path / 'elsewhere.log'}"
    other = _with(common, "--eval-images", 50)
    proc = search_here(*other, "--trials", "20", "--quiet", "--storage", storage)
    assert proc.returncode == 2, proc.stderr
    assert "(limit: --eval-images), or into another --out" in " ".join(proc.stderr.split())


def _with(args: list[str | Path], option: str, value: object) -> list[str | Path]:
    """``args`` with ``option``'s value replaced by ``value``."""
    at = args.index(option) + 1
    return [*args[:at], str(value), *args[at + 1 :]]


def test_search_errors_are_one_line(
    trained: Path, predictors: tuple[Path, Path], tmp_path: Path
) -> None:
    board0, _ = predictors
    supernet = trained / "run" / "supernet.pt"
    proc = search(
        "--supernet",
        supernet,
        "--device",
        board0,
        "--budget-ms",
        "1e-5",
        "--out",
        tmp_path,
        "--accuracy-samples",
        "10",
        "--eval-images",
        "50",
        "--quiet",
    )
    assert proc.returncode == 2
    assert "lowest latency achievable there is about" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Refusals before any work, in-process (a process each costs seconds of imports).
    proc = search_here("--supernet", supernet, "--device", "no-such-board", "--out", tmp_path)
    assert proc.returncode == 2 and "edgenas profile no-such-board" in proc.stderr
    twice = ["--objective", "params", "--objective", "macs", "--objective", "params"]
    proc = search_here("--supernet", supernet, "--device", board0, *twice, "--out", tmp_path)
    assert proc.returncode == 2, proc.stderr  # it searched on two copies of it (walk-through)
    assert "error: --objective params is given more than once: give it once" in proc.stderr
    proc = search_here(
        "--supernet",
        supernet,
        "--device",
        board0,
        "--budget-ms",
        "1",
        "--budget-ms",
        "2",
        "--out",
        tmp_path,
    )
    assert proc.returncode == 2 and "one budget per device" in proc.stderr
    # the same device twice made a search with two objectives of one name
    twice = ["--device", board0, "--budget-ms", "1", "--device", board0, "--budget-ms", "2"]
    proc = search_here("--supernet", supernet, *twice, "--out", tmp_path / "twice")
    assert proc.returncode == 2
    assert "is given twice; give each device once (several budgets on one device" in proc.stderr
    assert not (tmp_path / "twice").exists()
    # a seed out of the samplers' range failed with a traceback after the accuracy samples
    proc = search_here("--supernet", supernet, "--device", board0, "--seed", "-5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    big = tmp_path / "imagenet.json"
    from latency.blocks import enumerate_blocks
    from latency.predictors import LutSumPredictor
    from latency.table import TableHeader
    from once_for_all import get_space
    from tests.edgenas.search.synthetic import FP

    space = get_space("mbv3-imagenet")
    LutSumPredictor(
        space,
        TableHeader(space.id, "big", FP, "onnx", "fp32", space.resolutions),
        {s.key: 1.0 for s in enumerate_blocks(space)},
    ).save(big)
    proc = search_here("--supernet", supernet, "--device", big, "--out", tmp_path)
    assert proc.returncode == 2 and "profile the device for this supernet's space" in proc.stderr


def test_search_keeps_its_study_in_postgresql(
    trained: Path, predictors: tuple[Path, Path], postgres_url: str, tmp_path: Path
) -> None:
    """`edgenas search --storage postgresql://...` keeps its study in the server."""
    board0, _ = predictors
    common: list[str | Path] = [
        "--supernet",
        trained / "run" / "supernet.pt",
        "--device",
        board0,
        "--budget-ms",
        "0.9",
        "--storage",
        postgres_url,
        "--accuracy-samples",
        "10",
        "--eval-images",
        "50",
        "--reevaluate",
        "2",
        "--json",
        "--quiet",
    ]
    proc = search_here(*common, "--trials", "30", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == json.loads((tmp_path / "pareto.json").read_text())

    import optuna

    from edgenas.search.study_runner import open_storage

    # The study lives in PostgreSQL, not in the output folder; several workers sharing it
    # (and one killed mid-trial) are tested in test_shared_study.py on the same server.
    study = optuna.load_study(study_name="edgenas", storage=open_storage(postgres_url))
    trials = study.get_trials()
    assert doc["trials"] == len(trials) >= 30
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {m["trial"] for m in doc["front"]} <= {t.number for t in study.best_trials}
    assert not (tmp_path / "study.log").exists()


def test_an_unreachable_postgresql_is_one_line(
    trained: Path, predictors: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.support.sshd import free_port

    url = f"postgresql://edgenas:secret@127.0.0.1:{free_port()}/nowhere"
    proc = search(
        "--supernet",
        trained / "run" / "supernet.pt",
        "--device",
        predictors[0],
        "--storage",
        url,
        "--out",
        tmp_path,
        "--quiet",
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot open storage postgresql://edgenas:***@127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "accuracy_cache.json").exists()  # failed before any evaluation
