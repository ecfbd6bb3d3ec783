"""`edgenas run RECIPE`: every stage for real on a micro recipe (a local onnxruntime device
and the simulated NPU), then what a rerun, a changed recipe and --force redo."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgenas.pipeline import sha256
from tests.edgenas.conftest import MICRO_RECIPE

REPO = Path(__file__).resolve().parents[2]
CPU_PROFILE = "name: test-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\nwarmup: 2\nruns: 5\n"


def _recipe(folder: Path, **changes: Any) -> Path:
    (folder / "cpu.yaml").write_text(CPU_PROFILE)
    recipe = copy.deepcopy(MICRO_RECIPE)
    recipe.update(
        {
            "name": "micro-run",
            "devices": [
                {"name": str(folder / "cpu.yaml"), "budget_ms": 50.0, "calibrate": 10},
                {"name": "npu-32x32-ws", "budget_ms": 50.0, "calibrate": 10},
            ],
            "search": {"trials": 60, "accuracy_samples": 12, "eval_images": 100, "reevaluate": 4},
            "export": {
                "formats": ["onnx"],
                "int8": True,
                "calibration_images": 32,
                "test_images": 200,
            },
        }
    )
    recipe.update(changes)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def edgenas_run(
    recipe: Path, out: Path, *args: str, cache: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenas", "run", str(recipe), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "EDGENAS_CACHE": str(cache)},
        cwd=REPO,
        timeout=900,
    )


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    recipe = _recipe(folder)
    out = folder / "run"
    proc = edgenas_run(recipe, out, "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    return recipe, out, cache, json.loads(proc.stdout)


def _stages(out: Path) -> dict[str, Any]:
    stages: dict[str, Any] = json.loads((out / "run.json").read_text())["stages"]
    return stages


def test_a_run_does_every_stage_and_records_it(
    first: tuple[Path, Path, Path, dict[str, Any]],
) -> None:
    _, out, _, summary = first
    run = json.loads((out / "run.json").read_text())
    assert run["format"] == "edgenas.run/1" and run["recipe"]["name"] == "micro-run"
    assert run["versions"]["torch"] and run["versions"]["onnxruntime"]
    stages = run["stages"]
    exports = [k for k in stages if k.startswith("export:")]
    assert set(stages) == {"train", "profile:test-cpu", "profile:npu-32x32-ws", "search", *exports}
    assert len(exports) == 1  # both budgets are loose: one subnet serves both devices
    for record in stages.values():
        for name, digest in record["outputs"].items():
            assert sha256(out / name) == digest
    folder = out / "export" / exports[0].split(":", 1)[1]
    assert {"model.onnx", "model_int8.onnx", "card.json", "card.md"} <= {
        p.name for p in folder.iterdir()
    }
    rows = {row["device"]: row for row in summary["chosen"]}
    assert set(rows) == {"test-cpu", "npu-32x32-ws"}
    assert rows["test-cpu"]["latency_measured_ms"] > 0 and rows["test-cpu"]["file"] == "model.onnx"
    assert rows["test-cpu"]["latency_predicted_ms"] is not None
    # measured with the profile's reference model in the same call, scaled to its baseline
    assert rows["test-cpu"]["latency_measured_at_baseline_ms"] > 0
    assert rows["npu-32x32-ws"]["latency_measured_at_baseline_ms"] is None  # a simulator
    assert rows["npu-32x32-ws"]["latency_predicted_ms"] == pytest.approx(
        rows["npu-32x32-ws"]["latency_measured_ms"], rel=0.05
    )  # a deterministic simulator: its predictor is (nearly) exact
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "search: 60 trials" in (out / "run.log").read_text()


def test_a_rerun_skips_every_stage(first: tuple[Path, Path, Path, dict[str, Any]]) -> None:
    recipe, out, cache, summary = first
    before = _stages(out)
    proc = edgenas_run(recipe, out, "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("up to date, skipped") == len(before)
    assert _stages(out) == before
    assert json.loads(proc.stdout) == summary


def test_a_changed_section_redoes_its_stage_only(
    first: tuple[Path, Path, Path, dict[str, Any]],
) -> None:
    recipe, out, cache, _ = first
    before = _stages(out)
    changed = _recipe(
        recipe.parent,
        search={"trials": 80, "accuracy_samples": 12, "eval_images": 100, "reevaluate": 4},
    )
    proc = edgenas_run(changed, out, "--force", "export", cache=cache)
    assert proc.returncode == 0, proc.stderr
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


def test_recipe_mistakes_fail_at_load_with_the_key(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bad = _recipe(tmp_path, devices=[{"name": "local-cpu", "budget": 3}])
    proc = edgenas_run(bad, tmp_path / "out", cache=cache)
    assert proc.returncode == 2 and "devices.0.budget" in proc.stderr
    few = _recipe(tmp_path, devices=[{"name": "local-cpu", "budget_ms": 1, "calibrate": 5}])
    proc = edgenas_run(few, tmp_path / "out", cache=cache)
    assert proc.returncode == 2 and "devices.0: Value error, calibrate: 5 subnets" in proc.stderr
    no_budget = _recipe(tmp_path, devices=[{"name": "local-cpu"}])
    proc = edgenas_run(no_budget, tmp_path / "out", cache=cache)
    assert proc.returncode == 2 and "give a device a budget_ms" in proc.stderr
    assert not (tmp_path / "out").exists()
