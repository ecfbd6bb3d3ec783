"""The Vela device: Arm's real Vela compiler on small int8 TFLite models written here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ethosu.vela", reason="ethos-u-vela is not installed")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

from devices import DeviceError, Measurement, VelaDevice, open_device
from devices.sanity_models import tflite_fully_connected
from tests.devices.tflite_models import int8_cnn

HIGH_END = {"system_config": "Ethos_U55_High_End_Embedded", "memory_mode": "Shared_Sram"}
# int8_cnn: conv 16x16 px x 16 ch x 3x3x3, depthwise 8x8 px x 16 ch x 3x3, fc 1024 -> 10
CNN_MACS = 16 * 16 * 16 * 27 + 8 * 8 * 16 * 9 + 1024 * 10

# A user's Vela ini: a slower clock than Arm's high-end U55 system, and a broken system.
USER_INI = """\
[System_Config.Slow_U55]
core_clock=100e6
axi0_port=Sram
axi1_port=OffChipFlash
Sram_clock_scale=1.0
Sram_burst_length=32
Sram_read_latency=32
Sram_write_latency=32
Sram_max_reads=4
Sram_max_writes=4
OffChipFlash_clock_scale=0.125
OffChipFlash_burst_length=128
OffChipFlash_read_latency=64
OffChipFlash_write_latency=0
OffChipFlash_max_reads=2
OffChipFlash_max_writes=0

[System_Config.Broken]
core_clock=fast
axi0_port=Sram
axi1_port=OffChipFlash

[Memory_Mode.Shared_Sram]
const_mem_area=Axi1
arena_mem_area=Axi0
cache_mem_area=Axi0
"""


@dataclass(frozen=True)
class VelaModels:
    cnn: Path
    cnn_cpu: Path  # with a SPACE_TO_DEPTH that the Ethos-U55 cannot run
    float_fc: Path


@pytest.fixture(scope="module")
def vela_models(tmp_path_factory: pytest.TempPathFactory) -> VelaModels:
    folder = tmp_path_factory.mktemp("vela models")
    return VelaModels(
        cnn=int8_cnn(folder / "int8 'cnn'.tflite"),
        cnn_cpu=int8_cnn(folder / "int8_cnn_cpu.tflite", cpu_op=True),
        float_fc=tflite_fully_connected(folder / "float_fc.tflite", dynamic_batch=True),
    )


def _device(accelerator: str = "ethos-u55-128", **kwargs: str) -> VelaDevice:
    return VelaDevice(accelerator, accelerator_config=accelerator, **{**HIGH_END, **kwargs})


@pytest.fixture(scope="module")
def u55_128(vela_models: VelaModels) -> tuple[Measurement, Measurement]:
    """Both int8 models on the bundled profile, in one call."""
    device = open_device("ethos-u55-128")
    assert isinstance(device, VelaDevice)
    cnn, cnn_cpu = device.measure([vela_models.cnn, vela_models.cnn_cpu], profile_ops=True)
    return cnn, cnn_cpu


def test_u55_128_estimates_time_and_cycles(
    vela_models: VelaModels, u55_128: tuple[Measurement, Measurement]
) -> None:
    m = u55_128[0]
    assert m.model == str(vela_models.cnn)
    assert m.n == 1 and m.median_ms > 0 and m.spread == 0.0
    assert m.median_ms == m.mean_ms == m.min_ms == m.p10_ms == m.p90_ms
    extra = m.extra
    assert extra["simulator"] == "vela" and extra["accelerator_config"] == "ethos-u55-128"
    assert extra["core_clock_hz"] == 500e6  # Arm's Ethos_U55_High_End_Embedded
    assert 0 < extra["cycles_npu"] <= extra["cycles_total"]
    assert m.median_ms == pytest.approx(extra["cycles_total"] / extra["core_clock_hz"] * 1e3)
    assert extra["macs"] == CNN_MACS
    assert extra["sram_access_bytes"] > 0 and extra["off_chip_flash_used_bytes"] > 0
    assert m.peak_memory_bytes == extra["sram_used_bytes"] > 0
    assert [op["op"] for op in extra["npu_ops"]] == ["Conv2D", "DepthwiseConv2D", "FullyConnected"]
    assert extra["npu_op_count"] == 3 and extra["cpu_op_count"] == 0
    assert extra["cpu_fallback_ops"] == []
    assert m.per_op_ms is not None and set(m.per_op_ms) == {"conv", "dw", "y"}
    assert sum(m.per_op_ms.values()) == pytest.approx(m.median_ms)


def test_cpu_fallback_is_reported(u55_128: tuple[Measurement, Measurement]) -> None:
    cnn, cnn_cpu = u55_128
    (fallback,) = cnn_cpu.extra["cpu_fallback_ops"]
    assert (fallback["op"], fallback["name"]) == ("SpaceToDepth", "s2d")
    assert "Unsupported" in fallback["reason"]
    assert cnn_cpu.extra["cpu_op_count"] == 1 and cnn_cpu.extra["npu_op_count"] == 3
    assert cnn_cpu.per_op_ms is not None and "s2d" not in cnn_cpu.per_op_ms
    # The CPU part is not in Vela's estimate; the NPU part is the same work as without it.
    assert cnn_cpu.median_ms > 0
    assert cnn_cpu.extra["macs"] == cnn.extra["macs"]


def test_cpu_fallback_is_logged(vela_models: VelaModels, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="devices.vela"):
        _device().measure([vela_models.cnn_cpu])
    (record,) = caplog.records
    assert "int8_cnn_cpu.tflite: 1 operator(s) fall back to the CPU" in record.getMessage()
    assert "SpaceToDepth 's2d'" in record.getMessage()


def test_bigger_arrays_are_faster(vela_models: VelaModels) -> None:
    times = {
        macs: _device(f"ethos-u55-{macs}").measure([vela_models.cnn])[0].median_ms
        for macs in (32, 128, 256)
    }
    assert times[32] > times[128] >= times[256] > 0


def test_user_config_file(vela_models: VelaModels, tmp_path: Path) -> None:
    ini = tmp_path / "my vela.ini"
    ini.write_text(USER_INI)
    slow = _device(system_config="Slow_U55", config=str(ini))
    (m,) = slow.measure([vela_models.cnn])
    assert m.extra["core_clock_hz"] == 100e6 and m.extra["system_config"] == "Slow_U55"
    broken = _device(system_config="Broken", config=str(ini))
    with pytest.raises(DeviceError) as info:
        broken.measure([vela_models.cnn])
    message = str(info.value)
    assert message.startswith(f"device 'ethos-u55-128': Vela failed on {vela_models.cnn}: ")
    assert "could not convert string to float: 'fast'" in message
    assert "\n" not in message


def test_float_model_is_refused(vela_models: VelaModels) -> None:
    with pytest.raises(DeviceError) as info:
        _device().measure([vela_models.cnn, vela_models.float_fc])
    message = str(info.value)
    assert "float_fc.tflite is a float model (FULLY_CONNECTED 'y' outputs FLOAT32)" in message
    assert message.endswith("export it with --int8") and "\n" not in message


def test_other_files_and_runtimes_are_refused(tmp_path: Path, vela_models: VelaModels) -> None:
    device = _device()
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07not a flatbuffer")
    with pytest.raises(DeviceError, match=r"model\.onnx is not a TFLite model; .*--int8"):
        device.measure([onnx_file])
    with pytest.raises(DeviceError, match=r"cannot read .*missing\.tflite: No such file"):
        device.measure([tmp_path / "missing.tflite"])
    with pytest.raises(DeviceError, match=r"runtime 'onnxruntime' does not apply"):
        device.measure([vela_models.cnn], runtime="onnxruntime")
    assert device.measure([]) == []


def test_unknown_accelerator_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        _device("ethos-u55-512")
    message = str(info.value)
    assert message.startswith("device 'ethos-u55-512': unknown accelerator_config 'ethos-u55-512'")
    assert (
        "valid: ethos-u55-32, ethos-u55-64, ethos-u55-128, ethos-u55-256, ethos-u65-256" in message
    )
    profile = tmp_path / "u55-512.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "name": "u55-512",
                "kind": "vela",
                "vela": {"accelerator_config": "ethos-u55-512", **HIGH_END},
            }
        )
    )
    with pytest.raises(
        DeviceError, match=r"device 'u55-512': unknown accelerator_config .*valid: "
    ):
        open_device(profile)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "system_config",
            r"system_config 'Nope' is not defined in .*vela\.ini; it defines: "
            r".*Ethos_U55_High_End_Embedded",
        ),
        (
            "memory_mode",
            r"memory_mode 'Nope' is not defined in .*vela\.ini; it defines: .*Shared_Sram",
        ),
        ("config", r"Vela config 'nope\.ini' not found; .* one of Vela's own: Arm/vela\.ini"),
    ],
)
def test_unknown_system_config_memory_mode_and_file(option: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        _device(**{option: "nope.ini" if option == "config" else "Nope"})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        # "Vela config /etc/passwd: File contains no section headers." (input audit)
        ("root:x:0:0:root:/root:/bin/bash\n", "File contains no section headers."),
        ("[general]\nrun_name = scale\n", "no [System_Config.NAME] section"),
        (b"\x7fELF\x02\x01\x01\x00\xff\xfe", "not a text file"),
    ],
)
def test_a_config_that_is_not_a_vela_ini(tmp_path: Path, content: str | bytes, why: str) -> None:
    config = tmp_path / "passwd"
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    with pytest.raises(DeviceError) as info:
        _device(config=str(config))
    assert str(info.value) == (
        f"device 'ethos-u55-128': Vela config {config} is not a Vela .ini file ({why}); "
        "vela.config takes an ini with [System_Config.NAME] and [Memory_Mode.NAME] sections, "
        "like Vela's own Arm/vela.ini, which is used when vela.config is left out"
    )


def test_open_bundled_profile_end_to_end(vela_models: VelaModels) -> None:
    with open_device("ethos-u55-128") as device:
        assert isinstance(device, VelaDevice) and device.name == "ethos-u55-128"
        (m,) = device.measure([vela_models.cnn])
        assert m.median_ms > 0 and m.per_op_ms is None
        fp = device.fingerprint()
    assert (fp.host, fp.runtime, fp.governor, fp.cores, fp.threads) == ("vela", "vela", "n/a", 1, 1)
    assert fp.cpu_model.startswith("ethos-u55-128 Ethos_U55_High_End_Embedded Shared_Sram (")
    assert fp.runtime_version.startswith(device.vela_version + "+")


def test_fingerprints_tell_configs_apart(tmp_path: Path) -> None:
    ini = tmp_path / "mine.ini"
    ini.write_text(USER_INI)
    devices = [
        _device(),
        _device("ethos-u55-256"),
        _device(memory_mode="Sram_Only"),
        _device(system_config="Ethos_U55_Deep_Embedded"),
        _device(system_config="Slow_U55", config=str(ini)),
    ]
    prints = [d.fingerprint() for d in devices]
    assert len({p.runtime_version for p in prints}) == len(prints)
    assert not any(a.same_target(b) for i, a in enumerate(prints) for b in prints[i + 1 :])
    assert _device().fingerprint() == prints[0]
    assert _device(config="Arm/vela.ini").fingerprint() == prints[0]  # Vela's own, named
    # The ini's content is part of it: an edited file is another target.
    ini.write_text(USER_INI.replace("core_clock=100e6", "core_clock=200e6"))
    assert _device(system_config="Slow_U55", config=str(ini)).fingerprint() != prints[-1]


def test_a_damaged_int8_file_of_the_model_cache_is_named_with_what_to_do(
    tmp_path: Path,
) -> None:
    # The hint to delete a damaged cache file matched only the Python runners' wording, not
    # Vela's (review).
    from latency.blocks import enumerate_blocks
    from latency.model_cache import ModelCache
    from latency.profiler import measure_in_batches
    from once_for_all.search_space import get_space

    cache = ModelCache(tmp_path / "cache")
    (spec,) = enumerate_blocks(get_space("mbv3-tiny"), resolutions=(28,))[:1]
    damaged = cache.blocks([spec], "tflite", "int8")[spec.key]
    for content in (damaged.read_bytes()[:300], b"\x00" * 300):
        damaged.write_bytes(content)
        with pytest.raises(DeviceError) as info:
            measure_in_batches(
                _device(), [damaged], batch_size=4, on_batch=lambda *_: None, cache=cache
            )
        said = str(info.value)
        assert said.startswith(f"device 'ethos-u55-128': {damaged} "), said
        assert said.endswith(
            "; it is a file of the model cache: if it is damaged, delete it and run again to "
            "export it anew"
        ), said


def test_devices_check_shows_the_estimate_to_its_significant_digits() -> None:
    # Vela's estimate of the sanity model, 4.8e-05 ms, printed as "median 0.0000 ms": it read
    # as a failure (walk-through).
    from typer.testing import CliRunner

    from edgenas.cli import app

    result = CliRunner().invoke(app, ["devices", "check", "ethos-u55-128"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "median " in x]
    median = float(line.split("median ", 1)[1].split(" ms", 1)[0])
    assert median > 0 and "median 0.0000 ms" not in line
