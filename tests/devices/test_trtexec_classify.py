"""runtime tensorrt classifies: the runner feeds trtexec the images (``--loadInputs``) and reads
its outputs (``--exportOutput``), with a stand-in trtexec that runs the file on onnxruntime and
reads and writes trtexec's files as its sources do (tests/devices/trtexec_classifier.py); and
the runner's own reader of ONNX files' inputs, against the onnx package."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
from onnx import TensorProto, helper, numpy_helper

from devices import DeviceError
from devices.local import LocalDevice
from devices.runner import TRTEXEC_IMAGES, RunnerError, _json_numbers, onnx_io, trtexec_error
from devices.runner_protocol import RunSettings
from devices.ssh import SshDevice
from tests.devices.conftest import Models
from tests.support.sshd import Sshd

DATA = Path(__file__).with_name("data") / "trtexec"
STAND_IN = Path(__file__).with_name("trtexec_classifier.py")


def trtexec_stand_in(folder: Path) -> tuple[Path, Path]:
    """(the stand-in trtexec, the file of its calls, one JSON argument list per line); its
    timing runs replay test_trtexec's recorded log and times."""
    folder.mkdir(parents=True, exist_ok=True)
    script, calls = folder / "trtexec", folder / "calls.jsonl"
    env = {
        "TRTEXEC_CALLS": calls,
        "TRTEXEC_TIMES": DATA / "mobilenet_qat_timing_first49.json",
        "TRTEXEC_LOG": DATA / "hackathon_result-01.log",
    }
    script.write_text(
        "#!/bin/sh\n"
        + "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items())
        + f'exec {shlex.quote(sys.executable)} {shlex.quote(str(STAND_IN))} "$@"\n'
    )
    script.chmod(0o755)
    return script, calls


def _calls(calls: Path) -> list[list[str]]:
    return [a for a in map(json.loads, calls.read_text().splitlines()) if a != ["--help"]]


def _classifier(
    path: Path, batch: int | str = 1, name: str = "image", *, nhwc: bool = False, seed: int = 0
) -> Path:
    """Flatten then a dense layer of random weights: 10 class scores of a 3x8x8 image (8x8x3
    with ``nhwc``)."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((192, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [name], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["scores"]),
        ],
        "classifier",
        [
            helper.make_tensor_value_info(
                name, TensorProto.FLOAT, [batch, 8, 8, 3] if nhwc else [batch, 3, 8, 8]
            )
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 10])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _expected(path: Path, images: np.ndarray, *, nhwc: bool = False) -> list[int]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fed = images.transpose(0, 2, 3, 1) if nhwc else images
    return [int(np.argmax(session.run(None, {name: x[None]})[0])) for x in fed]


def _device(trtexec: Path, precision: str = "fp16") -> LocalDevice:
    settings = RunSettings(runtime="tensorrt", trtexec=str(trtexec), precision=precision)
    return LocalDevice("orin", settings=settings)


def test_a_static_file_builds_its_engine_once_and_runs_each_image(tmp_path: Path) -> None:
    trtexec, calls = trtexec_stand_in(tmp_path / "bin")
    model = _classifier(tmp_path / "a model.onnx", name="input:0")  # ':' as TF names have
    images = _images(5)
    device = _device(trtexec)
    assert device.classifies
    (top1,) = device.classify([model], images)
    assert top1 == _expected(model, images) and len(set(top1)) > 1
    build, *loads = _calls(calls)
    engine = build[2].removeprefix("--saveEngine=").rsplit(".part", 1)[0]
    assert build == [
        f"--onnx={model}",
        "--fp16",
        f"--saveEngine={engine}.part{build[2].rsplit('.part', 1)[1]}",  # renamed when whole
        "--loadInputs='input:0':input.bin",
        "--exportOutput=output.json",
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
    ]
    assert len(loads) == 4 and all(a[0] == f"--loadEngine={engine}" for a in loads)
    assert not any(a.startswith("--shapes") for call in loads for a in call)  # a static file


def test_a_dynamic_batch_file_runs_a_part_of_images_per_process(tmp_path: Path) -> None:
    trtexec, calls = trtexec_stand_in(tmp_path / "bin")
    model = _classifier(tmp_path / "m.onnx", batch="N")
    images = _images(TRTEXEC_IMAGES + 6)
    (top1,) = _device(trtexec, precision="fp32").classify([model], images)
    assert top1 == _expected(model, images)
    build, load = _calls(calls)
    full, rest = f"'image':{TRTEXEC_IMAGES}x3x8x8", "'image':6x3x8x8"
    assert build[0] == f"--onnx={model}"
    assert build[1].startswith("--saveEngine=") and ".part" in build[1]  # fp32: no flag
    assert {"--minShapes='image':1x3x8x8", f"--optShapes={full}", f"--maxShapes={full}"} <= set(
        build
    )
    assert f"--shapes={full}" in build
    engine = build[1].removeprefix("--saveEngine=").rsplit(".part", 1)[0]
    assert load[:2] == [f"--loadEngine={engine}", f"--shapes={rest}"]


@pytest.mark.parametrize("batch", [1, "N"])
def test_a_channels_last_file_is_fed_nhwc_images(tmp_path: Path, batch: int | str) -> None:
    trtexec, calls = trtexec_stand_in(tmp_path / "bin")
    model = _classifier(tmp_path / "m.onnx", batch=batch, nhwc=True)
    images = _images(4)
    (top1,) = _device(trtexec).classify([model], images)
    assert top1 == _expected(model, images, nhwc=True) and len(set(top1)) > 1
    if batch == "N":
        assert "--shapes='image':4x8x8x3" in _calls(calls)[0]


def test_trtexec_failing_on_an_image_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trtexec, _ = trtexec_stand_in(tmp_path / "bin")
    model = _classifier(tmp_path / "m.onnx")
    monkeypatch.setenv("TRTEXEC_FAIL_ON", "3")  # the version check (--help) is call 1
    with pytest.raises(DeviceError) as info:
        _device(trtexec).classify([model], _images(4))
    message = str(info.value)
    assert "\n" not in message
    assert f"trtexec failed on model {str(model)!r} on image 1 (exit status 1)" in message
    assert "Error Code 1: Cuda Runtime (out of memory)" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # the second image's process (the first's output is not read again)
        ("TRTEXEC_NO_OUTPUT", "trtexec wrote no outputs for model .* on image 1"),
        # C++ prints nan and -inf (here in every process): read, not a JSON error
        ("TRTEXEC_NAN", None),
    ],
)
def test_outputs_trtexec_left_out_or_printed_as_cpp_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, expected: str | None
) -> None:
    trtexec, _ = trtexec_stand_in(tmp_path / "bin")
    model = _classifier(tmp_path / "m.onnx")
    monkeypatch.setenv(env, "3")  # the version check (--help) is call 1
    if expected is None:
        (top1,) = _device(trtexec).classify([model], _images(2))
        assert top1 == [0, 0]  # nan in the first place is the largest for argmax
    else:
        with pytest.raises(DeviceError, match=expected):
            _device(trtexec).classify([model], _images(2))


def test_files_trtexec_cannot_be_fed_are_one_line(tmp_path: Path, models: Models) -> None:
    trtexec, calls = trtexec_stand_in(tmp_path / "bin")
    device = _device(trtexec)
    cases = {
        _classifier(tmp_path / "comma.onnx", name="a,b"): "an input named 'a,b'",
        models.conv: "takes inputs of shape [1, 3, 16, 16], and classifying feeds it one image "
        "of [3, 8, 8]",
    }
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"\xff" * 32)
    cases[not_onnx] = "is not an ONNX file"
    for model, expected in cases.items():
        with pytest.raises(DeviceError) as info:
            device.classify([model], _images(2))
        assert expected in str(info.value) and "\n" not in str(info.value)
    assert _calls(calls) == []  # refused before any trtexec process


def test_the_exported_outputs_read_as_trtexec_writes_them() -> None:
    """tests/devices/data/trtexec/export_output_2x10.json: TensorRT's exportJSONOutput and
    dumpBuffer<float> (release/8.5, sampleReporting.cpp and sampleUtils.cpp) compiled as they
    are, run on made-up values; the stand-in writes the same characters."""
    from tests.devices.trtexec_classifier import _export_json

    text = (DATA / "export_output_2x10.json").read_text()
    (entry,) = json.loads(_json_numbers(text))
    assert (entry["name"], entry["dimensions"]) == ("logits", "2x10")
    values = np.asarray(entry["values"], dtype=np.float32).reshape(2, 10)

    class Output:
        name = "logits"

    class Session:
        def get_outputs(self) -> list[Output]:
            return [Output()]

    assert _export_json(Session(), [values]) == text  # type: ignore[arg-type]
    text = '[ { "name" : "nan", "values" : [ nan, -nan, inf, -inf, 1e-07 ] } ]'
    (entry,) = json.loads(_json_numbers(text))
    assert entry["name"] == "nan"  # an output's name is not a value
    assert entry["values"][2:] == [float("inf"), float("-inf"), 1e-07]


def test_the_reason_of_a_failed_trtexec_is_its_own_error_line() -> None:
    log = (DATA / "a1111_issue54_parse_failure.txt").read_text()
    reason = trtexec_error(log)
    assert reason.startswith("ModelImporter.cpp:") and "ERROR" in reason


def test_the_runners_onnx_reader_reads_what_onnx_reads(tmp_path: Path, models: Models) -> None:
    dynamic = _classifier(tmp_path / "dynamic.onnx", batch="N")
    # IR 3: initializers listed among the inputs, which are not the model's inputs
    old = onnx.load(_classifier(tmp_path / "old.onnx"))
    old.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [192, 10]))
    old.ir_version = 3
    onnx.save(old, tmp_path / "old.onnx")
    negative = _classifier(tmp_path / "negative.onnx", batch=-1)  # -1: a 10-byte varint
    for path in (*models.all(), models.uint8_dynamic, dynamic, tmp_path / "old.onnx", negative):
        model = onnx.load(path)
        initializers = {t.name for t in model.graph.initializer}
        inputs = [
            (
                i.name,
                i.type.tensor_type.elem_type,
                [
                    d.dim_value if d.HasField("dim_value") else d.dim_param or None
                    for d in i.type.tensor_type.shape.dim
                ],
            )
            for i in model.graph.input
            if i.name not in initializers
        ]
        assert onnx_io(str(path)) == (inputs, [o.name for o in model.graph.output])
    assert onnx_io(str(dynamic))[0] == [("image", TensorProto.FLOAT, ["N", 3, 8, 8])]
    assert onnx_io(str(negative))[0][0][2] == [-1, 3, 8, 8]
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(dynamic.read_bytes()[:-7])
    with pytest.raises(RunnerError, match="is not an ONNX file"):
        onnx_io(str(truncated))


def test_ssh_board_classifies_with_trtexec(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SSH path: the images go up in parts, the runner runs the stand-in on the
    board, the engine built for the first part serves the second, and the board's folders
    are gone after."""
    monkeypatch.setattr("devices.ssh.CLASSIFY_IMAGES_PER_CALL", 2)
    trtexec, calls = trtexec_stand_in(tmp_path / "bin")
    model = _classifier(tmp_path / "it's a model.onnx")
    other = _classifier(tmp_path / "other.onnx", seed=1)  # other weights: other classes
    images = _images(3)
    remote = tmp_path / "remote"
    remote.mkdir()
    settings = RunSettings(runtime="tensorrt", trtexec=str(trtexec), precision="fp16")
    section = sshd.ssh_section(remote_tmpdir=str(remote))
    with SshDevice("orin", python=sys.executable, settings=settings, **section) as device:
        assert device.classifies
        top1, top1_other = device.classify([model, other], images)
    assert top1 == _expected(model, images)
    assert top1_other == _expected(other, images) != top1
    runs = _calls(calls)
    builds = [r for r in runs if r[0].startswith("--onnx=")]
    assert len(runs) == 6 and len(builds) == 2  # one build per file for both parts
    for build in builds:
        engine = build[2].removeprefix("--saveEngine=").rsplit(".part", 1)[0]
        assert "/engines/" in engine
        assert sum(r[0] == f"--loadEngine={engine}" for r in runs) == 2
    assert os.listdir(remote) == []
