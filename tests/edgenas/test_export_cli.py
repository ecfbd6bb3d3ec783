"""`edgenas export` end to end: a supernet trained by `edgenas train`, real runtimes, a real
local device, a real sshd with tflite-runtime 2.14 as the board."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from devices.measurement import Fingerprint
from edgenas.subnet_choice import choose_subnet
from export import read_onnx_metadata
from export.subnet_export import model_images
from export.verify import agreement, correlation, run_onnx, run_tflite, top1
from latency.table import PUBLISHED_RUNTIME
from once_for_all import Subnet, SubnetError, get_space
from once_for_all.data import load_data
from once_for_all.data.splits import eval_head
from tests.edgenas.conftest import MICRO_RECIPE
from tests.edgenas.search.synthetic import predictor
from tests.support.cli_here import edgenas_here
from tests.support.sshd import Sshd

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = get_space("mbv3-tiny")
CPU_PROFILE = "name: test-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\nwarmup: 2\nruns: 7\n"
NOTE10 = "samsung-note10"


def edgenas(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenas", "export", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=900,
    )


def _fingerprint(profile: Path) -> Fingerprint:
    from devices import open_device

    with open_device(str(profile)) as device:
        return device.fingerprint()


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local onnxruntime device and, under profiles/, a latency predictor for it (a
    synthetic table, as if measured on this host's CPU: export checks that it was)."""
    folder = tmp_path_factory.mktemp("device")
    (folder / "cpu.yaml").write_text(CPU_PROFILE)
    here = _fingerprint(folder / "cpu.yaml")
    predictor("test-cpu", fingerprint=here).save(
        folder / "profiles" / "test-cpu" / "predictor.json"
    )
    # samsung-note10 is published tables: profiled (imported), never measured.
    published = replace(here, host=NOTE10, runtime=PUBLISHED_RUNTIME)
    predictor(NOTE10, seed=1, fingerprint=published).save(
        folder / "profiles" / NOTE10 / "predictor.json"
    )
    return folder


@pytest.fixture(scope="module")
def board(sshd: Sshd, device_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The profile of a board over SSH that runs TFLite files in tflite-runtime 2.14."""
    folder = tmp_path_factory.mktemp("board")
    remote = folder / "board tmp"
    remote.mkdir()
    return sshd.write_profile(
        folder / "board.yaml",
        "test-board",
        python=device_python,
        ssh={"remote_tmpdir": str(remote)},
        runtime="tflite",
        runs=5,
        warmup=1,
    )


@pytest.fixture(scope="module")
def exported(
    trained: Path, cpu: Path, board: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One export of every file, measured on the local CPU and on the board (TFLite conversions
    take seconds each: the module's checks share it). A real process, as a user runs it."""
    out = tmp_path_factory.mktemp("export") / "subnet"
    proc = edgenas(
        "--supernet",
        trained / "run" / "supernet.pt",
        "--subnet",
        "min",  # the smallest: 8 blocks to convert, not 16
        "--int8",
        "--device",
        cpu / "cpu.yaml",
        "--device",
        board,
        "--device",
        NOTE10,
        "--profiles",
        cpu / "profiles",
        "--calibration-images",
        "64",
        "--test-images",
        "400",
        "--out",
        out,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (out / "card.json").read_text()  # --json: the card, format tag and all
    # the board was never profiled: said, not silently left without a prediction
    said = " ".join(proc.stderr.split())
    # the command works as given: the profile's path, the space (device audit)
    profiled = cpu / "profiles" / "test-board"
    assert (
        f"test-board: no latency prediction (no {profiled}/predictor.json): the card gives the "
        f"measured latency only; profile it with 'edgenas profile {board} --space mbv3-tiny "
        f"--out {profiled}'"
    ) in said
    assert said.count("no latency prediction") == 1
    return out


def _card(folder: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((folder / "card.json").read_text())
    return card


def test_export_writes_every_file_and_a_card(exported: Path) -> None:
    names = {"model.onnx", "model_int8.onnx", "model.tflite", "model_int8.tflite"}
    assert {p.name for p in exported.iterdir()} == names | {"card.json", "card.md"}
    card = _card(exported)
    assert card["format"] == "edgenas.card/2"
    assert Subnet.from_dict(card["subnet"]) == TINY.min_subnet()
    files = {f["name"]: f for f in card["files"]}
    assert set(files) == names
    for name, f in files.items():
        assert f["bytes"] == (exported / name).stat().st_size
        if f["precision"] == "fp32":
            assert f["checks"]["max_abs_diff"] <= 1e-4
        else:
            assert 0 <= f["checks"]["top1_agreement"] <= 1
        # How the runtime runs each file: all of it delegated, no float island. (An int8 file
        # may have its stem in groups: "auto" splits it when that agrees better.)
        f["execution"].pop("stem_groups", None)
        if f["format"] == "tflite":
            assert f["execution"] == {
                "graph_form": "xnnpack",
                "delegate": "XNNPACK",
                "partitions": 1,
                "not_delegated": {},
            }
        elif f["precision"] == "int8":
            assert f["execution"] == {
                "runtime": "onnxruntime",
                "float_nodes": {},
                "channels_aligned": "x86",
            }
    assert card["accuracy"]["images"] == 400
    assert set(card["accuracy"]["int8"]) == {"model_int8.onnx", "model_int8.tflite"}
    assert card["int8_calibration"] == {"split": "train", "images": 64}
    markdown = (exported / "card.md").read_text()
    assert "- int8 files calibrated on 64 images of the train split" in markdown
    for section in ("## Subnet", "## Files", "## Accuracy", "## Latency", "## Input"):
        assert section in markdown
    # Where the device ran each file (onnxruntime's profile names each node's provider),
    # and what starting it cost, on the card and in its text.
    for name, timing in card["latency"]["test-cpu"]["files"].items():
        measured = timing["measured"]
        if name.endswith(".onnx"):
            nodes = measured["placement"]["nodes"]
            assert set(nodes) == {"CPUExecutionProvider"} and nodes["CPUExecutionProvider"] > 0
            assert measured["placement_text"].startswith("CPUExecutionProvider ")
            assert f"- test-cpu, `{name}`: {measured['placement_text']}" in markdown
        assert measured["init_ms"] > 0 and measured["first_inference_ms"] > 0
    assert "Placement on the device:" in markdown


def test_card_accuracies_are_what_the_files_do(exported: Path, trained: Path) -> None:
    card = _card(exported)
    data = load_data(**MICRO_RECIPE["data"])  # what the supernet was trained on
    x = model_images(data.test, data, card["subnet"]["r"], 400)
    y = eval_head(data.test, 400).labels.numpy()
    fp32 = run_onnx(exported / "model.onnx", x)
    assert top1(fp32, y) == pytest.approx(card["accuracy"]["fp32"])
    for name, run in (("model_int8.onnx", run_onnx), ("model_int8.tflite", run_tflite)):
        logits = run(exported / name, x)
        reported = card["accuracy"]["int8"][name]
        assert top1(logits, y) == pytest.approx(reported["accuracy"])
        assert agreement(logits, fp32) == pytest.approx(reported["top1_agreement"], abs=0.003)


def test_onnx_metadata_describes_the_model(exported: Path) -> None:
    card = _card(exported)
    metadata = read_onnx_metadata(exported / "model.onnx")
    assert json.loads(metadata["edgenas.subnet"]) == card["subnet"]
    assert metadata["edgenas.space"] == TINY.id
    assert json.loads(metadata["edgenas.normalization"])["mean"] == card["data"]["mean"]
    described = json.loads(metadata["edgenas.input"])
    assert described["shape"] == [1, 1, 28, 28] and described["resize"] == "bilinear"
    assert described["antialias"] is True  # as the accuracies were measured
    assert card["data"]["resize"] == "bilinear"
    assert (
        "1 channel(s), resized (bilinear, antialiased as PIL's resize is) to 28x28, then"
        in (exported / "card.md").read_text()
    )
    assert json.loads(metadata["edgenas.accuracy"])["fp32"] == pytest.approx(
        card["accuracy"]["fp32"]
    )
    predicted = json.loads(metadata["edgenas.predicted_latency_ms"])
    published = pytest.approx(predictor(NOTE10, seed=1).predict(TINY.min_subnet()))
    assert predicted == {
        "test-cpu": pytest.approx(predictor("test-cpu").predict(TINY.min_subnet())),
        "test-board": None,  # no predictor profiled for it
        NOTE10: published,  # published tables predict the subnet, whatever its file
    }
    # test-cpu's predictor was profiled with fp32 ONNX: it says nothing of the int8 file,
    # whose metadata the fp32 file's is otherwise carried into
    int8 = read_onnx_metadata(exported / "model_int8.onnx")
    assert json.loads(int8["edgenas.predicted_latency_ms"]) == {
        "test-cpu": None,
        "test-board": None,
        NOTE10: published,
    }
    assert int8["edgenas.subnet"] == metadata["edgenas.subnet"]


def test_a_dynamic_batch_files_metadata_gives_its_input_shape(
    trained: Path, tmp_path: Path
) -> None:
    # The metadata said batch 1 where the file and the card said "batch" (review).
    out = tmp_path / "out"
    proc = edgenas_here(
        "export", "--supernet", trained / "run" / "supernet.pt", "--subnet", "min",
        "--format", "onnx", "--dynamic-batch", "--no-verify", "--out", out, "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    described = json.loads(read_onnx_metadata(out / "model.onnx")["edgenas.input"])
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in graph.type.tensor_type.shape.dim]
    assert described["shape"] == _card(out)["inputs"]["model.onnx"]["shape"] == dims
    assert dims == ["batch", 1, 28, 28]


def test_a_published_device_has_its_prediction_on_the_card_and_no_measurement(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgenas.cli.export import print_card
    from export.card import read_card

    card = read_card(exported / "card.json")
    note10 = card["latency"][NOTE10]
    assert note10["files"] == {} and "recommended" not in note10
    assert note10["predicted"] == pytest.approx(
        predictor(NOTE10, seed=1).predict(TINY.min_subnet())
    )
    assert note10["not_measured"].startswith("not measurable: published tables")
    markdown = (exported / "card.md").read_text()
    assert f"| {NOTE10} | {note10['not_measured']} | {note10['predicted']:.4g} |" in markdown
    assert "pass --device" not in markdown
    card["accuracy"]["fp32"] = 0.64  # every accuracy in one form: 0.64 stood above 0.6400
    print_card(card, exported)
    printed = capsys.readouterr().err
    assert f"{NOTE10}: predicted {note10['predicted']:.4g} ms; not measurable" in (
        printed.replace("\n", " ")
    )
    assert " 0.6400 " in printed and " 0.64 " not in printed


def test_files_are_measured_on_the_device_and_compared_with_the_prediction(
    exported: Path,
) -> None:
    latency = _card(exported)["latency"]["test-cpu"]
    assert set(latency["files"]) == {"model.onnx", "model_int8.onnx"}  # what onnxruntime runs
    onnx_fp32 = latency["files"]["model.onnx"]
    assert onnx_fp32["measured"]["n"] == 7 and onnx_fp32["measured"]["median_ms"] > 0
    expected = predictor("test-cpu").predict(TINY.min_subnet())
    assert onnx_fp32["predicted"] == pytest.approx(expected)
    # the predictor was profiled with fp32 ONNX: it says nothing about the int8 file
    assert latency["files"]["model_int8.onnx"]["predicted"] is None
    # Its table has no reference model: no figure at the predictor's baseline, and no word
    # on that column (card.md explained a column of dashes).
    from export.card import card_markdown

    card = _card(exported)
    assert onnx_fp32["measured_at_baseline_ms"] is None
    assert "Timed devices drift" not in card_markdown(card)
    onnx_fp32["measured_at_baseline_ms"] = 0.1
    card["latency"]["test-cpu"]["files"]["model.onnx"] = onnx_fp32
    assert "Timed devices drift; the last column scales" in card_markdown(card)


def test_a_device_that_refused_amx_says_so_on_the_card(exported: Path) -> None:
    from export.card import card_markdown

    card = _card(exported)
    line = "- test-cpu: Intel AMX refused to the runtime (x86_amx: false)"
    assert line not in card_markdown(card)
    card["latency"]["test-cpu"]["fingerprint"]["x86_amx"] = "refused"
    assert line in card_markdown(card)
    # Only where the device timed an int8 file: fp32 kernels do not use AMX.
    files = card["latency"]["test-cpu"]["files"]
    card["latency"]["test-cpu"]["files"] = {"model.onnx": files["model.onnx"]}
    assert line not in card_markdown(card)


def test_the_hint_for_a_table_without_the_subnets_resolution_extends_it(tmp_path: Path) -> None:
    # It gave the command without --resolution or the table's --precision, which profile
    # then refused (review).
    from edgenas.stages.export import ExportJob, _no_predictor
    from tests.edgenas.search.synthetic import predictor

    out = tmp_path / "profiles" / "local-cpu"
    predictor("local-cpu", precision="int8", resolutions=(32,)).save(out / "predictor.json")
    job = ExportJob(tmp_path / "supernet.pt", "max", tmp_path / "o", profiles=out.parent)
    assert _no_predictor("local-cpu", "local-cpu", TINY, TINY.max_subnet(r=28), job) == (
        f"local-cpu: no latency prediction ({out}/predictor.json does not cover r28): the card "
        "gives the measured latency only; profile it with 'edgenas profile local-cpu --space "
        "mbv3-tiny --format onnx --precision int8 --resolution 28 --resolution 32 --out "
        f"{out}'"
    )


def test_an_unverified_cards_accuracy_names_no_images(exported: Path) -> None:
    from export.card import card_markdown

    card = _card(exported)
    assert "## Accuracy (test split, 400 images)" in card_markdown(card)
    card["accuracy"] = {"split": "test", "images": 0, "fp32": None, "int8": {}}
    text = card_markdown(card)  # it said "(test split, 0 images)" and then "not verified"
    assert "## Accuracy\n\n- not verified (--no-verify)" in text and "split, 0 images" not in text


def test_a_jetson_checks_the_file_it_times_through_trtexec(trained: Path, tmp_path: Path) -> None:
    """A tensorrt device (the stand-in trtexec: recorded times, classes from onnxruntime)
    classifies the test images with the fp32 file it times; --min-int8-agreement weighs that
    check, so export takes it without --int8."""
    from tests.devices.test_trtexec_classify import trtexec_stand_in

    trtexec, calls = trtexec_stand_in(tmp_path / "bin")
    profile = tmp_path / "orin.yaml"
    profile.write_text(
        "name: test-orin\nkind: local\nruntime: tensorrt\nruns: 49\n"
        f"tensorrt:\n  trtexec: {json.dumps(str(trtexec))}\n  precision: fp16\n  warmup_ms: 0\n"
    )
    out = tmp_path / "out"
    proc = edgenas_here(
        "export", "--supernet", trained / "run" / "supernet.pt", "--subnet", "min",
        "--format", "onnx", "--device", profile, "--test-images", "100",
        "--device-check-images", "20", "--min-int8-agreement", "0.9", "--out", out, "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    orin = _card(out)["latency"]["test-orin"]
    assert orin["files"]["model.onnx"]["measured"]["n"] == 49  # the recorded times
    # onnxruntime's fp32 classes: those of PyTorch fp32, within export's parity
    assert orin["files"]["model.onnx"]["on_device"]["images"] == 20
    assert orin["files"]["model.onnx"]["on_device"]["top1_agreement"] >= 0.95
    assert "not_checked" not in orin
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert sum(any(a.startswith("--loadEngine=") for a in run) for run in runs) == 19


def test_an_npu_gets_the_plain_graph_and_its_cpu_fallbacks_in_the_card(
    trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "npu"
    proc = edgenas_here(
        "export",
        "--supernet",
        trained / "run" / "supernet.pt",
        "--subnet",
        "min",
        "--format",
        "tflite",
        "--int8",
        "--device",
        "ethos-u55-128",
        "--test-images",
        "100",
        "--calibration-images",
        "32",
        "--out",
        out,
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    card = _card(out)
    assert {f["execution"]["graph_form"] for f in card["files"]} == {"plain"}
    npu = card["latency"]["ethos-u55-128"]
    assert set(npu["files"]) == {"model_int8.tflite"}  # Vela compiles int8 only
    assert npu["files"]["model_int8.tflite"]["measured"]["cpu_fallback_ops"] == []
    # Vela compiles and estimates: nothing classifies the images there, and the card says so.
    assert "on_device" not in npu["files"]["model_int8.tflite"]
    assert npu["not_checked"].startswith("it returns latency only")
    markdown = (out / "card.md").read_text()
    assert "Not checked on the device:\n\n- ethos-u55-128: it returns latency only (Vela and" in (
        markdown
    )
    # The only file it runs, flagged when its agreement is under the target.
    assert npu["recommended"] == "model_int8.tflite"
    agreement = card["accuracy"]["int8"]["model_int8.tflite"]["top1_agreement"]
    assert npu["recommended_meets_accuracy"] == (agreement >= 0.98)


def test_the_card_says_a_split_stems_prediction_leaves_the_split_out(exported: Path) -> None:
    from export.card import card_markdown, read_card

    card = read_card(exported / "card.json")
    for f in card["files"]:
        f["execution"].pop("stem_groups", None)
    timing = card["latency"]["test-cpu"]["files"]["model_int8.onnx"]
    timing["predicted"] = None
    note = "lookup table times the stem whole"
    assert note not in card_markdown(card)
    (int8,) = [f for f in card["files"] if f["name"] == "model_int8.onnx"]
    int8["execution"]["stem_groups"] = [[0, 2], [1, 3]]
    assert note not in card_markdown(card)  # no prediction, nothing to qualify
    timing["predicted"] = 0.05
    assert (
        "`model_int8.onnx` has its stem in 2 groups: the predictor's lookup table times the "
        "stem whole, so the prediction leaves the split's cost out (the measured latency has "
        "it); `edgenas profile` on the device's int8 table adds it (the table resumes)."
    ) in card_markdown(card)
    int8["execution"]["stem_groups"] = [[0], [2], [1, 3]]  # --stem-groups 3: the option
    assert "`edgenas profile --stem-groups 3` on the device's int8 table" in card_markdown(card)
    timing["predicted_stem_groups"] = 3  # the table timed the split: nothing to qualify
    assert note not in card_markdown(card)


def test_a_split_stems_prediction_comes_from_the_int8_tables_split_entry(
    exported: Path, cpu: Path
) -> None:
    from edgenas.stages.export import _measure
    from export.card import split_stem_note
    from export.subnet_export import ExportedFile
    from latency.predictors import LutSumPredictor

    card = _card(exported)
    (described,) = [f for f in card["files"] if f["name"] == "model_int8.onnx"]
    int8 = ExportedFile(
        "model_int8.onnx", "onnx", "int8", described["bytes"], described["sha256"], 1.0
    )
    subnet = Subnet.from_dict(card["subnet"])
    whole = predictor("test-cpu", precision="int8")
    split = whole.split_stem(2)
    assert split is not None
    for groups, table, expected in [
        ([[0, 2, 4, 6], [1, 3, 5, 7]], whole, split.predict(subnet)),
        ([], whole, whole.predict(subnet)),  # the file's stem is whole
        ([[0, 2, 4, 6], [1, 3, 5, 7]], predictor("test-cpu"), None),  # an fp32 table
    ]:
        int8.execution = {"stem_groups": groups} if groups else {}
        latency = _measure(
            [str(cpu / "cpu.yaml")], exported, [int8], subnet, {"test-cpu": table}, print
        )
        timing = latency["test-cpu"]["files"]["model_int8.onnx"]
        assert timing["predicted"] == (pytest.approx(expected) if expected else None)
        assert ("predicted_stem_groups" in timing) == bool(groups and expected)
    # The note is for a prediction that leaves the split out: a table without its entry.
    int8.execution = {"stem_groups": [[0, 2, 4, 6], [1, 3, 5, 7]]}
    # as a table profiled before int8 tables timed the split: the subnets' blocks only
    old = LutSumPredictor(whole.space, whole.header, whole.block_ms)
    latency = _measure([str(cpu / "cpu.yaml")], exported, [int8], subnet, {"test-cpu": old}, print)
    assert latency["test-cpu"]["files"]["model_int8.onnx"]["predicted"] == pytest.approx(
        whole.predict(subnet)
    )
    assert "times the stem whole" in (
        split_stem_note({**card, "files": [int8.to_dict()], "latency": latency}) or ""
    )


def test_tflite_form_follows_the_devices(tmp_path: Path) -> None:
    from edgenas.stages.export import ExportJob, resolve_tflite_form

    said: list[str] = []

    def form(*devices: str, **kwargs: Any) -> str:
        job = ExportJob(supernet=tmp_path, subnet="max", out=tmp_path, devices=devices, **kwargs)
        return resolve_tflite_form(job, said.append)

    assert form() == form("local-cpu") == form("raspberry-pi-4") == "xnnpack"
    assert form("ethos-u55-128") == "plain"  # Vela runs hard-swish and 7x7 kernels natively
    # Devices of ONNX files have no say: beside them Vela got XNNPACK's form, 1.9x slower
    # (walk-through; quickstart-ethos.yaml's devices).
    assert form("ethos-u55-128", "local-cpu") == form("ethos-u55-128", "npu-32x32-ws") == "plain"
    # nor do published tables, where nothing runs (ofa-imagenet.yaml's devices; review)
    assert form("samsung-note10", "local-cpu", "ethos-u55-128") == "plain"
    assert said == []
    assert form("ethos-u55-128", "raspberry-pi-4") == "xnnpack"  # the CPUs' file serves both
    assert said == [
        "TFLite files in XNNPACK's graph form for ethos-u55-128, raspberry-pi-4: ethos-u55-128 "
        "compiles the plain form faster; export for it on its own, or give --tflite-form plain"
    ]
    assert form("ethos-u55-128", tflite_form="xnnpack") == "xnnpack"


def test_kernel_isa_names_the_cpus_with_onnxruntime_int8_conv_kernels() -> None:
    from export.formats import kernel_isa

    assert [kernel_isa(m) for m in ("x86_64", "AMD64", "aarch64", "arm64")] == [
        "x86",
        "x86",
        "arm64",
        "arm64",
    ]
    # 32-bit x86 and Arm, RISC-V, a runner that did not say: onnxruntime's symmetric int8 conv
    # kernels are not built there, so no padding.
    assert {kernel_isa(m) for m in ("i686", "armv7l", "riscv64", "")} == {"none"}


def test_one_alignment_for_devices_of_several_cpu_kinds() -> None:
    from edgenas.stages.export import common_alignment

    assert common_alignment(["arm64", "arm64"]) == "arm64"
    assert common_alignment(["arm64", "x86"]) == common_alignment(["x86", "none"]) == "x86"
    assert common_alignment(["arm64", "none"]) == common_alignment([]) == "none"


def test_channel_alignment_follows_the_devices_that_run_onnx(
    tmp_path: Path, sshd: Sshd, device_python: Path
) -> None:
    import platform

    from edgenas.stages.export import ExportJob, resolve_channel_alignment
    from export.formats import kernel_isa
    from export.subnet_export import ExportOptions

    said: list[str] = []

    def alignment(*devices: str | Path, **kwargs: Any) -> str:
        kwargs.setdefault("options", ExportOptions(int8=True))
        job = ExportJob(
            supernet=tmp_path,
            subnet="max",
            out=tmp_path,
            devices=tuple(str(d) for d in devices),
            **kwargs,
        )
        return resolve_channel_alignment(job, said.append)

    host = kernel_isa(platform.machine())
    # No device that runs ONNX (raspberry-pi-4 runs TFLite, and is not connected to): the
    # file is for this host's kind of CPU, as is local-cpu's.
    assert alignment() == alignment("raspberry-pi-4") == alignment("local-cpu") == host
    assert said == []
    # A board over SSH is asked for its CPU (here the sshd's host).
    board = sshd.write_profile(
        tmp_path / "board.yaml", "test-board", python=device_python, runtime="onnxruntime"
    )
    logins = sshd.log.read_text().count("Accepted publickey")
    assert alignment(board) == host
    assert sshd.log.read_text().count("Accepted publickey") == logins + 1
    # A simulated NPU takes fp32 ONNX only: the int8 file is still for this host (it was
    # unpadded for the simulator; walk-through).
    assert alignment("npu-32x32-ws") == alignment("samsung-note10") == host
    assert said == []
    # Devices that run int8 ONNX on kernels of their own (onnxruntime's CUDA provider) have
    # none to pad for, and the export says why its file is unpadded.
    cuda = tmp_path / "cuda.yaml"
    cuda.write_text("name: test-cuda\nkind: local\nruntime: onnxruntime\nproviders: [cuda]\n")
    assert alignment(cuda) == "none"
    assert said[-1] == (
        "int8 ONNX channels aligned for none (test-cuda: kernels of their own); "
        "--align-channels to choose"
    )
    # Asked for, or no int8 ONNX file to write: nothing is looked up.
    assert alignment("jetson-orin-nano", align_channels="arm64") == "arm64"
    assert alignment("jetson-orin-nano", options=ExportOptions(int8=False)) == "none"
    tflite = ExportOptions(formats=("tflite",), int8=True)
    assert alignment("jetson-orin-nano", options=tflite) == "none"


def test_an_unreachable_onnx_board_fails_before_the_export(tmp_path: Path, sshd: Sshd) -> None:
    from devices import DeviceError
    from edgenas.stages.export import ExportJob, resolve_channel_alignment
    from export.subnet_export import ExportOptions

    board = sshd.write_profile(
        tmp_path / "board.yaml",
        "test-board",
        python="/usr/bin/python3",
        runtime="onnxruntime",
        ssh={"port": 1},
    )
    job = ExportJob(
        supernet=tmp_path,
        subnet="max",
        out=tmp_path,
        devices=(str(board),),
        options=ExportOptions(int8=True),
    )
    with pytest.raises(DeviceError, match="test-board") as info:
        resolve_channel_alignment(job, lambda message: None)
    assert "\n" not in str(info.value)


def test_the_fastest_file_accurate_enough_is_recommended(exported: Path) -> None:
    card = _card(exported)
    latency = card["latency"]["test-cpu"]["files"]
    median = {name: value["measured"]["median_ms"] for name, value in latency.items()}
    assert latency["model.onnx"]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert latency["model_int8.onnx"]["speedup_vs_fp32"] == pytest.approx(
        median["model.onnx"] / median["model_int8.onnx"]
    )
    target = card["recommendation"]["min_int8_agreement"]
    assert target == 0.98
    # The device checked the files: each one's agreement there decides, fp32's too.
    acceptable = [n for n, v in latency.items() if v["on_device"]["top1_agreement"] >= target]
    assert "model.onnx" in acceptable
    assert card["latency"]["test-cpu"]["recommended"] == min(acceptable, key=median.__getitem__)
    assert card["latency"]["test-cpu"]["recommended_meets_accuracy"] is True
    assert "(recommended)" in (exported / "card.md").read_text()


def test_the_cards_note_on_the_recommendation_says_what_it_weighed(exported: Path) -> None:
    from export.card import card_markdown, read_card

    def note(card: Any) -> str:
        paragraphs = card_markdown(card).split("\n\n")
        return " ".join(next(p for p in paragraphs if p.startswith("vs fp32: ")).split())

    card = read_card(exported / "card.json")
    assert "Recommended: the fastest file with a top-1 agreement" in note(card)
    assert "No int8 file was checked here" not in note(card)
    # --no-verify: the int8 files had no agreement to be recommended by, unsaid (review)
    unverified = copy.deepcopy(card)
    for f in unverified["files"]:
        f["checks"] = {}
    assert (
        note(unverified).count(
            "No int8 file was checked here (--no-verify): one is recommended only where a device "
            "checked it, or runs int8 files alone (flagged)."
        )
        == 1
    )
    # fp32 files alone: int8 was named though none was written (review)
    card["files"] = [f for f in card["files"] if f["precision"] == "fp32"]
    for entry in card["latency"].values():
        entry["files"] = {n: t for n, t in entry["files"].items() if "int8" not in n}
    checked = note(card)
    assert "Recommended: on a device that checked the files, the fastest file" in checked
    assert "On the device: the file's top-1 agreement" in checked and "int8" not in checked
    for entry in card["latency"].values():
        for timing in entry["files"].values():
            timing.pop("on_device", None)
    assert note(card).endswith("(its latency over this file's). Recommended: the fastest file.")


def test_each_device_classifies_the_test_images_with_the_files_it_measured(
    exported: Path,
) -> None:
    card = _card(exported)
    host = card["accuracy"]["int8"]
    cpu = card["latency"]["test-cpu"]["files"]
    # This host's onnxruntime, as the card's own checks run the files: the same classes.
    assert cpu["model_int8.onnx"]["on_device"] == {
        "images": 400,
        "top1_agreement": host["model_int8.onnx"]["top1_agreement"],
        "accuracy": host["model_int8.onnx"]["accuracy"],
    }
    assert cpu["model.onnx"]["on_device"]["top1_agreement"] >= 0.995  # parity within 1e-4
    assert cpu["model.onnx"]["on_device"]["accuracy"] == pytest.approx(
        card["accuracy"]["fp32"], abs=0.005
    )
    # The board's tflite-runtime 2.14 runs the TFLite files with its own XNNPACK.
    board = card["latency"]["test-board"]["files"]
    assert set(board) == {"model.tflite", "model_int8.tflite"}
    int8 = board["model_int8.tflite"]["on_device"]
    assert int8["images"] == 400
    assert int8["top1_agreement"] == pytest.approx(
        host["model_int8.tflite"]["top1_agreement"], abs=0.02
    )
    assert "on_device" not in card["latency"][NOTE10]  # published tables: nothing runs
    markdown = (exported / "card.md").read_text()
    assert "on the device: agreement, accuracy |" in markdown
    agreed = f"{100 * int8['top1_agreement']:.2f}%, {100 * int8['accuracy']:.2f}% (400 images)"
    assert agreed in markdown


def test_the_table_shows_each_check_on_the_device(
    exported: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's table: each file's agreement and accuracy on each device that checked
    it, and why a device did not."""
    from edgenas.cli.export import print_card

    monkeypatch.setenv("COLUMNS", "400")  # a terminal wide enough for no cell to wrap

    card = _card(exported)
    card["latency"]["test-board"]["not_checked"] = "it returns latency only (a test's)"
    print_card(card, exported)  # type: ignore[arg-type]
    said = " ".join(capsys.readouterr().err.split())
    int8 = card["latency"]["test-cpu"]["files"]["model_int8.onnx"]["on_device"]
    assert (
        f"agreement {100 * int8['top1_agreement']:.2f}%, accuracy {int8['accuracy']:.4f} here "
        f"({int8['images']} images)"
    ) in said
    # The export's own accuracy may be on more images than a device checks (review: two
    # accuracies side by side, on 200 and on all test images, without saying so).
    assert f"test accuracy ({card['accuracy']['images']} images)" in said
    assert "test-board: not checked on the device: it returns latency only (a test's)" in said
    # A recommended file that is only the best of files below the target says so, as the
    # card and run's table do: the table marked it recommended and no more (walk-through).
    assert "(below target)" not in said
    card["latency"]["test-cpu"]["recommended_meets_accuracy"] = False
    print_card(card, exported)  # type: ignore[arg-type]
    said = " ".join(capsys.readouterr().err.split())
    assert said.count("(below target)") == 2, said  # the cell and the line below the table
    assert "(below target): no file reached the agreement target there" in said
    # A reason every device shares (no images asked) is said once.
    for device in ("test-cpu", "test-board"):
        card["latency"][device]["not_checked"] = "no test images asked (a test's)"
    print_card(card, exported)  # type: ignore[arg-type]
    said = " ".join(capsys.readouterr().err.split())
    assert said.count("not checked on the devices: no test images asked (a test's)") == 1
    assert "test-cpu: not checked" not in said


def _recommend(
    files: dict[str, tuple[float, float | None, float | None]],
    min_agreement: float = 0.98,
    host_images: int = 100,
) -> dict[str, Any]:
    """``_compare`` on one device's files: name -> (median ms, agreement there or None for
    unchecked, the host's int8 agreement or None); the device checks 100 images, the host
    ``host_images``."""
    from edgenas.stages.export import _compare
    from export.subnet_export import ExportedFile, ExportResult

    described = [
        ExportedFile(
            name=name,
            format="onnx" if name.endswith(".onnx") else "tflite",
            precision="int8" if "int8" in name else "fp32",
            bytes=1,
            sha256="",
            seconds=0.0,
            checks={} if host is None else {"top1_agreement": host, "test_images": host_images},
        )
        for name, (_, _, host) in files.items()
    ]
    entry: dict[str, Any] = {"fingerprint": {}, "files": {}}
    for name, (ms, there, _) in files.items():
        entry["files"][name] = {"predicted": None, "measured": {"median_ms": ms}}
        if there is not None:
            entry["files"][name]["on_device"] = {
                "images": 100,
                "top1_agreement": there,
                "accuracy": 0.5,
            }
    result = ExportResult(files=described, accuracy_fp32=0.5, test_images=100, inputs={})
    _compare({"d": entry}, result, min_agreement)
    return entry


def test_the_recommendation_weighs_the_agreement_measured_on_the_device() -> None:
    # Checked there: an fp32 file (a GPU delegate's fp16) must reach the target too.
    entry = _recommend({"model.tflite": (10.0, 0.97, None), "model_int8.tflite": (4.0, 0.99, 0.9)})
    assert (entry["recommended"], entry["recommended_meets_accuracy"]) == (
        "model_int8.tflite",
        True,
    )
    # Neither reaches it: the one that agrees best, not the fastest, flagged.
    entry = _recommend({"model.tflite": (10.0, 0.975, None), "model_int8.tflite": (4.0, 0.6, 0.99)})
    assert (entry["recommended"], entry["recommended_meets_accuracy"]) == ("model.tflite", False)
    # Both reach it: the faster, though it agrees less.
    entry = _recommend({"model.onnx": (3.0, 1.0, None), "model_int8.onnx": (2.0, 0.985, 0.99)})
    assert (entry["recommended"], entry["recommended_meets_accuracy"]) == ("model_int8.onnx", True)
    # Equals: the faster of them.
    entry = _recommend({"model.onnx": (3.0, 0.9, None), "model_int8.onnx": (2.0, 0.9, 0.9)})
    assert entry["recommended"] == "model_int8.onnx"
    # A device's check on fewer images than the host's does not outweigh it: the lower of the
    # two (the same LiteRT said 99.00% on 100 images and 95.50% on 200; walk-through).
    files = {"model.tflite": (10.0, 1.0, None), "model_int8.tflite": (4.0, 0.99, 0.955)}
    assert _recommend(files, host_images=200)["recommended"] == "model.tflite"
    assert _recommend(files, host_images=100)["recommended"] == "model_int8.tflite"
    # Unchecked (Vela, benchmark_model): fp32 stands, int8 by the host's agreement.
    entry = _recommend({"model.onnx": (3.0, None, None), "model_int8.onnx": (2.0, None, 0.97)})
    assert (entry["recommended"], entry["recommended_meets_accuracy"]) == ("model.onnx", True)
    entry = _recommend({"model_int8.tflite": (2.0, None, 0.5)})  # an NPU runs int8 only
    assert (entry["recommended"], entry["recommended_meets_accuracy"]) == (
        "model_int8.tflite",
        False,
    )


def test_int8_tflite_runs_on_the_board_in_tflite_runtime(
    exported: Path, device_python: Path, tmp_path: Path
) -> None:
    measured = _card(exported)["latency"]["test-board"]["files"]
    assert set(measured) == {"model.tflite", "model_int8.tflite"}
    assert all(m["measured"]["n"] == 5 for m in measured.values())
    # The board's own interpreter computes what LiteRT computes on the host.
    data = load_data(**MICRO_RECIPE["data"])  # what the supernet was trained on
    x = model_images(data.test, data, _card(exported)["subnet"]["r"], 50)
    np.save(tmp_path / "x.npy", x.transpose(0, 2, 3, 1))
    script = (
        "import sys, numpy as np\n"
        "from tflite_runtime.interpreter import Interpreter\n"
        "it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()\n"
        "(i,), (o,) = it.get_input_details(), it.get_output_details()\n"
        "s, z = i['quantization']; os_, oz = o['quantization']; ys = []\n"
        "for x in np.load(sys.argv[2]):\n"
        "    q = np.clip(np.round(x[None] / s) + z, -128, 127).astype(np.int8)\n"
        "    it.set_tensor(i['index'], q); it.invoke()\n"
        "    ys.append((it.get_tensor(o['index']).astype(np.float32) - oz) * os_)\n"
        "np.save(sys.argv[3], np.concatenate(ys))\n"
    )
    board_run = subprocess.run(
        [
            str(device_python),
            "-c",
            script,
            str(exported / "model_int8.tflite"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert board_run.returncode == 0, board_run.stderr
    on_board = np.load(tmp_path / "y.npy")
    on_host = run_tflite(exported / "model_int8.tflite", x)
    # Not bit-exact: tflite-runtime 2.14's int8 kernels round differently from LiteRT's (a
    # few output steps); a wrong layout or quantization of the input would decorrelate them.
    steps = np.abs(on_board - on_host) / _output_scale(exported)
    assert steps.mean() <= 5 and correlation(on_board, on_host) >= 0.98


def _output_scale(folder: Path) -> float:
    scale: float = _card(folder)["inputs"]["model_int8.tflite"]["output_quantization"]["scale"]
    return scale


def test_more_images_than_a_split_holds_are_said_and_the_card_gives_those_used(
    trained: Path, tmp_path: Path
) -> None:
    proc = edgenas_here(
        "export", "--supernet", trained / "run" / "supernet.pt", "--subnet", "min",
        "--format", "onnx", "--int8", "--calibration-images", "100000",
        "--test-images", "100000", "--out", tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    # Both were capped silently (review): the calibration's count was on no card either.
    found = re.search(
        r"100000 calibration images asked, but the training split holds (\d+): "
        r"int8 calibrates on all \1",
        said,
    )
    assert found, said
    assert re.search(
        r"100000 test images asked, but the test split holds (\d+): the int8 checks "
        r"use all \1",
        said,
    )
    card = _card(tmp_path)
    assert card["int8_calibration"] == {"split": "train", "images": int(found.group(1))}


def test_fine_tuning_is_saved_and_reused(trained: Path, tmp_path: Path) -> None:
    args = (
        "export",
        "--supernet",
        trained / "run" / "supernet.pt",
        "--subnet",
        "min",
        "--format",
        "onnx",
        "--finetune-epochs",
        "1",
        "--int8",
        "--qat-epochs",
        "1",
        "--calibration-images",
        "32",
        "--test-images",
        "100",
        "--out",
        tmp_path,
    )
    first = edgenas_here(*args)
    assert first.returncode == 0, first.stderr
    assert "fine-tune epoch 1/1" in first.stderr
    assert "quantization-aware epoch 1/1" in first.stderr
    card = _card(tmp_path)
    assert card["finetune"]["epochs"] == 1 and card["finetune"]["qat_epochs"] == 1
    assert (tmp_path / "finetuned.pt").is_file()
    second = edgenas_here(*args)
    assert second.returncode == 0, second.stderr
    assert "reusing the fine-tuned weights" in second.stderr
    assert _card(tmp_path)["files"][0]["sha256"] == card["files"][0]["sha256"]


def test_a_killed_fine_tuning_resumes_and_ends_as_if_never_stopped(
    trained: Path, tmp_path: Path
) -> None:
    """Saved after every epoch: a kill lost the whole fine-tuning, hours on real data."""
    from edgenas.stages.export import ExportJob, FinetuneSettings, _subnet_model
    from export.subnet_export import ExportOptions
    from once_for_all import load_supernet
    from once_for_all.checkpoint import load_training_data

    path = trained / "run" / "supernet.pt"
    supernet, _, payload = load_supernet(path)
    data = load_training_data(path, payload)

    def job(out: Path) -> ExportJob:
        return ExportJob(
            supernet=path,
            subnet="min",
            out=out,
            options=ExportOptions(int8=True, calibration_images=32),
            finetune=FinetuneSettings(epochs=2, qat_epochs=2),
        )

    def tune(out: Path, stop_after: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
        said: list[str] = []

        def say(line: str) -> None:
            said.append(line)
            if stop_after and line.startswith(stop_after):
                raise KeyboardInterrupt  # as Ctrl-C or SIGTERM mid-way through the next epoch

        model = _subnet_model(supernet, TINY.min_subnet(), data, job(out), say)
        return model.state_dict(), "\n".join(said)

    whole, _ = tune(tmp_path / "whole")
    for stop in ("fine-tune epoch 1/2", "quantization-aware epoch 1/2"):
        with pytest.raises(KeyboardInterrupt):
            tune(tmp_path / "resumed", stop)
    resumed, said = tune(tmp_path / "resumed")
    assert "(quantization-aware epoch 1 done)" in said and "fine-tune epoch" not in said
    assert resumed.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(resumed[name], tensor), name


def test_fine_tuning_is_redone_for_other_data(trained: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from edgenas.stages.export import ExportJob, FinetuneSettings, _subnet_model
    from once_for_all import load_supernet
    from once_for_all.checkpoint import load_training_data

    path = trained / "run" / "supernet.pt"
    supernet, _, payload = load_supernet(path)
    data = load_training_data(path, payload)
    job = ExportJob(supernet=path, subnet="min", out=tmp_path, finetune=FinetuneSettings(epochs=1))
    said: list[str] = []
    for bundle in (data, data, replace(data, train=data.train.select(range(128)))):
        _subnet_model(supernet, TINY.min_subnet(), bundle, job, said.append)
    fine_tuned = [line for line in said if line.startswith("fine-tuning 1 epoch")]
    assert len(fine_tuned) == 2  # the first time and for the other data, not in between
    assert f"reusing the fine-tuned weights in {tmp_path / 'finetuned.pt'}" in said
    assert (
        f"{tmp_path / 'finetuned.pt'} is from other inputs (data changed): fine-tuning again"
        in said
    )


def test_choosing_a_member_of_a_pareto_front(tmp_path: Path) -> None:
    front = [TINY.min_subnet(), TINY.max_subnet()]
    doc = {
        "format": "edgenas.pareto/1",
        "front": [{"subnet": s.to_dict()} for s in front],
        "chosen": [{"device": "pi", "budget_ms": 3.0, "index": 1}],
    }
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps(doc))
    assert choose_subnet(f"{path}#0", TINY) == front[0]
    assert choose_subnet(str(path), TINY) == front[1]  # the chosen one
    with pytest.raises(SubnetError, match=r"'2' is past the front; the front has 2 members, use"):
        choose_subnet(f"{path}#2", TINY)
    for member in ("²", "١", "-1", "x"):  # "²" and Arabic-Indic digits: int() tracebacks
        said = rf"#{member}: '{member}' is not a member's number; the front has 2 members, use #0"
        with pytest.raises(SubnetError, match=said):
            choose_subnet(f"{path}#{member}", TINY)
    # An empty K took the chosen subnet; a keyword with a K was read as a file (walk-through).
    with pytest.raises(SubnetError, match=r"#: give the front member's number after '#'"):
        choose_subnet(f"{path}#", TINY)
    for keyword in ("max", "min", "random"):
        with pytest.raises(SubnetError, match=rf"^{keyword}#3: '#K' picks a member of a pareto"):
            choose_subnet(f"{keyword}#3", TINY)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**doc, "front": [], "chosen": []}))
    for member in ("", "#0"):  # it said "K from 0 to -1"
        with pytest.raises(SubnetError, match=r"holds no front member: its search kept no"):
            choose_subnet(f"{empty}{member}", TINY)
    # The same subnet chosen for every budget is one choice (it was refused as two).
    doc["chosen"] = [*doc["chosen"], {"device": "npu", "budget_ms": 5.0, "index": 1}]
    path.write_text(json.dumps(doc))
    assert choose_subnet(str(path), TINY) == front[1]
    doc["chosen"] = [*doc["chosen"], {"device": "npu", "budget_ms": 2.0, "index": 0}]
    path.write_text(json.dumps(doc))
    with pytest.raises(
        SubnetError, match=r"holds 2 chosen subnets: #1 \(pi <= 3 ms, npu <= 5 ms\), #0 \(npu"
    ):
        choose_subnet(str(path), TINY)
    # A front from another version of edgenas is refused, not read as if it were this one's.
    doc["format"] = "edgenas.pareto/7"
    path.write_text(json.dumps(doc))
    with pytest.raises(SubnetError, match=r"of format edgenas.pareto/7; this edgenas reads"):
        choose_subnet(f"{path}#0", TINY)
    # A front of another space was exported from this supernet (issue 24's adversarial round).
    doc["format"], doc["space"] = "edgenas.pareto/1", "mbv3-imagenet-0000000000"
    path.write_text(json.dumps(doc))
    # It named "the supernet's space", where a search scored by OFA's predictor has none.
    said = rf"is a front of space mbv3-imagenet-0000000000, not of {TINY.id}, which this command"
    with pytest.raises(SubnetError, match=said):
        choose_subnet(f"{path}#0", TINY)
    # Hand-edited files gave KeyError tracebacks (export audit).
    del doc["space"]
    for damage, problem in [
        ({"front": [{}]}, "'front' is not a list of members with a subnet"),
        ({"front": {"0": doc["front"][0]}}, "'front' is not a list of members with a subnet"),
        ({"chosen": [{"budget_ms": 3.0, "index": 0}]}, "a choice lacks its device or budget_ms"),
    ]:
        path.write_text(json.dumps({**doc, **damage}))
        for member in ("", "#0"):
            with pytest.raises(SubnetError, match=rf"is a damaged pareto.json \({problem}\)"):
                choose_subnet(f"{path}{member}", TINY)


def test_a_front_searched_on_another_supernet_is_said(trained: Path, tmp_path: Path) -> None:
    # A pareto.json of another supernet of the same space (trained on other data) was taken
    # without a word: its subnet had been chosen by the other one's accuracies (review).
    from once_for_all import load_supernet
    from once_for_all.accuracy_dataset import supernet_fingerprint

    supernet = trained / "run" / "supernet.pt"
    pareto = tmp_path / "pareto.json"
    doc = {
        "format": "edgenas.pareto/1",
        "front": [{"subnet": TINY.min_subnet().to_dict()}],
        "chosen": [],
    }
    warning = f"warning: {pareto} was searched on another supernet (weights 0123456789abcdef"
    this = supernet_fingerprint(load_supernet(supernet)[0])
    # said even with --quiet (it is not progress); not for this supernet's front, nor for a
    # front that does not say (OFA's predictor's, or one written before fronts said)
    for recorded, said in [("0123456789abcdef", True), (this, False), (None, False)]:
        pareto.write_text(json.dumps({**doc, "supernet": recorded} if recorded else doc))
        proc = edgenas_here(
            "export", "--supernet", supernet, "--subnet", f"{pareto}#0", "--format", "onnx",
            "--no-verify", "--out", tmp_path / "out", "--quiet",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert (warning in " ".join(proc.stderr.split())) is said, proc.stderr


def test_a_binary_subnet_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "subnet.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SubnetError, match=r"subnet.json is not a text file \(not UTF-8\)"):
        choose_subnet(str(path), TINY)


@pytest.mark.parametrize("content", ["[1, 2]", '{"space": "x", "ks": [3]}'], ids=["list", "short"])
def test_a_malformed_subnet_file_names_the_file(content: str, tmp_path: Path) -> None:
    # The message named no file, where a command reads several (issue 24).
    path = tmp_path / "subnet.json"
    path.write_text(content)
    with pytest.raises(SubnetError, match=rf"^subnet file {path}: "):
        choose_subnet(str(path), TINY)


def _fails(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_devices_are_reached_and_their_predictors_checked_before_the_work(
    trained: Path, cpu: Path, tmp_path: Path, sshd: Sshd
) -> None:
    supernet = trained / "run" / "supernet.pt"
    out = tmp_path / "out"
    # A predictor measured on another machine (a copied --profiles folder): the card gave its
    # figure as this device's, and its reference model scaled this device's measurements.
    copied = tmp_path / "copied"
    predictor("test-cpu").save(copied / "test-cpu" / "predictor.json")  # measured on "board"

    def export(*more: str) -> subprocess.CompletedProcess[str]:
        return edgenas_here(
            "export",
            "--supernet",
            supernet,
            "--subnet",
            "min",
            "--format",
            "onnx",
            "--device",
            cpu / "cpu.yaml",
            "--profiles",
            copied,
            *more,
            "--out",
            out,
        )

    proc = export("--finetune-epochs", "2")
    _fails(
        proc,
        f"predictor {copied / 'test-cpu' / 'predictor.json'} was measured on board "
        "(Cortex-A72, onnxruntime, 1 thread(s)), not on ",
    )
    assert "fine-tun" not in proc.stderr and not out.exists()
    # One measured with other settings on this host (here AMX refused): its kernels differed.
    from devices import open_device

    with open_device(str(cpu / "cpu.yaml")) as device:
        settings = (*device.measured_with(), ("x86_amx", "false"))
    other = predictor("test-cpu", fingerprint=_fingerprint(cpu / "cpu.yaml"))
    other.header = replace(other.header, measured_with=tuple(sorted(settings)))
    other.save(copied / "test-cpu" / "predictor.json")
    _fails(
        export(),
        "was measured with x86_amx false, but the device profile now gives x86_amx true (the "
        "default); set x86_amx: false in the device profile again, or profile test-cpu again "
        f"into {copied / 'test-cpu'} (edgenas profile), or give another --profiles",
    )
    assert not out.exists()
    # A TFLite board that cannot be reached was found after the conversions.
    board = sshd.write_profile(
        tmp_path / "board.yaml",
        "test-board",
        python="/usr/bin/python3",
        runtime="tflite",
        ssh={"port": 1, "connect_timeout": 3.0},
    )
    proc = edgenas_here(
        "export", "--supernet", supernet, "--subnet", "min", "--format", "tflite",
        "--device", board, "--out", out,
    )  # fmt: skip
    _fails(proc, "device 'test-board': cannot reach")
    assert "tflite fp32" not in proc.stderr and not out.exists()


def test_a_devices_own_folder_as_profiles_says_to_give_its_parent(
    trained: Path, cpu: Path, tmp_path: Path
) -> None:
    # It advised profiling into PROFILES/test-cpu/test-cpu, beside the predictor that was
    # right there; and under --quiet it said nothing (walk-through).
    own = cpu / "profiles" / "test-cpu"
    proc = edgenas_here(
        "export", "--supernet", trained / "run" / "supernet.pt", "--subnet", "min",
        "--format", "onnx", "--no-verify", "--device", cpu / "cpu.yaml", "--profiles", own,
        "--out", tmp_path / "out", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        f"warning: test-cpu: no latency prediction (no {own}/test-cpu/predictor.json): "
        f"--profiles is the folder that holds each device's folder, and {own} is a device's "
        f"own (it holds a predictor.json): give --profiles {own.parent}"
    ) in " ".join(proc.stderr.split())


def test_a_tolerance_below_float_rounding_is_named_as_such(trained: Path, tmp_path: Path) -> None:
    # It called the conversion wrong and asked for a bug report (walk-through).
    proc = edgenas_here(
        "export", "--supernet", trained / "run" / "supernet.pt", "--subnet", "min",
        "--format", "onnx", "--tolerance", "0", "--out", tmp_path / "out",
    )  # fmt: skip
    _fails(proc, "(tolerance 0): a float32 runtime's rounding, which the default 0.0001 allows")
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line_and_leaves_no_files(trained: Path, tmp_path: Path) -> None:
    supernet = trained / "run" / "supernet.pt"
    out = tmp_path / "out"
    # In-process: each is refused before any work (a process costs seconds of imports).
    _fails(
        edgenas_here("export", "--supernet", tmp_path / "nope.pt", "--subnet", "max", "--out", out),
        "checkpoint",
    )
    assert not out.exists()
    foreign = tmp_path / "imagenet.json"
    foreign.write_text(get_space("mbv3-imagenet").max_subnet().to_json())
    _fails(
        edgenas_here("export", "--supernet", supernet, "--subnet", foreign, "--out", out),
        "subnet is for space",
    )
    assert not out.exists()
    # Every file was exported, measured and listed twice (walk-through).
    twice = ("--subnet", "max", "--format", "onnx,onnx", "--out", out)
    _fails(
        edgenas_here("export", "--supernet", supernet, *twice),
        "--format 'onnx,onnx' names a format twice: give each once",
    )
    assert not out.exists()
    blocker = tmp_path / "a file"
    blocker.write_text("")
    _fails(
        edgenas_here("export", "--supernet", supernet, "--subnet", "max", "--out", blocker / "out"),
        f"cannot use {blocker / 'out'} as the output folder: {blocker} is a file, not a folder",
    )
    _fails(
        edgenas_here("export", "--supernet", supernet, "--subnet", "max", "--out", blocker),
        f"cannot use {blocker} as the output folder: {blocker} is a file, not a folder",
    )
    # A folder where a model file goes: found when the files moved in, after the whole
    # export, and after the earlier card had gone (input audit).
    (tmp_path / "taken" / "model.onnx").mkdir(parents=True)
    _fails(
        edgenas_here(
            "export", "--supernet", supernet, "--subnet", "max", "--out", tmp_path / "taken"
        ),
        f"{tmp_path / 'taken' / 'model.onnx'} is a folder, where export writes its model.onnx: "
        "move it away, or choose another --out",
    )
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["model.onnx"]
    # ... and the fine-tuning's file, where the export fine-tunes (found after its epochs)
    (tmp_path / "tuned" / "finetuned.pt").mkdir(parents=True)
    tune = ("--finetune-epochs", "1", "--out", tmp_path / "tuned")
    _fails(
        edgenas_here("export", "--supernet", supernet, "--subnet", "max", *tune),
        f"{tmp_path / 'tuned' / 'finetuned.pt'} is a folder, where export writes its "
        "finetuned.pt: move it away",
    )
    # Found once the subnet is built (the stem's width), still before any file is written;
    # both were found after the fine-tuning, which can take hours (export audit).
    for flags, refusal in (
        (["--stem-groups", "20"], "stem groups 20: the stem has 8 channels; give 1 to 8"),
        (["--opset", "12"], "--opset 12: int8 ONNX files need opset 13 or later"),
    ):
        proc = edgenas_here(
            "export", "--supernet", supernet, "--subnet", "min", "--format", "onnx", "--int8",
            *flags, "--finetune-epochs", "2", "--out", out,
        )  # fmt: skip
        _fails(proc, refusal)
        assert "fine-tun" not in proc.stderr and not out.exists()
    _fails(
        edgenas_here(
            "export",
            "--supernet",
            supernet,
            "--subnet",
            "min",
            "--int8",
            "--stem-groups",
            "two",
            "--out",
            out,
        ),
        "--stem-groups 'two': give auto or a number of groups, 1 or more",
    )
    assert not out.exists()
    # int8 settings without --int8 did nothing, silently
    for flag, value in (
        ("--stem-groups", "4"),
        ("--qat-epochs", "2"),
        ("--calibration-images", "32"),
        ("--align-channels", "arm64"),
        # their defaults given: read from the command line, not compared with copies of them
        ("--qat-epochs", "0"),
        ("--stem-groups", "auto"),
    ):
        _fails(
            edgenas_here(
                "export", "--supernet", supernet, "--subnet", "min", flag, value, "--out", out
            ),
            f"{flag} shapes the int8 files: add --int8, or leave {flag} out",
        )
    # ... and options the other options leave nothing to do (input audit)
    no_onnx = "shapes ONNX files, and --format writes none: add onnx to --format"
    no_check = "which --no-verify skips: leave --no-verify out"
    for given, why in (
        (("--format", "tflite", "--opset", "13"), no_onnx),
        (("--format", "tflite", "--dynamic-batch"), no_onnx),
        (("--format", "tflite", "--int8", "--align-channels", "x86"), no_onnx),
        (
            ("--format", "onnx", "--tflite-form", "plain"),
            "shapes TFLite files, and --format writes none: add tflite to --format",
        ),
        (("--no-verify", "--tolerance", "0.1"), "bounds the fp32 files' check, " + no_check),
        (("--no-verify", "--test-images", "10"), "sizes the files' checks, " + no_check),
        (("--no-verify", "--device-check-images", "5"), "sizes the devices' checks, " + no_check),
        (
            ("--device-check-images", "5"),
            "sizes the devices' checks, and no --device is given: add a --device",
        ),
        (
            ("--profiles", "elsewhere"),
            "is where the devices' predictors are looked up, and no --device is given: add a "
            "--device",
        ),
        (
            ("--finetune-lr", "0.5"),
            "is the fine-tuning's, and nothing is fine-tuned: add --finetune-epochs or --qat-epochs",
        ),
    ):
        flag = next(
            a
            for a in given
            if a.startswith("--") and a not in ("--format", "--no-verify", "--int8")
        )
        _fails(
            edgenas_here("export", "--supernet", supernet, "--subnet", "min", *given, "--out", out),
            f"{flag} {why}, or leave {flag} out",
        )
    assert not out.exists()
    # ... but not values that ask for what the others do anyway: these reach the supernet
    for given in (
        ("--format", "tflite", "--no-dynamic-batch"),
        ("--format", "onnx", "--tflite-form", "auto"),
        ("--no-verify", "--device-check-images", "0"),
    ):
        _fails(
            edgenas_here(
                "export",
                "--supernet",
                tmp_path / "none.pt",
                "--subnet",
                "min",
                *given,
                "--out",
                out,
            ),
            f"checkpoint {tmp_path / 'none.pt'} not found",
        )
    # without --int8 it weighs only what a --device checks
    proc = edgenas_here(
        "export", "--supernet", supernet, "--subnet", "min", "--min-int8-agreement", "0.5",
        "--out", out,
    )  # fmt: skip
    _fails(
        proc,
        "--min-int8-agreement weighs int8 files, and files checked on a --device: add --int8 "
        "or a --device, or leave it out",
    )
    # ... and with devices none of which will check a file
    orin_int8 = tmp_path / "orin-int8.yaml"
    orin_int8.write_text(
        "name: orin-int8\nkind: local\nruntime: tensorrt\ntensorrt:\n  precision: int8\n"
    )
    for extra, why in (
        (
            ("--device", "npu-32x32-ws", "--device", "ethos-u55-128", "--device", NOTE10),
            "no --device checks files (npu-32x32-ws, ethos-u55-128: it returns latency only "
            "(Vela and the NPU simulator give no outputs); samsung-note10: it is published "
            "latency tables: nothing runs there)",
        ),
        (
            ("--device", orin_int8),
            f"no --device checks files ({orin_int8}: its TensorRT int8 engine is calibrated on "
            "random data",
        ),
        (
            ("--device", "local-cpu", "--device-check-images", "0"),
            "--device-check-images 0 asks for no check",
        ),
        (
            ("--device", "local-cpu", "--no-verify"),
            "--no-verify leaves no test images to check with",
        ),
    ):
        proc = edgenas_here(
            "export",
            "--supernet",
            supernet,
            "--subnet",
            "min",
            "--min-int8-agreement",
            "0.5",
            *extra,
            "--out",
            out,
        )
        _fails(proc, f"--min-int8-agreement has nothing to weigh without --int8: {why}")
        assert proc.stderr.rstrip().endswith("; add --int8, or leave it out")
    proc = edgenas_here(
        "export",
        "--supernet",
        supernet,
        "--subnet",
        "min",
        "--min-int8-agreement",
        "0.5",
        "--device",
        "no-such-board",
        "--out",
        out,
    )
    _fails(proc, "unknown device profile 'no-such-board'")
    assert not out.exists()
    # A training checkpoint left by an interrupted `edgenas train`.
    unfinished = tmp_path / "checkpoint.pt"
    payload = torch.load(supernet, map_location="cpu", weights_only=True)
    torch.save({**payload, "complete": False}, unfinished)
    _fails(
        edgenas_here("export", "--supernet", unfinished, "--subnet", "min", "--out", out),
        f"{unfinished} is an unfinished training checkpoint: finish it (edgenas train --resume) "
        "and give its supernet.pt",
    )
    assert not out.exists()
    # A device that runs none of the files: refused before the data, the fine-tuning and the
    # conversions (the output folder is not even made).
    mismatch = edgenas_here(
        "export",
        "--supernet",
        supernet,
        "--subnet",
        "min",
        "--format",
        "tflite",
        "--device",
        "npu-32x32-ws",
        "--finetune-epochs",
        "3",
        "--out",
        out,
    )
    _fails(
        mismatch,
        "device 'npu-32x32-ws' runs npu-sim, which takes fp32 onnx files; export those "
        "(--format, --int8) or leave this --device out",
    )
    assert "fine-tun" not in mismatch.stderr and not out.exists()
    # Two devices of one name: the card keeps one entry per name, and one device's
    # measurements replaced the other's without a word.
    renamed = tmp_path / "renamed-npu.yaml"
    renamed.write_text("name: npu-32x32-ws\nkind: local\nruntime: onnxruntime\n")
    for devices in (("npu-32x32-ws", renamed), ("npu-32x32-ws", "npu-32x32-ws")):
        twice = ["--device", devices[0], "--device", devices[1]]
        _fails(
            edgenas_here("export", "--supernet", supernet, "--subnet", "min", *twice, "--out", out),
            f"--device npu-32x32-ws and --device {devices[1]} are both device 'npu-32x32-ws': "
            "give each --device once, each profile its own name",
        )
        assert not out.exists()


def test_a_failed_export_keeps_the_previous_one(exported: Path, trained: Path) -> None:
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    proc = edgenas_here(
        "export",
        "--supernet",
        trained / "run" / "supernet.pt",
        "--subnet",
        "min",
        "--format",
        "onnx",
        "--tolerance",
        "0",
        "--test-images",
        "50",
        "--out",
        exported,
    )
    _fails(proc, "differs from PyTorch")
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before


def test_a_kill_while_publishing_never_leaves_a_card_beside_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files moved in name order, so card.json and card.md landed before the models: a kill
    # there left the new card beside the old models.
    from edgenas.stages import export as stage

    real_replace = os.replace
    names = ["card.json", "card.md", "model.onnx", "model_int8.onnx"]
    for moved in range(len(names) + 1):
        out, staging = tmp_path / f"out{moved}", tmp_path / f"out{moved}" / ".partial-x"
        staging.mkdir(parents=True)
        for name in names:
            (out / name).write_text(f"old {name}")
            (staging / name).write_text(f"new {name}")
        calls = iter(range(len(names) + 1))

        def killed_after(
            src: Path, dst: Path, moved: int = moved, calls: Iterator[int] = calls
        ) -> None:
            if next(calls) == moved:
                raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(stage.os, "replace", killed_after)
        if moved < len(names):
            with pytest.raises(KeyboardInterrupt):
                stage._publish(staging, out)
        else:
            stage._publish(staging, out)
        monkeypatch.setattr(stage.os, "replace", real_replace)
        there = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
        if "card.json" in there or "card.md" in there:  # every file beside a card is new
            assert all(text == f"new {name}" for name, text in there.items()), moved
            assert {"model.onnx", "model_int8.onnx"} <= set(there), moved
    assert moved == len(names) and there == {name: f"new {name}" for name in names}


def test_a_files_speed_against_fp32_is_said_in_words() -> None:
    # A bare "0.68x" read either way (walk-through); the fp32 file itself is no faster.
    from export.card import speed_text

    assert [speed_text(s) for s in (1.47, 0.68, 1.0, 1.004, None, 0.0)] == [
        "1.47x faster",
        "1.47x slower",
        "1.00x",
        "1.00x",
        "-",
        "-",
    ]
