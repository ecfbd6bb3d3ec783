"""The `edgenas` command as a user runs it: real processes, real data, a real kill."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from once_for_all import get_space, load_checkpoint
from once_for_all.data.source_digest import source_digest
from tests.edgenas.conftest import MICRO_RECIPE
from tests.support.cli_here import edgenas_here

EDGENAS = [sys.executable, "-m", "edgenas"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def run(
    *args: str | Path, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*EDGENAS, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edgenas {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_train_writes_supernet_and_eval_reports_json(trained: Path) -> None:
    supernet = trained / "run" / "supernet.pt"
    assert supernet.is_file()
    assert not list((trained / "run").glob(".*tmp"))
    proc = run("eval", supernet, "--subnet", "min", "--json")
    result = json.loads(proc.stdout)
    assert set(result) == {"subnet", "accuracy", "split"}
    assert result["split"] == "val" and 0.0 <= result["accuracy"] <= 1.0
    assert result["subnet"] == get_space("mbv3-tiny").min_subnet().to_dict()
    proc = run("eval", supernet, "--subnet", "random", "--seed", "3", "--split", "test", "--json")
    assert json.loads(proc.stdout)["split"] == "test"


def test_killed_training_resumes_to_the_same_weights(trained: Path) -> None:
    out = trained / "killed"
    recipe = trained / "micro.yaml"
    proc = subprocess.Popen([*EDGENAS, "train", str(recipe), "--out", str(out), "--quiet"], env=ENV)
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists()
    epochs_before = len(load_checkpoint(checkpoint)["history"])
    # The kill needs a process of its own; the rerun and the resume do not.
    refused = edgenas_here("train", recipe, "--out", out)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    resume = edgenas_here("train", recipe, "--out", out, "--resume", "--quiet")
    assert resume.returncode == 0, resume.stderr
    resumed = load_checkpoint(out / "supernet.pt")
    reference = load_checkpoint(trained / "run" / "supernet.pt")
    assert epochs_before < len(resumed["history"]) == len(reference["history"])
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    for needle in needles:
        assert needle in text, proc.stderr


def test_eval_errors_are_one_line(tmp_path: Path, trained: Path) -> None:
    _assert_one_line_error(
        run("eval", tmp_path / "none.pt", check=False), "not found", "edgenas train"
    )
    # The rest in-process (a process each costs seconds of imports).
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    _assert_one_line_error(edgenas_here("eval", corrupt), "corrupt")
    other = get_space("mbv3-imagenet").max_subnet()
    subnet_file = tmp_path / "subnet.json"
    subnet_file.write_text(other.to_json())
    proc = edgenas_here("eval", trained / "run" / "supernet.pt", "--subnet", subnet_file)
    _assert_one_line_error(proc, "subnet is for space", "mbv3-imagenet")
    bad = get_space("mbv3-tiny").max_subnet().to_dict()
    bad["ks"][7] = 4  # type: ignore[index]
    subnet_file.write_text(json.dumps(bad))
    proc = edgenas_here("eval", trained / "run" / "supernet.pt", "--subnet", subnet_file)
    _assert_one_line_error(proc, "ks[7]=4: allowed 3, 5, 7")


@pytest.mark.parametrize("resume", [False, True])
def test_training_does_not_replace_a_supernet_it_did_not_train(
    tmp_path: Path, micro_recipe: Path, resume: bool
) -> None:
    # An imported supernet.pt was overwritten at the end, and space.json at the start (audit, 1).
    out = tmp_path / "imported"
    out.mkdir()
    (out / "supernet.pt").write_bytes(b"imported")
    (out / "space.json").write_text("{}")
    proc = edgenas_here("train", micro_recipe, "--out", out, *(["--resume"] if resume else []))
    _assert_one_line_error(proc, f"{out} already holds a supernet", "choose another --out")
    assert (out / "supernet.pt").read_bytes() == b"imported"
    assert (out / "space.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == ["space.json", "supernet.pt"]


def test_a_damaged_training_checkpoint_says_how_to_train_afresh(
    tmp_path: Path, micro_recipe: Path
) -> None:
    # Resuming said "retrain or restore it", training anew "pass --resume": nothing said that
    # the checkpoint in --out had to go (walk-through).
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    proc = edgenas_here("train", micro_recipe, "--out", out, "--resume")
    _assert_one_line_error(
        proc,
        f"checkpoint {out / 'checkpoint.pt'} is corrupt or not an edgenas checkpoint",
        f"restore it, or delete it to train into {out} afresh (edgenas run: --force train)",
    )
    assert (out / "checkpoint.pt").read_bytes() == b"PK\x03\x04 cut short"


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{ckpt}", "--subnet", "min"],
        ["search", "--supernet", "{ckpt}", "--device", "npu-32x32-ws", "--out", "{out}"],
    ],
    ids=["eval", "search"],
)
def test_an_unfinished_training_checkpoint_is_refused(
    tmp_path: Path, trained: Path, command: list[str]
) -> None:
    # eval and search used one silently, while export and init_from refuse it (audit, 6).
    payload = torch.load(trained / "run" / "supernet.pt", weights_only=True)
    unfinished = tmp_path / "checkpoint.pt"
    torch.save({**payload, "complete": False, "phase_index": 2}, unfinished)
    out = tmp_path / "search"
    proc = edgenas_here(*(a.format(ckpt=unfinished, out=out) for a in command))
    assert not out.exists()
    _assert_one_line_error(
        proc,
        f"{unfinished} is an unfinished training checkpoint: finish it (edgenas train --resume) "
        "and give its supernet.pt",
    )
    assert "accuracy" not in proc.stdout + proc.stderr


def test_resume_without_a_checkpoint_says_it_starts_a_new_run(tmp_path: Path) -> None:
    # A mistyped --out with --resume started from scratch without a word (audit, finding 7);
    # it still trains (a script may always pass --resume), and says so even with --quiet.
    recipe_dict = copy.deepcopy(MICRO_RECIPE)
    recipe_dict["train"]["phases"] = recipe_dict["train"]["phases"][:1]
    recipe = tmp_path / "one-epoch.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict))
    out = tmp_path / "typo"
    proc = edgenas_here("train", recipe, "--out", out, "--resume", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"no checkpoint in {out}: starting a new run" in " ".join(proc.stderr.split())
    assert (out / "supernet.pt").is_file()


def test_train_rejects_bad_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntrain: {epochs: [1, 1, 1, 1, 1, 1], lr: 0.1, speed: 3}\n")
    proc = run("train", recipe, "--out", tmp_path / "out", check=False)
    _assert_one_line_error(proc, "train.speed", "unknown key; did you mean seed?")
    assert not (tmp_path / "out").exists()


def test_training_on_a_gpu_this_torch_cannot_see_is_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(MICRO_RECIPE))
    proc = run("train", recipe, "--out", tmp_path / "out", "--device", "cuda", check=False)
    _assert_one_line_error(proc, "sees no GPU", "--device cpu")
    assert not (tmp_path / "out").exists()


def test_missing_data_message(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntrain: {epochs: [1, 1, 1, 1, 1, 1], lr: 0.1}\n")
    env = {**ENV, "EDGENAS_FASHION_MNIST_DIR": str(tmp_path / "missing")}
    proc = subprocess.run(
        [*EDGENAS, "train", str(recipe), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    _assert_one_line_error(proc, "apt-get install dataset-fashion-mnist")


def test_own_data_trains_once_the_space_fits_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 120)
    # Five classes of RGB images whose mean colour says the class: learnable, and not 1x10.
    images = rng.integers(0, 60, (120, 32, 32, 3)) + (labels * 40)[:, None, None, None]
    np.savez(tmp_path / "mine.npz", x=images.astype(np.uint8), y=labels)
    recipe: dict[str, Any] = {
        **copy.deepcopy(MICRO_RECIPE),
        "name": "mine",
        # Relative, by a bare name: recorded as the absolute path, since eval and export run
        # from anywhere (it was read against their folder: "does not exist (moved or
        # deleted)"; walk-through, and review for the bare name).
        "data": {"source": "mine.npz", "val_size": 40, "seed": 0},
    }
    recipe["train"]["phases"] = recipe["train"]["phases"][:2]
    recipe["train"]["batch_size"] = 16  # 59 training images: at least one batch per epoch
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = run("train", path, "--out", tmp_path / "wrong", check=False, cwd=tmp_path)
    _assert_one_line_error(
        proc,
        "has 3 channel(s) and 5 classes, space mbv3-tiny takes 1 and 10: set space: "
        "{name: mbv3-tiny, in_channels: 3, num_classes: 5}",
    )
    assert not (tmp_path / "wrong" / "checkpoint.pt").exists()

    recipe["space"] = {"name": "mbv3-tiny", "in_channels": 3, "num_classes": 5}
    path.write_text(yaml.safe_dump(recipe))
    proc = run("train", path, "--out", tmp_path / "run", cwd=tmp_path)
    # output captured, not a terminal: each epoch's progress as plain lines
    assert re.search(r"^train: full epoch 1/1 \d+/\d+ \(100%\), 0:\d\d elapsed$", proc.stderr, re.M)
    payload = load_checkpoint(tmp_path / "run" / "supernet.pt")
    assert payload["data"]["source"] == str(tmp_path / "mine.npz")
    space = payload["space"]
    assert (space["in_channels"], space["num_classes"]) == (3, 5)
    assert get_space(str(tmp_path / "run" / "space.json")).id == space["id"]
    result = json.loads(run("eval", tmp_path / "run" / "supernet.pt", "--json").stdout)
    assert result["subnet"]["space"] == space["id"] != get_space("mbv3-tiny").id
    # the data file's content is recorded, and data rewritten since is refused (data audit)
    assert payload.get("source_digest") == source_digest(str(tmp_path / "mine.npz"))
    np.savez(tmp_path / "mine.npz", x=images[::-1].astype(np.uint8), y=labels[::-1])
    proc = run("eval", tmp_path / "run" / "supernet.pt", check=False)
    _assert_one_line_error(proc, f"the data at {tmp_path / 'mine.npz'} changed since")


def test_training_refused_by_its_data_leaves_no_folder(tmp_path: Path) -> None:
    # The out folder was left behind, empty (input audit).
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "rgb.npz",
        x=rng.integers(0, 255, (60, 28, 28, 3)).astype(np.uint8),
        y=np.arange(60) % 10,
    )
    recipe: dict[str, Any] = copy.deepcopy(MICRO_RECIPE)
    path = tmp_path / "r.yaml"
    for data, says in [
        ({"source": str(tmp_path / "none.npz")}, "does not exist"),
        ({"source": str(tmp_path / "rgb.npz"), "val_size": 20}, "has 3 channel(s)"),
        ({"source": str(tmp_path / "rgb.npz"), "val_size": 100}, "leaves no training images"),
    ]:
        path.write_text(yaml.safe_dump({**recipe, "data": data}))
        proc = edgenas_here("train", path, "--out", tmp_path / "out")
        _assert_one_line_error(proc, says)
        assert not (tmp_path / "out").exists()
    # A folder the user made stays, with what it held.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    proc = edgenas_here("train", path, "--out", tmp_path / "mine")
    assert proc.returncode == 2
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("command", ["train", "run"])
def test_threads_beyond_what_can_run_are_refused(command: str, tmp_path: Path) -> None:
    # 10**9 threads aborted in OpenMP's allocator (input audit).
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(MICRO_RECIPE))
    proc = edgenas_here(command, recipe, "--out", tmp_path / "out", "--threads", "1000000000")
    assert proc.returncode == 2
    assert (
        "Invalid value for '--threads': Input should be less than or equal to 1024" in proc.stderr
    )
    assert not (tmp_path / "out").exists()


def test_data_smaller_than_the_spaces_least_resolution_is_warned_of() -> None:
    # data.image_size 16 for mbv3-tiny (28-32 px) trained every subnet on upsampled images
    # without a word (walk-through); fashion-mnist's 28 px for the same space is as meant.
    from edgenas.stages.train import upsampling
    from once_for_all.data import DataSpec

    space = get_space("mbv3-tiny")
    spec = DataSpec("d", 1, 16, 10, tuple("abcdefghij"), (0.5,), (0.25,))
    assert upsampling(spec, space) == (
        "the data's images are 16 px, below the space's least resolution 28: every subnet "
        "sees them upsampled; give data.image_size >= 28, or a space of lower resolutions"
    )
    assert upsampling(dataclasses.replace(spec, image_size=28), space) is None
