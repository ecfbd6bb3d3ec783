"""A user's mistake gives the same one line and exit code 2 through its command and through
`edgenas run`, which also writes it to run.log; a bug keeps its traceback; Ctrl-C gives one
line of what was saved, exit code 130, --quiet or not."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgenas.cli import app
from edgenas.ctrl_c import INTERRUPTED
from once_for_all import Subnet, get_space
from once_for_all.checkpoint import CheckpointBody, load_checkpoint, save_checkpoint
from tests.edgenas.conftest import MICRO_RECIPE, REPO
from tests.edgenas.search.synthetic import predictor
from tests.support.cli_here import edgenas_here
from tests.support.folder_holder import hold_folder
from tests.support.full_disk import small_filesystem
from tests.support.sshd import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
NOT_A_CHECKPOINT = b"these bytes are not a checkpoint\n"


def edgenas(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The command in this process: every case here is refused early, and a process each
    would cost seconds of imports (test_cli.py and others run the real processes)."""
    with contextlib.chdir(cwd):
        return edgenas_here(*args, env={"COLUMNS": "300"})


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a user error prints; anything else on stderr fails the test."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def run_folder(tmp_path: Path, stages: list[str], **changes: Any) -> tuple[Path, Path]:
    """A recipe doing only ``stages``, and its run folder holding a corrupt supernet.pt."""
    recipe: dict[str, Any] = copy.deepcopy(MICRO_RECIPE)
    recipe.update(
        {
            "name": "errors",
            "stages": stages,
            "devices": [{"name": "npu-32x32-ws", "budget_ms": 1.0, "calibrate": 0}],
            "search": {"trials": 10, "accuracy_samples": 10},
            "export": {"formats": ["onnx"]},
        }
    )
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "run"
    out.mkdir()
    (out / "supernet.pt").write_bytes(NOT_A_CHECKPOINT)
    return path, out


def through_run(recipe: Path, out: Path, stage: str, *, ran: bool = True) -> str:
    """``edgenas run``'s error line without the name of the stage that failed, which it
    gives first where the stage ran (not for the recipe's checks before any stage)."""
    line = error_line(edgenas("run", recipe, "--out", out, "--quiet"))
    message = line.removeprefix("error: ")
    if ran:
        assert message.startswith(f"{stage} failed: "), line
        message = message.removeprefix(f"{stage} failed: ")
    assert f"{stage} failed: {message}" in (out / "run.log").read_text()
    return f"error: {message}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_train_on_a_missing_gpu(tmp_path: Path) -> None:
    recipe, out = run_folder(tmp_path, ["train"], train={"device": "cuda"})
    (out / "supernet.pt").unlink()
    command = error_line(edgenas("train", recipe, "--out", tmp_path / "train"))
    assert "cuda" in command
    assert through_run(recipe, out, "train") == command


def test_profile_of_an_unknown_device(tmp_path: Path) -> None:
    recipe, out = run_folder(tmp_path, ["profile"], devices=[{"name": "no-such-board"}])
    command = error_line(
        edgenas("profile", "no-such-board", "--space", "mbv3-tiny", "--out", tmp_path / "p")
    )
    assert "no-such-board" in command and not (tmp_path / "p").exists()
    # the recipe's refusal names its key (walk-through)
    recipe_line = command.replace("error: ", "error: recipe 'errors': devices[0].name: ", 1)
    assert through_run(recipe, out, "profile", ran=False) == recipe_line


def test_profile_of_a_published_device_without_its_tables(tmp_path: Path) -> None:
    line = error_line(
        edgenas("profile", "samsung-note10", "--space", "ofa-mbv3-w1.2", "--out", tmp_path / "p")
    )
    assert "--tables DIR" in line and not (tmp_path / "p").exists()


def test_profile_of_an_unreachable_device_leaves_no_folder(tmp_path: Path) -> None:
    board = tmp_path / "off.yaml"
    board.write_text(
        f"name: off-board\nkind: ssh\nssh: {{host: 127.0.0.1, port: {free_port()}, "
        "allow_agent: false, look_for_keys: false, connect_timeout: 2}\n"
    )
    line = error_line(edgenas("profile", board, "--space", "mbv3-tiny", "--out", tmp_path / "p"))
    assert "off-board" in line and not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "bad", ["no-such-space", "binary space.json", "resolution 999"], ids=lambda b: b.split()[0]
)
def test_profile_of_an_unreadable_space(bad: str, tmp_path: Path) -> None:
    # All three ended in tracebacks (issue 24's adversarial round).
    args, named = ["--space", bad], bad
    if bad == "binary space.json":
        named = str(tmp_path / "space.json")
        Path(named).write_bytes(bytes(range(256)))
        args = ["--space", named]
    elif bad == "resolution 999":
        args = ["--space", "mbv3-tiny", "--resolution", "999"]
    out = tmp_path / "p"
    line = error_line(edgenas("profile", "npu-32x32-ws", *args, "--out", out))
    assert named in line
    assert not out.exists()


def test_search_on_a_corrupt_supernet(tmp_path: Path) -> None:
    recipe, out = run_folder(tmp_path, ["search"])
    command = error_line(
        edgenas(
            "search",
            "--supernet",
            out / "supernet.pt",
            "--device",
            "npu-32x32-ws",
            "--out",
            out / "search",
            "--quiet",
        )
    )
    assert "corrupt" in command and str(out / "supernet.pt") in command
    assert through_run(recipe, out, "search") == command


def test_export_of_a_corrupt_supernet(tmp_path: Path) -> None:
    recipe, out = run_folder(tmp_path, ["export"])
    subnet = {"space": "x", "ks": [3], "e": [3], "d": [2], "r": 28}
    pareto = {
        "format": "edgenas.pareto/1",
        "front": [{"subnet": subnet}],
        "chosen": [{"index": 0, "device": "npu", "budget_ms": 1.0}],
    }
    (out / "search").mkdir()
    (out / "search" / "pareto.json").write_text(json.dumps(pareto))
    command = error_line(
        edgenas(
            "export",
            "--supernet",
            out / "supernet.pt",
            "--subnet",
            f"{out / 'search' / 'pareto.json'}#0",
            "--out",
            out / "export" / "x",
            "--quiet",
        )
    )
    assert "corrupt" in command
    assert through_run(recipe, out, "export") == command


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "{bad}"],
        ["report", "{missing}"],
        ["latency", "predict", "--predictor", "{bad}", "--subnet", "max"],
        ["npu", "simulate", "--config", "{bad}", "--onnx", "{bad}"],
        ["devices", "check", "no-such-board"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_other_commands_give_one_line(tmp_path: Path, args: list[str]) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(NOT_A_CHECKPOINT)
    given = [a.format(bad=bad, missing=tmp_path / "missing") for a in args]
    assert error_line(edgenas(*given)).startswith("error: ")


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A ValueError is not a user error, even where one used to be caught as such.
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr("latency.predictors.load_predictor", broken)
    result = CliRunner().invoke(
        app, ["latency", "predict", "--predictor", str(tmp_path / "p.json"), "--subnet", "max"]
    )
    assert isinstance(result.exception, ValueError)
    assert result.exit_code == 1


def test_a_bug_in_a_run_stage_is_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("edgenas.stages.search.search", broken)
    recipe, out = run_folder(tmp_path, ["search"])
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert isinstance(result.exception, RuntimeError)
    log = (out / "run.log").read_text()
    assert "search failed with an unexpected error (RuntimeError: boom)" in log
    assert "Traceback (most recent call last)" in log


@pytest.mark.parametrize("force", [False, True])
def test_a_stage_interrupted_says_how_to_resume_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, force: bool
) -> None:
    # After --force, "run the same command again" started the stage over (walk-through).
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("edgenas.stages.search.search", interrupted)
    recipe, out = run_folder(tmp_path, ["search"])
    args = ["run", str(recipe), "--out", str(out), "--quiet", *(["--force", "search"] * force)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130
    again = "the same command without --force" if force else "the same command again"
    assert f"search interrupted: run {again} to resume" in (out / "run.log").read_text()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["search", "--budget-ms", "fast"], "Invalid value for '--budget-ms': 'fast' is not a"),
        (["serch"], "No such command 'serch'. Did you mean 'search'?"),
        (["run", "r.yaml", "--force", "trian"], "Invalid value for '--force': 'trian' is not"),
        (["export", "--trails", "3"], "No such option: --trails"),
    ],
)
def test_a_wrong_option_or_command_is_one_line(args: list[str], line: str) -> None:
    # typer drew a usage line, a hint and a boxed error: five or six lines
    proc = edgenas_here(*args)
    assert proc.returncode == 2
    (shown,) = proc.stderr.strip().splitlines()
    assert shown.startswith(f"error: {line}") and shown.endswith(" --help')"), shown


INT8_AT = ("--min-int8-agreement", "{}")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
@pytest.mark.parametrize(
    "args",
    [
        ["search", "--device", "d", "--budget-ms", "{}"],
        ["export", "--supernet", "s.pt", "--subnet", "max", "--out", "o", "--finetune-lr", "{}"],
        ["export", "--supernet", "s.pt", "--subnet", "max", "--out", "o", "--tolerance", "{}"],
        ["export", "--supernet", "s.pt", "--subnet", "max", "--out", "o", "--int8", *INT8_AT],
    ],
    ids=[
        "search --budget-ms",
        "export --finetune-lr",
        "export --tolerance",
        "export --min-int8-agreement",
    ],
)
def test_numbers_must_be_finite(args: list[str], value: str, tmp_path: Path) -> None:
    # NaN or inf ran a whole search and crashed at its end, or exported a NaN model (issue 24);
    # they are refused before any work, like other bad option values.
    result = CliRunner().invoke(app, [a.format(value) for a in args], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    shown = "inf" if value == "1e400" else value
    # typer's own bounds answered NaN with "should be less than or equal to 1".
    assert f"Invalid value for '{args[-2]}': {shown} is not a finite number" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--tolerance", "-1e-5", "-1e-05 is not at least 0"),
        ("--finetune-lr", "-0.1", "-0.1 is not within [0, 1e+06]"),
        ("--finetune-lr", "1e39", "1e+39 is not within [0, 1e+06]"),  # beyond float32
        ("--min-int8-agreement", "1.5", "1.5 is not within [0, 1]"),
    ],
)
def test_numbers_out_of_range_are_refused(option: str, value: str, message: str) -> None:
    args = ["export", "--supernet", "s.pt", "--subnet", "max", "--out", "o", "--int8"]
    result = CliRunner().invoke(app, [*args, option, value], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': {message}" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["latency", "predict", "--predictor", "p.json", "--subnet", "random", "--seed", "{}"],
        ["latency", "validate", "d", "--predictor", "p.json", "--seed", "{}"],
        ["eval", "s.pt", "--subnet", "random", "--seed", "{}"],
        ["search", "--device", "d", "--seed", "{}"],
    ],
    ids=["latency predict", "latency validate", "eval", "search"],
)
@pytest.mark.parametrize(
    ("value", "bound"),
    [("-3", "greater than or equal to 0"), (str(2**32), "less than or equal to 4294967295")],
)
def test_seeds_are_numpys(args: list[str], value: str, bound: str) -> None:
    # Only search bounded its seed; the others took any (review). The README: 0 to 2^32 - 1.
    result = CliRunner().invoke(app, [a.format(value) for a in args], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert f"Invalid value for '--seed': Input should be {bound}" in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["search", "--device", "d", "--accuracy", "ofa-predictor", "--eval-images", "10"],
            "--eval-images: --accuracy ofa-predictor scores subnets with OFA's predictor, and "
            "evaluates none; leave --eval-images out",
        ),
        (
            ["search", "--device", "d", "--accuracy", "ofa-predictor", "--data", "/tmp"],
            "--data: --accuracy ofa-predictor scores subnets with OFA's predictor, and "
            "evaluates none; leave --data out",
        ),
        (
            ["search", "--device", "d", "--accuracy", "direct", "--accuracy-samples", "50"],
            "--accuracy-samples: --accuracy direct evaluates every trial, and fits no accuracy "
            "predictor; leave --accuracy-samples out",
        ),
        (
            ["profile", "samsung-note10", "--space", "ofa-mbv3-w1.2", "--calibrate", "100"],
            "--calibrate: samsung-note10 is published latency tables, imported as they are, and "
            "nothing is measured; leave --calibrate out",
        ),
        (
            ["profile", "samsung-note10", "--space", "ofa-mbv3-w1.2", "--workers", "5"],
            "--workers: samsung-note10 is published latency tables",
        ),
        (
            [
                "profile",
                "npu-32x32-ws",
                "--space",
                "mbv3-tiny",
                "--calibrate",
                "0",
                "--passes",
                "5",
            ],
            "--passes are of the calibration subnets, and --calibrate 0 measures none: leave one "
            "of them out",
        ),
    ],
    ids=[
        "ofa eval-images",
        "ofa data",
        "direct samples",
        "published calibrate",
        "published workers",
        "passes without calibration",
    ],
)
def test_options_that_do_nothing_are_refused(args: list[str], line: str, tmp_path: Path) -> None:
    # Each was taken and did nothing (review).
    proc = edgenas(*args, "--out", tmp_path / "o")
    assert error_line(proc).startswith(f"error: {line}")
    assert not (tmp_path / "o").exists()


def test_validation_subnets_are_bounded() -> None:
    # --n 100000000 drew subnets for minutes, printing nothing (review).
    args = ["latency", "validate", "d", "--predictor", "p.json", "--n", "100000"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "Invalid value for '--n': Input should be less than or equal to 10000" in result.output


def test_every_int8_only_option_is_an_option_of_export() -> None:
    # A name that is not one would never count as given (review).
    import inspect

    from edgenas.cli.export import INT8_ONLY, export_command

    assert set(INT8_ONLY) <= set(inspect.signature(export_command).parameters)


@pytest.mark.parametrize("command", ["run r.yaml", "train r.yaml", "export --subnet max"])
def test_threads_are_capped_as_the_readme_says(command: str) -> None:
    # export took any --threads (README audit: "--threads up to 1024").
    args = [*command.split(), "--threads", "1025"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert (
        "Invalid value for '--threads': Input should be less than or equal to 1024" in result.output
    )


def command_args(command: str, trained: Path, tmp_path: Path) -> list[str | Path]:
    """Valid arguments for ``command``, but ``--out``, with its inputs written to ``tmp_path``
    (a recipe r.yaml and a predictor in p/)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(MICRO_RECIPE))
    predictor("test-cpu").save(tmp_path / "p" / "predictor.json")
    supernet = trained / "run" / "supernet.pt"
    args: dict[str, list[str | Path]] = {
        "train": ["train", recipe],
        "profile": ["profile", "local-cpu", "--space", "mbv3-tiny"],
        "search": [
            "search",
            "--supernet",
            supernet,
            "--device",
            tmp_path / "p" / "predictor.json",
            "--budget-ms",
            "100",
            "--trials",
            "5",
            "--accuracy-samples",
            "10",
            "--eval-images",
            "200",
        ],
        "export": ["export", "--supernet", supernet, "--subnet", "max", "--format", "onnx"],
        "run": ["run", recipe],
    }
    return args[command]


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ("train", "is a file"),
        ("train", "under a file"),
        ("profile", "under a file"),
        ("search", "is a file"),
        ("run", "under a file"),
    ],
)
def test_an_output_folder_that_cannot_be_one_is_refused_first(
    command: str, where: str, trained: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the output folder should be")
    out = blocker if where == "is a file" else blocker / "out"
    line = error_line(edgenas(*command_args(command, trained, tmp_path), "--out", out))
    assert line == (
        f"error: cannot use {out} as the output folder: {blocker} is a file, not a folder; "
        "choose a folder you can write to"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "p", "r.yaml"]


@pytest.mark.parametrize("command", ["train", "profile", "search", "export", "run"])
def test_an_output_folder_another_command_writes_to_is_refused(
    command: str, trained: Path, tmp_path: Path
) -> None:
    # Two trainings started 0.3 s apart on one folder both printed "supernet written"; the
    # folder held the second one only (issue 24).
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("the other command's work")
    holder = hold_folder(out)
    try:
        line = error_line(edgenas(*command_args(command, trained, tmp_path), "--out", out))
    finally:
        holder.kill()
        holder.wait()
    assert line == (
        f"error: {out} is in use: another edgenas command is writing to it; wait for it to "
        "finish, or choose another --out"
    )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("command", "change"),
    [("eval", "other classes"), ("search", "rgb for grayscale"), ("export", "other classes")],
)
def test_data_replaced_since_training_is_refused(
    command: str, change: str, trained: Path, tmp_path: Path
) -> None:
    # Grayscale replaced by RGB failed deep in conv2d; other classes printed an accuracy
    # (issue 24). The checkpoint is the trained one, its data file replaced by real other data.
    rng = np.random.default_rng(0)
    channels, classes = (3, 10) if change == "rgb for grayscale" else (1, 4)
    images = rng.integers(0, 256, (200, 28, 28, channels) if channels == 3 else (200, 28, 28))
    labels = np.arange(200) % classes
    data = tmp_path / "data.npz"
    np.savez(data, x=images.astype(np.uint8), y=labels)
    payload = load_checkpoint(trained / "run" / "supernet.pt")
    payload["data"] = {**payload["data"], "source": str(data), "val_size": 20}
    supernet = tmp_path / "supernet.pt"
    save_checkpoint(supernet, cast(CheckpointBody, payload))
    search = command_args("search", trained, tmp_path)  # its supernet replaced below
    args: dict[str, list[str | Path]] = {
        "eval": ["eval", supernet, "--subnet", "max"],
        "search": [*search[:2], supernet, *search[3:], "--out", tmp_path / "o"],
        "export": ["export", "--supernet", supernet, "--subnet", "max", "--out", tmp_path / "o"],
    }
    what = "channels: 3 now, 1 then" if channels == 3 else "classes: ['0', '1', '2', '3'] now"
    line = error_line(edgenas(*args[command]))
    assert line.startswith(f"error: the data at {data} no longer matches what {supernet} was")
    assert what in line and line.endswith("restore that data, or train a supernet on the new data")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("content", ["not json", "another space"])
def test_a_bad_enqueued_subnet_names_its_file(content: str, trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    other = get_space("mbv3-imagenet").max_subnet()
    bad.write_text("{not json" if content == "not json" else other.to_json())
    args = command_args("search", trained, tmp_path)
    line = error_line(edgenas(*args, "--enqueue", bad, "--out", tmp_path / "o"))
    named = f"{bad} is not JSON (" if content == "not json" else f"subnet file {bad}: "
    assert line.startswith(f"error: {named}")
    assert not (tmp_path / "o").exists()


def test_an_enqueued_ofa_arch_dict_is_read_as_export_reads_it(
    trained: Path, tmp_path: Path
) -> None:
    # OFA's own arch dict (its EvolutionFinder's output), which export, eval and latency
    # predict take, was refused as "missing space" (review).
    space = get_space("mbv3-tiny")
    subnet = dataclasses.replace(space.min_subnet(), ks=(7,) * len(space.min_subnet().ks))
    ofa = tmp_path / "ofa.json"
    ofa.write_text(json.dumps(subnet.to_ofa()))
    args = command_args("search", trained, tmp_path)
    args[args.index("--trials") + 1] = "1"  # the enqueued subnet is the one trial
    proc = edgenas(*args, "--enqueue", ofa, "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    (member,) = json.loads((tmp_path / "o" / "pareto.json").read_text())["front"]
    assert Subnet.from_dict(member["subnet"]) == subnet


def test_enqueued_min_is_the_smallest_at_the_resolutions_searched(
    trained: Path, tmp_path: Path
) -> None:
    # min came at the space's smallest resolution, which the resolution check then refused
    # where the predictors cover fewer (OFA's Note10 tables: 160-224 px of 128-224; review).
    args = command_args("search", trained, tmp_path)
    predictor("test-cpu", resolutions=(32,)).save(tmp_path / "p" / "predictor.json")
    args[args.index("--trials") + 1] = "1"
    proc = edgenas(*args, "--enqueue", "min", "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    (member,) = json.loads((tmp_path / "o" / "pareto.json").read_text())["front"]
    assert Subnet.from_dict(member["subnet"]) == get_space("mbv3-tiny").min_subnet(r=32)


def test_an_enqueued_subnet_at_a_resolution_not_searched_is_refused_first(
    trained: Path, tmp_path: Path
) -> None:
    # Optuna refused it with a traceback, after the accuracy samples were evaluated (review).
    args = command_args("search", trained, tmp_path)
    predictor("test-cpu", resolutions=(32,)).save(tmp_path / "p" / "predictor.json")
    at_28 = tmp_path / "r28.json"
    at_28.write_text(dataclasses.replace(get_space("mbv3-tiny").max_subnet(), r=28).to_json())
    line = error_line(edgenas(*args, "--enqueue", at_28, "--out", tmp_path / "o"))
    assert line == (
        f"error: --enqueue {at_28}: resolution 28 is not searched here (the devices' predictors "
        "and the accuracy source share 32): give a subnet at one of those"
    )
    assert not (tmp_path / "o").exists()


def test_the_guided_sampler_without_a_budget_is_refused_first(
    trained: Path, tmp_path: Path
) -> None:
    args = command_args("search", trained, tmp_path)
    budget = args.index("--budget-ms")
    del args[budget : budget + 2]
    proc = edgenas(*args, "--sampler", "guided", "--out", tmp_path / "o")
    assert error_line(proc).startswith("error: sampler guided searches under latency budgets")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train", "search"])  # export: test_conversion_error
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
    command: str, trained: Path, tmp_path: Path
) -> None:
    # Train and search ended in tracebacks; export blamed the model's "unsupported ops".
    args = command_args(command, trained, tmp_path)
    with small_filesystem(tmp_path / "disk", size_kb=256) as disk:
        # Nearly full: the first sizeable write (a checkpoint, a cache, a model) fails.
        (disk / "filler").write_bytes(b"\0" * 200 * 1024)
        line = error_line(edgenas(*args, "--out", disk / "out"))
        assert "No space left on device" in line and "free some space" in line
        left = [p.name for p in (disk / "out").rglob("*")] if (disk / "out").exists() else []
    assert not [name for name in left if ".tmp" in name or name.startswith(".partial-")]


def test_run_finds_an_unreachable_board_before_training(tmp_path: Path) -> None:
    # It was reported after training finished (issue 24).
    board = tmp_path / "board.yaml"
    board.write_text(
        yaml.safe_dump(
            {
                "name": "far-board",
                "kind": "ssh",
                "ssh": {"host": "127.0.0.1", "port": free_port(), "connect_timeout": 2},
            }
        )
    )
    recipe, out = run_folder(
        tmp_path, ["train", "profile"], devices=[{"name": str(board), "calibrate": 0}]
    )
    (out / "supernet.pt").unlink()
    line = through_run(recipe, out, "profile", ran=False)
    assert line.startswith("error: device 'far-board': cannot reach 127.0.0.1:")
    assert not (out / "checkpoint.pt").exists() and not (out / "supernet.pt").exists()


def test_a_stem_split_in_more_groups_than_channels_is_refused_before_training(
    tmp_path: Path,
) -> None:
    # Export refused it after training and search; profile, after training.
    recipe, out = run_folder(tmp_path, ["train", "profile", "export"], export={"stem_groups": 99})
    (out / "supernet.pt").unlink()
    line = through_run(recipe, out, "export", ran=False)
    space = get_space("mbv3-tiny")
    channels = space.width(space.stem_width)
    assert line.startswith(
        "error: recipe 'errors': export.stem_groups: stem groups 99: the stem of space "
    )
    assert line.endswith(f"has {channels} channels; give {channels} or fewer")
    assert not (out / "checkpoint.pt").exists() and not (out / "supernet.pt").exists()


def test_a_device_that_runs_none_of_the_exported_files_is_refused_before_any_stage(
    tmp_path: Path,
) -> None:
    # Export refused it, after discarding the previous export (walk-through).
    devices = [
        {"name": "npu-32x32-ws", "budget_ms": 1.0},
        {"name": "local-cpu-litert", "budget_ms": 1.0},
    ]
    recipe, out = run_folder(tmp_path, ["train", "export"], devices=devices)
    (out / "supernet.pt").unlink()
    line = through_run(recipe, out, "export", ran=False)
    assert line == (
        "error: recipe 'errors': devices[1]: device 'local-cpu-litert' runs tflite, which "
        "takes fp32/int8 tflite files, and export.formats is [onnx]: export those "
        "(export.formats, export.int8) or take the device out of devices"
    )
    assert not (out / "checkpoint.pt").exists() and not (out / "supernet.pt").exists()


def test_ofa_accuracy_predictor_for_another_network_is_refused_before_training(
    tmp_path: Path,
) -> None:
    # The search refused mbv3-tiny after training; OFA's w1.0 it scored with w1.2's accuracies.
    search = {"accuracy": "ofa-predictor", "ofa_predictor": str(tmp_path / "acc_predictor.pth")}
    recipe, out = run_folder(tmp_path, ["train", "search"], search=search)
    (out / "supernet.pt").unlink()
    line = through_run(recipe, out, "search", ran=False)
    assert line.startswith(
        "error: recipe 'errors': search.accuracy: ofa-predictor: OFA's accuracy predictor encodes "
        "5 stages x 4 blocks"
    )
    assert not (out / "checkpoint.pt").exists() and not (out / "supernet.pt").exists()
    recipe.write_text(recipe.read_text().replace("space: mbv3-tiny", "space: ofa-mbv3-w1.0"))
    fresh = tmp_path / "fresh"
    line = error_line(edgenas("run", recipe, "--out", fresh, "--quiet"))
    assert "space ofa-mbv3-w1.0-" in line and "is another network" in line
    assert not fresh.exists()


def test_every_stage_computes_on_the_recipes_threads_whichever_stages_run(
    tmp_path: Path,
) -> None:
    # Training set the count and the stages after it kept it, so a resumed run that skipped
    # training fine-tuned (and exported) on torch's default count: other files than an
    # uninterrupted run's.
    from rich.console import Console

    from edgenas.pipeline import run_recipe
    from edgenas.run_folder import RunOptions

    recipe, out = run_folder(tmp_path, ["export"], train={"threads": 3})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(Exception, match="does not exist"):  # no search was run
            run_recipe(recipe, RunOptions(out=out, quiet=True), Console(quiet=True))
        assert torch.get_num_threads() == 3
        with pytest.raises(Exception, match="does not exist"):
            run_recipe(recipe, RunOptions(out=out, quiet=True, threads=2), Console(quiet=True))
        assert torch.get_num_threads() == 2  # --threads wins
    finally:
        torch.set_num_threads(before)


def test_profile_with_too_few_calibration_subnets_fails_first(tmp_path: Path) -> None:
    # --calibrate 5 failed after the whole table was measured (issue 24).
    proc = edgenas(
        "profile", "local-cpu", "--space", "mbv3-tiny", "--calibrate", "5", "--out", tmp_path / "p"
    )
    assert proc.returncode == 2
    assert "5 subnets cannot fit a calibrated predictor; give 0 (lut-sum only) or at least 10" in (
        " ".join(proc.stderr.split())
    )
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("where", ["under a file", "a folder", "not a PNG"])
def test_latency_validate_checks_its_plot_path_first(tmp_path: Path, where: str) -> None:
    # A plot path under a file was a traceback after all the measuring (issue 24).
    predictor("test-cpu").save(tmp_path / "p" / "predictor.json")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    notes = tmp_path / "notes.txt"  # overwritten with the plot (search audit)
    notes.write_text("precious notes")
    plot = {"under a file": blocker / "v.png", "a folder": tmp_path, "not a PNG": notes}[where]
    line = error_line(
        edgenas(
            "latency",
            "validate",
            "local-cpu",
            "--predictor",
            tmp_path / "p" / "predictor.json",
            "--plot",
            plot,
        )
    )
    expected = {
        "under a file": f"error: cannot use {blocker} as the output folder: {blocker} is a "
        "file, not a folder; choose a folder you can write to",
        "a folder": f"error: --plot {tmp_path} is a folder: give the PNG file's path",
        "not a PNG": f"error: --plot {notes} exists and is not a PNG image: give a new path "
        "or a plot's (a plot never overwrites other files)",
    }[where]
    assert line == expected and notes.read_text() == "precious notes"
    assert not (tmp_path / "p" / "validation.json").exists()  # nothing measured


def test_a_study_made_for_another_search_is_refused_before_any_work(
    trained: Path, tmp_path: Path
) -> None:
    # It was found after the accuracy predictor's subnets were evaluated (issue 24).
    args = command_args("search", trained, tmp_path)
    first = edgenas(*args, "--out", tmp_path / "s")
    assert first.returncode == 0, first.stderr
    budget = args.index("--budget-ms") + 1
    again = edgenas(*args[:budget], "50", *args[budget + 1 :], "--out", tmp_path / "s")
    line = error_line(again)
    assert "accuracy (inherited weights)" not in again.stderr  # no subnet was evaluated
    # one short line naming what differs and the fix (it printed both identities whole)
    assert line == (
        "error: study 'edgenas' was made for budgets test-cpu=100 ms, not test-cpu=50 ms: "
        "give another --study-name, or a new --out"
    )
    # A study in a --storage of its own: a new --out would not help (audit, finding 7).
    storage = f"journal:{tmp_path / 's' / 'study.log'}"
    again = edgenas(
        *args[:budget], "50", *args[budget + 1 :], "--storage", storage, "--out", tmp_path / "t"
    )
    assert error_line(again).endswith(
        "not test-cpu=50 ms: give another --study-name, or another --storage"
    )


def _holds_lock(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` holds ``folder``'s lock (/proc/locks): the command is past
    its imports and checks, at work."""
    try:
        inode = folder.stat().st_ino
    except FileNotFoundError:
        return False
    held = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    # 1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF  (pid, then device:inode)
    return any(
        f[1:2] == ["FLOCK"] and f[4] == str(pid) and f[5].rsplit(":", 1)[-1] == str(inode)
        for f in held
    )


def lost_ctrl_c(mode: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.lost_ctrl_c", "probe", mode, *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.mark.parametrize("mode", ["pyrun", "weakref", "cleared", "import"])
def test_a_ctrl_c_that_python_or_a_library_would_lose_still_stops_with_130(mode: str) -> None:
    # `export` interrupted early ended by SIGINT (-2) once in ~30 tries, after printing its
    # line (pyrun: CPython remembered the handled KeyboardInterrupt); once in ~60 it finished
    # with 0 (weakref, cleared) or a traceback (import). The command stops at once where it
    # can (it never prints "finished" but where the interrupted code dropped the Ctrl-C).
    proc = lost_ctrl_c(mode)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "interrupted; run the same command again\n"
    assert proc.stdout == ("finished\n" if mode == "cleared" else "")


@pytest.mark.parametrize(("mode", "returncode"), [("pyrun", -2), ("weakref", 0), ("cleared", 0)])
def test_with_pythons_own_handler_those_ctrl_cs_are_lost(mode: str, returncode: int) -> None:
    # What the handler main() installs is for: the interpreter's own loses each of them.
    assert lost_ctrl_c(mode, "--plain").returncode == returncode


def _started_at_work(
    command: str, trained: Path, tmp_path: Path, **env: str
) -> tuple[subprocess.Popen[str], float]:
    """``edgenas COMMAND ... --out tmp_path/out --quiet`` started, once it holds its output
    folder's lock (at work), and the deadline for what the test waits for next."""
    out = tmp_path / "out"
    args = [*command_args(command, trained, tmp_path), "--out", out, "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenas", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "EDGENAS_CACHE": str(tmp_path / "cache"), **env},
        cwd=REPO,
    )
    deadline = time.monotonic() + 300
    while not _holds_lock(proc.pid, out) and proc.poll() is None:
        assert time.monotonic() < deadline, f"edgenas {command} never locked {out}"
        time.sleep(0.01)
    return proc, deadline


@pytest.mark.parametrize("command", ["train", "profile", "search", "export", "run"])
def test_ctrl_c_prints_one_line_even_when_quiet(
    command: str, trained: Path, tmp_path: Path
) -> None:
    # `profile --out D --quiet` exited 130 and printed nothing; so did train, search, export
    # and run (issue 24). --quiet silences progress, not this line.
    proc, _ = _started_at_work(command, trained, tmp_path)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    if command == "run":  # it names the stage it stopped, when it was in one
        assert lines[0] in (
            INTERRUPTED["run"],
            *(
                f"interrupted in the {stage} stage: finished work is saved; run the same command "
                "again to resume"
                for stage in ("profile", "train")
            ),
        ), stderr
    else:
        assert lines[0] == INTERRUPTED[command]


def _workers(pid: int) -> list[int]:
    """The worker processes (multiprocessing's spawned children) of process ``pid``."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return []
    found = []
    for child in map(int, children):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


@pytest.mark.parametrize("after_s", [0.0, 4.0])
def test_ctrl_c_to_the_process_group_while_workers_export_prints_one_line(
    after_s: float, tmp_path: Path
) -> None:
    # A terminal's Ctrl-C reaches the whole process group: the export workers, interrupted
    # while importing torch, printed tracebacks, and one interrupted while converting hung
    # the command after its "interrupted" line (review). They ignore it now, and the command
    # ends its pool. At 0 s the workers are starting; at 4 s they are converting.
    out = tmp_path / "p"
    args = ["profile", "local-cpu", "--space", "mbv3-tiny", "--resolution", "28"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenas", *args, "--calibrate", "0", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "EDGENAS_CACHE": str(tmp_path / "cache")},
        cwd=REPO,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 300
    while not _workers(proc.pid):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "edgenas profile started no export workers"
        time.sleep(0.01)
    time.sleep(after_s)
    workers = _workers(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)  # it hung for good
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == INTERRUPTED["profile"] and "Traceback" not in stderr, stderr
    # ended with their pool (joined before the command exits), not left behind
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]


def _loading_torch(pid: int) -> bool:
    """Whether process ``pid`` has mapped torch's library: it is importing torch (which takes
    a second or more after that) or past it."""
    try:
        return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_while_the_command_imports_torch_prints_one_line(
    signum: signal.Signals, tmp_path: Path
) -> None:
    # Ctrl-C in a command's first ~2 s printed a traceback of `import torch` and ended by
    # SIGINT (-2): the handler came after the imports (audit, finding 4). It comes first now,
    # so the signal may arrive at any moment after torch starts loading.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(MICRO_RECIPE))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenas", "train", str(recipe), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while not _loading_torch(proc.pid) and proc.poll() is None:
        assert time.monotonic() < deadline, "edgenas never loaded torch"
        time.sleep(0.001)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr
    assert stdout == ""
    assert [line for line in stderr.splitlines() if line.strip()] == [INTERRUPTED["train"]]


@pytest.mark.parametrize("command", ["profile", "export"])
def test_sigterm_stops_a_command_as_ctrl_c_does_and_cleans_up(
    command: str, trained: Path, tmp_path: Path
) -> None:
    # SIGTERM (kill, timeout, a cancelled CI job) ended the process at once: no line, exit
    # 143, and the device runner's temporary folder left behind (device audit).
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, deadline = _started_at_work(command, trained, tmp_path, TMPDIR=str(scratch))
    if command == "profile":  # once the runner is at work in its temporary folder
        while not any(scratch.glob("edgenas-local-*")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the local runner never started"
            time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [INTERRUPTED[command]]
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("edgenas")]


def _runner_pids(folder: Path) -> list[int]:
    """The processes whose command line names ``folder`` (a local runner's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(folder) in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile
    return pids


def _measures(job: Path) -> bool:
    try:
        return bool(json.loads(job.read_text())["models"])
    except (OSError, ValueError, KeyError):
        return False  # not written yet


def test_a_sigkilled_profile_leaves_no_runner_at_work_and_its_folder_goes_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner measured on to the end of its batch beside the rerun's measurements, and its
    # folder stayed in the temp folder for good (latency audit).
    from devices.local import remove_orphaned_folders

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    slow = tmp_path / "slow.yaml"  # a batch of seconds: 2,000 timed runs of each block
    slow.write_text("name: slow-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\nruns: 2000\n")
    args = ["profile", slow, "--space", "mbv3-tiny", "--resolution", "28", "--calibrate", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenas", *map(str, args), "--out", tmp_path / "out", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**ENV, "EDGENAS_CACHE": str(tmp_path / "cache"), "TMPDIR": str(scratch)},
        cwd=REPO,
    )
    deadline = time.monotonic() + 300
    runners: list[int] = []
    while not runners and proc.poll() is None:  # a runner measuring (not asked for facts)
        assert time.monotonic() < deadline, "the local runner never measured"
        runners = [
            pid
            for f in scratch.glob("edgenas-local-*")
            if _measures(f / "job.json")
            for pid in _runner_pids(f)
        ]
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    until = time.monotonic() + 300
    while any(Path(f"/proc/{pid}").exists() for pid in runners):
        assert time.monotonic() < until, "the runner went on after edgenas was killed"
        time.sleep(0.05)
    (left,) = [f for f in scratch.glob("edgenas-local-*") if _measures(f / "job.json")]
    # It was interrupted at once, as by Ctrl-C, not after measuring its batch to the end.
    error = json.loads((left / "results.json").read_text())["error"]
    assert error["kind"] == "interrupted", error
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    remove_orphaned_folders()  # as the next local run does
    assert not left.exists()


def test_a_local_device_whose_python_is_missing_is_refused_before_training(
    tmp_path: Path,
) -> None:
    # local-cpu-openvino names .venv-openvino/bin/python, taken from where edgenas runs: from
    # another folder, the profile stage failed on it after the training.
    profile = tmp_path / "mine.yaml"
    profile.write_text("name: mine\nkind: local\nlocal: {python: env/bin/python}\n")
    recipe, _ = run_folder(
        tmp_path, ["train", "profile"], devices=[{"name": str(profile), "budget_ms": 1.0}]
    )
    fresh = tmp_path / "fresh"
    line = error_line(edgenas("run", recipe, "--out", fresh, "--quiet", cwd=tmp_path))
    assert line == (
        "error: recipe 'errors': devices[0]: device 'mine': local.python 'env/bin/python' is "
        f"not an executable file (a relative path, read from {tmp_path}, where edgenas runs: run "
        "edgenas from the folder it is relative to, or give an absolute path)"
    )
    assert not fresh.exists()
    (tmp_path / "env").symlink_to(sys.prefix)  # there now: the recipe goes on to train
    from devices.local import interpreter_problem

    with contextlib.chdir(tmp_path):
        assert interpreter_problem("env/bin/python") is None
    assert interpreter_problem("no-such-python-anywhere") == (
        "local.python 'no-such-python-anywhere' is not an executable file"
    )


NOTE10_FILES = (
    "R_lookup_table.yaml from https://raw.githubusercontent.com/han-cai/files/master/ofa/note10/"
)


@pytest.mark.parametrize(
    ("device", "problem"),
    [
        (
            {"name": "npu-32x32-ws", "budget_ms": 0.2, "resolution": [9999]},
            "devices[0].resolution: 9999 is not a resolution of space mbv3-tiny: give "
            "resolutions among 28, 30, 32, or leave it out for all",
        ),
        (
            {"name": "samsung-note10", "budget_ms": 15.0, "tables": "/nonexistent/note10"},
            f"devices[0].tables: /nonexistent/note10 is not a folder: give the folder holding "
            f"{NOTE10_FILES}",
        ),
        (
            {"name": "samsung-note10", "budget_ms": 15.0},
            "devices[0].tables: device 'samsung-note10' is published tables: give the folder "
            f"holding them (download {NOTE10_FILES})",
        ),
        (
            {"name": "npu-32x32-ws", "budget_ms": 0.2, "tables": "ofa/note10"},
            "devices[0].tables: device 'npu-32x32-ws' is measured, not imported: tables is for "
            "a published device's tables (e.g. samsung-note10); leave it out",
        ),
        (
            {"name": "samsung-note10", "budget_ms": 15.0, "tables": ".", "per_op": True},
            "devices[0].per_op: device 'samsung-note10' is published tables, imported as they "
            "are: they hold no per-op times; leave per_op out",
        ),
        (
            {"name": "samsung-note10", "budget_ms": 15.0, "tables": ".", "calibrate": 20},
            "devices[0].calibrate: device 'samsung-note10' is published tables, imported as "
            "they are, and nothing is measured to calibrate with; leave calibrate out",
        ),
        (
            {"name": "samsung-note10", "budget_ms": 15.0, "tables": ".", "precision": "int8"},
            "devices[0].precision: samsung-note10's published tables are of fp32 tflite models, "
            "not int8, and nothing more can be measured; leave precision out",
        ),
        (
            {"name": "npu-32x32-ws", "budget_ms": 0.5, "precision": "int8"},
            "devices[0].precision: device 'npu-32x32-ws' (npu-sim) measures fp32 models, not "
            "int8: give fp32 or leave it out",
        ),
        (
            {"name": "ethos-u55-128", "budget_ms": 5.0, "format": "onnx"},
            "devices[0].format: device 'ethos-u55-128' runs vela, which measures tflite "
            "models, not onnx: give tflite or leave it out",
        ),
    ],
    ids=[
        "resolution",
        "tables missing",
        "no tables",
        "tables of a measured device",
        "per_op",
        "calibrate",
        "precision",
        "precision the runtime cannot measure",
        "format the runtime cannot measure",
    ],
)
def test_a_device_entry_profiling_would_refuse_is_refused_before_training(
    device: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    # Training ran first, then the profile stage refused the entry, naming the command line's
    # --resolution, --tables or --precision rather than the recipe's key (or ignored the
    # tables; input audit, walk-through).
    recipe, out = run_folder(tmp_path, ["train", "profile"], devices=[device])
    (out / "supernet.pt").unlink()
    line = through_run(recipe, out, "profile", ran=False)
    assert line == f"error: recipe 'errors': {problem}"
    assert not (out / "checkpoint.pt").exists() and not (out / "supernet.pt").exists()
    fresh = tmp_path / "fresh"
    assert error_line(edgenas("run", recipe, "--out", fresh, "--quiet")) == line
    assert not fresh.exists()
