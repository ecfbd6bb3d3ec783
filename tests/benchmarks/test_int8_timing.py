"""benchmarks/int8_timing.py on real files, as on a machine without edgenas's dependencies:
the mbv3-tiny min subnet's ONNX fp32 and int8, kept by benchmarks.export's ``keep_row``, timed
by the script run as a file in an isolated Python (``-I``) that refuses nothing but reports
every edgenas dependency it imported. Structure only: the figures are the benchmark's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.export import CALIBRATION_SAMPLES, keep_row, random_model
from export import export_onnx, quantize_onnx_int8
from latency.proxies import subnet_costs
from once_for_all import get_space
from tests.support.openvino import OPENVINO, pinned_version, require_openvino

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "int8_timing.py"
# What the lent machine lacks: edgenas's own packages and their dependencies.
NOT_THERE = {"benchmarks", "devices", "edgenas", "export", "latency", "once_for_all"} | {
    "pydantic",
    "torch",
    "typer",
    "yaml",
}
# Runs the script as `python benchmarks/int8_timing.py` would, then fails if it imported any
# of NOT_THERE.
GUARD = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv_not_there))
    if loaded:
        sys.exit("int8_timing.py imported " + ", ".join(loaded))
""".replace("sys.argv_not_there", repr(sorted(NOT_THERE)))


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --keep folder with one row: ONNX fp32 and int8 of the mbv3-tiny min subnet, and the
    int8 without channel alignment (as ``--unaligned`` keeps it)."""
    space = get_space("mbv3-tiny")
    subnet = space.min_subnet()
    model = random_model(space, subnet)
    work, keep = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("keep")
    calibration = np.random.default_rng(0).standard_normal(
        (CALIBRATION_SAMPLES, *model.input_shape[1:]), dtype=np.float32
    )
    paths = {
        "onnx_fp32": work / "fp32.onnx",
        "onnx_int8": work / "int8.onnx",
        "onnx_int8_unaligned": work / "unaligned.onnx",
    }
    export_onnx(model, paths["onnx_fp32"], input_shape=model.input_shape)
    quantize_onnx_int8(paths["onnx_fp32"], paths["onnx_int8"], calibration=calibration)
    quantize_onnx_int8(
        paths["onnx_fp32"],
        paths["onnx_int8_unaligned"],
        calibration=calibration,
        align_channels="none",
    )
    row = {
        "label": "demo (min)",
        "space": space.name,
        "r": subnet.r,
        "subnet": subnet.to_dict(),
        "macs": subnet_costs(space, subnet).macs,
    }
    keep_row(row, paths, keep, [])
    return keep


def pythons() -> list[object]:
    """This environment (it has every edgenas dependency, so the guard means something) and
    the "device" one (numpy<2, onnxruntime, tflite-runtime, nothing of edgenas's)."""
    device = Path(os.environ.get("EDGENAS_DEVICE_PYTHON", REPO / ".venv-device" / "bin" / "python"))
    return [
        pytest.param(Path(sys.executable), id="dev-env"),
        pytest.param(
            device,
            id="device-env",
            marks=pytest.mark.skipif(not device.exists(), reason=f"no device Python at {device}"),
        ),
    ]


def run_script(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-I", "-c", GUARD, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_keep_names_the_files_after_the_row(kept: Path) -> None:
    assert sorted(p.name for p in kept.iterdir()) == [
        "demo-28_onnx_fp32.onnx",
        "demo-28_onnx_int8.onnx",
        "demo-28_onnx_int8_unaligned.onnx",
        "rows.json",
    ]
    rows = json.loads((kept / "rows.json").read_text())
    assert rows["format"] == "edgenas.speed-files/1"
    (row,) = rows["rows"]
    assert row["label"] == "demo-28" and row["space"] == "mbv3-tiny" and row["macs"] > 0
    assert row["files"] == {
        "onnx_fp32": "demo-28_onnx_fp32.onnx",
        "onnx_int8": "demo-28_onnx_int8.onnx",
        "onnx_int8_unaligned": "demo-28_onnx_int8_unaligned.onnx",
    }


@pytest.mark.parametrize("python", pythons())
def test_times_the_kept_files_with_numpy_and_onnxruntime_only(
    python: Path, kept: Path, tmp_path: Path
) -> None:
    proc = run_script(python, str(kept), "--rounds", "1", "--op-profile", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["benchmark"] == "int8-timing" and result["runs_per_file"] == 5
    assert result["machine"]["cpu_model"]
    assert {"avx512_vnni", "avx_vnni", "amx_int8", "avx2", "asimddp", "i8mm"} <= set(
        result["machine"]["cpu_flags"]
    )
    assert result["runtimes"]["onnx"][0].isdigit()
    # Where the CPU offers AMX, the JSON says whether it was refused.
    assert result["x86_amx"] == ("available" if result["machine"]["cpu_flags"]["amx_int8"] else "")
    (row,) = result["rows"]
    assert row["label"] == "demo-28" and row["skipped"] == {}
    assert set(row["latency"]) == {"onnx_fp32", "onnx_int8", "onnx_int8_unaligned"}
    for entry in row["latency"].values():
        assert entry["n"] == 5 and entry["p10_ms"] <= entry["median_ms"] <= entry["p90_ms"]
        assert entry["placement"]["nodes"]["CPUExecutionProvider"] > 0
    # Each int8 file over the fp32 one, the unaligned variant beside the file export ships.
    assert set(row["int8_over_fp32"]) == {"onnx", "onnx_unaligned"}
    fp32 = row["latency"]["onnx_fp32"]["median_ms"]
    for ratio, name in (("onnx", "onnx_int8"), ("onnx_unaligned", "onnx_int8_unaligned")):
        expected = row["latency"][name]["median_ms"] / fp32
        # (medians are printed to 0.1 us, ratios to 3 decimals)
        assert row["int8_over_fp32"][ratio] == pytest.approx(expected, rel=0.01)
    profile = row["op_profile"]
    assert "Conv" in "".join(profile["onnx_fp32"]["ms_per_op_type"])
    assert "QLinearConv" in profile["onnx_int8"]["ms_per_op_type"]
    assert profile["onnx_int8"]["nodes"] > 0
    assert "[1/1] demo-28" in proc.stderr


@pytest.mark.skipif(
    not (sys.platform == "linux" and os.uname().machine == "x86_64"),
    reason="refusing AMX is for x86-64 Linux",
)
def test_times_with_amx_refused(kept: Path, tmp_path: Path) -> None:
    proc = run_script(
        Path(sys.executable), str(kept), "--rounds", "1", "--refuse-amx", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["x86_amx"] == ("refused" if result["machine"]["cpu_flags"]["amx_int8"] else "")
    assert all(entry["n"] == 5 for entry in result["rows"][0]["latency"].values())


def test_a_folder_without_rows_json_gets_one_line(tmp_path: Path) -> None:
    proc = run_script(Path(sys.executable), str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no rows.json; write the folder with "
        f"'python -m benchmarks.export --speed --keep {tmp_path}'"
    ]


def test_times_the_onnx_files_on_openvinos_provider(kept: Path, tmp_path: Path) -> None:
    # onnxruntime-openvino's build in .venv-openvino (make setup): each file one OpenVINO graph.
    python = require_openvino()
    openvino = OPENVINO
    proc = run_script(
        python,
        *(str(kept), "--rounds", "1", "--provider", openvino),
        *("--provider-option", "device_type=CPU", "--provider-option", "num_of_threads=1"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["onnx_providers"] == [openvino]
    (row,) = result["rows"]
    for entry in row["latency"].values():
        assert entry["placement"]["nodes"] == {openvino: 1}, entry["placement"]
    assert set(row["int8_over_fp32"]) == {"onnx", "onnx_unaligned"}


def test_times_the_onnx_files_on_the_openvino_runtime(kept: Path, tmp_path: Path) -> None:
    # The openvino package in .venv-openvino: fp32 at fp32, int8 on int8 kernels.
    python = require_openvino()
    proc = run_script(
        python, str(kept), "--rounds", "1", "--openvino", "CPU", "--op-profile", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["onnx_openvino"] == {"device": "CPU", "properties": {}}
    assert result["onnx_providers"] == []
    assert result["runtimes"]["onnx"] == f"openvino {pinned_version('openvino')}"
    (row,) = result["rows"]
    placements = {name: entry["placement"] for name, entry in row["latency"].items()}
    assert {p["inference_precision"] for p in placements.values()} == {"f32"}
    assert set(placements["onnx_fp32"]["kernel_precisions"]) == {"f32"}
    assert placements["onnx_int8"]["kernel_precisions"].get("u8", 0) > 0
    assert set(row["int8_over_fp32"]) == {"onnx", "onnx_unaligned"}
    # OpenVINO's performance counters: types with the kernel that ran them, f32 in the fp32
    # file and int8 ("I8") depthwise convs in the int8 one.
    types = {name: profile["ms_per_op_type"] for name, profile in row["op_profile"].items()}
    assert set(types) == {"onnx_fp32", "onnx_int8", "onnx_int8_unaligned"}
    assert all(t.endswith("_f32)") for t in types["onnx_fp32"] if t.startswith("Convolution"))
    depthwise = [t for t in types["onnx_int8"] if t.startswith("GroupConvolution")]
    assert depthwise and all("_I8)" in t for t in depthwise), types["onnx_int8"]


def test_a_python_without_openvino_is_one_line(kept: Path, tmp_path: Path) -> None:
    proc = run_script(Path(sys.executable), str(kept), "--openvino", "CPU", cwd=tmp_path)
    assert proc.returncode == 3 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert (
        line.startswith("error: OpenVINO is not installed for ") and "pip install openvino" in line
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--openvino", "CPU", "--provider", "OpenVINOExecutionProvider"],
            "error: --provider is onnxruntime's: leave it out with --openvino",
        ),
        (
            ["--openvino", "GPU", "--op-profile"],
            "error: --op-profile with --openvino GPU: per-op times are read on OpenVINO's CPU "
            "device only (--openvino CPU)",
        ),
        (
            ["--openvino-property", "NUM_STREAMS=1"],
            "error: --openvino-property is for --openvino: give one",
        ),
        (
            ["--openvino", "CPU", "--openvino-property", "NUM_STREAMS"],
            "error: --openvino-property NUM_STREAMS: give KEY=VALUE",
        ),
        (
            ["--provider", "openvino"],
            "error: --provider openvino: give onnxruntime's full name (...ExecutionProvider)",
        ),
        (
            ["--provider-option", "num_of_threads=1"],
            "error: --provider-option is for the first --provider: give one",
        ),
        (
            ["--provider", "OpenVINOExecutionProvider", "--provider-option", "threads"],
            "error: --provider-option threads: give KEY=VALUE",
        ),
    ],
)
def test_bad_runtime_arguments_are_refused(
    kept: Path, tmp_path: Path, args: list[str], line: str
) -> None:
    proc = run_script(Path(sys.executable), str(kept), *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].endswith(line), proc.stderr


def test_a_provider_this_onnxruntime_lacks_is_one_line(kept: Path, tmp_path: Path) -> None:
    # This environment's onnxruntime is the CPU build: refused, not timed on the CPU.
    proc = run_script(
        Path(sys.executable), str(kept), "--provider", "OpenVINOExecutionProvider", cwd=tmp_path
    )
    assert proc.returncode == 3 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: onnxruntime ") and "has no OpenVINOExecutionProvider" in line


def test_a_file_the_provider_takes_none_of_is_refused(kept: Path, tmp_path: Path) -> None:
    # OpenVINO has no com.microsoft Inverse: onnxruntime runs it on its CPU provider, whose
    # time is not OpenVINO's.
    import onnx
    from onnx import TensorProto, helper

    python = require_openvino()
    folder = tmp_path / "kept"
    folder.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")],
        "inverse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what onnxruntime-openvino 1.24 reads
    onnx.save(model, folder / "inverse.onnx")
    rows = json.loads((kept / "rows.json").read_text())
    rows["rows"][0]["files"] = {"onnx_fp32": "inverse.onnx"}
    (folder / "rows.json").write_text(json.dumps(rows))
    proc = run_script(python, str(folder), "--provider", "OpenVINOExecutionProvider", cwd=tmp_path)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: OpenVINOExecutionProvider took none of the nodes of {folder / 'inverse.onnx'}: "
        "they all ran on CPUExecutionProvider; time it without --provider"
    )
