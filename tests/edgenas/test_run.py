"""`edgenas run RECIPE`: every stage for real on a micro recipe (a local onnxruntime device
and the simulated NPU), then what a rerun, a changed recipe and --force redo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any, cast
from unittest.mock import patch

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from edgenas.recipe import load_recipe
from edgenas.run_folder import RunFolder, RunOptions, _changes, needs_run, with_dependents
from edgenas.run_record import RunSummary
from edgenas.run_summary import _current_stages
from edgenas.stage_inputs import (
    _unlocated,
    adopt_data_fingerprint,
    adopt_data_path,
    more_resolutions,
    only_trials_changed,
    search_outputs,
    train_inputs,
    training_continues,
    upstream_inputs,
)
from export.card import speed_text
from latency.predictors import CalibratedPredictor, load_predictor
from latency.table import TableError
from once_for_all import Subnet
from once_for_all.data import DataError
from once_for_all.files import file_sha256
from tests.edgenas.conftest import CPU_PROFILE, MICRO_RECIPE, Run, run_recipe
from tests.support.cli_here import edgenas_here
from tests.support.ofa_files import ofa_files


def edgenas_run(
    recipe: Path, out: Path, *args: str, cache: Path
) -> subprocess.CompletedProcess[str]:
    """`edgenas run` in this process: the shared run (conftest's micro_run) is the one a user
    starts as a process; what these tests redo and refuse needs none of its own."""
    return edgenas_here("run", recipe, "--out", out, *args, env={"EDGENAS_CACHE": str(cache)})


def _stages(out: Path) -> dict[str, Any]:
    stages: dict[str, Any] = json.loads((out / "run.json").read_text())["stages"]
    return stages


def test_a_run_does_every_stage_and_records_it(
    micro_run: Run,
) -> None:
    _, out, _, summary = micro_run
    run = json.loads((out / "run.json").read_text())
    assert run["format"] == "edgenas.run/1" and run["recipe"]["name"] == "micro-run"
    assert run["versions"]["torch"] and run["versions"]["onnxruntime"]
    stages = run["stages"]
    exports = [k for k in stages if k.startswith("export:")]
    assert set(stages) == {"train", "profile:test-cpu", "profile:npu-32x32-ws", "search", *exports}
    assert len(exports) == 1  # both budgets are loose: one subnet serves both devices
    for record in stages.values():
        for name, digest in record["outputs"].items():
            assert file_sha256(out / name) == digest
    folder = out / "export" / exports[0].split(":", 1)[1]
    assert {"model.onnx", "model_int8.onnx", "card.json", "card.md"} <= {
        p.name for p in folder.iterdir()
    }
    rows = {row["device"]: row for row in summary["chosen"]}
    assert set(rows) == {"test-cpu", "npu-32x32-ws"}
    cpu = rows["test-cpu"]
    # The row names the card's recommendation: the fastest file accurate enough.
    card = json.loads((folder / "card.json").read_text())
    assert cpu["file"] == card["latency"]["test-cpu"]["recommended"]
    for row in rows.values():  # and whether it reached the agreement target
        assert (
            row["file_meets_accuracy"]
            is card["latency"][row["device"]]["recommended_meets_accuracy"]
        )
    assert set(cpu["measured_files"]) == {"model.onnx", "model_int8.onnx"}
    assert cpu["latency_measured_ms"] == cpu["measured_files"][cpu["file"]]["latency_ms"] > 0
    assert cpu["measured_files"]["model_int8.onnx"]["runs_as"].startswith("quantized kernels only")
    # test-cpu classified the test images with both files; the simulator returns latency only
    for name, measured in cpu["measured_files"].items():
        assert measured["on_device"] == card["latency"]["test-cpu"]["files"][name]["on_device"]
    assert card["latency"]["npu-32x32-ws"]["not_checked"].startswith("it returns latency only")
    # the predictor describes fp32 ONNX files only
    assert (cpu["latency_predicted_ms"] is not None) == (cpu["file"] == "model.onnx")
    # measured with the profile's reference model in the same call, scaled to its baseline
    assert rows["test-cpu"]["latency_measured_at_baseline_ms"] > 0
    assert rows["npu-32x32-ws"]["latency_measured_at_baseline_ms"] is None  # a simulator
    assert rows["npu-32x32-ws"]["latency_predicted_ms"] == pytest.approx(
        rows["npu-32x32-ws"]["latency_measured_ms"], rel=0.05
    )  # a deterministic simulator: its predictor is (nearly) exact
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "search: 60 trials" in (out / "run.log").read_text()


def test_the_printed_summary_lists_every_measured_file(micro_run: Run) -> None:
    from rich.console import Console

    from edgenas.cli.run import files_table

    summary = micro_run[3]
    table = files_table(summary)
    assert table is not None
    console = Console(record=True, width=80)  # a terminal's: no number is cut
    console.print(table)
    text = console.export_text()
    assert "…" not in text
    lines = text.splitlines()
    cpu = next(r for r in summary["chosen"] if r["device"] == "test-cpu")
    under = lines[next(i for i, x in enumerate(lines) if "│ test-cpu " in x) + 1 :]
    for name, measured in cpu["measured_files"].items():
        i = next(i for i, x in enumerate(under) if f"│ {name} " in x)
        line, below = under[i], under[i + 1]
        assert f" {measured['latency_ms']:.3g} │" in line
        assert f" {speed_text(measured['speedup_vs_fp32'])} │" in below
        checked = measured["on_device"]
        assert f" {100 * checked['top1_agreement']:.2f}% │" in line
        agreement = measured["top1_agreement"]
        assert (f" {100 * agreement:.2f}% │" if agreement is not None else " - │") in line
        assert measured["runs_as"].split(" ")[0] in line
        assert (f"{name} *" in line) == (name == cpu["file"])
    # A summary of an earlier edgenas (no measured files) prints the chosen rows only.
    old = {**summary, "chosen": [{**r, "measured_files": {}} for r in summary["chosen"]]}
    assert files_table(old) is None


def below_target_on_cpu(summary: RunSummary, other: str) -> RunSummary:
    """``summary`` as if test-cpu had also measured an int8 TFLite file, the longest file
    name export writes, and recommended it though no file reached the agreement target; the
    other device named ``other``."""
    chosen = []
    for r in summary["chosen"]:
        if r["device"] == "test-cpu":
            files = {**r["measured_files"], "model_int8.tflite": r["measured_files"]["model.onnx"]}
            chosen.append(
                {
                    **r,
                    "file": "model_int8.tflite",
                    "file_meets_accuracy": False,
                    "measured_files": files,
                }
            )
        else:
            chosen.append({**r, "device": other, "file_meets_accuracy": True})
    return cast(RunSummary, {**summary, "chosen": chosen})


def test_the_run_prints_both_tables(micro_run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    from edgenas.cli.run import print_summary

    summary = micro_run[3]
    print_summary(summary)
    err = capsys.readouterr().err
    assert "micro-run: chosen subnets" in err and "every measured file" in err
    assert "below target" not in err
    # A run that exported nothing (a recipe without export) prints its search's choices, as
    # edgenas search does: it printed an empty table (walk-through), whose file column's
    # width was a TypeError once (CI).
    print_summary(cast(RunSummary, {**summary, "chosen": []}))
    err = capsys.readouterr().err
    assert "micro-run: chosen subnets" not in err and "every measured file" not in err
    pareto = json.loads((Path(summary["run"]) / "search" / "pareto.json").read_text())
    assert f"chosen subnets ({len(pareto['front'])} on the front, " in err
    assert f"summary: {summary['run']}/summary.json" in err
    # Without a search either, the empty table; nor is another recipe's search shown.
    print_summary(
        cast(RunSummary, {**summary, "chosen": [], "run": str(Path(summary["run"]) / "x")})
    )
    assert "micro-run: chosen subnets" in capsys.readouterr().err
    # A recipe that trains or profiles only chose nothing: what it made, not an empty table
    # of chosen subnets (walk-throughs).
    made = {k: v for k, v in summary["stages"].items() if k == "train" or k.startswith("prof")}
    print_summary(cast(RunSummary, {**summary, "chosen": [], "stages": made}))
    err = capsys.readouterr().err
    assert "chosen subnets" not in err
    assert f"supernet: {summary['run']}/supernet.pt" in err
    assert f"npu-32x32-ws: {summary['run']}/devices/npu-32x32-ws" in err
    others = {k: v for k, v in summary["stages"].items() if k != "search"}
    print_summary(cast(RunSummary, {**summary, "chosen": [], "stages": others}))
    err = capsys.readouterr().err  # the search/ another recipe left is not this run's
    assert "chosen subnets" not in err and f"supernet: {summary['run']}/supernet.pt" in err
    # A recommended file that is only the best of files below the target says so in both
    # tables, under the file's name, and a line says what that means. On an 80-column
    # terminal nothing is cut, file names stay whole, and so does a bundled profile's
    # longest name but one (jetson-orin-nano-trt); the longest (26 characters) folds.
    for other, whole in (("jetson-orin-nano-trt", True), ("local-cpu-openvino-runtime", False)):
        with patch("edgenas.cli.run.Console", partial(Console, width=80)):
            print_summary(below_target_on_cpu(summary, other))
        lines = capsys.readouterr().err.splitlines()
        assert "…" not in "\n".join(lines) and max(len(x) for x in lines if "│" in x) <= 80
        assert (sum(f"│ {other} " in x for x in lines) == 2) is whole
        chosen_row = next(i for i, x in enumerate(lines) if "│ model_int8.tflite " in x)
        assert "│ #1 " in lines[chosen_row + 1] and "│ (below target) " in lines[chosen_row + 2]
        file_row = next(i for i, x in enumerate(lines) if "│ model_int8.tflite * " in x)
        assert "│ (below target) " in lines[file_row + 1]
        assert sum("(below target)" in x for x in lines) == 3  # two cells and the line below
        # Under fp32, the accuracy of the file shown, where it is int8: every int8 file's
        # stood there, unlabelled.
        row = next(r for r in summary["chosen"] if r["device"] == "test-cpu")
        at = next(i for i, x in enumerate(lines) if "│ test-cpu " in x)
        fp32, int8 = row["accuracy_fp32"], row["accuracy_int8"]["model_int8.onnx"]
        assert f" {fp32:.3f} │" in lines[at] and f" {int8:.3f} │" not in lines[at + 1]
        shown = below_target_on_cpu(summary, other)
        shown["chosen"] = [
            {**r, "accuracy_int8": {**r["accuracy_int8"], "model_int8.tflite": 0.5}}
            if r["device"] == "test-cpu"
            else r
            for r in shown["chosen"]
        ]
        with patch("edgenas.cli.run.Console", partial(Console, width=80)):
            print_summary(shown)
        lines = capsys.readouterr().err.splitlines()
        at = next(i for i, x in enumerate(lines) if "│ test-cpu " in x)
        assert " 0.500 │" in lines[at + 1] and "model_int8.tflite" in lines[at]
        assert any(
            x.startswith("(below target): no file reached the top-1 agreement") for x in lines
        )


def test_a_file_over_its_budget_is_flagged(
    micro_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    # Export's automatic stem split kept the chosen subnet's int8 file at 0.505 ms under a
    # 0.5 ms budget (Vela), and nothing said so (walk-through).
    from edgenas.cli.run import print_summary
    from edgenas.run_record import over_budget

    summary = micro_run[3]
    assert all(r["file_over_budget"] is False for r in summary["chosen"])  # 50 ms budgets
    row = summary["chosen"][0]
    measured = row["latency_measured_at_baseline_ms"] or row["latency_measured_ms"]
    assert measured is not None
    assert over_budget({**row, "budget_ms": measured * 0.99})
    assert not over_budget({**row, "budget_ms": measured * 1.01})
    # Measured at the device's baseline where it has one: the unit budgets are in.
    assert over_budget(
        {
            **row,
            "latency_measured_ms": 1.0,
            "latency_measured_at_baseline_ms": 2.0,
            "budget_ms": 1.5,
        }
    )
    assert not over_budget(
        {
            **row,
            "latency_measured_ms": 2.0,
            "latency_measured_at_baseline_ms": 1.0,
            "budget_ms": 1.5,
        }
    )
    flagged = [{**r, "file_over_budget": i == 0} for i, r in enumerate(summary["chosen"])]
    print_summary(cast(RunSummary, {**summary, "chosen": flagged}))
    err = capsys.readouterr().err
    assert sum("(over budget)" in x for x in err.splitlines()) == 2  # the cell and the line
    assert "(over budget): the file takes longer than the budget" in " ".join(err.split())


def test_a_file_of_another_precision_than_the_search_held_is_flagged(
    micro_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An int8 device whose int8 files missed the agreement target had its fp32 file in the
    # table, with no predicted time and no word that the budget held int8 latency
    # (walk-through).
    from edgenas.cli.run import print_summary
    from edgenas.run_summary import build_summary

    recipe_path, out, _, summary = micro_run
    row = summary["chosen"][0]
    folder = tmp_path / "export"
    shutil.copytree(row["folder"], folder)
    card = json.loads((folder / "card.json").read_text())
    precision = {f["name"]: f["precision"] for f in card["files"]}
    on_device = card["latency"][row["device"]]  # as an int8 table's card has it
    for name, measured in on_device["files"].items():
        measured["predicted"] = 0.05 if precision[name] == "int8" else None
    on_device["recommended"] = "model.onnx"
    (folder / "card.json").write_text(json.dumps(card))
    recipe = load_recipe(recipe_path)
    chosen = [{"device": row["device"], "budget_ms": row["budget_ms"]}]
    exported = [{"folder": folder, "subnet": row["subnet"], "chosen_for": chosen}]
    built = build_summary(recipe, RunFolder(out, recipe, recipe_path), exported)
    flagged = built["chosen"][0]
    assert flagged["searched_precision"] == "int8" and flagged["latency_predicted_ms"] is None
    # An fp32 table's int8 file recommended is faster than what the budget held: no flag.
    for name, measured in on_device["files"].items():
        measured["predicted"] = 0.05 if precision[name] == "fp32" else None
    on_device["recommended"] = next(n for n in on_device["files"] if precision[n] == "int8")
    (folder / "card.json").write_text(json.dumps(card))
    quiet = build_summary(recipe, RunFolder(out, recipe, recipe_path), exported)["chosen"][0]
    assert "searched_precision" not in quiet
    assert not any("searched_precision" in r for r in summary["chosen"])  # the run's own
    print_summary(built)
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("(int8 searched)") == 2  # the cell and the line below
    assert (
        f"(int8 searched): the search held {row['device']}'s int8 latency to its budget; "
        "the card recommends a file of another precision"
    ) in err


def test_a_rerun_skips_every_stage(micro_run: Run) -> None:
    recipe, out, cache, summary = micro_run
    before = _stages(out)
    proc = edgenas_run(recipe, out, "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("up to date, skipped") == len(before)
    assert _stages(out) == before
    assert json.loads(proc.stdout) == summary


def test_a_changed_section_redoes_its_stage_only(
    micro_run: Run,
) -> None:
    recipe, out, cache, _ = micro_run
    before = _stages(out)
    study_before = (out / "search" / "study.log").read_bytes()
    changed = run_recipe(
        recipe.parent,
        search={"trials": 80, "accuracy_samples": 12, "eval_images": 100, "reevaluate": 4},
    )
    proc = edgenas_run(changed, out, "--force", "export", cache=cache)
    assert proc.returncode == 0, proc.stderr
    # Only the length changed: the study continues; its first 60 trials were discarded before.
    assert "search: continuing from the last run (search.trials changed)" in proc.stderr
    assert (out / "search" / "study.log").read_bytes().startswith(study_before)
    after = _stages(out)
    for key in ("train", "profile:test-cpu", "profile:npu-32x32-ws"):
        assert after[key] == before[key], key
    assert after["search"]["finished"] >= before["search"]["finished"]
    assert after["search"]["inputs"]["search"]["trials"] == 80
    assert "search: 80 trials" in proc.stderr
    assert "export: quantization" not in proc.stderr  # qat_epochs is 0 here
    assert all(
        f"export {k.split(':', 1)[1]} →" in proc.stderr for k in after if k.startswith("export:")
    )


def _needs_search(run: RunFolder, inputs: dict[str, Any], logged: list[str]) -> bool:
    """Whether a run's search stage must run on ``inputs`` (a longer study continues)."""
    return needs_run(
        run,
        "search",
        inputs,
        stage="search",
        options=RunOptions(),
        outputs=[run.root / "search"],
        log=logged.append,
        resumable=only_trials_changed,
    )


def test_a_stage_that_continues_after_its_output_changed_says_which(tmp_path: Path) -> None:
    # A supernet.pt cut short: training continues from its checkpoint, and the line read
    # "continuing from the last run ( changed)" (walk-through).
    recipe_path = run_recipe(tmp_path)
    run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
    (run.root / "search").mkdir(parents=True)
    pareto = run.root / "search" / "pareto.json"
    pareto.write_text("{}\n")
    inputs = {"supernet": "a", "search": {"trials": 60, "seed": 0}}
    run.stages["search"] = {
        "inputs": inputs,
        "outputs": {"search/pareto.json": file_sha256(pareto)},
        "seconds": 1.0,
        "finished": "2026-12-07T00:00:00+00:00",
    }
    logged: list[str] = []
    assert not _needs_search(run, inputs, logged)
    pareto.write_text("{")
    assert _needs_search(run, inputs, logged)
    assert logged.pop() == (
        "search: continuing from the last run (search/pareto.json changed since written)"
    )


def test_a_stage_whose_inputs_changed_says_what_it_discards(tmp_path: Path) -> None:
    recipe_path = run_recipe(tmp_path)
    run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
    (run.root / "search").mkdir(parents=True)
    (run.root / "search" / "study.log").write_text("{}\n")
    old = {"supernet": "a", "search": {"trials": 60, "seed": 0}}
    run.stages["search"] = {"inputs": old, "outputs": {}}
    logged: list[str] = []

    def needs(inputs: dict[str, Any]) -> bool:
        return _needs_search(run, inputs, logged)

    assert needs({"supernet": "a", "search": {"trials": 90, "seed": 0}})
    assert logged.pop() == "search: continuing from the last run (search.trials changed)"
    assert (run.root / "search").exists()
    assert needs({"supernet": "b", "search": {"trials": 90, "seed": 1}})
    # compared with the inputs the study was last continued on (90 trials)
    assert logged.pop() == (
        "search: search.seed, supernet changed; discarding search and starting again"
    )
    assert not (run.root / "search").exists()


@pytest.mark.parametrize(
    ("case", "changes", "says"),
    [
        (
            "data moved away",
            lambda t: {"data": {**MICRO_RECIPE["data"], "source": str(t / "moved.npz")}},
            "data.source: {t}/moved.npz does not exist: give the path of a .npz file",
        ),
        (
            "init_from moved away",
            lambda t: {"train": {**MICRO_RECIPE["train"], "init_from": "gone.pt"}},
            "train.init_from: gone.pt does not exist (read from ",
        ),
        (
            "unknown device",
            lambda t: {"devices": [{"name": "npu-32x32-wz", "budget_ms": 50.0}]},
            "npu-32x32-wz",
        ),
    ],
)
def test_a_refused_recipe_changes_nothing_in_a_finished_run(
    micro_run: Run, tmp_path: Path, case: str, changes: Any, says: str
) -> None:
    # A moved data file read as changed data: the trained supernet was discarded, then
    # loading said the file did not exist; a refused recipe also wrote itself into run.json
    # (run audit).
    _, out, cache, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != "run.log"}
    recipe = run_recipe(tmp_path, **changes(tmp_path))
    proc = edgenas_run(recipe, copy, "--quiet", cache=cache)
    assert proc.returncode == 2, proc.stderr
    assert says.format(t=tmp_path) in " ".join(proc.stderr.split()), proc.stderr
    after = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != "run.log"}
    assert after == before


def test_a_finished_stages_missing_output_is_made_again(micro_run: Run, tmp_path: Path) -> None:
    # What the report advises for a moved or deleted pareto.json.
    recipe, out, cache, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)  # as the tests before left it
    pareto = json.loads((copy / "search" / "pareto.json").read_text())
    (copy / "search" / "pareto.json").unlink()
    proc = edgenas_run(recipe, copy, "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert "search: continuing where" not in proc.stderr
    again = json.loads((copy / "search" / "pareto.json").read_text())
    assert again["front"] == pareto["front"] and again["chosen"] == pareto["chosen"]
    chosen = [Subnet.from_dict(pareto["front"][c["index"]]["subnet"]) for c in pareto["chosen"]]
    rows = json.loads(proc.stdout)["chosen"]
    assert sorted(r["subnet"] for r in rows) == sorted(s.key for s in chosen)


def test_a_recorded_predictor_this_edgenas_refuses_is_refitted(tmp_path: Path) -> None:
    # A model that an older edgenas fitted can predict no time for some subnet: the file was
    # as recorded, so the profile stage was "up to date" and search failed on it at every
    # rerun. It is refitted from the measurements it keeps, without the device: profiling
    # again refused a table of another runtime version, which an upgrade brings (review).
    recipe = run_recipe(
        tmp_path,
        stages=["profile"],
        devices=[{"name": "npu-32x32-ws", "budget_ms": 50.0, "calibrate": 10, "resolution": [28]}],
    )
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = edgenas_run(recipe, out, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "supernet.pt").exists()  # a recipe that only profiles needs none
    folder = out / "devices" / "npu-32x32-ws"
    predictor, lut = folder / "predictor.json", folder / "lut.json"
    doc = json.loads(predictor.read_text())
    doc["model"]["intercept"] = -100.0
    predictor.write_text(json.dumps(doc))
    table = json.loads(lut.read_text())
    table["header"]["fingerprint"]["runtime_version"] = "0.0-old"
    lut.write_text(json.dumps(table))
    record = json.loads((out / "run.json").read_text())
    outputs = record["stages"]["profile:npu-32x32-ws"]["outputs"]
    for path in (predictor, lut):  # as an older edgenas recorded them
        outputs[str(path.relative_to(out))] = file_sha256(path)
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(TableError, match="ms for subnet"):
        load_predictor(predictor)

    proc = edgenas_run(recipe, out, cache=cache)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "profile npu-32x32-ws: predictor.json: its calibration model" in said
    assert "(fitted by an older edgenas, or edited); refitted from the 10 subnets it keeps" in said
    assert "profile npu-32x32-ws: lookup table" not in said  # nothing measured
    refitted = load_predictor(predictor)
    assert isinstance(refitted, CalibratedPredictor)
    assert refitted.calibration["measured_ms"] == doc["calibration"]["measured_ms"]
    assert refitted.lowest(28)[1] > 0
    proc = edgenas_run(recipe, out, cache=cache)
    assert "profile npu-32x32-ws: up to date, skipped" in proc.stderr
    assert "refitted" not in proc.stderr


def test_a_recipe_without_the_profile_stage_refits_the_predictor_its_search_reads(
    tmp_path: Path, trained: Path
) -> None:
    # Its search failed on a recorded predictor this edgenas refuses, naming `edgenas latency
    # refit`, which refuses a run's files and says to rerun the recipe: which refitted
    # nothing without the profile stage (review).
    device = {"name": "npu-32x32-ws", "budget_ms": 50.0, "calibrate": 10, "resolution": [28]}
    profile_only = run_recipe(tmp_path, stages=["profile"], devices=[device])
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert edgenas_run(profile_only, out, cache=cache).returncode == 0
    predictor = out / "devices" / "npu-32x32-ws" / "predictor.json"
    doc = json.loads(predictor.read_text())
    doc["model"]["intercept"] = -100.0
    predictor.write_text(json.dumps(doc))
    record = json.loads((out / "run.json").read_text())
    outputs = record["stages"]["profile:npu-32x32-ws"]["outputs"]
    outputs[str(predictor.relative_to(out))] = file_sha256(predictor)  # as recorded
    (out / "run.json").write_text(json.dumps(record))
    shutil.copyfile(trained / "run" / "supernet.pt", out / "supernet.pt")
    search = {"trials": 12, "accuracy_samples": 10, "eval_images": 50, "reevaluate": 2}
    searching = run_recipe(tmp_path, stages=["search"], devices=[device], search=search)

    proc = edgenas_run(searching, out, cache=cache)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "profile npu-32x32-ws: predictor.json: its calibration model" in said
    assert "refitted from the 10 subnets it keeps" in said
    assert json.loads((out / "search" / "pareto.json").read_text())["chosen"]
    assert isinstance(load_predictor(predictor), CalibratedPredictor)


def test_only_a_recipe_that_searches_or_exports_needs_a_supernet(tmp_path: Path) -> None:
    # A profile-only recipe (profiling times blocks) was refused for want of supernet.pt
    # (the refit test above runs one); search and export still need it.
    recipe = run_recipe(tmp_path, stages=["search"])
    proc = edgenas_run(recipe, tmp_path / "run", cache=tmp_path / "cache")
    assert proc.returncode == 2
    said = " ".join(proc.stderr.split())
    assert f"{tmp_path / 'run' / 'supernet.pt'} does not exist: add 'train' to the" in said
    assert not (tmp_path / "run" / "search").exists()
    # Said once, as the command's error line, and not as the failure of a train stage the
    # recipe does not have (review: "run: train failed: ..." and then "error: ...").
    assert said.count("does not exist: add 'train'") == 1 and "train failed" not in said
    assert f"error: {tmp_path / 'run' / 'supernet.pt'} does not exist" in said


def test_a_search_that_ofa_predictor_scores_needs_no_supernet(tmp_path: Path) -> None:
    # OFA's predictor scores every subnet and reads no weights: `edgenas search --space` ran
    # without a supernet, the recipe's search stage was refused for want of supernet.pt.
    ofa = ofa_files()
    device = {"name": "samsung-note10", "tables": str(ofa / "note10"), "budget_ms": 20.0}
    scored = {"accuracy": "ofa-predictor", "ofa_predictor": str(ofa / "acc_predictor.pth")}
    recipe = partial(
        run_recipe,
        tmp_path,
        space="ofa-mbv3-w1.2",
        devices=[device],
        search={"trials": 30, **scored},
    )
    out, cache = tmp_path / "run", tmp_path / "cache"

    # nor any images: the data it names need not be there (review)
    nowhere = {**MICRO_RECIPE["data"], "source": str(tmp_path / "no-images")}
    proc = edgenas_run(recipe(stages=["profile", "search"], data=nowhere), out, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "search" / "pareto.json").read_text())["chosen"]
    assert not (out / "supernet.pt").exists()
    # A search recorded before, with the supernet it did not read, is still up to date.
    record = json.loads((out / "run.json").read_text())
    assert "supernet" not in record["stages"]["search"]["inputs"]
    record["stages"]["search"]["inputs"]["supernet"] = "0" * 64
    (out / "run.json").write_text(json.dumps(record))
    proc = edgenas_run(recipe(stages=["search"]), out, cache=cache)
    assert proc.returncode == 0 and "search: up to date, skipped" in proc.stderr, proc.stderr
    # Export reads the supernet's weights.
    proc = edgenas_run(recipe(stages=["search", "export"]), out, cache=cache)
    assert proc.returncode == 2
    assert f"error: {out / 'supernet.pt'} does not exist" in " ".join(proc.stderr.split())


def test_a_change_is_named_as_the_recipe_names_it(tmp_path: Path) -> None:
    # The log said "recipe.train changed" (the train stage's inputs hold the recipe's
    # sections under "recipe"), where the README quotes "train.phases changed" (README audit).
    def inputs(**changes: Any) -> dict[str, Any]:
        return train_inputs(load_recipe(run_recipe(tmp_path, **changes)))

    phases = MICRO_RECIPE["train"]["phases"]
    longer = {**MICRO_RECIPE["train"], "phases": [*phases[:-1], {**phases[-1], "epochs": 3}]}
    assert _changes(inputs(), inputs(train=longer)) == "train.phases"
    moved = {**MICRO_RECIPE["data"], "seed": 1}
    assert _changes(inputs(), inputs(data=moved, train=longer)) == "data.seed, train.phases"
    assert _changes({"search": {"trials": 60}}, {"search": {"trials": 30}}) == "search.trials"


def test_a_discarded_stage_takes_what_was_made_from_it(tmp_path: Path) -> None:
    # A recipe run into another's folder retrained the supernet and kept the old search and
    # exports, which the summary and report then showed as its own (run audit).
    recipe_path = run_recipe(tmp_path)
    run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
    finished = {"inputs": {"lr": 0.1}, "outputs": {}, "seconds": 1.0, "finished": "x"}
    run.stages = {"train": finished, "profile:npu": finished, "search": finished}
    run.stages["export:r28"] = finished
    for folder in ("search", "export/r28", "devices/npu"):
        (run.root / folder).mkdir(parents=True)
    (run.root / "supernet.pt").write_bytes(b"old")
    logged: list[str] = []
    assert needs_run(
        run,
        "train",
        {"lr": 0.2},
        stage="train",
        options=RunOptions(),
        outputs=[run.root / "supernet.pt"],
        log=logged.append,
    )
    assert logged == [
        "train: lr changed; discarding supernet.pt and starting again",
        "search: made from what train discards; discarding search",
        "export: made from what train discards; discarding export",
    ]
    assert not (run.root / "search").exists() and not (run.root / "export").exists()
    assert (run.root / "devices" / "npu").is_dir()  # profiling times blocks, not the supernet
    assert set(run.stages) == {"train", "profile:npu"}
    assert set(json.loads((run.root / "run.json").read_text())["stages"]) == set(run.stages)

    # An export is of its subnet: a search started afresh that chooses it again reuses it.
    run.stages |= {"search": finished, "export:r28": finished}
    (run.root / "export" / "r28").mkdir(parents=True)
    logged.clear()
    assert _needs_search(run, {"lr": 0.2}, logged)
    assert logged == []  # nothing of the old search was on disk to discard
    assert (run.root / "export" / "r28").is_dir() and "export:r28" in run.stages


def test_the_summary_lists_the_stages_of_this_recipe_only(tmp_path: Path) -> None:
    recipe = load_recipe(run_recipe(tmp_path, stages=["train", "profile", "search", "export"]))
    keys = _current_stages(recipe, ["test-cpu"], ["r28-a"])
    assert keys == {"train", "search", "profile:test-cpu", "export:r28-a"}
    only_train = load_recipe(run_recipe(tmp_path, stages=["train"]))
    assert _current_stages(only_train, ["test-cpu"], []) == {"train"}


@pytest.mark.parametrize(
    ("before", "after", "extends"),
    [
        ([28], [28, 30], True),
        ([28], None, True),  # None: every resolution of the space
        (None, [28, 30, 32], True),  # the same ones, listed
        (None, [28], False),
        ([28, 30], [28], False),
        ([28], [30], False),
    ],
)
def test_more_resolutions_extend_a_devices_table(
    before: list[int] | None, after: list[int] | None, extends: bool
) -> None:
    # The device's table was discarded and profiled again whole; profile extends it in place.
    def inputs(resolution: list[int] | None) -> dict[str, Any]:
        return {"space": "s", "device": {"name": "d", "resolution": resolution, "calibrate": 10}}

    every = (28, 30, 32)
    assert more_resolutions(inputs(before), inputs(after), every=every) is extends
    other = {**inputs(after), "device": {**inputs(after)["device"], "calibrate": 20}}
    assert not more_resolutions(inputs(before), other, every=every)


def test_a_train_section_changed_where_its_checkpoint_can_take_it_continues(
    micro_run: Run, tmp_path: Path
) -> None:
    # A run whose loss diverged was told to lower the phase's lr and go on; edgenas run
    # discarded the checkpoint and the supernet and trained from the start (review).
    recipe_path, out, _, _ = micro_run
    recipe = load_recipe(recipe_path)
    checkpoint = out / "checkpoint.pt"
    old = train_inputs(recipe)

    def continues(**train: Any) -> bool:
        changed = load_recipe(
            run_recipe(tmp_path, train={**MICRO_RECIPE["train"], **train}, name="micro-run")
        )
        return training_continues(changed, checkpoint, old, train_inputs(changed))

    phases = MICRO_RECIPE["train"]["phases"]
    extra = {**phases[-1], "name": "expand-2", "epochs": 1}
    assert continues(phases=[*phases, extra])  # a phase after the finished ones
    assert not continues(phases=[*phases[:-1], {**phases[-1], "epochs": 3}])
    assert not continues(phases=[{**phases[0], "lr": 0.01}, *phases[1:]])
    assert not continues(seed=1)
    moved = load_recipe(run_recipe(tmp_path, data={**MICRO_RECIPE["data"], "val_size": 100}))
    assert not training_continues(moved, checkpoint, old, train_inputs(moved))


def test_data_that_moved_keeps_its_training(tmp_path: Path) -> None:
    # Refused while missing, the data was then given at its new path, and the changed path
    # discarded the trained supernet, the search and the exports (review).
    data = _images(tmp_path / "d.npz", n=200)
    recipe = run_recipe(
        tmp_path, stages=["train"], data={"source": str(data), "val_size": 20, "seed": 0}
    )
    out = tmp_path / "run"
    assert edgenas_run(recipe, out, "--quiet", cache=tmp_path / "cache").returncode == 0
    trained = file_sha256(out / "supernet.pt")
    moved = data.rename(tmp_path / "moved.npz")
    recipe = run_recipe(
        tmp_path, stages=["train"], data={"source": str(moved), "val_size": 20, "seed": 0}
    )
    proc = edgenas_run(recipe, out, cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "train: its data or init_from moved (the same files); the training is kept" in said
    assert "train: up to date, skipped" in said
    assert file_sha256(out / "supernet.pt") == trained
    (tmp_path / "other.npz").write_bytes(b"other data")  # other content at another path
    recipe = run_recipe(
        tmp_path,
        stages=["train"],
        data={"source": str(tmp_path / "other.npz"), "val_size": 20, "seed": 0},
    )
    recorded = _stages(out)["train"]["inputs"]
    assert _unlocated(train_inputs(load_recipe(recipe))) != _unlocated(recorded)


def test_an_imported_supernets_search_and_export_record_the_datas_content(
    tmp_path: Path,
) -> None:
    # They recorded the data's path: moving the data searched again (hours on ImageNet), and
    # other files at the same path were taken as the same data.
    data = _images(tmp_path / "d.npz", n=60)

    def upstream(source: Path) -> dict[str, Any]:
        recipe_path = run_recipe(
            tmp_path, stages=["search", "export"], data={"source": str(source), "seed": 0}
        )
        run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
        return upstream_inputs(run, load_recipe(recipe_path), ["npu"])

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "supernet.pt").write_bytes(b"imported")
    first = upstream(data)
    assert first["data"] == {"sha256": file_sha256(data)}
    moved = data.rename(tmp_path / "moved.npz")
    assert upstream(moved) == first
    _images(moved, n=61)
    assert upstream(moved)["data"] != first["data"]

    # A record of an earlier version holds the path: taken as today's data, so that the run
    # does not search again; other changes count as ever (review: with more trials as well,
    # the study and its accuracy cache were discarded as made from other data).
    recipe_path = run_recipe(
        tmp_path, stages=["search", "export"], data={"source": str(moved), "seed": 0}
    )
    recipe = load_recipe(recipe_path)
    run = RunFolder(tmp_path / "run", recipe, recipe_path)
    inputs = {**upstream_inputs(run, recipe, ["npu"]), "search": {"trials": 60}}
    more = {**inputs, "search": {"trials": 90}}
    run.stages["search"] = {"inputs": {**inputs, "data": str(moved)}, "outputs": {}}
    run.started["search"] = {**inputs, "data": str(tmp_path / "d.npz")}  # another path
    adopt_data_path(run, "search", more, recipe)
    assert run.stages["search"]["inputs"] == inputs
    assert run.started["search"]["data"] == str(tmp_path / "d.npz")
    assert only_trials_changed(inputs, more)
    folder = tmp_path / "run" / "search"
    folder.mkdir()
    for name in ("study.log", "accuracy_cache.json"):
        (folder / name).write_text("{}")
    assert search_outputs(folder, inputs, {**more, "budgets_ms": [1.0]}) == [folder / "study.log"]
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["stages"]["search"]["inputs"]["data"] == inputs["data"]


def test_a_search_started_afresh_keeps_the_accuracies_that_still_hold(tmp_path: Path) -> None:
    # Fewer trials, other budgets or another seed re-evaluated every subnet (review).
    folder = tmp_path / "search"
    folder.mkdir()
    for name in ("study.log", "pareto.json", "accuracy_cache.json"):
        (folder / name).write_text("{}")
    old = {"supernet": "a", "search": {"trials": 60, "eval_images": 100}}
    kept = search_outputs(folder, old, {**old, "search": {"trials": 30, "eval_images": 100}})
    assert kept == [folder / "pareto.json", folder / "study.log"]
    for new in (
        {**old, "supernet": "b"},
        {**old, "search": {"trials": 60, "eval_images": 200}},
        {**old, "data": "/elsewhere"},
    ):
        assert search_outputs(folder, old, new) == [folder]
    assert search_outputs(folder, None, old) == [folder]


def test_fewer_trials_start_the_search_afresh(tmp_path: Path) -> None:
    # The study of 60 trials was continued for 30 and stopped at once: pareto.json said 60
    # trials, and its front was not a 30-trial search's (run audit).
    recipe_path = run_recipe(tmp_path)
    run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
    (run.root / "search").mkdir(parents=True)
    run.stages["search"] = {"inputs": {"search": {"trials": 60}}, "outputs": {}}
    logged: list[str] = []
    assert _needs_search(run, {"search": {"trials": 30}}, logged)
    assert logged == ["search: search.trials changed; discarding search and starting again"]
    assert not (run.root / "search").exists()


def test_a_stage_stopped_after_its_inputs_changed_continues_on_the_rerun(
    tmp_path: Path,
) -> None:
    # A search whose settings changed discarded the old study and started again; Ctrl-C, and
    # the rerun discarded the new study's trials too: run.json still held the old inputs
    # (issue 24's adversarial round, "run: Ctrl-C during search, rerun").
    recipe_path = run_recipe(tmp_path)
    recipe = load_recipe(recipe_path)
    root = tmp_path / "run"
    run = RunFolder(root, recipe, recipe_path)
    old = {"supernet": "a", "search": {"trials": 60, "seed": 0}}
    new = {"supernet": "a", "search": {"trials": 60, "seed": 1}}
    run.stages["search"] = {"inputs": old, "outputs": {}, "seconds": 1.0, "finished": "x"}
    (root / "search").mkdir(parents=True)
    (root / "search" / "study.log").write_text("the old study\n")
    run.save()
    logged: list[str] = []

    def needs(run: RunFolder, inputs: dict[str, Any]) -> bool:
        return _needs_search(run, inputs, logged)

    assert needs(run, new)
    assert logged.pop() == "search: search.seed changed; discarding search and starting again"
    (root / "search").mkdir()
    (root / "search" / "study.log").write_text("the new study's first trials\n")
    # stopped here (Ctrl-C, kill -9): nothing recorded its end; the rerun reads run.json
    rerun = RunFolder(root, recipe, recipe_path)
    assert needs(rerun, new)
    assert logged.pop() == "search: continuing where the last run stopped"
    assert (root / "search" / "study.log").read_text() == "the new study's first trials\n"
    assert not rerun.up_to_date("search", new)  # it has not finished
    # changed again before it finished: the stopped run's work is discarded
    assert needs(RunFolder(root, recipe, recipe_path), old)
    assert logged.pop() == "search: search.seed changed; discarding search and starting again"
    assert not (root / "search").exists()


def test_recipe_mistakes_fail_at_load_with_the_key(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bad = run_recipe(tmp_path, devices=[{"name": "local-cpu", "budget": 3}])
    proc = edgenas_run(bad, tmp_path / "out", cache=cache)
    assert proc.returncode == 2 and "devices[0].budget" in proc.stderr
    few = run_recipe(tmp_path, devices=[{"name": "local-cpu", "budget_ms": 1, "calibrate": 5}])
    proc = edgenas_run(few, tmp_path / "out", cache=cache)
    assert proc.returncode == 2 and "devices[0]: calibrate: 5 subnets" in proc.stderr
    no_budget = run_recipe(tmp_path, devices=[{"name": "local-cpu"}])
    proc = edgenas_run(no_budget, tmp_path / "out", cache=cache)
    assert proc.returncode == 2 and "give a device a budget_ms" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_retraining_its_data_refuses_discards_nothing(micro_run: Run, tmp_path: Path) -> None:
    # A rerun discarded the trained supernet, the search and the exports, then found the data
    # unfit for the recipe's space (a class added, a corrupt image, another init_from space;
    # walk-through): hours of work gone for a one-line fix.
    recipe, out, cache, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.lock"))
    changed = yaml.safe_load(recipe.read_text())
    changed["space"] = {"name": "mbv3-tiny", "num_classes": 5}  # Fashion-MNIST has 10
    five = tmp_path / "five.yaml"
    five.write_text(yaml.safe_dump(changed, sort_keys=False))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.suffix != ".log"}
    proc = edgenas_run(five, copy, cache=cache)
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(  # refused before any stage, as the recipe's checks are
        "error: recipe 'micro-run': data 'fashion-mnist' has 1 channel(s) and 10 classes"
    )
    assert "discarding" not in proc.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_a_failed_search_after_a_change_leaves_no_stale_summary_or_report(
    micro_run: Run, tmp_path: Path
) -> None:
    # The old summary.json and report.html outlived the failure, and the report told the
    # user to add search to the stages (audit, findings 3 and 7).
    recipe, out, cache, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.lock"))
    assert (copy / "summary.json").is_file() and (copy / "report.html").is_file()
    # A budget that no subnet meets on the predictor the run keeps is refused before any
    # stage, the run folder as it was (the search found it after discarding the front, the
    # summary and the report; walk-through).
    changed = yaml.safe_load(recipe.read_text())
    for device in changed["devices"]:
        device["budget_ms"] = 1e-6
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(yaml.safe_dump(changed, sort_keys=False))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.suffix != ".log"}
    proc = edgenas_run(unreachable, copy, cache=cache)
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: no subnet meets the 1e-06 ms budget on test-cpu: the lowest ")
    assert line.endswith("raise devices[0].budget_ms in the recipe")
    assert {p: p.read_bytes() for p in before} == before
    # A search that fails after it started: a budget subnets meet, which too few trials reach.
    predictor = load_predictor(copy / "devices" / "test-cpu" / "predictor.json")
    fastest = min(predictor.lowest(r)[1] for r in predictor.header.resolutions)
    changed = yaml.safe_load(recipe.read_text())
    changed["devices"][0]["budget_ms"] = fastest * 1.0001
    changed["search"]["trials"] = 2
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump(changed, sort_keys=False))
    proc = edgenas_run(tight, copy, cache=cache)
    assert proc.returncode == 2
    # The error line names the stage that failed (run.log alone did; review)
    assert "error: search failed: none of the 2 trials meets the " in proc.stderr
    assert not (copy / "summary.json").exists() and not (copy / "report.html").exists()
    proc = edgenas_here("report", copy)
    assert proc.returncode == 0, proc.stderr
    page = (copy / "report.html").read_text()
    assert "The <code>search</code> stage started and did not finish" in page
    assert "add <code>search</code>" not in page


def test_the_budget_check_leaves_a_predictor_it_cannot_read_to_its_stage(tmp_path: Path) -> None:
    # A predictor the profile stage refits (or replaces) was refused before any stage, with
    # a fix ("latency refit") that refuses run folders (review).
    from edgenas.pipeline import _check_reachable_budgets

    recipe_path = run_recipe(tmp_path, stages=["search"])  # no profile stage: it is read
    recipe = load_recipe(recipe_path)
    run = RunFolder(tmp_path / "run", recipe, recipe_path)
    for device in ("test-cpu", "npu-32x32-ws"):
        run.layout.predictor(device).parent.mkdir(parents=True)
        run.layout.predictor(device).write_text('{"format": "edgenas.predictor/1"}')
    _check_reachable_budgets(recipe, run, RunOptions())


def test_a_report_that_cannot_be_written_leaves_no_summary_that_looks_current(
    micro_run: Run, tmp_path: Path
) -> None:
    # The summary was written, then the report failed: a new summary.json beside an old
    # report.html, on every rerun (input audit).
    recipe, out, cache, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.lock"))
    (copy / "report.html").unlink()
    (copy / "report.html").mkdir()  # in the way of the report
    (copy / "summary.json").unlink()
    proc = edgenas_run(recipe, copy, "--quiet", cache=cache)
    assert proc.returncode == 2, proc.stderr
    assert "report.html" in proc.stderr and "Traceback" not in proc.stderr
    assert "error: report failed: " in proc.stderr
    assert not (copy / "summary.json").exists()


def test_an_unknown_device_leaves_no_run_folder(tmp_path: Path) -> None:
    # Both named the recipe's key, and a relative profile path the folder it was read from,
    # neither (walk-throughs: a profile beside the recipe, edgenas run elsewhere).
    for name, problem in (
        ("nosuchdev", "unknown device profile 'nosuchdev'"),
        (
            "mycpu.yaml",
            "cannot read device profile mycpu.yaml: No such file or directory (a relative path "
            f"is read from where edgenas runs: {Path.cwd()})",
        ),
    ):
        recipe = run_recipe(tmp_path, devices=[{"name": name, "budget_ms": 1.0}])
        proc = edgenas_run(recipe, tmp_path / "out", cache=tmp_path / "cache")
        said = " ".join(proc.stderr.split())
        assert proc.returncode == 2 and f"'micro-run': devices[0].name: {problem}" in said, said
        assert not (tmp_path / "out").exists()


def test_forcing_a_stage_the_recipe_does_not_have_is_refused(tmp_path: Path) -> None:
    # It was accepted and did nothing (input audit).
    recipe = run_recipe(tmp_path, stages=["train"])
    proc = edgenas_run(recipe, tmp_path / "out", "--force", "profile", cache=tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr
    assert "--force profile: recipe 'micro-run' has no profile stage (its stages: train)" in (
        proc.stderr
    )
    assert not (tmp_path / "out").exists()
    # Comma-separated as export's --format is: "train,profile" was refused as one name.
    proc = edgenas_run(recipe, tmp_path / "out", "--force", "train,profile", cache=tmp_path)
    assert "--force profile: recipe 'micro-run' has no profile stage" in proc.stderr
    proc = edgenas_run(recipe, tmp_path / "out", "--force", "train,bogus", cache=tmp_path)
    assert proc.returncode == 2 and "'bogus' is not a stage: give train, profile, search, " in (
        " ".join(proc.stderr.split())
    )


def test_a_profile_redone_keeps_the_searchs_accuracy_cache(tmp_path: Path) -> None:
    # A device's precision changed: its profile was redone and the search with it, and so
    # were the accuracy evaluations, which latencies do not change (walk-through).
    from edgenas.run_folder import _discard_stage

    recipe_path = run_recipe(tmp_path)
    recipe = load_recipe(recipe_path)
    (tmp_path / "run" / "search").mkdir(parents=True)
    run = RunFolder(tmp_path / "run", recipe, recipe_path)
    for name in ("accuracy_cache.json", "study.log", "pareto.json"):
        (tmp_path / "run" / "search" / name).write_text("{}")
    run.stages["search"] = {"inputs": {}, "outputs": {}, "seconds": 1.0, "finished": "x"}
    said: list[str] = []
    say = lambda m, echo=True: said.append(m)  # noqa: E731
    _discard_stage(run, "search", say, made_from="profile npu", source="profile")
    assert [p.name for p in (tmp_path / "run" / "search").iterdir()] == ["accuracy_cache.json"]
    assert "search" not in run.stages and "but its accuracy_cache.json" in said[0]
    _discard_stage(run, "search", say, made_from="train", source="train")
    assert not (tmp_path / "run" / "search").exists()  # other weights: other accuracies


def test_a_retrain_keeps_a_search_that_ofa_predictor_scored(tmp_path: Path) -> None:
    # It read no supernet, yet a retrain discarded it with the exports (review).
    recipe_path = run_recipe(tmp_path)
    recipe = load_recipe(recipe_path)
    root = tmp_path / "run"
    (root / "search").mkdir(parents=True)
    (root / "search" / "pareto.json").write_text("{}")
    run = RunFolder(root, recipe, recipe_path)
    finished = {"outputs": {}, "seconds": 1.0, "finished": "x"}
    run.stages["train"] = {**finished, "inputs": {"recipe": "before"}}
    run.stages["search"] = {**finished, "inputs": {"search": {"accuracy": "ofa-predictor"}}}

    def retrain(recipe_inputs: str) -> bool:
        return needs_run(
            run, "train", {"recipe": recipe_inputs}, stage="train", options=RunOptions(),
            outputs=[], log=lambda message, echo=True: None,
        )  # fmt: skip

    assert retrain("changed")
    assert "search" in run.stages and (root / "search" / "pareto.json").is_file()
    run.stages["search"]["inputs"] = {"search": {"accuracy": "predictor"}}  # the supernet's
    assert retrain("changed again")
    assert "search" not in run.stages and not (root / "search").exists()


def test_force_redoes_the_stages_that_depend_on_the_forced_one() -> None:
    # README: "--force search: redo a stage (and what depends on it)"; export was skipped
    # when the forced search chose the same subnet (audit, finding 6).
    assert with_dependents(("search",)) == ("search", "export")
    assert with_dependents(("train",)) == ("train", "search", "export")  # not profile
    assert with_dependents(("export", "profile")) == ("profile", "search", "export")
    assert with_dependents(()) == ()


def test_the_train_stage_records_what_its_data_holds(tmp_path: Path) -> None:
    # Only the source's path was recorded: new data under the same name was not noticed
    # (audit, finding 2).
    def inputs(source: Path | str) -> dict[str, Any]:
        return train_inputs(load_recipe(run_recipe(tmp_path, data={"source": str(source)})))

    assert set(inputs("fashion-mnist")) == {"recipe"}  # as recorded before: still up to date
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros(3))
    first = inputs(npz)["data"]
    np.savez(npz, x=np.ones(3))
    assert inputs(npz)["data"] != first and set(first) == {"sha256"}
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    (folder / "1.png").write_bytes(b"one")
    (tmp_path / "images" / "dog").mkdir()
    (tmp_path / "images" / "dog" / "1.png").write_bytes(b"dog")
    listed = inputs(folder.parent)["data"]
    assert set(listed) == {"digest"} and inputs(folder.parent)["data"] == listed
    (folder / "2.png").write_bytes(b"two")
    two = inputs(folder.parent)["data"]
    assert two != listed
    # The same names and sizes at another time (a copy by cp -r, a touch) are the same data,
    # as eval takes them: they trained again (walk-through). Files the loader does not read
    # do not count.
    os.utime(folder / "2.png", ns=(0, 0))
    (folder / "notes.txt").write_text("from the lab")
    assert inputs(folder.parent)["data"] == two
    (folder / "2.png").write_bytes(b"TWO!")  # another size: other data
    assert inputs(folder.parent)["data"] != two
    # A folder eval refuses is refused here: an empty class folder was "up to date" in a run
    # whose eval then refused it (walk-through).
    (tmp_path / "images" / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        inputs(folder.parent)


def test_a_record_of_a_folders_listing_takes_its_digest_while_nothing_changed(
    tmp_path: Path,
) -> None:
    # Runs recorded a folder's listing with modification times: one that still lists the
    # folder takes its digest and is not trained again; one that does not is compared as ever.
    from edgenas.stage_inputs import _listing_sha256, adopt_folder_digest

    images = tmp_path / "images"
    for name in ("cat", "dog"):
        (images / name).mkdir(parents=True)
        (images / name / "1.png").write_bytes(name.encode())
    recipe_path = run_recipe(tmp_path, data={"source": str(images)})
    inputs = train_inputs(load_recipe(recipe_path))
    run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
    run.root.mkdir()
    old = {**inputs, "data": {"listing": _listing_sha256(images)}}
    run.stages["train"] = {"inputs": old, "outputs": {}, "seconds": 1.0, "finished": "x"}
    adopt_folder_digest(run, "train", inputs, images)
    assert run.up_to_date("train", inputs)
    assert _stages(run.root)["train"]["inputs"] == inputs
    run.stages["train"]["inputs"] = {**inputs, "data": {"listing": "another folder's"}}
    adopt_folder_digest(run, "train", inputs, images)
    assert not run.up_to_date("train", inputs)


def test_a_train_stage_recorded_without_a_data_fingerprint_is_not_redone(tmp_path: Path) -> None:
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros(3))
    recipe_path = run_recipe(tmp_path, data={"source": str(npz)})
    inputs = train_inputs(load_recipe(recipe_path))
    before = {k: v for k, v in inputs.items() if k != "data"}
    run = RunFolder(tmp_path / "run", load_recipe(recipe_path), recipe_path)
    run.root.mkdir()
    run.stages["train"] = {"inputs": before, "outputs": {}, "seconds": 1.0, "finished": "x"}
    adopt_data_fingerprint(run, inputs)
    assert run.up_to_date("train", inputs)
    assert _stages(run.root)["train"]["inputs"] == inputs  # saved: the data is bound from now
    run.stages["train"]["inputs"] = {**before, "recipe": {"changed": True}}
    adopt_data_fingerprint(run, inputs)  # something else changed: not adopted
    assert not run.up_to_date("train", inputs)


def _images(path: Path, *, n: int = 60, channels: int = 1) -> Path:
    """A .npz of ``n`` 28 px images in 10 classes (mbv3-tiny's input with one channel)."""
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x=rng.integers(0, 255, (n, 28, 28, channels)).astype(np.uint8),
        y=np.arange(n) % 10,
    )
    return path


def _bad_array(folder: Path) -> str:
    """A profile of a simulated NPU whose rows are not a number."""
    profile = folder / "bad-array.yaml"
    profile.write_text("name: x\nkind: npu-sim\nnpu: {rows: '32'}\n")
    return str(profile)


def _renamed_cpu(folder: Path, name: str) -> str:
    """A profile of this host's onnxruntime named ``name``."""
    profile = folder / "renamed.yaml"
    profile.write_text(CPU_PROFILE.replace("name: test-cpu", f"name: {name}"))
    return str(profile)


def _off_board(folder: Path) -> str:
    """A profile of an SSH board on a closed port."""
    from tests.support.sshd import free_port

    board = folder / "off.yaml"
    board.write_text(
        f"name: off-board\nkind: ssh\nssh: {{host: 127.0.0.1, port: {free_port()}, "
        "allow_agent: false, look_for_keys: false, connect_timeout: 2}\n"
    )
    return str(board)


@pytest.mark.parametrize(
    ("case", "changes", "says"),
    [
        ("no data", lambda t: {"data": {"source": str(t / "none.npz")}}, "does not exist"),
        (
            "val_size",
            lambda t: {"data": {"source": str(_images(t / "d.npz")), "val_size": 1000}},
            "val_size=1000 leaves no training images",
        ),
        (
            "stream",
            lambda t: {"data": {"source": "fashion-mnist", "stream": "stream"}},
            "cannot stream",
        ),
        (
            "classes",
            lambda t: {
                "data": {"source": str(_images(t / "d.npz", channels=3)), "val_size": 20},
            },
            "has 3 channel(s) and 10 classes, space mbv3-tiny takes 1 and 10",
        ),
        (
            "init_from",
            lambda t: {"train": {**MICRO_RECIPE["train"], "init_from": str(t / "none.pt")}},
            "train.init_from: ",
        ),
        (
            "batch_size",
            lambda t: {
                "data": {"source": str(_images(t / "d.npz")), "val_size": 20},
                "train": {**MICRO_RECIPE["train"], "batch_size": 1000},
            },
            "fewer than one global batch",
        ),
        (
            "export without search",
            lambda t: {"stages": ["train", "export"]},
            "search/pareto.json does not exist, and no stage of the recipe makes it: add "
            "'search' to its stages",
        ),
        (
            "search without profile",
            lambda t: {"stages": ["train", "search"]},
            "/predictor.json does not exist, and no stage of the recipe makes it: add "
            "'profile' to its stages",
        ),
        pytest.param(
            "cuda",
            lambda t: {"train": {**MICRO_RECIPE["train"], "device": "cuda"}},
            "sees no GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without GPU"),
        ),
        (
            "closed port",
            lambda t: {"devices": [{"name": _off_board(t), "budget_ms": 1.0, "calibrate": 0}]},
            "device 'off-board': cannot reach 127.0.0.1",
        ),
        (  # no training first: found by the profile stage, which made devices/ (left behind)
            "closed port, profile only",
            lambda t: {
                "stages": ["profile"],
                "devices": [{"name": _off_board(t), "budget_ms": 1.0, "calibrate": 0}],
            },
            "and the network (fix it and run again to go on)",  # no other device profiled
        ),
        (  # the stage named once, by the error line (it read "profile failed: profile ...")
            "closed port, profile only, the stage named",
            lambda t: {
                "stages": ["profile"],
                "devices": [{"name": _off_board(t), "budget_ms": 1.0, "calibrate": 0}],
            },
            "error: profile failed: off-board: device 'off-board': cannot reach 127.0.0.1",
        ),
        (  # found when the profile stage built the device, after training
            "an npu setting its kind refuses",
            lambda t: {"devices": [{"name": _bad_array(t), "budget_ms": 1.0, "calibrate": 0}]},
            "device 'x': npu: rows='32': expected a positive integer",
        ),
        (  # found by the profile stage after training, or never (export kept one card entry)
            "two devices of one name",
            lambda t: {
                "devices": [
                    {"name": "npu-32x32-ws", "budget_ms": 1.0},
                    {"name": _renamed_cpu(t, "npu-32x32-ws"), "budget_ms": 1.0},
                ]
            },
            "devices[0] (npu-32x32-ws) and devices[1] (",
        ),
    ],
)
def test_a_new_run_refused_once_started_leaves_no_folder(
    tmp_path: Path, case: str, changes: Any, says: str
) -> None:
    # Each left runs/x with run.json and run.log (and space.json): a folder that looked like
    # a run, and that a fixed recipe then ran into as an existing one (input audit).
    recipe = run_recipe(tmp_path, **changes(tmp_path))
    out = tmp_path / "runs" / "x"
    proc = edgenas_run(recipe, out, "--quiet", cache=tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_an_existing_run_folder_is_never_removed(tmp_path: Path) -> None:
    recipe = run_recipe(tmp_path, data={"source": str(tmp_path / "none.npz")})
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    proc = edgenas_run(recipe, out, "--quiet", cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert (out / "notes.txt").read_text() == "the user's"
    assert "recipe failed: " in (out / "run.log").read_text()


def test_a_new_run_keeps_the_work_it_did_before_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first epoch's checkpoint is what a rerun resumes from: a failure after it keeps it.
    from rich.console import Console

    from edgenas.pipeline import run_recipe as run
    from edgenas.recipe import RecipeError

    def one_epoch_then_fail(recipe: Any, options: Any, **kwargs: Any) -> Path:
        (options.out / "checkpoint.pt").write_bytes(b"an epoch")
        raise RecipeError("training diverged")

    monkeypatch.setattr("edgenas.stages.train.train", one_epoch_then_fail)
    out = tmp_path / "out"
    with pytest.raises(RecipeError, match="training diverged"):
        run(run_recipe(tmp_path), RunOptions(out=out, quiet=True), Console(quiet=True))
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "run.json", "run.log"]


def test_an_export_recorded_before_its_test_images_were_named_is_kept() -> None:
    # Exports of a train/ + test/ folder record its test images' digest since 2026-12-08:
    # one recorded before, the same else, is taken as made from today's (not exported again).
    from edgenas.pipeline import _with_test_data

    now = {"subnet": {"r": 28}, "test_data": "abc"}
    assert _with_test_data(now, {"subnet": {"r": 28}}) == now
    assert _with_test_data(now, {"subnet": {"r": 32}}) is None  # another subnet
    assert _with_test_data(now, {"subnet": {"r": 28}, "test_data": "old"}) is None


def test_the_pre_training_check_runs_only_where_training_would_discard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It loaded the data an extra time for every resumed or continued training, where
    # nothing is discarded (review).
    import edgenas.stages.train as train_stage
    from edgenas.pipeline import _check_retraining

    checked: list[object] = []
    monkeypatch.setattr(train_stage, "check_training", checked.append)
    recipe_path = run_recipe(tmp_path)
    recipe = load_recipe(recipe_path)
    run = RunFolder(tmp_path / "run", recipe, recipe_path)
    run.root.mkdir()
    (run.root / "supernet.pt").write_bytes(b"trained")
    inputs = train_inputs(recipe)
    finished = {"inputs": inputs, "outputs": {}, "seconds": 1.0, "finished": "x"}
    for stages, started in (({}, {}), ({"train": finished}, {}), ({}, {"train": inputs})):
        run.stages, run.started = dict(stages), dict(started)  # new, done, or resumed
        _check_retraining(recipe, run, RunOptions(), inputs)
    assert checked == []
    run.stages, run.started = {"train": {**finished, "inputs": {"recipe": {}}}}, {}
    _check_retraining(recipe, run, RunOptions(), inputs)  # other inputs: discarded
    _check_retraining(recipe, run, RunOptions(force=("train",)), {"recipe": {}})
    assert checked == [recipe, recipe]
    assert not (run.root / "run.json").exists()  # worked out on a scratch copy


def test_a_run_that_exported_nothing_lists_its_searchs_choices(micro_run: Run) -> None:
    # It printed them, and its summary.json (and --json) held "chosen": [] (walk-through).
    from edgenas.run_summary import build_summary

    recipe_path, out, _, _ = micro_run
    recipe = load_recipe(recipe_path)
    summary = build_summary(recipe, RunFolder(out, recipe, recipe_path), [])
    pareto = json.loads((out / "search" / "pareto.json").read_text())
    assert summary["chosen"] == [] and "searched" not in micro_run[3]
    searched = summary["searched"]
    assert [(r["device"], r["budget_ms"], r["index"]) for r in searched] == [
        (c["device"], c["budget_ms"], c["index"]) for c in pareto["chosen"]
    ]
    for row in searched:
        member = pareto["front"][row["index"]]
        assert row["subnet"] == member["subnet"]
        assert row["latency_ms"] == member["latency_ms"][row["device"]]["predicted"]
        assert row["accuracy"] == (
            member["accuracy"]["measured"] or member["accuracy"]["predicted"]
        )
