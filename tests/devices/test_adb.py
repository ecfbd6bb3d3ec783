"""adb devices with benchmark_model: the output parser on the real tool's published output,
the error paths with Debian's real adb client (a private adb server, no phone), and the
plumbing (push, quoting, batches, reconnect, clean-up) with a stand-in phone.

No phone can be attached here. The stand-in ``adb`` below runs the phone's shell commands
with this machine's ``sh``, and the stand-in ``benchmark_model`` prints recorded output of
the real tool: they replace only what cannot exist here (the phone and its binary).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import devices.adb
from devices import AdbDevice, DeviceError, Measurement, RunSettings, open_device
from devices.adb import to_measurement
from devices.adb_client import AdbClient, AdbResult, choose_serial, parse_devices
from devices.benchmark_model import (
    command_line,
    cpu_mask,
    delegate_flags,
    failure_reason,
    parse_output,
)
from edgenas.cli import app
from tests.support.sshd import free_port

DATA = Path(__file__).parent / "data"
BENCH = DATA / "benchmark_model"
ADB_OUT = DATA / "adb"


def _read(path: Path) -> str:
    return path.read_text()


# --- benchmark_model's output -------------------------------------------------------------


def test_parses_an_unprefixed_build_with_op_profiling() -> None:
    out = parse_output(_read(BENCH / "rv64_mobilenet_v1_op_profiling.txt"))
    assert out.warmup is not None and out.warmup.count == 1
    assert out.runs is not None and out.runs.count == 50
    assert out.runs.values["min"] == 2727568 and out.runs.values["avg"] == 2.95034e06
    assert (out.init_us, out.first_inference_us) == (17187, 3512391)
    assert (out.warmup_avg_us, out.inference_avg_us) == (3.51239e06, 2.95034e06)
    assert (out.memory_init_mb, out.memory_overall_mb) == (4.21094, 46.0859)
    # The regular runs' table only: not the initialization's AllocateTensors row.
    assert len(out.ops) == 31
    first = out.ops[0]
    assert (first.node_type, first.name, first.avg_ms, first.times_called) == (
        "CONV_2D",
        "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0",
        60.957,
        1,
    )
    assert {op.node_type for op in out.ops} == {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "SQUEEZE",
        "SOFTMAX",
    }
    # The per-op times add up to the inference time.
    assert sum(op.ms for op in out.ops) == pytest.approx(2950.34, rel=0.01)
    assert out.errors == [] and failure_reason(out) is None


def test_parses_a_prefixed_build_with_xnnpack_operators() -> None:
    out = parse_output(_read(BENCH / "tc2_xnnpack_op_profiling.txt"))
    assert out.runs is not None and (out.runs.count, out.runs.values["std"]) == (67, 256)
    assert (out.init_us, out.first_inference_us, out.inference_avg_us) == (16772, 8781, 7454.97)
    assert out.memory_overall_mb == 10.8789
    assert len(out.ops) == 115
    assert out.ops[0].node_type == "Convolution (NHWC, QU8) IGEMM"
    assert out.ops[0].name == "Delegate/Convolution (NHWC, QU8) IGEMM:0"
    assert all(op.node_type != "ModifyGraphWithDelegate" for op in out.ops)
    assert sum(op.ms for op in out.ops) == pytest.approx(7.455, rel=0.02)


def test_parses_an_older_summary_and_table() -> None:
    out = parse_output(_read(BENCH / "litert_readme_op_profiling.txt"))
    assert (out.warmup_avg_us, out.init_us, out.inference_avg_us) == (83235, 38467, 79760.9)
    assert out.runs is None  # this excerpt has only the profile's own timings line
    assert len(out.ops) == 31 and out.ops[-1].node_type == "SOFTMAX"
    assert out.ops[0].times_called == 0 and out.ops[0].ms == out.ops[0].avg_ms == 4.269


def test_names_the_delegate_that_failed() -> None:
    out = parse_output(_read(BENCH / "xnnpack_delegate_failed.txt"))
    assert out.runs is None
    assert failure_reason(out) == (
        "benchmark_model could not apply the XNNPACK delegate (Failed to apply XNNPACK delegate.)"
    )


def test_measurement_from_the_output() -> None:
    out = parse_output(_read(BENCH / "rv64_mobilenet_v1_op_profiling.txt"))
    m = to_measurement("m.tflite", out, spread_threshold=0.1, profile_ops=True)
    assert (m.n, m.mean_ms, m.min_ms, m.std_ms) == (50, 2950.34, 2727.568, 109.798)
    assert m.median_ms == m.mean_ms  # this build prints no median
    assert m.min_ms <= m.p10_ms < m.median_ms < m.p90_ms <= 3189.954
    assert (m.init_ms, m.first_inference_ms) == (17.187, 3512.391)
    assert m.per_op_ms is not None and len(m.per_op_ms) == 31
    assert m.ops is not None
    last = m.ops[-1]
    assert (last.name, last.op_type) == ("[MobilenetV1/Predictions/Reshape_1]:30", "SOFTMAX")
    assert m.peak_memory_bytes == round(46.0859 * 2**20)
    assert Measurement.from_dict(m.to_dict()) == m
    # spread_threshold is IQR over median, as for the runner's runs: 1.349 std / median here
    # (0.050), not the p10-p90 width (0.095)
    assert not to_measurement("m", out, spread_threshold=0.07).flagged
    assert to_measurement("m", out, spread_threshold=0.045).flagged
    # Without profile_ops there are no per-op times; without init figures the keys are absent.
    assert to_measurement("m", out, spread_threshold=0.1).per_op_ms is None
    plain = Measurement.from_times("x", [1.0, 2.0]).to_dict()
    assert "init_ms" not in plain and "first_inference_ms" not in plain


def test_command_line_quotes_every_argument() -> None:
    line = command_line(
        "/data/local/tmp/edgenas-1/benchmark_model",
        "/data/local/tmp/edgenas-1/models/0-my 'model'; rm -rf x.tflite",
        threads=4,
        warmup=2,
        runs=5,
        delegate="gpu",
        profile_ops=True,
        cores=[4, 5, 6, 7],
    )
    assert shlex.split(line) == [
        "taskset",
        "f0",
        "/data/local/tmp/edgenas-1/benchmark_model",
        "--graph=/data/local/tmp/edgenas-1/models/0-my 'model'; rm -rf x.tflite",
        "--num_threads=4",
        "--warmup_runs=2",
        "--warmup_min_secs=0",
        "--num_runs=5",
        "--min_secs=0",
        "--use_gpu=true",
        "--enable_op_profiling=true",
    ]
    assert cpu_mask([0]) == "1" and cpu_mask([4, 5, 6, 7]) == "f0" and cpu_mask([8]) == "100"
    assert delegate_flags(None) == []
    assert delegate_flags("none") == ["--use_xnnpack=false"]
    assert delegate_flags("nnapi") == ["--use_nnapi=true"]
    assert delegate_flags("external:/d/libqnn.so", [("backend_type", "htp"), ("x", "1")]) == [
        "--external_delegate_path=/d/libqnn.so",
        "--external_delegate_options=backend_type:htp;x:1",
    ]


# --- adb devices -l and the choice of phone ------------------------------------------------


def test_parses_adb_devices_output() -> None:
    entries = parse_devices(_read(ADB_OUT / "devices_l_device_unauthorized.txt"))
    assert [(e.serial, e.state) for e in entries] == [
        ("192.168.34.13:5555", "device"),
        ("192.168.34.12:5555", "unauthorized"),
    ]
    assert entries[0].fields["model"] == "SM_T865"
    assert choose_serial("phone", entries, None) == "192.168.34.13:5555"
    (usb,) = parse_devices(_read(ADB_OUT / "devices_l_usb.txt"))
    assert (usb.serial, usb.state, usb.fields["usb"], usb.label) == (
        "UYT5T18414003349",
        "device",
        "1114112X",
        "UYT5T18414003349 (ALP_AL00)",
    )
    (offline,) = parse_devices(_read(ADB_OUT / "devices_offline.txt"))
    assert (offline.serial, offline.state) == ("emulator-5554", "offline")


@pytest.mark.parametrize(
    ("fixture", "serial", "message"),
    [
        (
            "devices_two.txt",
            None,
            r"2 phones are attached \(127\.0\.0\.1:6555, 127\.0\.0\.1:6562\); set adb\.serial",
        ),
        (
            "devices_l_device_unauthorized.txt",
            "192.168.34.12:5555",
            r"has not authorized this computer .*accept the 'Allow USB debugging\?' prompt",
        ),
        ("devices_offline.txt", None, r"phone emulator-5554 is offline; replug it"),
        (
            "devices_offline.txt",
            "R58M",
            r"phone 'R58M' is not attached \(adb devices lists: emulator-5554 \(offline\)\)",
        ),
    ],
)
def test_choosing_a_phone_fails_in_one_line(fixture: str, serial: str | None, message: str) -> None:
    entries = parse_devices(_read(ADB_OUT / fixture))
    with pytest.raises(DeviceError, match=message) as info:
        choose_serial("phone", entries, serial)
    assert str(info.value).startswith("device 'phone': ") and "\n" not in str(info.value)


def test_unauthorized_phone_alone() -> None:
    entries = parse_devices(_read(ADB_OUT / "devices_l_device_unauthorized.txt"))[1:]
    with pytest.raises(DeviceError, match="has not authorized this computer"):
        choose_serial("phone", entries, None)
    # What adb prints when a command reaches an unauthorized phone.
    refused = AdbResult(1, "", _read(ADB_OUT / "unauthorized_error.txt"))
    assert refused.unauthorized and not refused.device_gone
    assert refused.last_error == "adb: error: failed to get feature set: device unauthorized."


# --- Debian's adb with a private server and no phone ---------------------------------------


@pytest.fixture(scope="module")
def adb_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private adb server on a free port, its keys in a temporary HOME; killed after."""
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("no adb client: apt-get install adb (make setup does)")
    home = tmp_path_factory.mktemp("adb-home")
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.delenv("ANDROID_SERIAL", raising=False)
        subprocess.run([adb, "-P", str(port), "start-server"], check=True, capture_output=True)
        try:
            yield port
        finally:
            subprocess.run([adb, "-P", str(port), "kill-server"], check=False, capture_output=True)


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    """A stand-in for benchmark_model (none can run here): prints the real tool's recorded
    output, or its recorded failure for a model named reject*, and logs its arguments."""
    script = tmp_path / "benchmark_model"
    log = tmp_path / "args.log"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do printf "%s\\n" "$a" >> {shlex.quote(str(log))}; done\n'
        f"echo -- >> {shlex.quote(str(log))}\n"
        'case "$1" in --graph=*/models/*-reject.tflite)\n'
        f"  cat {shlex.quote(str(BENCH / 'xnnpack_delegate_failed.txt'))}; exit 1;;\n"
        "  --graph=*/models/*-slow.tflite) sleep 2;;\n"
        "esac\n"
        f"cat {shlex.quote(str(BENCH / 'tc2_xnnpack_op_profiling.txt'))}\n"
    )
    script.chmod(0o755)
    return script


def _model(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"TFL3 stand-in model")
    return path


def test_no_phone_with_the_real_adb(adb_port: int, fake_binary: Path, tmp_path: Path) -> None:
    device = AdbDevice(
        "phone", benchmark_model=fake_binary, server_port=adb_port, settings=RunSettings("tflite")
    )
    with pytest.raises(DeviceError) as info:
        device.measure([_model(tmp_path, "m.tflite")])
    assert str(info.value).startswith(
        "device 'phone': no Android device attached (adb devices lists none); connect the phone"
    )
    # A serial that is not attached; and what the real adb says for it counts as a lost phone.
    device = AdbDevice("phone", benchmark_model=fake_binary, server_port=adb_port, serial="R58M")
    with pytest.raises(
        DeviceError, match=r"phone 'R58M' is not attached \(adb devices lists: none\)"
    ):
        device.fingerprint()
    client = AdbClient("phone", server_port=adb_port)
    client.serial = "R58M"
    result = client.shell("true", timeout=30)
    assert result.returncode != 0 and result.device_gone
    assert result.last_error == "error: device 'R58M' not found"


def test_devices_check_without_a_phone(adb_port: int, fake_binary: Path, tmp_path: Path) -> None:
    profile = tmp_path / "phone.yaml"
    profile.write_text(
        "name: phone\nkind: adb\nruntime: tflite\n"
        f"adb: {{benchmark_model: {fake_binary}, server_port: {adb_port}}}\n"
    )
    result = CliRunner().invoke(app, ["devices", "check", str(profile)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "device 'phone': no Android device attached" in lines[0]


def test_benchmark_model_missing_or_not_executable(tmp_path: Path) -> None:
    model = _model(tmp_path, "m.tflite")
    missing = AdbDevice("phone", benchmark_model=tmp_path / "nope", adb="/nonexistent/adb")
    with pytest.raises(DeviceError, match=r"benchmark_model not found at .*nope; download"):
        missing.measure([model])
    plain = tmp_path / "benchmark_model"
    plain.write_bytes(b"\x7fELF")
    plain.chmod(0o644)
    device = AdbDevice("phone", benchmark_model=plain, adb="/nonexistent/adb")
    with pytest.raises(DeviceError, match=r"is not executable; chmod \+x .*benchmark_model$"):
        device.measure([model])


# --- the plumbing, with a stand-in phone ---------------------------------------------------


@pytest.fixture
def phone(tmp_path: Path) -> Path:
    """A stand-in adb (no phone can be attached here) with one phone whose shell is this
    machine's sh; ``drop`` in its folder makes the next batch fail as a phone that went
    offline does, ``drop-rm`` the next removal of a classifying call's folder, and
    ``lose-images`` makes pushed images vanish (something cleaning the folder). Each shell
    command goes to ``shell.log``, each push's destination to ``pushed.log``."""
    folder = tmp_path / "phone"
    (folder / "tmp").mkdir(parents=True)
    adb = folder / "adb"
    state = shlex.quote(str(folder))
    adb.write_text(
        "#!/bin/bash\n"
        'while [ "$1" = -P ] || [ "$1" = -s ]; do shift 2; done\n'
        'cmd="$1"; shift\n'
        'case "$cmd" in\n'
        "  devices) printf 'List of devices attached\\nFAKE0001               device usb:1-1 "
        "product:fake model:Stand_in device:fake transport_id:1\\n\\n';;\n"
        f'  push) echo "$2" >> {state}/pushed.log; cp -r -- "$1" "$2" && echo "$1: pushed."\n'
        f'    case "$2" in */images-*) [ -e {state}/lose-images ] && rm -rf -- "$2";; esac; :;;\n'
        '  pull) cp -- "$1" "$2" && echo "$1: 1 file pulled.";;\n'
        "  wait-for-device) :;;\n"
        f'  shell) printf "%s\\n" "$1" >> {state}/shell.log\n'
        '    case "$1" in *@@edgenas-*)\n'
        f"      if [ -e {state}/drop ]; then rm {state}/drop; "
        'echo "error: device offline" >&2; exit 1; fi;;\n'
        '    "rm -rf -- "*/run-*)\n'
        f"      if [ -e {state}/drop-rm ]; then rm {state}/drop-rm; "
        'echo "error: device offline" >&2; exit 1; fi;;\n'
        "    esac\n"
        '    exec sh -c "$1";;\n'
        '  *) echo "stand-in adb: $cmd is not supported" >&2; exit 1;;\n'
        "esac\n"
    )
    adb.chmod(0o755)
    return folder


def _device(
    phone: Path, binary: Path, *, delegate: str, cores: tuple[int, ...] | None = None
) -> AdbDevice:
    settings = RunSettings("tflite", threads=2, warmup=3, runs=7, cores=cores, delegate=delegate)
    return AdbDevice(
        "phone",
        benchmark_model=binary,
        adb=str(phone / "adb"),
        remote_tmpdir=str(phone / "tmp"),
        batch_size=2,
        settings=settings,
    )


def test_measures_in_batches_and_cleans_up(phone: Path, fake_binary: Path, tmp_path: Path) -> None:
    odd = _model(tmp_path, "my 'odd' model.tflite")
    models = [odd, _model(tmp_path, "b.tflite"), _model(tmp_path, "c.tflite")]
    device = _device(phone, fake_binary, cores=(0,), delegate="xnnpack")
    (phone / "drop").touch()  # the first batch loses the phone: it is measured again
    measured = device.measure(models, profile_ops=True)
    assert [m.model for m in measured] == [str(p) for p in models]
    m = measured[0]
    assert (m.n, m.mean_ms, m.init_ms, m.first_inference_ms) == (67, 7.45497, 16.772, 8.781)
    assert m.per_op_ms is not None and len(m.per_op_ms) > 50
    assert device.reconnects == 1
    assert list((phone / "tmp").iterdir()) == []  # every folder removed, the dropped one too
    runs = (tmp_path / "args.log").read_text().split("--\n")[:-1]
    assert len(runs) == 3
    args = runs[0].splitlines()
    assert args[0].endswith("/models/0-my 'odd' model.tflite") and "/edgenas-" in args[0]
    assert args[1:] == [
        "--num_threads=2",
        "--warmup_runs=3",
        "--warmup_min_secs=0",
        "--num_runs=7",
        "--min_secs=0",
        "--use_xnnpack=true",
        "--enable_op_profiling=true",
    ]
    fp = device.fingerprint()
    assert fp.runtime == "tflite" and fp.host.endswith("FAKE0001") and fp.cores >= 1
    assert fp.runtime_version.startswith("benchmark_model sha256:") and fp.accelerator == ""


def test_per_op_times_reach_the_lookup_table(
    phone: Path, fake_binary: Path, tmp_path: Path
) -> None:
    """The profile stage's path for --per-op on an adb device: benchmark_model's op profile
    (the recorded TC2 output) becomes each entry's ops, with type and placement, in lut.json."""
    from latency.op_split import split_by_kind
    from latency.profiler import apply_reference, check_per_op, measure_in_batches
    from latency.reference import Reference
    from latency.table import LatencyTable, TableHeader

    device = _device(phone, fake_binary, delegate="xnnpack")
    assert device.per_op_times
    models = [_model(tmp_path, f"block{i}.tflite") for i in range(3)]
    header = TableHeader(
        space_id="s",
        device="phone",
        fingerprint=device.fingerprint(),
        model_format="tflite",
        precision="int8",
        resolutions=(224,),
        reference=Reference({"r": 224}),
    )
    check_per_op(device, header.fingerprint)  # an adb device can: no error
    table = LatencyTable(header)

    def store(start: int, results: list[Measurement], ref: Measurement | None) -> None:
        table.header, results = apply_reference(table.header, results, ref)
        for i, m in enumerate(results, start):
            table.add(f"block{i}", m)
        table.save(tmp_path / "lut.json")

    reference = _model(tmp_path, "reference.tflite")
    measure_in_batches(
        device, models, batch_size=4, on_batch=store, reference=reference, profile_ops=True
    )
    assert "--enable_op_profiling=true" in (tmp_path / "args.log").read_text()
    read = LatencyTable.load(tmp_path / "lut.json")
    assert set(read.entries) == {"block0", "block1", "block2"}
    ops = read.entries["block0"].ops
    assert ops is not None and len(ops) == 115  # the run-order table's rows, in order
    assert ops[0].to_dict() == {
        "name": "Delegate/Convolution (NHWC, QU8) IGEMM:0",
        "op_type": "Convolution (NHWC, QU8) IGEMM",
        "ms": 0.278,
        "where": "xnnpack",
    }
    builtin = {op.op_type for op in ops if op.where == "cpu"}
    assert builtin == {"CONCATENATION", "TFLite_Detection_PostProcess"}
    split = split_by_kind(ops)
    assert list(split) == ["Conv", "depthwise", "other"]
    # The tool's own summary by node type, within the rounding of its rows (3 decimals).
    assert split["depthwise"] == pytest.approx(2.240, abs=33 * 0.0005)
    assert split["Conv"] == pytest.approx(3.340 + 0.278, abs=55 * 0.0005)
    # Without a delegate, TFLite's builtin kernels run every op (the rv64 recording).
    out = parse_output(_read(BENCH / "rv64_mobilenet_v1_op_profiling.txt"))
    plain = to_measurement("m", out, spread_threshold=0.1, profile_ops=True)
    assert plain.ops is not None and {op.where for op in plain.ops} == {"cpu"}
    assert {"Conv", "depthwise"} <= set(split_by_kind(plain.ops))


def test_a_model_the_delegate_rejects(phone: Path, fake_binary: Path, tmp_path: Path) -> None:
    device = _device(phone, fake_binary, delegate="xnnpack")
    with pytest.raises(DeviceError) as info:
        device.measure([_model(tmp_path, "ok.tflite"), _model(tmp_path, "reject.tflite")])
    assert str(info.value) == (
        "device 'phone': benchmark_model could not apply the XNNPACK delegate (Failed to apply "
        "XNNPACK delegate.) for reject.tflite; the delegate rejects this model: measure it "
        "with another delegate (delegate: none in the profile)"
    )
    assert list((phone / "tmp").iterdir()) == []


# Lines benchmark_model prints about the delegate asked for, from LiteRT's sources:
# gpu_delegate_provider.cc (TFLITE_LOG(WARN), when it cannot create the delegate),
# benchmark_tflite_model.cc (after applying it: "Explicitly applied ..." / "Though ..."), and
# subgraph.cc ("Replacing N out of M node(s)"; older builds "Replacing N node(s)").
UNSUPPORTED = "WARNING: GPU acceleration is unsupported on this platform."
NOT_EXECUTED = (
    "INFO: Though NNAPI delegate is explicitly applied, the model graph will not be executed "
    "by the delegate."
)
XNNPACK_ONLY = (
    "VERBOSE: Replacing 49 out of 49 node(s) with delegate (TfLiteXNNPackDelegate) node, "
    "yielding 1 partitions for subgraph 0."
)
GPU_TOOK_ALL = (
    "VERBOSE: Replacing 49 out of 49 node(s) with delegate (TfLiteGpuDelegateV2) node, "
    "yielding 1 partitions for subgraph 0.\n"
    "INFO: Explicitly applied GPU delegate, and the model graph will be completely executed "
    "by the delegate."
)
OLD_GPU_LINE = (
    "Replacing 49 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions."
)


def _binary_printing(folder: Path, lines: str) -> Path:
    """A stand-in benchmark_model: ``lines``, then the TC2 recording (a real run's figures)."""
    binary = folder / "benchmark_model"
    binary.write_text(
        f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(lines)}\n"
        f"cat {shlex.quote(str(BENCH / 'tc2_xnnpack_op_profiling.txt'))}\n"
    )
    binary.chmod(0o755)
    return binary


@pytest.mark.parametrize(
    ("delegate", "lines", "said"),
    [
        ("gpu", UNSUPPORTED, "GPU acceleration is unsupported on this platform."),
        ("nnapi", NOT_EXECUTED, NOT_EXECUTED.removeprefix("INFO: ")),
        ("nnapi", XNNPACK_ONLY, "only XNNPACK, on the CPU, took nodes"),
    ],
    ids=["not-created", "not-executed", "xnnpack-only"],
)
def test_an_accelerator_that_ran_nothing(
    phone: Path, tmp_path: Path, delegate: str, lines: str, said: str
) -> None:
    """benchmark_model goes on without the delegate asked for and times the CPU: that is
    an error, not the accelerator's timings."""
    device = _device(phone, _binary_printing(tmp_path, lines), delegate=delegate)
    with pytest.raises(DeviceError) as info:
        device.measure([_model(tmp_path, "m.tflite")])
    assert str(info.value) == (
        f"device 'phone': benchmark_model ran m.tflite on the CPU, not on delegate {delegate} "
        f"({said}); check that phone FAKE0001 has that accelerator and its driver, or "
        "measure on the CPU with delegate: xnnpack in the profile"
    )
    assert list((phone / "tmp").iterdir()) == []


def test_a_damaged_file_of_the_model_cache_is_named_with_what_to_do(
    phone: Path, tmp_path: Path
) -> None:
    # The hint to delete a damaged cache file matched only the Python runners' wording
    # (review). benchmark_model's own for a file it cannot map or read as a model, from
    # LiteRT's benchmark_tflite_model.cc: TFLITE_LOG(ERROR) << "Failed to mmap model " << graph.
    from latency.model_cache import ModelCache
    from latency.profiler import measure_in_batches

    binary = tmp_path / "benchmark_model"
    binary.write_text(
        '#!/bin/sh\necho "INFO: Graph: [${1#--graph=}]"\n'
        'echo "ERROR: Failed to mmap model ${1#--graph=}"\nexit 1\n'
    )
    binary.chmod(0o755)
    cache = ModelCache(tmp_path / "cache")
    cache.root.mkdir()
    damaged = _model(cache.root, "block-0123.tflite")
    with pytest.raises(DeviceError) as info:
        measure_in_batches(
            _device(phone, binary, delegate="xnnpack"),
            [damaged],
            batch_size=4,
            on_batch=lambda *_: None,
            cache=cache,
        )
    said = str(info.value)
    assert said.startswith("device 'phone': benchmark_model failed on block-0123.tflite "), said
    assert "Failed to mmap model " in said
    assert said.endswith(
        f"; it is {damaged}, a file of the model cache: if it is damaged, delete it and run "
        "again to export it anew"
    ), said


@pytest.mark.parametrize(
    "lines", [GPU_TOOK_ALL, OLD_GPU_LINE, ""], ids=["applied", "older-build", "silent-build"]
)
def test_an_accelerator_that_ran_is_measured(phone: Path, tmp_path: Path, lines: str) -> None:
    """A run the tool says the delegate took, or one from a build that says nothing of it
    (older builds log "Replacing ..." in debug builds only), is the delegate's."""
    device = _device(phone, _binary_printing(tmp_path, lines), delegate="gpu")
    (m,) = device.measure([_model(tmp_path, "m.tflite")])
    assert m.n == 67 and m.mean_ms == pytest.approx(7.45497)
    if lines == GPU_TOOK_ALL:
        assert m.placement is not None and m.placement["delegated_nodes"] == 49
        assert m.placement["cpu_nodes"] == 0 and m.placement["delegate"] == "gpu"


def test_the_delegate_warning_is_named() -> None:
    # The warning as LiteRT's gpu_delegate_provider.cc logs it (TFLITE_LOG(WARN)) when it
    # cannot create the GPU delegate; the run then goes on without it.
    text = _read(BENCH / "rv64_mobilenet_v1_op_profiling.txt")
    out = parse_output("WARNING: GPU acceleration is unsupported on this platform.\n" + text)
    assert out.warnings == ["GPU acceleration is unsupported on this platform."]
    assert out.runs is not None and out.replaced == [] and out.errors == []


@pytest.mark.parametrize(
    ("line", "count"),
    # What TensorFlow's Stat::OutputToStream (stats_calculator.h) prints when every run took
    # the same time: no first/min/max/avg/std, and "(all same)" after more than one run.
    [("INFO: count=1 curr=7505", 1), ("INFO: count=5 curr=7505(all same)", 5)],
)
def test_runs_that_all_took_the_same_time(line: str, count: int) -> None:
    out = parse_output(f"{line}\n")
    m = to_measurement("m.tflite", out, spread_threshold=0.1)
    assert (m.n, m.mean_ms, m.median_ms, m.min_ms, m.std_ms) == (count, 7.505, 7.505, 7.505, 0)
    assert m.p10_ms == m.p90_ms == 7.505 and not m.flagged


def test_a_batch_past_the_timeout(phone: Path, fake_binary: Path, tmp_path: Path) -> None:
    device = _device(phone, fake_binary, delegate="xnnpack")
    device.command_timeout = 0.5
    with pytest.raises(DeviceError) as info:
        device.measure([_model(tmp_path, "slow.tflite")])
    assert str(info.value) == (
        "device 'phone': benchmark_model did not finish within 0.5 s (adb.command_timeout); "
        "measure fewer models per batch (adb.batch_size) or raise the timeout"
    )
    assert list((phone / "tmp").iterdir()) == []


def test_open_an_adb_profile(tmp_path: Path, fake_binary: Path) -> None:
    path = tmp_path / "phone.yaml"
    path.write_text(
        "name: my-phone\nkind: adb\nruntime: tflite\ndelegate: gpu\ncores: [4, 5]\n"
        f"adb: {{benchmark_model: {fake_binary}, serial: R58M, server_port: 5038}}\n"
    )
    device = open_device(path)
    assert isinstance(device, AdbDevice)
    assert device.serial == "R58M" and device.client.base() == ["adb", "-P", "5038"]
    assert device.settings.delegate == "gpu" and device.settings.cores == (4, 5)
    assert os.fspath(device.binary) == str(fake_binary)


# --- classifying images on the phone -------------------------------------------------------


@pytest.fixture
def litert_binary(tmp_path: Path) -> Path:
    """A stand-in for a current benchmark_model that really runs the model, with LiteRT's
    interpreter on this machine: it reads the flags that classifying uses as the real tool
    does (``benchmark_tflite_model.cc``: --input_layer, --input_layer_shape, an input file of
    exactly the tensor's bytes given by --input_layer_value_files with ``::`` for a ``:`` in
    the name, every output's bytes written to --output_filepath after the run), logs its
    arguments and prints the real tool's recorded output. Files next to it change it:
    ``old``, a build without --output_filepath (it warns of the flag, as the tool does of
    flags it does not know, and writes nothing; with ``strict`` in it, it also fails on the
    input flags, as such a build does on a ``::`` in a name); ``mute``, one that writes nothing and says
    nothing of it; ``full``, a phone where the outputs cannot be collected; ``say``, a line
    printed first. A model named *reject* fails as the real tool does, and so does the
    run that ``fail-on`` numbers; one named *slow* takes 2 s."""
    script = tmp_path / "benchmark_model"
    log = tmp_path / "args.log"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        f"log, here = Path({str(log)!r}), Path({str(tmp_path)!r})\n"
        "argv = sys.argv[1:]\n"
        "with log.open('a') as f:\n"
        "    f.write(''.join(a + '\\n' for a in argv) + '--\\n')\n"
        "flags = dict(a[2:].split('=', 1) for a in argv if a.startswith('--'))\n"
        "if 'slow' in flags['graph']:\n"
        "    import time; time.sleep(2)\n"
        "runs = log.read_text().count('--\\n')\n"
        "fail = here / 'fail-on'  # the run (1, 2, ...) the delegate fails on\n"
        "if 'reject' in flags['graph'] or fail.exists() and int(fail.read_text()) == runs:\n"
        f"    print(Path({str(BENCH / 'xnnpack_delegate_failed.txt')!r}).read_text()); sys.exit(1)\n"
        "interp = Interpreter(model_path=flags['graph'])\n"
        "shape = [int(d) for d in flags['input_layer_shape'].split(',')]\n"
        "d = interp.get_input_details()[0]\n"
        "interp.resize_tensor_input(d['index'], shape)\n"
        "interp.allocate_tensors()\n"
        "spec, delimiters, i = flags['input_layer_value_files'], [], 0\n"
        "while i < len(spec) - 1:  # SplitInputLayerNameAndValueFile\n"
        "    if spec[i] == ':':\n"
        "        if spec[i + 1] == ':':\n"
        "            i += 1\n"
        "        else:\n"
        "            delimiters.append(i)\n"
        "    i += 1\n"
        "if len(delimiters) != 1 or ',' in spec:\n"
        "    print(f'ERROR: Wrong input value file item specified: {spec}'); sys.exit(1)\n"
        "(at,) = delimiters\n"
        "name, path = spec[:at].replace('::', ':'), spec[at + 1:].replace('::', ':')\n"
        "assert name == flags['input_layer'], (name, flags['input_layer'])\n"
        "data = Path(path).read_bytes()\n"
        "size = int(np.prod(shape)) * np.dtype(d['dtype']).itemsize\n"
        "if len(data) != size:\n"
        "    print(f'ERROR: The size of {path} is {len(data)} bytes. It should be {size} bytes.')\n"
        "    sys.exit(1)\n"
        "interp.set_tensor(d['index'], np.frombuffer(data, d['dtype']).reshape(shape))\n"
        "interp.invoke()\n"
        "if (here / 'say').exists():\n"
        "    print((here / 'say').read_text())\n"
        "if (here / 'old').exists():\n"
        "    print('WARN: Unconsumed cmdline flags: --output_filepath=' + flags['output_filepath'])\n"
        "    if (here / 'old').read_text() == 'strict':  # and fails on the escaped name\n"
        "        print('ERROR: Wrong input value file item specified: x::0:0.bin'); sys.exit(1)\n"
        "elif not (here / 'mute').exists():\n"
        "    outputs = interp.get_output_details()\n"
        "    out = Path(flags['output_filepath'])\n"
        "    out.write_bytes(b''.join(interp.get_tensor(o['index']).tobytes() for o in outputs))\n"
        "    if (here / 'full').exists():  # where the outputs go cannot be written\n"
        "        (out.parent / 'outputs.bin').mkdir(exist_ok=True)\n"
        f"print(Path({str(BENCH / 'tc2_xnnpack_op_profiling.txt')!r}).read_text())\n"
    )
    script.chmod(0o755)
    return script


def test_classifies_images_on_the_phone_as_litert_runs_the_files(
    phone: Path, litert_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two float files whose input is named as converters name it (a ``:`` in it) and an
    int8 file, fed NHWC images (quantized for int8) in parts (one image, then up to three),
    the first call dropped by the phone: the classes are LiteRT's own on the same images,
    and each part goes to the phone once per input layout."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from export.verify import run_tflite
    from tests.devices.tflite_models import float_cnn, int8_cnn

    monkeypatch.setattr(devices.adb, "CLASSIFY_IMAGES_PER_CALL", 3)
    models = [
        float_cnn(tmp_path / "model.tflite", input_name="serving_default_x:0"),
        int8_cnn(tmp_path / "model_int8.tflite", seed=2),
        float_cnn(tmp_path / "other.tflite", input_name="serving_default_x:0", seed=1),
    ]
    images = np.random.default_rng(3).standard_normal((5, 3, 16, 16)).astype(np.float32)
    device = _device(phone, litert_binary, cores=(0,), delegate="xnnpack")
    assert device.classifies
    (phone / "drop").touch()  # the first call loses the phone: it is made again
    said: list[str] = []
    classes = device.classify(models, images, progress=said.append)
    assert said[0] == "phone: model.tflite classified 1 of 5 images"
    assert said[-1] == "phone: other.tflite classified 5 of 5 images" and len(said) == 9
    for model, top1 in zip(models, classes, strict=True):
        expected = run_tflite(model, images).argmax(axis=1).tolist()
        assert top1 == expected and len(set(expected)) > 1
    assert device.reconnects == 1
    assert list((phone / "tmp").iterdir()) == []  # every folder removed, the dropped one too
    runs = [r.splitlines() for r in (tmp_path / "args.log").read_text().split("--\n")[:-1]]
    # once per image and file (the dropped call ran none), parts of 1, 3 and 1 images
    assert [r[-1].rsplit(":", 1)[1] for r in runs] == (
        ["0.bin"] * 3 + ["0.bin", "1.bin", "2.bin"] * 3 + ["0.bin"] * 3
    )
    first = runs[0]
    assert first[0].endswith("/models/0-model.tflite")
    assert first[1:7] == [
        "--num_threads=2",
        "--warmup_runs=0",
        "--warmup_min_secs=0",
        "--num_runs=1",
        "--min_secs=0",
        "--use_xnnpack=true",
    ]
    assert first[7].startswith("--output_filepath=") and first[7].endswith("/out.bin")
    assert first[8:] == [
        "--input_layer=serving_default_x:0",
        "--input_layer_shape=1,16,16,3",
        "--input_layer_value_files=serving_default_x::0:0.bin",
    ]
    # Images pushed per part: the float layout and the int8 one (the float files share
    # theirs), the first part's float layout again after the drop; each part's removed
    # after its last file, each call's outputs after the call.
    pushed = (phone / "pushed.log").read_text().split()
    assert sum("/images-" in p for p in pushed) == 2 + 1 + 2 + 2
    shell = (phone / "shell.log").read_text().splitlines()
    removed = [line for line in shell if line.startswith("rm -rf -- ")]
    assert [line.count("/images-") for line in removed if "/images-" in line] == [2, 2, 2]
    assert sum("/run-" in line for line in removed) == 9
    # The dropped call's commands are stopped, and its folder removed, once the phone is back.
    stale = pushed[0].rsplit("/", 1)[0]  # the benchmark_model pushed to the dropped folder
    name = stale.rsplit("/", 1)[1]  # edgenas-<random>, which pkill's pattern keeps as it is
    kill = next(i for i, line in enumerate(shell) if line.startswith("pkill -f ") and name in line)
    assert kill < shell.index(f"rm -rf -- {stale}")
    # A drop while a call's outputs are removed: the classes are kept, not measured again,
    # and the next call starts afresh (its benchmark_model pushed to a new folder).
    (phone / "drop-rm").touch()
    binaries = len([p for p in pushed if p.endswith("/benchmark_model")])
    assert device.classify(models[:2], images[:1]) == [c[:1] for c in classes[:2]]
    assert device.reconnects == 1 and not (phone / "drop-rm").exists()
    pushed = (phone / "pushed.log").read_text().split()
    assert len([p for p in pushed if p.endswith("/benchmark_model")]) == binaries + 2
    assert list((phone / "tmp").iterdir()) == []


def test_a_benchmark_model_that_writes_no_outputs_cannot_check(
    phone: Path, litert_binary: Path, tmp_path: Path
) -> None:
    """A build without --output_filepath (it warns of the flag and goes on), one that writes
    nothing without saying why, and a phone that cannot collect the outputs: one line each,
    after the first image alone."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from tests.devices.tflite_models import float_cnn

    device = _device(phone, litert_binary, delegate="xnnpack")
    model = float_cnn(tmp_path / "m.tflite")
    images = np.zeros((4, 3, 16, 16), np.float32)
    (tmp_path / "old").touch()
    with pytest.raises(DeviceError) as info:
        device.classify([model], images)
    assert str(info.value) == (
        "device 'phone': benchmark_model wrote no outputs for image 0 of m.tflite: this build "
        "has no --output_filepath; use a current LiteRT build of benchmark_model to check "
        "files on the phone"
    )
    assert len((tmp_path / "args.log").read_text().split("--\n")[:-1]) == 1
    (tmp_path / "old").write_text("strict")  # failing too: still named as the build it is
    with pytest.raises(DeviceError, match="this build has no --output_filepath; use a current"):
        device.classify([model], images)
    (tmp_path / "old").rename(tmp_path / "mute")
    with pytest.raises(DeviceError) as info:
        device.classify([model], images)
    assert str(info.value).startswith(
        "device 'phone': benchmark_model wrote no outputs for image 0 of m.tflite ("
    )
    assert str(info.value).endswith(
        f"); check that {phone / 'tmp'} has space, and that the build has --output_filepath "
        "(current LiteRT builds do)"
    )
    (tmp_path / "mute").rename(tmp_path / "full")
    with pytest.raises(DeviceError) as info:
        device.classify([model], images)
    assert str(info.value) == (
        f"device 'phone': the phone could not write the outputs of image 0 of m.tflite in "
        f"{phone / 'tmp'}; free space there or set adb.remote_tmpdir to another folder the "
        "shell user can write"
    )
    assert device.reconnects == 0  # not taken for a lost phone
    assert list((phone / "tmp").iterdir()) == []


def test_classifying_errors_are_one_line(phone: Path, litert_binary: Path, tmp_path: Path) -> None:
    """The delegate rejecting the file, images of another size than its input, a file that
    is no TFLite model, a part past the timeout, and a GPU delegate the tool ran without:
    one line each, naming the fix; nothing left on the phone."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from tests.devices.tflite_models import float_cnn

    device = _device(phone, litert_binary, delegate="xnnpack")
    images = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(DeviceError) as info:
        device.classify([float_cnn(tmp_path / "reject.tflite")], images)
    assert str(info.value) == (
        "device 'phone': benchmark_model could not apply the XNNPACK delegate (Failed to apply "
        "XNNPACK delegate.) for image 0 of reject.tflite; the delegate rejects this model: "
        "measure it with another delegate (delegate: none in the profile)"
    )
    ran = (tmp_path / "args.log").read_text()
    # Refused here, before the phone: the second file takes other images than the first.
    with pytest.raises(DeviceError) as info:
        device.classify(
            [float_cnn(tmp_path / "m.tflite"), float_cnn(tmp_path / "m.tflite")],
            np.zeros((1, 3, 8, 8), np.float32),
        )
    assert str(info.value) == (
        "device 'phone': model 'm.tflite' takes inputs of shape [1, 16, 16, 3], and "
        "classifying feeds it one image of [3, 8, 8] (NCHW) at a time: export the model for "
        "batch 1 at the images' resolution"
    )
    with pytest.raises(DeviceError, match=r"^device 'phone': cannot read m\.onnx with LiteRT \("):
        device.classify([_model(tmp_path, "m.onnx")], images)
    assert (tmp_path / "args.log").read_text() == ran
    device.command_timeout = 1
    with pytest.raises(DeviceError) as info:
        device.classify([float_cnn(tmp_path / "slow.tflite")], images)
    assert str(info.value) == (
        "device 'phone': benchmark_model did not classify 1 image of slow.tflite within 1 s "
        "(adb.command_timeout); raise it, or check fewer images (--device-check-images)"
    )
    assert list((phone / "tmp").iterdir()) == []
    # A GPU delegate that benchmark_model runs without: not the GPU's classes.
    (tmp_path / "say").write_text(UNSUPPORTED)
    gpu = _device(phone, litert_binary, delegate="gpu")
    with pytest.raises(DeviceError) as info:
        gpu.classify([float_cnn(tmp_path / "m.tflite")], images)
    assert str(info.value).startswith(
        "device 'phone': benchmark_model ran m.tflite on the CPU, not on delegate gpu (GPU "
        "acceleration is unsupported on this platform.); check that phone FAKE0001"
    )
    # A GPU delegate keeps what it compiled for the next image's process, by the file's hash.
    args = (tmp_path / "args.log").read_text().split("--\n")[-2].splitlines()
    token = hashlib.sha256((tmp_path / "m.tflite").read_bytes()).hexdigest()[:16]
    assert f"--delegate_serialize_token={token}" in args
    assert any(a.startswith("--delegate_serialize_dir=") and "/edgenas-" in a for a in args)
    assert list((phone / "tmp").iterdir()) == []


def test_a_failure_names_the_image_among_all_and_lost_images_are_named(
    phone: Path, litert_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from tests.devices.tflite_models import float_cnn

    monkeypatch.setattr(devices.adb, "CLASSIFY_IMAGES_PER_CALL", 3)
    device = _device(phone, litert_binary, delegate="xnnpack")
    model = float_cnn(tmp_path / "m.tflite")
    images = np.zeros((5, 3, 16, 16), np.float32)
    (tmp_path / "fail-on").write_text("3")  # image 0, then 1 and 2: the second of part two
    with pytest.raises(DeviceError) as info:
        device.classify([model], images)
    assert "XNNPACK delegate.) for image 2 of m.tflite; the delegate rejects" in str(info.value)
    (tmp_path / "fail-on").unlink()
    (phone / "lose-images").touch()
    with pytest.raises(DeviceError) as info:
        device.classify([model], images)
    assert str(info.value) == (
        f"device 'phone': the images pushed for m.tflite are gone from the phone's "
        f"{phone / 'tmp'}; set adb.remote_tmpdir to a folder that nothing else cleans"
    )
    assert device.reconnects == 0
    assert list((phone / "tmp").iterdir()) == []


def test_a_file_of_any_image_size_on_the_phone(
    phone: Path, litert_binary: Path, tmp_path: Path
) -> None:
    """A TFLite input of dynamic height and width: benchmark_model is given the images'
    shape, and the outputs are read at the size they take there."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from tests.devices.tflite_models import float_mean

    images = np.random.default_rng(6).standard_normal((4, 3, 9, 7)).astype(np.float32)
    device = _device(phone, litert_binary, delegate="xnnpack")
    (top1,) = device.classify([float_mean(tmp_path / "any.tflite")], images)
    assert top1 == images.mean(axis=(2, 3)).argmax(axis=1).tolist()
    assert "--input_layer_shape=1,9,7,3" in (tmp_path / "args.log").read_text()


def test_input_names_that_benchmark_model_cannot_take() -> None:
    """A comma (--input_layer splits there) or no name: the input is named plainly, which
    the tool matches by position; a colon is escaped."""
    from devices.tflite_io import TfliteInput

    def flags(name: str) -> list[str]:
        return TfliteInput(name, (1, 8, 8, 3), "float32", (0.0, 0)).flags("0.bin")

    assert (
        flags("a,b")
        == flags("")
        == [
            "--input_layer=input",
            "--input_layer_shape=1,8,8,3",
            "--input_layer_value_files=input:0.bin",
        ]
    )
    assert flags("serving:0")[2] == "--input_layer_value_files=serving::0:0.bin"


def test_classes_from_the_outputs_benchmark_model_writes() -> None:
    """The first output's scores of each image, among every output's bytes (int8 here:
    their order is the dequantized scores' order), and a size that does not fit refused."""
    from devices.tflite_io import TfliteInput, TfliteIO, classes_from_outputs

    inp = TfliteInput("x", (1, 4, 4, 3), "int8", (0.1, 0))
    io = TfliteIO(input=inp, output_type="int8", output_size=3, outputs_bytes=3 + 8)
    scores = np.array([[-5, 7, -128], [-2, -3, -1]], np.int8)
    extra = np.full((2, 2), 1e9, np.float32).view(np.uint8)  # a second output, 8 bytes
    data = np.concatenate([scores.view(np.uint8), extra], axis=1).tobytes()
    assert classes_from_outputs(io, data, 2) == [1, 2]
    with pytest.raises(ValueError, match="21 bytes of outputs, not 2 x 11"):
        classes_from_outputs(io, data[:-1], 2)


def test_the_export_checks_its_files_on_the_phone(
    phone: Path, litert_binary: Path, tmp_path: Path
) -> None:
    """The export's check on an adb device: each file's agreement with the fp32 classes and
    accuracy there go on the card's entry, as for a board."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from edgenas.stages.export import _check_on_device
    from export.subnet_export import TestImages
    from export.verify import run_tflite
    from tests.devices.tflite_models import float_cnn, int8_cnn

    folder = tmp_path / "export"
    folder.mkdir()
    fp32, int8 = float_cnn(folder / "model.tflite"), int8_cnn(folder / "model_int8.tflite")
    images = np.random.default_rng(4).standard_normal((6, 3, 16, 16)).astype(np.float32)
    reference = run_tflite(fp32, images).argmax(axis=1)
    labels = np.array([reference[0], reference[1], -1, -1, -1, -1])
    entry: dict[str, Any] = {"fingerprint": {}, "files": {fp32.name: {}, int8.name: {}}}
    _check_on_device(
        _device(phone, litert_binary, delegate="xnnpack"),
        entry,
        folder,
        TestImages(images, reference, labels),
        lambda _: None,
    )
    assert "not_checked" not in entry
    assert entry["files"][fp32.name]["on_device"] == {
        "images": 6,
        "top1_agreement": 1.0,
        "accuracy": pytest.approx(2 / 6),
    }
    int8_top1 = run_tflite(int8, images).argmax(axis=1)
    assert entry["files"][int8.name]["on_device"]["top1_agreement"] == pytest.approx(
        float((int8_top1 == reference).mean())
    )
