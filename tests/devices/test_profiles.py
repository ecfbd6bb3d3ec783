"""Device profiles: the bundled ones load, bad ones fail on the key, open_device builds devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import devices.base
from devices import (
    DeviceError,
    LocalDevice,
    list_profiles,
    load_profile,
    open_device,
)
from tests.devices.conftest import Models

BUNDLED = {
    "local-cpu",
    "raspberry-pi-4",
    "jetson-orin-nano",
    "android-termux",
    "npu-32x32-ws",
    "ethos-u55-128",
    "jetson-orin-nano-gpu",
    "jetson-orin-nano-trt",
    "android-adb",
    "android-adb-gpu",
}


def test_bundled_profiles_are_listed() -> None:
    assert set(list_profiles()) >= BUNDLED


@pytest.mark.parametrize("name", list_profiles())
def test_bundled_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.description
    section = {
        "local": "local",
        "ssh": "ssh",
        "adb": "adb",
        "npu-sim": "npu",
        "vela": "vela",
        "published": "published",
    }[profile.kind]
    if profile.kind != "local":
        assert getattr(profile, section) is not None


def test_bundled_profile_contents() -> None:
    pi = load_profile("raspberry-pi-4")
    assert pi.kind == "ssh" and pi.runtime == "tflite" and pi.ssh and pi.ssh.host == "pi4"
    assert load_profile("jetson-orin-nano").runtime == "onnxruntime"
    assert load_profile("local-cpu").run_settings().providers is None  # the CPU
    gpu = load_profile("jetson-orin-nano-gpu").run_settings()
    assert gpu.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert load_profile("android-termux").runtime == "tflite"
    phone = load_profile("android-adb")
    assert phone.kind == "adb" and phone.adb is not None
    assert (phone.delegate, phone.threads, phone.cores) == ("xnnpack", 4, [4, 5, 6, 7])
    assert load_profile("android-adb-gpu").delegate == "gpu"
    npu = load_profile("npu-32x32-ws").npu
    assert npu is not None
    assert (npu["rows"], npu["cols"], npu["dataflow"], npu["clock_mhz"]) == (32, 32, "ws", 500)
    vela = load_profile("ethos-u55-128").vela
    assert vela is not None
    assert (vela.accelerator_config, vela.system_config, vela.memory_mode) == (
        "ethos-u55-128",
        "Ethos_U55_High_End_Embedded",
        "Shared_Sram",
    )


def _profile(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "my board.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


SSH = {"name": "board", "kind": "ssh", "ssh": {"host": "board", "python": "python3"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssh": {"host": "b", "prot": 22}}, r"ssh\.prot: Extra inputs are not permitted"),
        ({"ssh": {"host": "b", "password": "x"}}, r"ssh\.password: Extra inputs are not permitted"),
        ({"threads": "four"}, r"threads: Input should be a valid integer"),
        ({"threads": 0}, r"threads: Input should be greater than or equal to 1"),
        ({"cores": "0-3"}, r"cores: Input should be a valid list"),
        ({"ssh": {"host": "b", "port": 70000}}, r"ssh\.port: Input should be less than"),
        (
            {"kind": "usb"},
            r"kind: Input should be 'local', 'ssh', 'adb', 'npu-sim', 'vela' or 'published'",
        ),
        ({"runtime": "tvm"}, r"runtime: Input should be 'onnxruntime', 'tflite' or 'tensorrt'"),
        ({"colour": "red"}, r"colour: Extra inputs are not permitted"),
        ({"ssh": None}, r"kind 'ssh' needs a 'ssh' section"),
        ({"npu": {"rows": 8}}, r"section 'npu' is for kind 'npu-sim', not 'ssh'"),
        ({"name": "a b"}, r"name: String should match pattern"),
        ({"adb": {"benchmark_model": "b"}}, r"section 'adb' is for kind 'adb', not 'ssh'"),
        ({"kind": "adb", "ssh": None}, r"kind 'adb' needs a 'adb' section"),
        (
            {"kind": "adb", "ssh": None, "adb": {"benchmark_model": "b"}},
            r"kind 'adb' runs benchmark_model: runtime tflite, with a delegate",
        ),
        (
            {"kind": "adb", "ssh": None, "runtime": "tflite", "adb": {"serial": "x"}},
            r"adb\.benchmark_model: Field required",
        ),
    ],
)
def test_bad_profiles_name_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = _profile(tmp_path, {**SSH, **change})
    with pytest.raises(DeviceError, match=message) as info:
        load_profile(path)
    assert str(info.value).startswith(f"device profile {path}: ")
    assert "\n" not in str(info.value)


def test_vela_accelerator_is_checked(tmp_path: Path) -> None:
    data = {
        "name": "u55",
        "kind": "vela",
        "vela": {"accelerator_config": "u55", "system_config": "S", "memory_mode": "M"},
    }
    with pytest.raises(DeviceError, match=r"vela\.accelerator_config: String should match"):
        load_profile(_profile(tmp_path, data))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the line and column, as a recipe's error gives them (issue 24: none were given)
        ("name: b\nkind: [unclosed\n", "is not valid YAML at line 3, column 1: expected ','"),
        ("- a\n- b\n", "must be a mapping"),
        # PyYAML keeps the last of two equal keys: a second threads: further down won silently
        (
            "name: b\nkind: local\nthreads: 1\nruns: 5\nthreads: 4\n",
            r"is not valid YAML at line 5, column 1: found duplicate key 'threads': give each key once",
        ),
    ],
)
def test_unreadable_profiles(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        load_profile(_profile(tmp_path, text))


def test_a_binary_profile_is_refused(tmp_path: Path) -> None:
    # UnicodeDecodeError, a traceback (issue 24's adversarial round)
    path = tmp_path / "board.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(DeviceError, match=r"board.yaml is not a text file \(not UTF-8\)"):
        load_profile(path)


def test_unknown_names_and_paths(tmp_path: Path) -> None:
    with pytest.raises(
        DeviceError, match=r"unknown device profile 'pi5'; bundled profiles: .*local-cpu"
    ):
        load_profile("pi5")
    with pytest.raises(DeviceError, match=r"cannot read device profile .*missing\.yaml"):
        load_profile(tmp_path / "missing.yaml")


def test_open_local_cpu_measures(models: Models) -> None:
    device = open_device("local-cpu")
    assert isinstance(device, LocalDevice) and device.name == "local-cpu"
    with device:
        (m,) = device.measure([models.conv], warmup=1, runs=3)
        assert m.n == 3 and m.model == str(models.conv)
        assert device.fingerprint().runtime == "onnxruntime"


def test_open_a_profile_by_path(tmp_path: Path) -> None:
    path = _profile(
        tmp_path, {"name": "mine", "kind": "local", "threads": 2, "local": {"timeout_s": 60}}
    )
    device = open_device(path)
    assert isinstance(device, LocalDevice)
    assert device.settings.threads == 2 and device.timeout_s == 60


def test_kind_without_a_backend_loads_but_does_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(devices.base._KINDS, "vela", raising=False)
    assert load_profile("ethos-u55-128").kind == "vela"
    with pytest.raises(DeviceError, match=r"device 'ethos-u55-128': unknown kind 'vela'"):
        open_device("ethos-u55-128")
