"""benchmarks/int8_kernels.py: every conv of the subnet is either in a timed kind or counted as
untimed, each kind's chains are the convs it names, and the JSON adds up. Structure only: the
figures are the benchmark's."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from torch import nn

from benchmarks.export import random_model
from benchmarks.int8_kernels import (
    CHAIN,
    ENCODINGS,
    Kind,
    bare_depthwise_chain,
    bare_kind,
    chain,
    conv_kinds,
    main,
    residual_sums,
    write_pair,
)
from export.runtime_graph import onnx_float_nodes
from once_for_all import get_space


def test_every_conv_is_in_one_kind_or_counted_untimed() -> None:
    space = get_space("mbv3-tiny")
    model = random_model(space, space.max_subnet())
    kinds, untimed = conv_kinds(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(kinds.values()) + sum(untimed.values()) == len(convs)
    # Strided depthwise convs and the stem change the input size along a chain.
    assert untimed["conv 3x3 1->8 stride 1"] == 1
    assert all("stride 2" in what or what.startswith("conv 3x3") for what in untimed)
    # Squeeze-excite's convs run at 1x1 with their own activations.
    se = {k.act for k in kinds if k.size == 1 and k.channels[1] != 256}
    assert se == {"relu", "hsigmoid"}
    assert all(k.kernel == 1 or k.depthwise for k in kinds)


def test_a_chain_repeats_its_kind_and_quantizes_into_fused_int8_nodes(tmp_path: Path) -> None:
    pointwise = Kind(False, (8, 48), 1, 4, "hswish")
    fp32, int8 = write_pair(chain(pointwise, 3), (1, 8, 4, 4), tmp_path, "pw")
    convs = [n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    weights = [list(i.dims) for i in onnx.load(str(int8)).graph.initializer if len(i.dims) == 4]
    # cin -> cout -> cin: the 1x1 conv and its mirror (8 channels may be padded for this
    # CPU's kernels), all int8 kernels.
    assert len(weights) == 3 and sum(w[0] == 48 for w in weights) == 2
    assert onnx_float_nodes(int8) == {}
    depthwise = chain(Kind(True, (16, 16), 7, 4, "relu"), CHAIN)
    assert sum(isinstance(m, nn.Conv2d) and m.groups == 16 for m in depthwise.modules()) == CHAIN


@pytest.mark.parametrize("encoding", [None, *ENCODINGS])
def test_a_bare_depthwise_chain_is_that_encoding_end_to_end(
    encoding: str | None, tmp_path: Path
) -> None:
    kind = Kind(True, (16, 16), 7, 4, "none")
    path = tmp_path / "chain.onnx"
    onnx.save(bare_depthwise_chain(kind, CHAIN, encoding), str(path))
    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path)).graph
    weights = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type in ("Conv", "QLinearConv")]
    assert len(convs) == CHAIN
    assert all(next(a.i for a in n.attribute if a.name == "group") == 16 for n in convs)
    if encoding is None:
        assert {n.op_type for n in convs} == {"Conv"}
    else:
        act, weight, zero = ENCODINGS[encoding]
        assert {n.op_type for n in convs} == {"QLinearConv"}
        for node in convs:
            w, w_zero = (onnx.numpy_helper.to_array(weights[node.input[i]]) for i in (3, 5))
            assert w.dtype == np.dtype(weight) and set(w_zero.tolist()) == {zero}
        x_zero = onnx.numpy_helper.to_array(weights[convs[0].input[2]])
        assert x_zero.dtype == np.dtype(act)
        # onnxruntime keeps every conv on its int8 kernel: nothing runs in float between.
        assert onnx_float_nodes(path) == {}
    x = np.random.default_rng(0).standard_normal((1, 16, 4, 4), dtype=np.float32)
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert out.shape == x.shape


def test_bare_chains_have_the_channels_export_pads_to_on_this_cpu() -> None:
    from export.formats import kernel_isa

    kind = bare_kind(Kind(True, (72, 72), 3, 40, "relu"))
    expected = {"x86": 80, "arm64": 72}.get(kernel_isa(platform.machine()), 72)
    assert (kind.channels, kind.act) == ((expected, expected), "none")


def test_the_json_adds_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        sys, "argv", ["int8_kernels", "--subnet", "min", "--rounds", "1", "--encodings"]
    )
    main()
    result = json.loads(capsys.readouterr().out)
    space = get_space("mbv3-tiny")
    model = random_model(space, space.min_subnet())
    kinds, untimed = conv_kinds(model)
    sums = residual_sums(model)
    assert sums and sum(sums.values()) == sum(
        getattr(m, "residual", False) for m in model.modules()
    )
    assert [r["count"] for r in result["rows"]] == [kinds[k] for k in sorted(kinds)] + [
        sums[s] for s in sorted(sums)
    ]
    assert [r["kind"] for r in result["rows"][len(kinds) :]] == [
        f"residual sum {c}ch at {hw}x{hw}" for c, hw in sorted(sums)
    ]
    assert result["not_timed"] == dict(untimed)
    assert result["accounted_us"] == pytest.approx(
        sum(r["int8_minus_fp32_us"] for r in result["rows"]), abs=0.1
    )
    whole = result["model"]
    assert whole["int8_over_fp32"] == pytest.approx(whole["int8_ms"] / whole["fp32_ms"], rel=1e-2)
    assert set(result["machine"]) == {"cpu", "flags", "onnxruntime"}
    # One bare row per depthwise kind, whatever its activation, each timed in every encoding.
    bare = {bare_kind(k) for k in kinds if k.depthwise}
    assert sorted(r["kind"] for r in result["encodings"]) == sorted(
        f"depthwise {k.kernel}x{k.kernel} {k.channels[0]}ch at {k.size}x{k.size}" for k in bare
    )
    assert all(set(r["us"]) == {"fp32", *ENCODINGS} for r in result["encodings"])
