"""TFLite block tables: LiteRT on this host (fp32) and Arm Ethos-U through Vela (int8).

A micro space (a few blocks) keeps the conversions, about 2 s each, affordable.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from devices import open_device
from devices.base import create_device
from devices.profiles import validate_profile
from latency.blocks import SPLIT_STEM_GROUPS, enumerate_blocks, stem_block
from latency.model_cache import ModelCache
from latency.profiler import profile_blocks
from latency.table import LatencyTable, TableError
from once_for_all import SearchSpace, StageSpec, get_space
from once_for_all.network_config import network_config

MICRO = SearchSpace(
    name="micro-test",
    in_channels=1,
    num_classes=10,
    stem_width=8,
    stem_stride=1,
    stem_act="hswish",
    first_block_width=8,
    first_block_act="relu",
    first_block_stride=2,
    stages=(StageSpec(8, 2, "relu", False), StageSpec(16, 2, "hswish", True)),
    final_expand_width=32,
    feature_mix_width=64,
    kernel_sizes=(3, 5),
    expand_ratios=(3,),
    depths=(1,),
    resolutions=(16,),
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(tmp_path_factory.mktemp("cache"))


def test_litert_fp32_table(tmp_path: Path, cache: ModelCache) -> None:
    from ai_edge_litert.interpreter import Interpreter

    profile = validate_profile(
        {"name": "host-litert", "kind": "local", "runtime": "tflite", "warmup": 2, "runs": 5}
    )
    device = create_device(profile.kind, profile.name, profile.model_dump())
    table = profile_blocks(device, MICRO, tmp_path / "lut.json", cache=cache, workers=2)
    specs = enumerate_blocks(MICRO)
    assert set(table.entries) == {s.key for s in specs}
    assert table.header.model_format == "tflite" and table.header.precision == "fp32"
    # Each block file takes NHWC input of the block's shape.
    files = cache.blocks(specs, "tflite", "fp32")
    for spec in specs:
        interpreter = Interpreter(model_path=str(files[spec.key]))
        c, h, w = spec.input_shape
        assert list(interpreter.get_input_details()[0]["shape"]) == [1, h, w, c]


def test_exported_blocks_are_reused(cache: ModelCache) -> None:
    specs = enumerate_blocks(MICRO)
    calls: list[tuple[int, int]] = []
    cache.blocks(
        specs, "tflite", "fp32", progress=lambda _, done, total: calls.append((done, total))
    )
    assert calls == [(0, 0)]  # nothing left to convert


def test_int8_litert_tables_time_the_split_stem_in_one_xnnpack_partition(
    cache: ModelCache,
) -> None:
    from export.runtime_graph import tflite_delegation

    specs = [stem_block(MICRO, 16), stem_block(MICRO, 16, groups=2)]
    files = cache.blocks(specs, "tflite", "int8", workers=1)
    for spec in specs:  # as the int8 files LiteRT runs: hard-swish in XNNPACK's int8 form
        delegation = tflite_delegation(files[spec.key])
        assert (delegation["partitions"], delegation["not_delegated"]) == (1, {}), spec.key


def test_int8_litert_calibration_subnets_run_in_one_xnnpack_partition(
    cache: ModelCache,
) -> None:
    # As export ships a trained subnet's file. With a fresh network's BN statistics the
    # activations grew block by block, and 17 of mbv3-tiny max's residual ADDs ran outside
    # XNNPACK (their int8 scales too far apart): the calibration subnets timed a graph that
    # export never writes, and the predictor overshot exported files by ~50% (walk-through).
    from export.runtime_graph import tflite_delegation

    tiny = get_space("mbv3-tiny")
    config = network_config(tiny, tiny.max_subnet(r=28))
    (path,) = cache.networks([config], "tflite", "int8", workers=1)
    delegation = tflite_delegation(path)
    assert (delegation["partitions"], delegation["not_delegated"]) == (1, {})


def test_vela_table_is_filled_by_the_compiler(tmp_path: Path, cache: ModelCache) -> None:
    with open_device("ethos-u55-128") as device:
        table = profile_blocks(device, MICRO, tmp_path / "lut.json", cache=cache, workers=2)
        assert table.header.runtime == "vela"
        assert (table.header.model_format, table.header.precision) == ("tflite", "int8")
        # int8: the stem also as an int8 file with its stem split runs it, through Vela too
        specs = enumerate_blocks(MICRO, split_stems=(SPLIT_STEM_GROUPS,))
        assert (
            set(table.entries) == {s.key for s in specs} > {s.key for s in enumerate_blocks(MICRO)}
        )
        assert all(m.n == 1 and m.median_ms > 0 for m in table.entries.values())
        # The NPU runs all of the split stem, a stem and its hard-swish per group (Vela writes
        # the concatenation as the groups' places in the output, no op of its own).
        split = table.entries[stem_block(MICRO, 16, groups=2).key].extra
        whole = table.entries[stem_block(MICRO, 16).key].extra
        assert split["cpu_fallback_ops"] == [] and split["cpu_op_count"] == 0
        ops = {
            name: Counter(op["op"] for op in entry["npu_ops"])
            for name, entry in (("split", split), ("whole", whole))
        }
        assert (ops["split"]["HardSwish"], ops["whole"]["HardSwish"]) == (2, 1), ops
        assert ops["split"].total() > ops["whole"].total()
        with pytest.raises(TableError, match="measures int8 models, not fp32"):
            profile_blocks(device, MICRO, tmp_path / "x.json", cache=cache, precision="fp32")
    # Bigger blocks cost the NPU more.
    ms = {k: m.median_ms for k, m in table.entries.items()}
    k3 = [v for k, v in ms.items() if "-k3-" in k and "in:8x8x8" in k]
    k5 = [v for k, v in ms.items() if "-k5-" in k and "in:8x8x8" in k]
    assert np.mean(k5) >= np.mean(k3)
    assert LatencyTable.load(tmp_path / "lut.json").header.fingerprint.runtime == "vela"
    # Vela's blocks are the plain graph (its NPU runs HARD_SWISH), not XNNPACK's form.
    calls: list[tuple[int, int]] = []
    files = cache.blocks(
        specs,
        "tflite",
        "int8",
        graph_form="plain",
        progress=lambda _, done, total: calls.append((done, total)),
    )
    assert calls == [(0, 0)]  # these are the files the table was measured on
    hswish = [s for s in specs if s.kind == "head"]  # the head is hard-swish throughout
    assert hswish and all("HARD_SWISH" in _ops(files[s.key]) for s in hswish)
    assert files[hswish[0].key] != cache.block_path(hswish[0], "tflite", "int8", "xnnpack")


def _ops(path: Path) -> set[str]:
    from export.verify import tflite_interpreter

    return {op["op_name"] for op in tflite_interpreter(path)._get_ops_details()}
