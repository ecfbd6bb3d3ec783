"""The whole device job on OpenVINO, for real: `edgenas profile local-cpu-openvino` builds a
table and calibrated predictor on onnxruntime-openvino (.venv-openvino, `make setup`), and
`edgenas export --device local-cpu-openvino` measures both ONNX files there, predicts the
fp32 one from that table, and writes the int8 file for OpenVINO's kernels, not padded for
onnxruntime's CPU provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.openvino import OPENVINO, profile_and_export, require_openvino

DEVICE = "local-cpu-openvino"


@pytest.fixture(scope="module")
def profiled_and_exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_openvino()
    folder = tmp_path_factory.mktemp("openvino")
    profile_and_export(DEVICE, trained, folder)
    return folder


def _card(folder: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((folder / "export" / "card.json").read_text())
    return card


def test_the_table_is_openvinos(profiled_and_exported: Path) -> None:
    lut = json.loads((profiled_and_exported / "profiles" / DEVICE / "lut.json").read_text())
    fingerprint = lut["header"]["fingerprint"]
    assert (fingerprint["accelerator"], fingerprint["runtime"]) == (OPENVINO, "onnxruntime")
    predictor = json.loads(
        (profiled_and_exported / "profiles" / DEVICE / "predictor.json").read_text()
    )
    assert predictor["kind"] == "calibrated"
    assert len(predictor["calibration"]["subnets"]) == 10


def test_both_files_run_as_one_openvino_graph_and_are_predicted(
    profiled_and_exported: Path,
) -> None:
    device = _card(profiled_and_exported)["latency"][DEVICE]
    assert device["fingerprint"]["accelerator"] == OPENVINO
    files = device["files"]
    assert set(files) == {"model.onnx", "model_int8.onnx"}
    for entry in files.values():
        measured = entry["measured"]
        assert measured["placement"] == {
            "providers": [OPENVINO],
            "nodes": {OPENVINO: 1},
            "fallback": {},
        }
        assert measured["median_ms"] > 0 and entry["speedup_vs_fp32"] > 0
    # The table is fp32's: it predicts model.onnx, and says nothing of the int8 file.
    assert files["model.onnx"]["predicted"] > 0
    assert files["model_int8.onnx"]["predicted"] is None
    assert device["recommended"] in files


def test_the_int8_file_is_written_for_openvino(profiled_and_exported: Path) -> None:
    card = _card(profiled_and_exported)
    (int8,) = [f for f in card["files"] if f["name"] == "model_int8.onnx"]
    assert "channels_aligned" not in int8["execution"]  # as onnxruntime's CPU provider takes
    assert int8["execution"]["float_nodes"] == {}
    text = (profiled_and_exported / "export" / "card.md").read_text()
    assert f"- {DEVICE}, `model_int8.onnx`: {OPENVINO} 1 nodes" in text
