"""SearchSpace: the space id, serialisation, built-in spaces, max/min subnets, sampling,
validation errors and the numeric encoding."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from once_for_all import (
    SearchSpace,
    StageSpec,
    Subnet,
    SubnetError,
    get_space,
    list_spaces,
    make_divisible,
)
from once_for_all.search_space import SpaceError

SPACE_NAMES = ("mbv3-imagenet", "mbv3-tiny", "ofa-mbv3-w1.0", "ofa-mbv3-w1.2")
# Pinned: the id names the space in every checkpoint, latency table and subnet file, so a
# change of the hashing or of a built-in space must be deliberate (and old files are refused).
PINNED_IDS = {
    "mbv3-tiny": "mbv3-tiny-92d569b25a",
    "mbv3-imagenet": "mbv3-imagenet-ddeb01fa7d",
    "ofa-mbv3-w1.0": "ofa-mbv3-w1.0-f016b228e1",
    "ofa-mbv3-w1.2": "ofa-mbv3-w1.2-49e8c6e459",
}


@pytest.fixture(params=SPACE_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def exact(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


# ---- built-ins and identity


def test_builtin_spaces_are_listed() -> None:
    assert set(SPACE_NAMES) <= set(list_spaces())
    assert list_spaces() == sorted(list_spaces())


def test_unknown_space_name() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown search space 'mbv3-huge': built-in spaces are "
    ):
        get_space("mbv3-huge")
    with pytest.raises(ValueError, match=r"is not a search space file \(a space\.json"):
        get_space(__file__)  # a file, not a space: it said "unknown search space"
    with pytest.raises(ValueError) as info:
        get_space("")
    assert all(name in str(info.value) for name in SPACE_NAMES)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_space_id_is_stable(name: str) -> None:
    a, b = get_space(name), get_space(name)
    assert a is not b
    assert a == b and hash(a) == hash(b)
    assert a.id == b.id == PINNED_IDS[name]
    assert re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{10}}", a.id)


def changed_values(space: SearchSpace) -> dict[str, Any]:
    """One different value for every field of ``space``."""
    first = space.stages[0]
    stage_changes: dict[str, Any] = {
        "width": first.width + 8,
        "stride": 3 - first.stride,
        "act": "relu" if first.act == "hswish" else "hswish",
        "se": not first.se,
    }
    return {
        "name": space.name + "-copy",
        "in_channels": space.in_channels + 2,
        "num_classes": space.num_classes + 1,
        "stem_width": space.stem_width + 8,
        "stem_stride": 3 - space.stem_stride,
        "stem_act": "relu" if space.stem_act == "hswish" else "hswish",
        "first_block_width": space.first_block_width + 8,
        "first_block_act": "relu" if space.first_block_act == "hswish" else "hswish",
        "first_block_stride": 3 - space.first_block_stride,
        "stages": space.stages[:-1],
        "final_expand_width": space.final_expand_width + 8,
        "feature_mix_width": space.feature_mix_width + 8,
        "kernel_sizes": space.kernel_sizes[:-1],
        "expand_ratios": space.expand_ratios[1:],
        "depths": (*space.depths, space.depths[-1] + 1),
        "resolutions": space.resolutions[:-1],
        "width_mult": 1.25,
        "dropout": 0.2,
        "feature_mix_bias": not space.feature_mix_bias,
    } | {
        # every field of a stage counts too
        f"stages.{f}": (dataclasses.replace(first, **{f: v}), *space.stages[1:])
        for f, v in stage_changes.items()
    }


def test_space_id_changes_with_every_field(space: SearchSpace) -> None:
    changes = changed_values(space)
    fields = {f.name for f in dataclasses.fields(SearchSpace)}
    stage_fields = {f"stages.{f.name}" for f in dataclasses.fields(StageSpec)}
    assert set(changes) == fields | stage_fields  # a new field needs a case here
    ids = {space.id}
    for key, value in changes.items():
        other = dataclasses.replace(space, **{key.split(".")[0]: value})
        assert other.id != space.id, key
        assert other.id == dataclasses.replace(space, **{key.split(".")[0]: value}).id
        ids.add(other.id)
    assert len(ids) == len(changes) + 1


def test_width_mult_scales_channels(space: SearchSpace) -> None:
    wide = dataclasses.replace(space, width_mult=1.5)
    assert wide.id.startswith(space.name + "-") and wide.id != space.id
    assert wide.stage_widths == tuple(make_divisible(s.width * 1.5, 8) for s in space.stages)
    assert all(w % 8 == 0 for w in wide.stage_widths)
    assert all(a > b for a, b in zip(wide.stage_widths, space.stage_widths, strict=True))


@pytest.mark.parametrize(
    ("value", "expected"), [(16, 16), (18, 24), (20, 24), (4, 8), (12, 16), (100, 104), (27, 32)]
)
def test_make_divisible(value: float, expected: int) -> None:
    assert make_divisible(value, 8) == expected


# ---- serialisation


def test_to_dict_from_dict_round_trip(space: SearchSpace) -> None:
    data = space.to_dict()
    assert data["format"] == "edgenas.space/1"
    assert data["id"] == space.id
    again = SearchSpace.from_dict(json.loads(json.dumps(data)))
    assert again == space
    assert again.id == space.id
    assert isinstance(again.stages[0], StageSpec)
    # the id is optional on input: the content alone defines the space
    without_id = {k: v for k, v in data.items() if k != "id"}
    assert SearchSpace.from_dict(without_id).id == space.id


def test_from_dict_refuses_tampered_content(space: SearchSpace) -> None:
    data = json.loads(json.dumps(space.to_dict()))
    data["num_classes"] += 1
    with pytest.raises(
        ValueError,
        match=rf"^search space {re.escape(space.id)} does not match its content \(id .*\); the file was edited$",
    ):
        SearchSpace.from_dict(data)


def test_from_dict_refuses_tampered_id(space: SearchSpace) -> None:
    data = space.to_dict()
    data["id"] = f"{space.name}-0000000000"
    with pytest.raises(
        ValueError, match=rf"does not match its content \(id {re.escape(space.id)}\)"
    ):
        SearchSpace.from_dict(data)


def test_from_dict_refuses_other_format(space: SearchSpace) -> None:
    data = space.to_dict() | {"format": "edgenas.space/2"}
    with pytest.raises(
        ValueError,
        match=exact(
            "not a search space file: format is 'edgenas.space/2', expected 'edgenas.space/1'"
        ),
    ):
        SearchSpace.from_dict(data)
    with pytest.raises(ValueError, match="not a search space file: format is None"):
        SearchSpace.from_dict({k: v for k, v in data.items() if k != "format"})


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("stages"),
        lambda d: d.pop("kernel_sizes"),
        lambda d: d.pop("num_classes"),
        lambda d: d.update(extra=1),
        lambda d: d.update(stages=[{"width": 8}]),
        lambda d: d.update(depths=3),
    ],
    ids=[
        "no-stages",
        "no-kernel-sizes",
        "no-num-classes",
        "unknown-key",
        "bad-stage",
        "bad-depths",
    ],
)
def test_from_dict_refuses_malformed(space: SearchSpace, edit: Any) -> None:
    data = {k: v for k, v in space.to_dict().items() if k != "id"}
    edit(data)
    with pytest.raises(ValueError, match=r"^search space description is incomplete or malformed: "):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kernel_sizes", (5, 3), "kernel_sizes must be non-empty, sorted, unique"),
        ("expand_ratios", (), "expand_ratios must be non-empty, sorted, unique"),
        ("depths", (2, 2, 3), "depths must be non-empty, sorted, unique"),
        ("resolutions", (32, 28), "resolutions must be non-empty, sorted, unique"),
        ("kernel_sizes", (3, 4), "kernel sizes must be odd"),
        ("expand_ratios", (0, 3), "expand_ratios holds 0: every choice must be an integer >= 1"),
        ("depths", (0, 1), "depths holds 0: every choice must be an integer >= 1"),
        ("kernel_sizes", (-3, 3), "kernel_sizes holds -3: every choice must be an integer >= 1"),
        ("resolutions", (28.5,), "resolutions holds 28.5: every choice must be an integer >= 1"),
        ("depths", (True, 2), "depths holds True: every choice must be an integer >= 1"),
        ("stem_stride", 0, "stem_stride=0: allowed an integer >= 1"),
    ],
)
def test_space_checks_its_choices(field: str, value: object, message: str) -> None:
    space = get_space("mbv3-tiny")
    change: dict[str, Any] = {field: value}
    with pytest.raises(SpaceError, match=exact(f"space 'mbv3-tiny': {message}")):
        dataclasses.replace(space, **change)


def test_resolutions_below_the_total_stride_still_build() -> None:
    """A resolution under the network's total stride gives a 1x1 feature map (convolutions
    round up): a CIFAR-style 24-32 px space of mbv3-imagenet (stride 32) trains and runs, and
    checkpoints of such spaces must stay readable."""
    space = dataclasses.replace(get_space("mbv3-imagenet"), resolutions=(24, 28, 32))
    assert space.feature_size(24) == 1


def test_a_bad_space_file_is_one_space_error_naming_the_file_and_field(tmp_path: Path) -> None:
    data = get_space("mbv3-tiny").to_dict()
    path = tmp_path / "space.json"
    path.write_text(json.dumps({**data, "expand_ratios": [0]}))
    # SpaceError is an EdgenasError: the command line prints it as one line, exit 2.
    with pytest.raises(
        SpaceError,
        match=r"^search space file .*space\.json: space 'mbv3-tiny': "
        r"expand_ratios holds 0: every choice must be an integer >= 1$",
    ):
        get_space(str(path))
    path.write_text(json.dumps({**data, "resolutions": [28.5]}))
    with pytest.raises(SpaceError, match=r"resolutions holds 28\.5"):
        get_space(str(path))


# ---- derived shape


def test_block_layout(space: SearchSpace) -> None:
    assert space.max_depth == max(space.depths)
    assert space.num_blocks == len(space.stages) * space.max_depth
    assert [space.stage_of(b) for b in range(space.num_blocks)] == [
        s for s in range(len(space.stages)) for _ in range(space.max_depth)
    ]
    subnet = space.make(
        ks=3, e=3, d=[space.depths[i % 3] for i in range(len(space.stages))], r=space.resolutions[0]
    )
    expected = [s * space.max_depth + i for s, d in enumerate(subnet.d) for i in range(d)]
    assert space.active_blocks(subnet) == expected


def test_builtin_shapes() -> None:
    tiny, imagenet = get_space("mbv3-tiny"), get_space("mbv3-imagenet")
    assert (tiny.in_channels, tiny.num_classes, tiny.resolutions) == (1, 10, (28, 30, 32))
    assert (imagenet.in_channels, imagenet.num_classes) == (3, 1000)
    assert imagenet.resolutions == tuple(range(128, 225, 4))
    assert tiny.feature_size(28) == 2 and tiny.feature_size(32) == 2
    assert imagenet.feature_size(224) == 7 and imagenet.feature_size(128) == 4


# ---- max, min, make


def test_max_and_min_subnets(space: SearchSpace) -> None:
    big, small = space.max_subnet(), space.min_subnet()
    n, stages = space.num_blocks, len(space.stages)
    assert big == Subnet(
        space.id,
        (max(space.kernel_sizes),) * n,
        (max(space.expand_ratios),) * n,
        (max(space.depths),) * stages,
        max(space.resolutions),
    )
    assert small == Subnet(
        space.id,
        (min(space.kernel_sizes),) * n,
        (min(space.expand_ratios),) * n,
        (min(space.depths),) * stages,
        min(space.resolutions),
    )
    r = space.resolutions[1]
    assert space.max_subnet(r=r).r == r and space.min_subnet(r=r).r == r
    # r=0 is a resolution the space does not have, not "the default".
    for largest_or_smallest in (space.max_subnet, space.min_subnet):
        with pytest.raises(SubnetError, match="r=0"):
            largest_or_smallest(r=0)
    assert space.validate(big) is big and space.validate(small) is small
    assert len(space.active_blocks(big)) == n
    assert len(space.active_blocks(small)) == stages * min(space.depths)


def test_make_takes_scalars_or_lists(space: SearchSpace) -> None:
    n = space.num_blocks
    ks = [space.kernel_sizes[i % len(space.kernel_sizes)] for i in range(n)]
    subnet = space.make(ks=ks, e=4, d=3, r=space.resolutions[0])
    assert subnet.ks == tuple(ks)
    assert subnet.e == (4,) * n
    assert subnet.d == (3,) * len(space.stages)
    with pytest.raises(SubnetError, match=exact("ks[0]=4: allowed 3, 5, 7")):
        space.make(ks=4, e=4, d=3, r=space.resolutions[0])


# ---- sampling


def test_sampling_is_reproducible(space: SearchSpace) -> None:
    a = [space.sample(seed) for seed in range(5)]
    assert a == [space.sample(seed) for seed in range(5)]
    assert a == [space.sample(random.Random(seed)) for seed in range(5)]
    assert len(set(a)) == 5
    rng = random.Random(9)
    stream = [space.sample(rng) for _ in range(3)]
    rng = random.Random(9)
    assert stream == [space.sample(rng) for _ in range(3)]
    assert len(set(stream)) == 3
    for subnet in a + stream:
        assert space.validate(subnet) is subnet


def test_sampling_respects_restricted_choices(space: SearchSpace) -> None:
    choices = {
        "ks": list(space.kernel_sizes[:2]),
        "e": [space.expand_ratios[-1]],
        "d": list(space.depths[1:]),
        "r": list(space.resolutions[-2:]),
    }
    seen: dict[str, set[int]] = {k: set() for k in choices}
    for seed in range(20):
        subnet = space.sample(seed, **choices)
        space.validate(subnet)
        seen["ks"].update(subnet.ks)
        seen["e"].update(subnet.e)
        seen["d"].update(subnet.d)
        seen["r"].add(subnet.r)
    # every allowed value comes up, nothing else does
    assert {k: sorted(v) for k, v in seen.items()} == choices


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ks": [3, 4]}, "ks choices [3, 4]: allowed 3, 5, 7"),
        ({"e": [5]}, "e choices [5]: allowed 3, 4, 6"),
        ({"d": [1]}, "d choices [1]: allowed 2, 3, 4"),
        ({"d": []}, "d choices []: allowed 2, 3, 4"),
        ({"r": [29]}, "r choices [29]: allowed "),
    ],
)
def test_sampling_refuses_bad_choices(
    space: SearchSpace, kwargs: dict[str, list[int]], message: str
) -> None:
    with pytest.raises(SubnetError, match=f"^{re.escape(message)}"):
        space.sample(0, **kwargs)


# ---- validation


def _valid(space: SearchSpace) -> Subnet:
    return space.make(ks=5, e=4, d=space.depths[0], r=space.resolutions[0])


def _set(values: tuple[int, ...], index: int, value: int) -> tuple[int, ...]:
    out = list(values)
    out[index] = value
    return tuple(out)


def test_validate_wrong_space(space: SearchSpace) -> None:
    other = get_space("mbv3-tiny" if space.name == "mbv3-imagenet" else "mbv3-imagenet")
    subnet = dataclasses.replace(_valid(space), space=other.id)
    message = f"subnet is for space {other.id!r}, not {space.id!r}: take one made for this supernet"
    with pytest.raises(SubnetError, match=exact(message)):
        space.validate(subnet)


def test_validate_wrong_lengths(space: SearchSpace) -> None:
    base, n, stages = _valid(space), space.num_blocks, len(space.stages)
    cases = [
        (
            dataclasses.replace(base, ks=base.ks[:-1]),
            f"ks has {n - 1} entries; space {space.id} needs {n} (one per block)",
        ),
        (
            dataclasses.replace(base, e=(*base.e, 4)),
            f"e has {n + 1} entries; space {space.id} needs {n} (one per block)",
        ),
        (
            dataclasses.replace(base, ks=()),
            f"ks has 0 entries; space {space.id} needs {n} (one per block)",
        ),
        (
            dataclasses.replace(base, d=base.d[1:]),
            f"d has {stages - 1} entries; space {space.id} needs {stages} (one per stage)",
        ),
        (
            dataclasses.replace(base, d=base.ks),
            f"d has {n} entries; space {space.id} needs {stages} (one per stage)",
        ),
    ]
    for subnet, message in cases:
        with pytest.raises(SubnetError, match=exact(message)):
            space.validate(subnet)


def test_validate_bad_values(space: SearchSpace) -> None:
    base = _valid(space)
    resolutions = ", ".join(map(str, space.resolutions))
    cases = [
        (dataclasses.replace(base, ks=_set(base.ks, 7, 4)), "ks[7]=4: allowed 3, 5, 7"),
        (dataclasses.replace(base, ks=_set(base.ks, 0, 9)), "ks[0]=9: allowed 3, 5, 7"),
        (dataclasses.replace(base, e=_set(base.e, 2, 5)), "e[2]=5: allowed 3, 4, 6"),
        (
            dataclasses.replace(base, e=_set(base.e, space.num_blocks - 1, 0)),
            f"e[{space.num_blocks - 1}]=0: allowed 3, 4, 6",
        ),
        (dataclasses.replace(base, d=_set(base.d, 1, 5)), "d[1]=5: allowed 2, 3, 4"),
        (dataclasses.replace(base, d=_set(base.d, 0, 1)), "d[0]=1: allowed 2, 3, 4"),
        (
            dataclasses.replace(base, r=space.resolutions[0] - 1),
            f"r={space.resolutions[0] - 1}: allowed {resolutions}",
        ),
        (dataclasses.replace(base, r=0), f"r=0: allowed {resolutions}"),
    ]
    for subnet, message in cases:
        with pytest.raises(SubnetError, match=exact(message)):
            space.validate(subnet)


def test_validate_checks_blocks_beyond_depth(space: SearchSpace) -> None:
    # With depth 2, slot 3 of stage 0 is ignored by the network but must still be valid.
    base = _valid(space)
    assert base.d[0] == 2 and 3 not in space.active_blocks(base)
    with pytest.raises(SubnetError, match=exact("ks[3]=4: allowed 3, 5, 7")):
        space.validate(dataclasses.replace(base, ks=_set(base.ks, 3, 4)))


def test_subnet_from_dict_validates(space: SearchSpace) -> None:
    base = _valid(space)
    assert space.subnet_from_dict(base.to_dict()) == base
    data = base.to_dict() | {"e": [4] * (space.num_blocks - 1) + [7]}
    with pytest.raises(SubnetError, match=exact(f"e[{space.num_blocks - 1}]=7: allowed 3, 4, 6")):
        space.subnet_from_dict(data)
    with pytest.raises(SubnetError, match=r"^subnet is missing r: "):
        space.subnet_from_dict({k: v for k, v in base.to_dict().items() if k != "r"})


# ---- encoding


def test_encoding_size(space: SearchSpace) -> None:
    per_block = len(space.kernel_sizes) + len(space.expand_ratios)
    assert space.encoding_size == space.num_blocks * per_block + len(space.resolutions)
    assert get_space("mbv3-tiny").encoding_size == 16 * 6 + 3


def test_encoding_is_one_hot_per_active_block(space: SearchSpace) -> None:
    nk, ne = len(space.kernel_sizes), len(space.expand_ratios)
    subnets = [space.sample(seed) for seed in range(6)] + [space.max_subnet(), space.min_subnet()]
    for subnet in subnets:
        vec = space.encode(subnet)
        assert vec.shape == (space.encoding_size,) and vec.dtype == np.float32
        assert set(np.unique(vec)) <= {0.0, 1.0}
        active = set(space.active_blocks(subnet))
        for b in range(space.num_blocks):
            part = vec[b * (nk + ne) : (b + 1) * (nk + ne)]
            if b in active:
                assert part[:nk].tolist() == [float(k == subnet.ks[b]) for k in space.kernel_sizes]
                assert part[nk:].tolist() == [float(e == subnet.e[b]) for e in space.expand_ratios]
            else:
                assert not part.any(), b
        tail = vec[space.num_blocks * (nk + ne) :]
        assert tail.tolist() == [float(r == subnet.r) for r in space.resolutions]
        assert vec.sum() == 2 * len(active) + 1


def test_encoding_ignores_skipped_blocks(space: SearchSpace) -> None:
    base = space.make(ks=3, e=3, d=2, r=space.resolutions[0])
    skipped = space.max_depth - 1  # last slot of stage 0
    other = dataclasses.replace(base, ks=_set(base.ks, skipped, 7), e=_set(base.e, skipped, 6))
    assert other != base
    assert np.array_equal(space.encode(other), space.encode(base))
    active = dataclasses.replace(base, ks=_set(base.ks, 0, 7))
    assert not np.array_equal(space.encode(active), space.encode(base))


def test_encode_many_equals_stacked_encode(space: SearchSpace) -> None:
    subnets = [space.sample(seed) for seed in range(7)]
    many = space.encode_many(subnets)
    assert many.shape == (7, space.encoding_size) and many.dtype == np.float32
    assert np.array_equal(many, np.stack([space.encode(s) for s in subnets]))
    assert space.encode_many([]).shape == (0, space.encoding_size)
    # different subnets get different codes
    assert len({row.tobytes() for row in many}) == 7


def test_a_space_file_stands_for_its_space(tmp_path: Path) -> None:
    adapted = dataclasses.replace(get_space("mbv3-tiny"), in_channels=3, num_classes=5)
    path = tmp_path / "space.json"
    path.write_text(json.dumps(adapted.to_dict()))
    assert get_space(str(path)) == adapted and get_space(str(path)).id == adapted.id
    assert adapted.id != get_space("mbv3-tiny").id
    path.write_text("{")
    with pytest.raises(ValueError, match=r"^cannot read search space file .*space\.json"):
        get_space(str(path))
    with pytest.raises(ValueError, match=r"or give a space file \(space\.json\)$"):
        get_space("mbv3-huge")
