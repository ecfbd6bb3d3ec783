"""Device profiles: the bundled ones load, bad ones fail on the key, open_device builds devices."""

from __future__ import annotations

from dataclasses import replace
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
from devices.profiles import validate_profile
from devices.runner_protocol import build_job
from tests.devices.conftest import Models

BUNDLED = {
    "local-cpu",
    "local-cpu-openvino",
    "local-cpu-litert",
    "local-cpu-litert-no-amx",
    "local-cpu-openvino-runtime",
    "local-cpu-openvino-runtime-no-amx",
    "local-cpu-openvino-no-amx",
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
    openvino = load_profile("local-cpu-openvino")
    assert openvino.local is not None and openvino.local.python == ".venv-openvino/bin/python"
    assert openvino.run_settings().providers == ("OpenVINOExecutionProvider",)
    assert openvino.run_settings().provider_options == (
        ("OpenVINOExecutionProvider", (("device_type", "CPU"), ("num_of_threads", "1"))),
    )
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


def _refusal(tmp_path: Path, data: Any) -> str:
    """The one line with which loading the profile ``data`` (written to a file) is refused,
    after the file's name, which it starts with."""
    path = _profile(tmp_path, data)
    with pytest.raises(DeviceError) as info:
        load_profile(path)
    said = str(info.value)
    assert said.startswith(f"device profile {path}: ") and "\n" not in said, said
    return said.removeprefix(f"device profile {path}: ")


SSH = {"name": "board", "kind": "ssh", "ssh": {"host": "board", "python": "python3"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssh": {"host": "b", "prot": 22}}, r"ssh\.prot: unknown key; did you mean port\?"),
        (
            {"ssh": {"host": "b", "password": "x"}},
            r"ssh\.password: unknown key \(known: host, user, port, key_file, ",
        ),
        ({"threads": "four"}, r"threads: Input should be a valid integer"),
        ({"threads": 0}, r"threads: Input should be greater than or equal to 1"),
        ({"cores": "0-3"}, r"cores: Input should be a valid list"),
        ({"ssh": {"host": "b", "port": 70000}}, r"ssh\.port: Input should be less than"),
        # looked up as a host name: "cannot resolve host name 'pi@board'" (device audit)
        (
            {"ssh": {"host": "pi@board"}},
            r"ssh\.host: 'pi@board': give the host alone \('board'\) and ssh\.user: 'pi'$",
        ),
        (
            {"kind": "usb"},
            r"kind: Input should be 'local', 'ssh', 'adb', 'npu-sim', 'vela' or 'published'",
        ),
        (
            {"runtime": "tvm"},
            r"runtime: Input should be 'onnxruntime', 'tflite', 'openvino' or 'tensorrt'",
        ),
        ({"colour": "red"}, r"colour: unknown key \(known: name, kind, "),
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


LOCAL = {"name": "here", "kind": "local"}
NPU = {"name": "npu", "kind": "npu-sim", "npu": {"rows": 8, "cols": 8}}
VELA = {
    "name": "u55",
    "kind": "vela",
    "vela": {
        "accelerator_config": "ethos-u55-128",
        "system_config": "Ethos_U55_High_End_Embedded",
        "memory_mode": "Shared_Sram",
    },
}
PUBLISHED = {
    "name": "phone",
    "kind": "published",
    "published": {
        "format": "ofa",
        "url": "https://example.org/",
        "files": "{r}.yaml",
        "resolutions": [160],
        "measured_on": "a phone",
    },
}
ADB = {"name": "phone", "kind": "adb", "runtime": "tflite", "adb": {"benchmark_model": "b"}}


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        # onnxruntime: "cannot load model ...: std::bad_alloc" (input audit)
        ({**LOCAL, "threads": 10**9}, r"threads: Input should be less than or equal to 1024$"),
        ({**LOCAL, "runs": 10**9}, r"runs: Input should be less than or equal to 100000$"),
        ({**LOCAL, "warmup": 10**9}, r"warmup: Input should be less than or equal to 100000$"),
        ({**LOCAL, "spread_threshold": float("nan")}, r"spread_threshold: Input should be a fin"),
        # Python's timeouts overflow (OverflowError: timestamp too large) from about 1e10 s
        (
            {**LOCAL, "local": {"timeout_s": 1e10}},
            r"local\.timeout_s: Input should be less than or equal to 604800",
        ),
        (
            {**SSH, "ssh": {"host": "b", "command_timeout": float("inf")}},
            r"ssh\.command_timeout: Input should be a finite number",
        ),
        (
            {**SSH, "ssh": {"host": "b", "connect_timeout": 1e12}},
            r"ssh\.connect_timeout: Input should be less than or equal to 3600",
        ),
        # a dead board would be reconnected to for ever
        (
            {**SSH, "ssh": {"host": "b", "max_reconnects": 10**9}},
            r"ssh\.max_reconnects: Input should be less than or equal to 100$",
        ),
        (
            {**ADB, "adb": {"benchmark_model": "b", "command_timeout": 1e10}},
            r"adb\.command_timeout: Input should be less than or equal to 604800",
        ),
        (
            {**LOCAL, "runtime": "tensorrt", "tensorrt": {"warmup_ms": 10**9}},
            r"tensorrt\.warmup_ms: Input should be less than or equal to 600000$",
        ),
    ],
)
def test_counts_and_times_beyond_what_a_device_takes_are_refused(
    tmp_path: Path, profile: dict[str, Any], message: str
) -> None:
    path = _profile(tmp_path, profile)
    with pytest.raises(DeviceError, match=message) as info:
        load_profile(path)
    assert str(info.value).startswith(f"device profile {path}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        # passed, then failed on sanity.tflite: "Error parsing message" (input audit)
        (
            {**NPU, "runtime": "tflite"},
            "runtime: kind 'npu-sim' simulates ONNX models, so runtime tflite does not apply; "
            "remove runtime (or give onnxruntime)",
        ),
        # silently ignored (input audit)
        (
            {**NPU, "threads": 4},
            "threads: kind 'npu-sim' does not use it (it simulates each model once from the npu "
            "section); remove it",
        ),
        (
            {**VELA, "runtime": "onnxruntime"},
            "runtime: kind 'vela' compiles int8 TFLite models, so runtime onnxruntime does not "
            "apply; remove runtime (or give tflite)",
        ),
        ({**NPU, "warmup": 0}, "warmup: kind 'npu-sim' does not use it"),
        ({**NPU, "cores": [0]}, "cores: kind 'npu-sim' does not use it"),
        ({**NPU, "providers": ["cpu"]}, "providers: kind 'npu-sim' does not use it"),
        ({**NPU, "delegate_options": {}}, "delegate_options: kind 'npu-sim' does not use it"),
        ({**VELA, "runs": 5}, "runs: kind 'vela' does not use it (Vela estimates each model"),
        ({**VELA, "spread_threshold": 0.2}, "spread_threshold: kind 'vela' does not use it"),
        ({**PUBLISHED, "threads": 4}, "threads: kind 'published' does not use it (its latencies"),
        (
            {**ADB, "provider_options": {"cpu": {"a": 1}}},
            "provider_options: kind 'adb' does not use it (benchmark_model runs TFLite models "
            "with a delegate); remove it",
        ),
        ({**ADB, "tensorrt": {"precision": "fp32"}}, "tensorrt: kind 'adb' does not use it"),
        (
            {**LOCAL, "runtime": "tensorrt", "warmup": 10},
            "warmup: runtime tensorrt does not use it (trtexec warms up for tensorrt.warmup_ms "
            "milliseconds instead); remove it",
        ),
        (
            {**SSH, "runtime": "tensorrt", "threads": 4},
            "threads: runtime tensorrt does not use it (trtexec picks its own threads); remove it",
        ),
        ({**ADB, "openvino": {"device": "CPU"}}, "openvino: kind 'adb' does not use it"),
        ({**ADB, "x86_amx": False}, "x86_amx: kind 'adb' does not use it"),
        ({**VELA, "x86_amx": True}, "x86_amx: kind 'vela' does not use it"),
        (
            {**LOCAL, "runtime": "tensorrt", "x86_amx": False},
            "x86_amx: runtime tensorrt does not use it (trtexec runs the engine on the GPU)",
        ),
        ({**LOCAL, "x86_amx": "no"}, "x86_amx: Input should be a valid boolean"),
        ({**NPU, "openvino": {}}, "openvino: kind 'npu-sim' does not use it"),
        (
            {**LOCAL, "openvino": {"device": "CPU"}},
            "section 'openvino' is for runtime openvino (onnxruntime's OpenVINO execution "
            "provider is providers: [openvino])",
        ),
        (
            {**LOCAL, "runtime": "openvino", "providers": ["openvino"]},
            "providers are for runtime onnxruntime; tflite takes a delegate, openvino a device "
            "in its openvino section",
        ),
        (
            {**LOCAL, "runtime": "openvino", "openvino": {"device": "AUTO"}},
            "openvino.device: 'AUTO' is a virtual device, which may run a model on "
            "another device than the one named: give one device (CPU, GPU, GPU.1, NPU)",
        ),
        (
            {**LOCAL, "runtime": "openvino", "openvino": {"device": "HETERO:GPU,CPU"}},
            r"openvino.device: String should match pattern",
        ),
        (
            {**LOCAL, "runtime": "openvino", "openvino": {"device": "GPU", "prop": {}}},
            "openvino.prop: unknown key (known: device, properties)",
        ),
        (
            {
                **LOCAL,
                "runtime": "openvino",
                "openvino": {"properties": {"INFERENCE_NUM_THREADS": 2}},
            },
            "openvino.properties: INFERENCE_NUM_THREADS: give the profile's threads instead",
        ),
        (
            {**VELA, "runtime": "openvino"},
            "runtime openvino runs through the on-device runner: kind ssh or local, not 'vela'",
        ),
    ],
)
def test_keys_a_kind_does_not_use_are_refused(
    tmp_path: Path, profile: dict[str, Any], message: str
) -> None:
    assert _refusal(tmp_path, profile).startswith(message)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({**LOCAL, "cores": [0, 1, 0]}, "cores: core 0 is listed twice; list each core once"),
        ({**LOCAL, "providers": ["cpu", "cpu"]}, "providers: cpu is listed twice; list it once"),
        (
            {**LOCAL, "providers": ["openvino", "OpenVINOExecutionProvider"]},
            "providers: openvino and OpenVINOExecutionProvider name the same provider, "
            "OpenVINOExecutionProvider; list it once",
        ),
        (
            {
                **LOCAL,
                "providers": ["openvino"],
                "provider_options": {"OpenVINOExecutionProvider": {}, "openvino": {}},
            },
            "provider_options: OpenVINOExecutionProvider and openvino name the same provider",
        ),
        (
            {**LOCAL, "providers": ["cpu"], "provider_options": {"cpu": {"use_arena": "0"}}},
            "provider_options: cpu: onnxruntime's CPU provider takes no provider options (it "
            "ignores them); remove them",
        ),
        (  # not "list the providers" first, then "remove them" (review)
            {**LOCAL, "provider_options": {"CPUExecutionProvider": {"use_arena": "0"}}},
            "provider_options: CPUExecutionProvider: onnxruntime's CPU provider takes no "
            "provider options",
        ),
        # a kind that takes no cores says so first: a duplicate there needs no mending
        ({**NPU, "cores": [0, 0]}, "cores: kind 'npu-sim' does not use it"),
    ],
)
def test_a_core_or_provider_listed_twice_is_refused(
    tmp_path: Path, profile: dict[str, Any], message: str
) -> None:
    # They were taken, and measured as if each had been listed once (review).
    assert _refusal(tmp_path, profile).startswith(message)


def test_onnxruntime_ignores_provider_options_given_for_its_cpu_provider(tmp_path: Path) -> None:
    # Why a profile's provider_options for the CPU provider are refused: onnxruntime takes
    # them without a word and creates the provider from the session options alone.
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    options = {"no_such_option": "1", "intra_op_num_threads": "2"}
    session = ort.InferenceSession(str(path), providers=[("CPUExecutionProvider", options)])
    assert session.get_provider_options()["CPUExecutionProvider"] == {}


def test_what_a_kind_uses_is_still_taken() -> None:
    assert validate_profile({**NPU, "runtime": "onnxruntime", "delegate": None}).kind == "npu-sim"
    assert validate_profile({**VELA, "runtime": "tflite"}).runtime == "tflite"
    assert validate_profile({**PUBLISHED, "runtime": "tflite"}).runtime == "tflite"
    adb = validate_profile({**ADB, "threads": 4, "cores": [4], "warmup": 5, "runs": 9})
    assert (adb.threads, adb.cores, adb.warmup, adb.runs) == (4, [4], 5, 9)
    trt = validate_profile({**LOCAL, "runtime": "tensorrt", "runs": 20, "cores": [1]})
    assert trt.run_settings().runs == 20


def test_an_openvino_profile_reaches_the_job_and_what_its_times_mean() -> None:
    profile = validate_profile(
        {
            **SSH,
            "runtime": "openvino",
            "threads": 2,
            "openvino": {"device": "GPU.1", "properties": {"INFERENCE_PRECISION_HINT": "f16"}},
        }
    )
    settings = profile.run_settings()
    job = build_job(["m.onnx"], settings)
    assert job["openvino"] == {
        "device": "GPU.1",
        "properties": {"INFERENCE_PRECISION_HINT": "f16"},
    }
    assert "providers" not in job and "delegate" not in job and job["threads"] == 2
    # The properties change what a time means, as a provider's options do.
    assert ("openvino.properties.INFERENCE_PRECISION_HINT", "f16") in settings.measured_with()
    # No section: OpenVINO's CPU, with the runner's own properties only.
    plain = validate_profile({**LOCAL, "runtime": "openvino"}).run_settings()
    assert build_job([], plain)["openvino"] == {"device": "CPU", "properties": {}}
    assert "openvino" not in build_job([], validate_profile(LOCAL).run_settings())


def test_refusing_amx_reaches_the_job_and_what_its_times_mean() -> None:
    # Each bundled device with AMX refused is its plain twin but for that key.
    pairs = (
        ("local-cpu-litert", "tflite"),
        ("local-cpu-openvino", "onnxruntime"),
        ("local-cpu-openvino-runtime", "openvino"),
    )
    for plain, runtime in pairs:
        refused = load_profile(f"{plain}-no-amx")
        assert (refused.kind, refused.runtime, refused.x86_amx) == ("local", runtime, False)
        assert load_profile(plain).run_settings() == replace(refused.run_settings(), x86_amx=True)
        assert load_profile(plain).local == refused.local
    litert = load_profile("local-cpu-litert-no-amx")
    settings = litert.run_settings()
    assert build_job(["m.tflite"], settings)["x86_amx"] is False
    assert ("x86_amx", "false") in settings.measured_with()
    # The default leaves the runtime to choose, and says nothing of it.
    plain = validate_profile(LOCAL).run_settings()
    assert "x86_amx" not in build_job(["m.onnx"], plain)
    assert "x86_amx" not in dict(plain.measured_with())
    assert validate_profile({**SSH, "x86_amx": False}).run_settings().x86_amx is False


def test_openvino_properties_that_repeat_the_runners_own_mean_nothing_new() -> None:
    def measured_with(device: str, properties: dict[str, str]) -> list[tuple[str, str]]:
        section = {"device": device, "properties": properties}
        profile = validate_profile({**LOCAL, "runtime": "openvino", "openvino": section})
        return list(profile.run_settings().measured_with())

    plain = measured_with("CPU", {})
    # The runner's own values on the CPU, in OpenVINO's other spellings: the same table.
    repeated = {
        "INFERENCE_PRECISION_HINT": "FP32",
        "NUM_STREAMS": "1",
        "ENABLE_CPU_PINNING": "NO",
        "PERFORMANCE_HINT": "latency",
    }
    assert measured_with("CPU", repeated) == plain
    # Another value, or a property the runner does not set, does change what a time means.
    bf16 = [("openvino.properties.INFERENCE_PRECISION_HINT", "bf16")]
    assert measured_with("CPU", {"INFERENCE_PRECISION_HINT": "bf16"}) == sorted(plain + bf16)
    # ... as OpenVINO means it: BF16 is bf16.
    assert measured_with("CPU", {"INFERENCE_PRECISION_HINT": "BF16"}) == sorted(plain + bf16)
    assert ("openvino.properties.NUM_STREAMS", "2") in measured_with("CPU", {"NUM_STREAMS": "2"})
    # NUM_STREAMS is the runner's on the CPU only.
    assert ("openvino.properties.NUM_STREAMS", "1") in measured_with("GPU", {"NUM_STREAMS": "1"})
    assert measured_with("GPU", {"INFERENCE_PRECISION_HINT": "f32"}) == measured_with("GPU", {})


@pytest.mark.parametrize("name", ["npu-32x32-ws", "ethos-u55-128", "local-cpu"])
def test_open_device_gives_the_factory_only_the_keys_given(name: str) -> None:
    # Every key's default in the dict would look given to the factory's own validation.
    if name == "ethos-u55-128":
        pytest.importorskip("ethosu.vela")
    with open_device(name) as device:
        assert device.name == name


def test_a_relative_delegate_library_is_refused(tmp_path: Path) -> None:
    profile = {**LOCAL, "runtime": "tflite", "delegate": "external:libd.so"}
    assert _refusal(tmp_path, profile) == (
        "delegate external:libd.so: give the library's absolute path "
        "on the device (external:/path/to/libdelegate.so); a relative one would be looked for "
        "in the measurement's temporary folder"
    )
