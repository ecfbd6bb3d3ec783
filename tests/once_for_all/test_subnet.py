"""Subnet: OFA's ``{"space", "ks", "e", "d", "r"}`` notation, its JSON form and its type checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from once_for_all import SearchSpace, Subnet, SubnetError, get_space
from once_for_all.subnet import SUBNET_KEYS

KEYS = "space, ks, e, d, r"


@pytest.fixture(params=["mbv3-imagenet", "mbv3-tiny"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


def sample_dict() -> dict[str, Any]:
    return get_space("mbv3-tiny").sample(3).to_dict()


def test_keys_are_ofa_notation() -> None:
    assert SUBNET_KEYS == ("space", "ks", "e", "d", "r")


def test_dict_and_json_round_trip(space: SearchSpace) -> None:
    for seed in range(5):
        subnet = space.sample(seed)
        data = subnet.to_dict()
        assert list(data) == list(SUBNET_KEYS)
        assert data["ks"] == list(subnet.ks) and data["d"] == list(subnet.d)
        assert Subnet.from_dict(data) == subnet
        text = subnet.to_json()
        assert json.loads(text) == data
        again = Subnet.from_json(text)
        assert again == subnet and hash(again) == hash(subnet)
        assert isinstance(again.ks, tuple) and all(type(k) is int for k in again.ks)
        assert space.validate(again) == subnet


def test_load_from_file(space: SearchSpace, tmp_path: Path) -> None:
    subnet = space.sample(11)
    path = tmp_path / "subnet.json"
    path.write_text(subnet.to_json())
    assert Subnet.load(path) == subnet
    assert Subnet.load(str(path)) == subnet
    assert space.validate(Subnet.load(path)) == subnet


def test_load_refuses_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(
        SubnetError, match=exact(f"cannot read subnet file {path}: No such file or directory")
    ):
        Subnet.load(path)
    with pytest.raises(
        SubnetError, match=exact(f"cannot read subnet file {tmp_path}: Is a directory")
    ):
        Subnet.load(tmp_path)


def test_load_refuses_invalid_json_file(tmp_path: Path) -> None:
    path = tmp_path / "subnet.json"
    path.write_text('{"space": "mbv3-tiny", "ks": [3,')
    with pytest.raises(SubnetError, match=rf"^subnet file {path}: subnet is not valid JSON: "):
        Subnet.load(path)  # it named no file (issue 24: --enqueue bad.json)
    path.write_bytes(b"\xff\xfe binary")
    with pytest.raises(
        SubnetError, match=exact(f"subnet file {path} is not a text file (not UTF-8)")
    ):
        Subnet.load(path)


def test_key_is_short_and_stable() -> None:
    subnet = get_space("mbv3-tiny").make(
        ks=[3, 5, 7, 3] * 4, e=[3, 4, 6, 4] * 4, d=[2, 3, 4, 2], r=30
    )
    assert subnet.key == "r30-d2342-k3573357335733573-e3464346434643464"
    assert get_space("mbv3-tiny").sample(1).key != get_space("mbv3-tiny").sample(2).key


def test_integer_floats_are_accepted() -> None:
    data = sample_dict()
    data["ks"] = [float(k) for k in data["ks"]]
    data["r"] = 28.0
    subnet = Subnet.from_dict(data)
    assert all(type(k) is int for k in subnet.ks)
    assert subnet.r == 28 and type(subnet.r) is int


@pytest.mark.parametrize(
    "text",
    ['{"space": "x", ', "not json", "", "{'space': 'x'}"],
    ids=["truncated", "word", "empty", "single-quotes"],
)
def test_invalid_json(text: str) -> None:
    with pytest.raises(SubnetError, match=r"^subnet is not valid JSON: "):
        Subnet.from_json(text)


@pytest.mark.parametrize("value", [[1, 2], "subnet", 3, None])
def test_not_an_object(value: object) -> None:
    message = f"a subnet must be a JSON object with keys {KEYS}"
    with pytest.raises(SubnetError, match=exact(message)):
        Subnet.from_dict(value)  # type: ignore[arg-type]
    with pytest.raises(SubnetError, match=exact(message)):
        Subnet.from_json(json.dumps(value))


def test_missing_keys() -> None:
    data = sample_dict()
    del data["d"], data["r"]
    with pytest.raises(SubnetError, match=exact(f"subnet is missing d, r: expected keys {KEYS}")):
        Subnet.from_dict(data)
    with pytest.raises(
        SubnetError, match=exact(f"subnet is missing space, ks, e, d, r: expected keys {KEYS}")
    ):
        Subnet.from_dict({})


def test_unknown_keys() -> None:
    data = sample_dict() | {"w": [1.0], "extra": 1}
    with pytest.raises(
        SubnetError, match=exact(f"subnet has unknown key(s) extra, w: allowed {KEYS}")
    ):
        Subnet.from_dict(data)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("space", 3, "subnet 'space' must be a space id string, got 3"),
        ("space", None, "subnet 'space' must be a space id string, got None"),
        ("r", 28.5, "subnet 'r' must be an integer resolution in pixels, got 28.5"),
        ("r", "28", "subnet 'r' must be an integer resolution in pixels, got '28'"),
        ("r", True, "subnet 'r' must be an integer resolution in pixels, got True"),
        ("r", None, "subnet 'r' must be an integer resolution in pixels, got None"),
        ("ks", "3573", "subnet 'ks' must be a list of integers, got '3573'"),
        ("e", 4, "subnet 'e' must be a list of integers, got 4"),
        ("d", {"0": 2}, "subnet 'd' must be a list of integers, got {'0': 2}"),
        ("ks", [3, 3.5, 3], "ks[1]=3.5: must be an integer"),
        ("ks", [True, 3], "ks[0]=True: must be an integer"),
        ("e", [4, 4, "4"], "e[2]='4': must be an integer"),
        ("d", [2, None], "d[1]=None: must be an integer"),
        ("d", [2, [3]], "d[1]=[3]: must be an integer"),
    ],
)
def test_type_errors(key: str, value: object, message: str) -> None:
    data = sample_dict() | {key: value}
    with pytest.raises(SubnetError, match=exact(message)):
        Subnet.from_dict(data)
    with pytest.raises(SubnetError, match=exact(message)):
        Subnet.from_json(json.dumps(data))


def test_subnet_error_is_a_value_error() -> None:
    assert issubclass(SubnetError, ValueError)


def test_values_are_checked_by_the_space_not_the_parser(space: SearchSpace) -> None:
    data = space.sample(0).to_dict() | {"r": 5}
    subnet = Subnet.from_dict(data)  # types are fine
    with pytest.raises(SubnetError, match=r"^r=5: allowed "):
        space.validate(subnet)


def test_ofas_arch_dicts_round_trip(tmp_path: Path) -> None:
    """OFA's own arch dicts (its ArchManager's samples, the form its EvolutionFinder returns)
    read as subnets of the space at hand, and back; a subnet file may hold one."""
    from edgenas.subnet_choice import choose_subnet
    from tests.support.ofa_reference import import_ofa, ofa_samples

    import_ofa()
    space = get_space("ofa-mbv3-w1.2")
    for sample in ofa_samples(50, seed=4):
        subnet = space.validate(Subnet.from_ofa(sample, space.id))
        assert subnet.to_ofa() == sample
        assert subnet.r == sample["r"][0] and list(subnet.ks) == sample["ks"]
    path = tmp_path / "best_arch.json"
    path.write_text(json.dumps(sample))
    assert choose_subnet(str(path), space) == subnet
    path.write_text(json.dumps({**sample, "r": 176}))  # a bare number reads as well
    assert choose_subnet(str(path), space).r == 176


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wid": 1.0}, r"wid=1\.0: edgenas spaces have one width .*give wid: null"),
        ({"r": None}, r"subnet 'r' must be an integer resolution in pixels, got None"),
        ({"depth": 3}, r"unknown key\(s\) depth: allowed ks, e, d, r, wid"),
    ],
)
def test_bad_ofa_arch_dicts_are_one_line(change: dict[str, Any], message: str) -> None:
    arch = {"wid": None, "ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": [160], **change}
    with pytest.raises(SubnetError, match=message):
        Subnet.from_ofa(arch, "ofa-mbv3-w1.2-49e8c6e459")
    with pytest.raises(SubnetError, match=r"OFA arch dict has no r: expected ks, e, d, r, wid"):
        Subnet.from_ofa({"ks": [3], "e": [3], "d": [2]}, "x")
