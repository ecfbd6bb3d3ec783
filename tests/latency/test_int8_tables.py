"""int8 ONNX tables measure what export ships for the device: blocks with their channels
aligned for the runner's CPU kind, and the stem also as a file with its stem split runs it.

The table is profiled with the real onnxruntime runner on this host, on a micro space."""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import yaml

from devices.base import create_device
from devices.measurement import Fingerprint
from devices.profiles import validate_profile
from export.formats import kernel_isa
from latency.blocks import SPLIT_STEM_GROUPS, enumerate_blocks, stem_block
from latency.end_to_end import MeasuredSubnets
from latency.model_cache import ModelCache
from latency.predictors import LutSumPredictor, load_predictor
from latency.profiler import ProfileSettings, channel_alignment, profile_blocks, reference_file
from latency.table import LatencyTable
from once_for_all.network_config import network_config
from tests.latency.test_tflite_profiles import MICRO  # a micro space: a few blocks
from tests.support.cli_here import edgenas_here

FP = Fingerprint(
    host="board",
    cpu_model="Cortex-A76",
    cores=4,
    governor="performance",
    runtime="onnxruntime",
    runtime_version="1.32.0",
    threads=1,
    machine="aarch64",
)

PROFILE = "name: host-ort\nkind: local\nruntime: onnxruntime\nwarmup: 2\nruns: 5\n"

pytestmark = pytest.mark.slow


def test_the_alignment_is_the_one_export_writes_for_the_device() -> None:
    assert channel_alignment(FP, "onnx", "int8") == "arm64"
    assert channel_alignment(replace(FP, machine="x86_64"), "onnx", "int8") == "x86"
    # A table from before runners said their CPU kind was measured with the x86 rules.
    assert channel_alignment(replace(FP, machine=""), "onnx", "int8") == "x86"
    assert channel_alignment(replace(FP, machine="riscv64"), "onnx", "int8") == "none"
    cuda = replace(FP, accelerator="CUDAExecutionProvider,CPUExecutionProvider")
    assert channel_alignment(cuda, "onnx", "int8") == "none"  # the GPU's kernels, not mlas
    assert channel_alignment(FP, "onnx", "fp32") == "none"
    assert channel_alignment(replace(FP, runtime="tflite"), "tflite", "int8") == "none"


def test_an_int8_onnx_table_times_the_split_stem_on_files_aligned_for_the_host(
    tmp_path: Path,
) -> None:
    cache = ModelCache(tmp_path / "cache")
    profile = validate_profile(yaml.safe_load(PROFILE))
    device = create_device(profile.kind, profile.name, profile.model_dump())
    table = profile_blocks(device, MICRO, tmp_path / "lut.json", cache=cache, precision="int8")
    specs = enumerate_blocks(MICRO, split_stems=(SPLIT_STEM_GROUPS,))
    assert set(table.entries) == {s.key for s in specs}
    assert all(m.median_ms > 0 for m in table.entries.values())

    host = kernel_isa(platform.machine())
    settings = ProfileSettings.of(table.header)
    assert settings.align_channels == host
    calls: list[tuple[int, int]] = []
    files = cache.blocks(
        specs,
        "onnx",
        "int8",
        align_channels=host,
        progress=lambda _, done, total: calls.append((done, total)),
    )
    assert calls == [(0, 0)]  # these are the files the table was measured on
    assert table.header.reference is not None
    assert reference_file(cache, MICRO, table.header) in (cache.root / "onnx-int8").iterdir()

    # The split stem's file: a stem conv per group, reading the quantized input, each with
    # its own output scale (onnxruntime fuses the QDQ pairs into QLinearConv on loading).
    split = stem_block(MICRO, 16, groups=2)
    stems = _stem_convs(files[split.key])
    assert len(stems) == 2 and len(set(stems.values())) == 1
    unaligned = cache.blocks([split], "onnx", "int8", align_channels="none")[split.key]
    assert unaligned != files[split.key]
    assert sorted(_stem_convs(unaligned).values()) == [4, 4]
    if host == "x86":  # each group's 4 channels padded to the x86 kernels' least, 16
        assert sorted(stems.values()) == [16, 16]

    predictor = LutSumPredictor.from_table(MICRO, table)
    subnet = MICRO.min_subnet()
    with_split = predictor.split_stem(2)
    assert with_split is not None
    assert with_split.predict(subnet) - predictor.predict(subnet) == pytest.approx(
        table.ms(split.key) - table.ms(stem_block(MICRO, 16).key)
    )

    # Whole networks with the stem split, measured end to end as the benchmark validates
    # the split prediction (a store of their own: the file does not say which were split).
    store = MeasuredSubnets(tmp_path / "split.json", table.header)
    (ms,) = store.measure(
        device, MICRO, [subnet], cache=cache, settings=settings, passes=1, stem_groups=2
    )
    assert ms > 0
    config = network_config(MICRO, subnet)
    (whole_file,) = cache.networks([config], "onnx", "int8", align_channels=host)
    (split_file,) = cache.networks([config], "onnx", "int8", align_channels=host, stem_groups=2)
    assert (len(_stem_convs(whole_file)), len(_stem_convs(split_file))) == (1, 2)

    # `edgenas latency validate --stem-groups 2`: split files, kept apart from whole ones.
    predictor.save(tmp_path / "predictor.json")
    (tmp_path / "host.yaml").write_text(PROFILE)
    proc = edgenas_here(
        "latency",
        "validate",
        tmp_path / "host.yaml",
        "--predictor",
        tmp_path / "predictor.json",
        "--n",
        "3",
        "--passes",
        "1",
        "--stem-groups",
        "2",
        "--json",
        "--cache",
        cache.root,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 3
    assert not (tmp_path / "validation.json").exists()
    measured = json.loads((tmp_path / "validation-stem2.json").read_text())["subnets"]
    assert len(measured) == 3
    assert (tmp_path / "validation-stem2.png").stat().st_size > 0
    split_files = cache.networks(
        [network_config(MICRO, MICRO.subnet_from_dict(m["subnet"])) for m in measured],
        "onnx",
        "int8",
        align_channels=host,
        stem_groups=2,
        progress=lambda _, done, total: calls.append((done, total)),
    )
    assert calls[-1] == (0, 0) and all(len(_stem_convs(f)) == 2 for f in split_files)

    # Files exported with --stem-groups 3: the table has no entry for them until profiled so.
    validate3 = ["latency", "validate", tmp_path / "host.yaml", "--predictor"]
    validate3 += [tmp_path / "predictor.json", "--stem-groups", "3", "--cache", cache.root]
    proc = edgenas_here(*validate3)
    assert proc.returncode == 2
    assert "profile the device again with --stem-groups 3" in proc.stderr
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(MICRO.to_dict()))
    before = {k: m.median_ms for k, m in table.entries.items()}
    proc = edgenas_here(
        "profile",
        tmp_path / "host.yaml",
        "--space",
        space_file,
        "--out",
        tmp_path,
        "--precision",
        "int8",
        "--stem-groups",
        "3",
        "--calibrate",
        "0",
        "--cache",
        cache.root,
    )
    assert proc.returncode == 0, proc.stderr
    grown = LatencyTable.load(tmp_path / "lut.json")
    added = {stem_block(MICRO, r, groups=3).key for r in MICRO.resolutions}
    assert set(grown.entries) == set(before) | added
    # The table resumed: only the new split stems were measured.
    assert all(grown.entries[k].median_ms == ms for k, ms in before.items())
    three = load_predictor(tmp_path / "predictor.json").split_stem(3)
    assert three is not None and three.predict(subnet) > 0
    split3 = stem_block(MICRO, 16, groups=3)
    assert split3.key in added
    file3 = cache.blocks([split3], "onnx", "int8", align_channels=host)[split3.key]
    assert len(_stem_convs(file3)) == 3


def _stem_convs(path: Path) -> dict[str, int]:
    """Output scale name -> output channels of each Conv that reads the (quantized) input."""
    graph = onnx.load(path).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    made = {o: n for n in graph.node for o in n.output}
    readers = {i: n for n in graph.node for i in n.input}

    def reads_the_input(name: str) -> bool:
        while name in made and made[name].op_type in ("QuantizeLinear", "DequantizeLinear", "Pad"):
            name = made[name].input[0]
        return name == graph.input[0].name

    convs: dict[str, int] = {}
    for conv in graph.node:
        if conv.op_type == "Conv" and reads_the_input(conv.input[0]):
            weight = made[conv.input[1]].input[0]  # the weight's DequantizeLinear reads it
            quantize = readers[conv.output[0]]
            assert quantize.op_type == "QuantizeLinear"
            convs[quantize.input[1]] = dims[weight][0]
    return convs


def test_an_extended_int8_table_times_its_split_stems_at_the_new_resolutions(
    tmp_path: Path,
) -> None:
    from tests.latency.test_end_to_end import CountingDevice  # the local device, counting calls

    space = replace(MICRO, resolutions=(16, 20))
    cache, lut, device = ModelCache(tmp_path / "cache"), tmp_path / "lut.json", CountingDevice()
    made = profile_blocks(
        device, space, lut, cache=cache, precision="int8", resolutions=(16,), stem_groups=(3,)
    )
    device.calls.clear()
    # Without --stem-groups 3: the table times the stem in 3 groups, so 20 px gets it too.
    extended = profile_blocks(device, space, lut, cache=cache, precision="int8")
    every = enumerate_blocks(space, split_stems=(SPLIT_STEM_GROUPS, 3))
    assert set(extended.entries) == {s.key for s in every}
    assert stem_block(space, 20, groups=3).key in extended.entries
    assert {k: extended.entries[k] for k in made.entries} == made.entries
    new = [s for s in every if s.key not in made.entries]
    files = cache.blocks(new, "onnx", "int8", align_channels=kernel_isa(platform.machine()))
    reference = reference_file(cache, space, extended.header)
    measured = {p for call in device.calls for p in call if p != reference}
    assert measured == set(files.values())  # only what 20 px adds
    assert extended.header.resolutions == (16, 20) and extended.header.added_resolutions == ((20,),)
    assert LutSumPredictor.from_table(space, extended).split_stem(3) is not None
