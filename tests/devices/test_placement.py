"""Delegates and execution providers: what a profile asks for is what the runtime runs on.

Real onnxruntime and LiteRT on this CPU: the CPU provider and XNNPACK are exercised for real;
providers this onnxruntime build lacks (CUDA) and missing delegate libraries give one line.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

from devices import DeviceError, LocalDevice, Measurement, RunSettings, create_device
from devices.measurement import Fingerprint, placement_summary
from devices.profiles import validate_profile
from devices.runner_protocol import build_job, parse_results
from edgenas.cli import app
from tests.devices.conftest import Models

QUICK = RunSettings(warmup=1, runs=4)


def _local(**keys: Any) -> LocalDevice:
    """A local device from a profile with these keys (the profile path, not RunSettings)."""
    profile = {"name": "here", "kind": "local", "warmup": 1, "runs": 4, **keys}
    device = create_device("local", "here", validate_profile(profile).model_dump())
    assert isinstance(device, LocalDevice)
    return device


def test_cpu_provider_records_its_nodes(models: Models) -> None:
    device = _local(providers=["cpu"])
    assert device.settings.providers == ("CPUExecutionProvider",)
    for m in device.measure([models.conv, models.fc]):
        assert m.placement is not None
        assert m.placement["providers"] == ["CPUExecutionProvider"]
        assert set(m.placement["nodes"]) == {"CPUExecutionProvider"}
        assert m.placement["nodes"]["CPUExecutionProvider"] >= 1
        assert m.placement["fallback"] == {}


def test_default_onnxruntime_placement_is_the_cpu(models: Models) -> None:
    (m,) = LocalDevice(settings=QUICK).measure([models.dw])
    assert m.placement and m.placement["providers"] == ["CPUExecutionProvider"]


def test_provider_missing_here_names_the_available_ones(models: Models) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    device = _local(providers=["cuda", "cpu"])
    with pytest.raises(DeviceError) as info:
        device.measure([models.conv])
    message = str(info.value)
    assert "\n" not in message
    assert "has no CUDAExecutionProvider (available: " in message
    assert message.endswith(
        "(onnxruntime-gpu for CUDA and TensorRT, onnxruntime-openvino for OpenVINO), or leave it "
        "out of the profile's providers"
    )
    for name in ort.get_available_providers():
        assert name in message


@pytest.fixture
def tflite_models(tmp_path: Path) -> list[Path]:
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    from devices.sanity_models import tflite_fully_connected
    from tests.devices.tflite_models import float_split

    return [
        tflite_fully_connected(tmp_path / "fc.tflite"),
        float_split(tmp_path / "split.tflite"),
    ]


def test_xnnpack_delegates_nodes_and_none_delegates_none(tflite_models: list[Path]) -> None:
    fc_x, split_x = _local(runtime="tflite", delegate="xnnpack").measure(tflite_models)
    fc_n, split_n = _local(runtime="tflite", delegate="none").measure(tflite_models)
    default = LocalDevice(settings=RunSettings(runtime="tflite", warmup=1, runs=2))
    fc_d, split_d = default.measure(tflite_models)
    assert fc_x.placement == {
        "delegate": "xnnpack",
        "delegated_nodes": 1,
        "cpu_nodes": 0,
        "partitions": 1,
        "fallback": {},
    }
    # XNNPACK has no ZEROS_LIKE: it runs on the builtin kernels between two partitions.
    assert split_x.placement == {
        "delegate": "xnnpack",
        "delegated_nodes": 2,
        "cpu_nodes": 1,
        "partitions": 2,
        "fallback": {"ZEROS_LIKE": 1},
    }
    for m, ops in ((fc_n, 1), (split_n, 3)):
        assert m.placement == {
            "delegate": "none",
            "delegated_nodes": 0,
            "cpu_nodes": ops,
            "partitions": 0,
            "fallback": {},
        }
    # No delegate in the profile: LiteRT's default, XNNPACK.
    assert (fc_d.placement, split_d.placement) == (fc_x.placement, split_x.placement)


def test_external_delegate_that_is_missing_or_not_a_library(
    tmp_path: Path, tflite_models: list[Path]
) -> None:
    missing = tmp_path / "libnowhere_delegate.so"
    device = _local(runtime="tflite", delegate=f"external:{missing}")
    with pytest.raises(DeviceError) as info:
        device.measure(tflite_models[:1])
    # It said where it was not, but not where it was looked for nor what to give (input audit).
    assert str(info.value) == (
        f"device 'here': delegate library not found on the device: no file {str(missing)!r} "
        "there; delegate external:PATH takes the absolute path of a TFLite delegate library "
        "(.so) on the device: copy it there, fix the path, or use delegate xnnpack or none"
    )
    junk = tmp_path / "libjunk_delegate.so"
    junk.write_bytes(b"not an ELF file")
    device = _local(
        runtime="tflite",
        delegate=f"external:{junk}",
        delegate_options={"backends": "GpuAcc", "fast": True},
    )
    assert device.settings.delegate_options == (("backends", "GpuAcc"), ("fast", "true"))
    with pytest.raises(DeviceError, match=r"cannot load delegate .*libjunk_delegate\.so") as bad:
        device.measure(tflite_models[:1])
    assert "\n" not in str(bad.value)


def test_an_empty_python_path_is_refused_as_such() -> None:
    # It failed when the runner started: "cannot start Python '': Permission denied" (review).
    for kind, section in (("local", {}), ("ssh", {"host": "board"})):
        with pytest.raises(DeviceError, match=rf"{kind}\.python: String should have at least 1"):
            validate_profile({"name": "x", "kind": kind, kind: {**section, "python": ""}})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"runtime": "tflite", "delegate": "gpu"},
            r"delegate gpu needs an adb device \(benchmark_model\); kind 'local' runs the "
            r"Python runner: xnnpack, none or external:PATH",
        ),
        ({"runtime": "tflite", "delegate": "nnapi"}, r"delegate nnapi needs an adb device"),
        ({"runtime": "tflite", "delegate": "opencl"}, r"delegate: String should match pattern"),
        ({"runtime": "tflite", "delegate": "external:"}, r"delegate: String should match"),
        ({"delegate": "xnnpack"}, r"delegate is for runtime tflite; onnxruntime takes providers"),
        (
            {"runtime": "tflite", "delegate": "none", "delegate_options": {"a": 1}},
            r"delegate_options are for delegate external:PATH",
        ),
        ({"runtime": "tflite", "providers": ["cpu"]}, r"providers are for runtime onnxruntime"),
        ({"providers": []}, r"providers: List should have at least 1 item"),
        ({"providers": ["gpu"]}, r"unknown execution provider 'gpu': give onnxruntime's name"),
        (
            {"providers": ["cuda"], "provider_options": {"tensorrt": {"trt_fp16_enable": True}}},
            r"provider_options: tensorrt is not in providers",
        ),
        ({"providers": ["cpu"], "provider_options": {"cpu": [1]}}, r"provider_options\.cpu"),
        (  # it said "cuda is not in providers", where the default providers are [cpu] (review)
            {"provider_options": {"cuda": {"device_id": 0}}},
            r"provider_options: cuda is given, but providers is not: list the providers the "
            r"options are for \(providers: \[cuda\]\)",
        ),
        (  # the CPU provider's are refused whatever the providers (second review)
            {"provider_options": {"cpu": {"foo": 1}}},
            r"provider_options: cpu: onnxruntime's CPU provider takes no provider options",
        ),
    ],
)
def test_bad_placement_keys_in_profiles(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(DeviceError, match=message) as info:
        validate_profile({"name": "here", "kind": "local", **keys})
    assert "\n" not in str(info.value)


def test_placement_keys_are_refused_for_simulators() -> None:
    with pytest.raises(DeviceError, match=r"providers: kind 'npu-sim' does not use it"):
        validate_profile({"name": "n", "kind": "npu-sim", "npu": {}, "providers": ["cpu"]})
    with pytest.raises(DeviceError, match=r"delegate: kind 'vela' does not use it"):
        validate_profile(
            {
                "name": "u",
                "kind": "vela",
                "vela": {
                    "accelerator_config": "ethos-u55-64",
                    "system_config": "S",
                    "memory_mode": "M",
                },
                "delegate": "xnnpack",
            }
        )


def test_provider_options_reach_the_job_by_full_name() -> None:
    profile = validate_profile(
        {
            "name": "orin",
            "kind": "local",
            "providers": ["tensorrt", "CUDAExecutionProvider"],
            "provider_options": {"tensorrt": {"trt_fp16_enable": True, "device_id": 0}},
        }
    )
    job = build_job(["m.onnx"], profile.run_settings())
    assert job["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert job["provider_options"] == {
        "TensorrtExecutionProvider": {"trt_fp16_enable": "true", "device_id": "0"}
    }
    assert "delegate" not in job
    # A call that switches the runtime sends only what that runtime takes.
    tflite = build_job(["m.tflite"], profile.run_settings().override(runtime="tflite"))
    assert "providers" not in tflite and "delegate" not in tflite


def test_the_options_a_job_applies_are_recorded_with_its_measurements() -> None:
    """What a table's header records (``measured_with``): the options the job applies, by
    the names the job uses, and the cores and warmup; not runs or spread_threshold."""
    profile = validate_profile(
        {
            "name": "orin",
            "kind": "local",
            "cores": [2, 3],
            "runs": 7,
            "providers": ["tensorrt"],
            "provider_options": {"tensorrt": {"trt_fp16_enable": True}},
        }
    )
    assert dict(LocalDevice("orin", settings=profile.run_settings()).measured_with()) == {
        "cores": "[2, 3]",
        "provider_options.TensorrtExecutionProvider.trt_fp16_enable": "true",
        "warmup": "10",
    }
    external = validate_profile(
        {
            "name": "imx8",
            "kind": "local",
            "runtime": "tflite",
            "delegate": "external:/usr/lib/libvx_delegate.so",
            "delegate_options": {"device_id": 0},
        }
    )
    assert dict(external.run_settings().measured_with()) == {
        "delegate_options.device_id": "0",
        "warmup": "10",
    }


def test_placement_round_trips_and_old_measurements_still_read(models: Models) -> None:
    (m,) = LocalDevice(settings=QUICK).measure([models.fc])
    again = Measurement.from_dict(m.to_dict())
    assert again == m and again.placement == m.placement
    old = m.to_dict()
    del old["placement"]
    assert Measurement.from_dict(old).placement is None
    # Results of a runner without placement still parse.
    payload = {
        "format": "edgenas.runner-results/1",
        "fingerprint": {**LocalDevice(settings=QUICK).fingerprint().to_dict()},
        "warnings": [],
        "order": [[0]],
        "models": [
            {
                "index": 0,
                "times_ms": [1.0, 2.0],
                "iqr_ratio": 0.0,
                "remeasured": False,
                "flagged": False,
            }
        ],
    }
    (parsed,) = parse_results("old", payload, ["m"]).measurements
    assert parsed.placement is None


def test_placement_summaries() -> None:
    split = {
        "delegate": "xnnpack",
        "delegated_nodes": 2,
        "cpu_nodes": 1,
        "partitions": 2,
        "fallback": {"ZEROS_LIKE": 1},
    }
    assert placement_summary(split) == (
        "xnnpack 2 ops in 2 partitions, builtin kernels 1 (fell back: ZEROS_LIKE 1)"
    )
    off = {**split, "delegate": "none", "delegated_nodes": 0, "cpu_nodes": 3, "fallback": {}}
    assert placement_summary(off) == "no delegate: builtin kernels 3 ops"
    gpu = {
        "providers": ["CUDAExecutionProvider"],
        "nodes": {"CUDAExecutionProvider": 118, "CPUExecutionProvider": 4},
        "fallback": {"Shape": 4},
    }
    assert placement_summary(gpu) == (
        "CUDAExecutionProvider 118, CPUExecutionProvider 4 nodes (fell back: Shape 4)"
    )
    # The OpenVINO runner's placement of an int8 file (the demo's subnet, 2026-12-06).
    openvino = {
        "device": "CPU",
        "inference_precision": "f32",
        "nodes": {"CPU": 113},
        "kernel_precisions": {"f32": 5, "u8": 108},
        "fallback": {},
    }
    assert placement_summary(openvino) == (
        "OpenVINO CPU 113 kernels (u8 108, f32 5), inference precision f32"
    )
    unknown = {**openvino, "nodes": {}, "kernel_precisions": None, "inference_precision": None}
    assert placement_summary(unknown) == "OpenVINO CPU"


def test_devices_check_shows_the_placement(tmp_path: Path) -> None:
    profile = tmp_path / "cpu.yaml"
    profile.write_text(
        "name: cpu\nkind: local\nproviders: [cpu]\nwarmup: 1\nruns: 3\n", encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["devices", "check", str(profile)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    as_json = CliRunner().invoke(app, ["devices", "check", str(profile), "--json"])
    placement = json.loads(as_json.stdout)["sanity"]["placement"]
    # Conv and Relu, after onnxruntime's fusions and layout changes for this CPU.
    (count,) = placement["nodes"].values()
    assert placement == {
        "providers": ["CPUExecutionProvider"],
        "nodes": {"CPUExecutionProvider": count},
        "fallback": {},
    }
    row = next(line for line in result.stdout.splitlines() if "placement" in line)
    assert f"CPUExecutionProvider {count} nodes" in row


def test_fingerprint_names_a_non_default_accelerator() -> None:
    """Tables measured with XNNPACK off are not reused with it on; defaults stay as before."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    default = LocalDevice(settings=RunSettings(runtime="tflite")).fingerprint()
    off = _local(runtime="tflite", delegate="none").fingerprint()
    xnnpack = _local(runtime="tflite", delegate="xnnpack").fingerprint()
    assert (default.accelerator, xnnpack.accelerator, off.accelerator) == ("", "", "none")
    assert "accelerator" not in default.to_dict()
    # Files written before the runner's machine was kept read as they did.
    old = {k: v for k, v in default.to_dict().items() if k != "machine"}
    assert (
        Fingerprint.from_dict(old).machine == ""
        and "machine" not in Fingerprint.from_dict(old).to_dict()
    )
    assert off.to_dict()["accelerator"] == "none"
    assert Fingerprint.from_dict(off.to_dict()) == off
    assert Fingerprint.from_dict(default.to_dict()) == default
    assert default.same_target(xnnpack) and not default.same_target(off)
    cpu = _local(providers=["cpu"]).fingerprint()
    assert cpu.accelerator == "" and cpu.same_target(LocalDevice().fingerprint())


# A real TFLite external delegate (the plugin ABI LiteRT's load_delegate calls) whose Prepare
# claims no node: as a delegate for an accelerator these ops are not for behaves.
NO_NODE_DELEGATE = r"""
#include <stdint.h>
#include <stdlib.h>
typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;
static int prepare(void* context, TfLiteDelegate* delegate) { return 0; }
TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              void (*report_error)(const char*)) {
  TfLiteDelegate* d = calloc(1, sizeof(TfLiteDelegate));
  d->Prepare = prepare;
  return d;
}
void tflite_plugin_destroy_delegate(TfLiteDelegate* d) { free(d); }
"""


def test_an_accelerator_that_takes_no_op_of_any_model_fails_the_call(
    tmp_path: Path, models: Models, tflite_models: list[Path]
) -> None:
    # It was a warning per model: a whole table of CPU times was written under the
    # accelerator's name, exit 0 (device audit).
    source = tmp_path / "no_node_delegate.c"
    source.write_text(NO_NODE_DELEGATE)
    library = tmp_path / "libno_node_delegate.so"
    compiled = subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(library), str(source)], capture_output=True
    )
    assert compiled.returncode == 0, compiled.stderr
    device = _local(runtime="tflite", delegate=f"external:{library}")
    with pytest.raises(DeviceError) as info:
        device.measure(tflite_models)
    assert str(info.value) == (
        f"device 'here': delegate external:{library} took none of the ops of the "
        f"{len(tflite_models)} model(s): all of them ran on TFLite's builtin CPU kernels, "
        "which is not what this device's profile asks to measure; check that the accelerator "
        "is there and supports these ops, or measure without it (onnxruntime providers: "
        "[cpu]; TFLite delegate: xnnpack; OpenVINO device: CPU)"
    )
    # onnxruntime's Azure provider (in every build) runs no conv
    assert "AzureExecutionProvider" in ort.get_available_providers()
    # The CPU provider asked for after it, or not: onnxruntime adds it either way.
    for providers in (["AzureExecutionProvider", "cpu"], ["AzureExecutionProvider"]):
        device = _local(providers=providers)
        with pytest.raises(
            DeviceError,
            match=r"^device 'here': AzureExecutionProvider took none of the ops of the 2 "
            r"model\(s\): all of them ran on CPUExecutionProvider, which",
        ):
            device.measure([models.conv, models.fc])
