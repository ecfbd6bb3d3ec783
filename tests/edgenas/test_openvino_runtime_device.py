"""The whole device job on the OpenVINO Runtime itself, for real: `edgenas profile
local-cpu-openvino-runtime` builds a table and calibrated predictor with the openvino package
(.venv-openvino, `make setup`), and `edgenas export --device local-cpu-openvino-runtime`
measures both ONNX files there: fp32 in fp32, int8 on int8 kernels, as the card shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.openvino import pinned_version, profile_and_export, require_openvino

DEVICE = "local-cpu-openvino-runtime"


@pytest.fixture(scope="module")
def profiled_and_exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_openvino()
    folder = tmp_path_factory.mktemp("openvino-runtime")
    profile_and_export(DEVICE, trained, folder)
    return folder


def _card(folder: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((folder / "export" / "card.json").read_text())
    return card


def test_the_table_is_the_openvino_runtimes(profiled_and_exported: Path) -> None:
    profiles = profiled_and_exported / "profiles" / DEVICE
    fingerprint = json.loads((profiles / "lut.json").read_text())["header"]["fingerprint"]
    assert (fingerprint["runtime"], fingerprint["accelerator"]) == ("openvino", "CPU")
    assert fingerprint["runtime_version"] == pinned_version("openvino")
    predictor = json.loads((profiles / "predictor.json").read_text())
    assert predictor["kind"] == "calibrated"
    assert len(predictor["calibration"]["subnets"]) == 10


def test_fp32_runs_in_fp32_and_int8_on_int8_kernels(profiled_and_exported: Path) -> None:
    device = _card(profiled_and_exported)["latency"][DEVICE]
    assert device["fingerprint"]["runtime"] == "openvino"
    files = device["files"]
    assert set(files) == {"model.onnx", "model_int8.onnx"}
    placements = {name: entry["measured"]["placement"] for name, entry in files.items()}
    for placement in placements.values():
        assert (placement["device"], placement["inference_precision"]) == ("CPU", "f32")
    assert set(placements["model.onnx"]["kernel_precisions"]) == {"f32"}
    # Every conv of the int8 file is quantized: its int8 kernels outnumber the float ones
    # (the input's conversion, squeeze-excite's gates and the like).
    kernels = placements["model_int8.onnx"]["kernel_precisions"]
    int8 = kernels.get("u8", 0) + kernels.get("i8", 0)
    assert int8 > kernels.get("f32", 0)
    for entry in files.values():
        assert entry["measured"]["median_ms"] > 0 and entry["speedup_vs_fp32"] > 0
    # The table is fp32's: it predicts model.onnx, and says nothing of the int8 file.
    assert files["model.onnx"]["predicted"] > 0
    assert files["model_int8.onnx"]["predicted"] is None
    assert device["recommended"] in files


def test_the_card_says_where_each_file_ran(profiled_and_exported: Path) -> None:
    card = _card(profiled_and_exported)
    (int8,) = [f for f in card["files"] if f["name"] == "model_int8.onnx"]
    assert "channels_aligned" not in int8["execution"]  # OpenVINO has kernels of its own
    text = " ".join((profiled_and_exported / "export" / "card.md").read_text().split())
    assert f"- {DEVICE}, `model.onnx`: OpenVINO CPU " in text
    assert "kernels (f32 " in text and "inference precision f32" in text
