from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgenas.recipe import RecipeError, load_recipe
from tests.edgenas.conftest import MICRO_RECIPE

RECIPES = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_bundled_recipes_load(path: Path) -> None:
    recipe = load_recipe(path)
    # a name, or a space adapted to the data (transfer-own-data: its number of classes)
    name = recipe.space if isinstance(recipe.space, str) else recipe.space.name
    assert recipe.search_space().name == name
    if "train" not in recipe.planned_stages:  # ofa-imagenet: an imported supernet
        assert recipe.train is None
        return
    config = recipe.train_config()
    assert config.phases[0].kd_ratio == 0
    assert all(p.epochs >= 1 for p in config.phases)


def test_a_train_section_is_needed_by_the_train_stage_only(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(MICRO_RECIPE)
    del data["train"]
    data["devices"] = [{"name": "local-cpu", "budget_ms": 1.0}]
    data["stages"] = ["profile", "search", "export"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_recipe(path).train is None
    data["stages"] = ["train", "profile"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="stage train needs a 'train' section; for a supernet"):
        load_recipe(path)


def test_default_schedule_is_ofa(tmp_path: Path) -> None:
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "fmnist.yaml")
    names = [p.name for p in recipe.train_config().phases]
    assert names == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]


def test_phase_options_reach_the_training_schedule(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(MICRO_RECIPE)
    data["train"]["phases"][1].update(
        subnets_per_step=3,
        sandwich=True,
        distill="inplace",
        label_loss=False,
        smallest=False,
        ema_decay=0.999,
    )
    phase = load_recipe(_write(tmp_path, data)).train_config().phases[1]
    assert (phase.sandwich, phase.distill, phase.label_loss, phase.smallest, phase.ema_decay) == (
        True,
        "inplace",
        False,
        False,
        0.999,
    )
    default = load_recipe(_write(tmp_path, MICRO_RECIPE)).train_config().phases[1]
    assert (default.label_loss, default.smallest, default.ema_decay) == (True, True, 0.0)


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refusal(tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> str:
    """The one line that refuses the micro recipe once ``change`` edits it."""
    data = copy.deepcopy(MICRO_RECIPE)
    change(data)
    with pytest.raises(RecipeError) as err:
        load_recipe(_write(tmp_path, data))
    return str(err.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["train"].__setitem__("batchsize", 3),
            r"train\.batchsize: unknown key; did you mean batch_size\?",
        ),
        (
            lambda r: r["train"].__setitem__("phases", []),
            r"train\.phases: List should have at least 1 item",
        ),
        (
            lambda r: r["train"]["phases"][2].__setitem__("epochs", "two"),
            r"train\.phases\[2\]\.epochs: .*integer",
        ),
        (
            # val_size 0 used to train and report a validation accuracy of 0.000 (issue 24)
            lambda r: r["data"].__setitem__("val_size", 0),
            r"data\.val_size: .*greater than or equal to 1",
        ),
        (
            lambda r: r.__setitem__("colour", "red"),
            r"colour: unknown key \(known: name, space, data, ",
        ),
        # pydantic said "Extra inputs are not permitted"; a typo's key is named (walk-through)
        (
            lambda r: r.__setitem__("devices", [{"name": "local-cpu", "budgetms": 1}]),
            r"devices\[0\]\.budgetms: unknown key; did you mean budget_ms\?",
        ),
        (lambda r: r["train"]["phases"][1].__setitem__("ks", [3, 4]), r"ks: \[4\] not in space"),
        (
            lambda r: r["train"]["phases"][0].__setitem__("kd_ratio", 1.0),
            r"first phase trains the teacher",
        ),
        (
            lambda r: r["train"]["phases"][1].update(sandwich=True, subnets_per_step=1),
            r"subnets_per_step: 1 is too few for sandwich",
        ),
        (
            lambda r: r["train"]["phases"][1].update(distill="inplace"),
            r"distill: inplace .* set sandwich: true",
        ),
        (
            lambda r: r["train"]["phases"][1].update(distill="self"),
            r"distill: Input should be 'teacher' or 'inplace'",
        ),
        (
            lambda r: r["train"]["phases"][1].__setitem__("label_loss", "sometimes"),
            r"train\.phases\[1\]\.label_loss: Input should be a valid boolean",
        ),
        (
            lambda r: r["train"]["phases"][1].__setitem__("ema_decay", 1.0),
            r"train\.phases\[1\]\.ema_decay: Input should be less than 1",
        ),
        (lambda r: r.__setitem__("space", "resnet"), r"unknown search space 'resnet'"),
        (lambda r: r["train"].pop("phases"), r"give either 'phases' or both 'epochs'"),
        (lambda r: r.__setitem__("stages", ["train", "deploy"]), r"stages\[1\]: Input should be"),
        (
            lambda r: r.update(stages=["train", "search"]),
            r"stage search needs at least one entry under 'devices'",
        ),
        (
            lambda r: r.update(devices=[{"name": "a", "budget_ms": 1}, {"name": "b"}]),
            r"give every device a budget_ms, or none",
        ),
        (
            # found after training and profiling, and worded for the command line (run audit)
            lambda r: r.update(
                stages=["train", "search"], devices=[{"name": "a"}], search={"sampler": "guided"}
            ),
            r"search\.sampler: guided searches under latency budgets: give the devices a budget_ms",
        ),
        (
            lambda r: r.update(devices=[{"name": "a", "budget_ms": 0}]),
            r"devices\[0\]\.budget_ms: 0 is not a positive budget in ms",
        ),
        (
            lambda r: r.update(devices=[{"name": "a", "budget_ms": [15, 18, 15]}]),
            r"devices\[0\]\.budget_ms: each budget once",
        ),
        (
            lambda r: r.update(devices=[{"name": "a", "budget_ms": []}]),
            r"devices\[0\]\.budget_ms: give at least one budget",
        ),
        (
            lambda r: r.update(devices=[{"name": "a", "budget_ms": 1}], search={"sampler": "cma"}),
            r"search\.sampler: Input should be 'nsga2', 'tpe', 'random', 'evolution' or 'guided'",
        ),
        (
            lambda r: r.update(devices=[{"name": "a", "budget_ms": 1}], export={"formats": ["pb"]}),
            r"export\.formats\[0\]: Input should be 'onnx' or 'tflite'",
        ),
        (  # every file was exported, measured and listed twice (walk-through)
            lambda r: r.update(
                devices=[{"name": "a", "budget_ms": 1}], export={"formats": ["onnx", "onnx"]}
            ),
            r"export\.formats: onnx is named twice: give each format once",
        ),
        (
            # The switch of old (true/false) is now the CPU kind to pad for.
            lambda r: r.update(export={"align_channels": False}),
            r"export\.align_channels: Input should be 'auto', 'x86', 'arm64' or 'none'",
        ),
        (
            lambda r: r.update(export={"device_check_images": -1}),
            r"export\.device_check_images: Input should be greater than or equal to 0",
        ),
        (
            lambda r: r.update(search={"accuracy": "ofa-predictor"}),
            r"search: .*accuracy: ofa-predictor and ofa_predictor: PATH .* go together",
        ),
        (
            lambda r: r.update(search={"ofa_predictor": "acc_predictor.pth"}),
            r"search: .*go together",
        ),
    ],
)
def test_bad_recipes_name_the_key(tmp_path: Path, mutate: Any, message: str) -> None:
    data = copy.deepcopy(MICRO_RECIPE)
    mutate(data)
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, data))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    ("section", "set_value"),
    [
        (r"train\.phases\[0\]\.lr", lambda r, v: r["train"]["phases"][0].__setitem__("lr", v)),
        (
            r"devices\[0\]\.budget_ms",
            lambda r, v: r.update(devices=[{"name": "a", "budget_ms": v}]),
        ),
        (r"data\.val_size", lambda r, v: r["data"].__setitem__("val_size", v)),
    ],
)
def test_numbers_must_be_finite(tmp_path: Path, section: str, set_value: Any, value: float) -> None:
    # `lr: .inf` used to train a NaN supernet and write it (issue 24).
    data = copy.deepcopy(MICRO_RECIPE)
    set_value(data, value)
    with pytest.raises(RecipeError, match=rf"{section}: .*finite number"):
        load_recipe(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("key", "set_value"),
    [
        (r"train\.phases\[0\]\.lr", lambda r: r["train"]["phases"][0].update(lr=1e39)),
        (r"train\.weight_decay", lambda r: r["train"].update(weight_decay=1e300)),
        (r"train\.lr", lambda r: r["train"].update(phases=None, epochs=[1] * 6, lr=1e39)),
    ],
)
def test_rates_no_schedule_trains_with_are_refused_at_load(
    tmp_path: Path, key: str, set_value: Any
) -> None:
    # Beyond float32 they failed in SGD's step with a traceback (review).
    data = copy.deepcopy(MICRO_RECIPE)
    set_value(data)
    with pytest.raises(
        RecipeError, match=rf"{key}: Input should be less than or equal to 1000000$"
    ):
        load_recipe(_write(tmp_path, data))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  phases: [a, b\n  seed: 0\n")
    with pytest.raises(RecipeError, match=r"not valid YAML at line 4, column 7: expected ','"):
        load_recipe(bad)
    bad.write_text("name: x\ntrain:\n  seed: 0\n  threads: 1\n  threads: 2\n")
    with pytest.raises(
        RecipeError, match=r"not valid YAML at line 5, column 3: found duplicate key 'threads'"
    ):
        load_recipe(bad)
    # an anchor merged in may be overridden: that is YAML, not a repeated key
    bad.write_text("base: &b {seed: 0, threads: 1}\nname: x\ntrain:\n  <<: *b\n  threads: 2\n")
    with pytest.raises(RecipeError) as err:  # refused for what the recipe lacks, read whole
        load_recipe(bad)
    assert "duplicate" not in str(err.value) and "give either 'phases'" in str(err.value)
    bad.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(RecipeError, match=r"is not a text file \(not UTF-8\)"):
        load_recipe(bad)
    bad.write_text("- a list")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(bad)


def test_a_space_section_adapts_a_builtin_space_to_the_data(tmp_path: Path) -> None:
    recipe = copy.deepcopy(MICRO_RECIPE)
    recipe["space"] = {"name": "mbv3-tiny", "in_channels": 1, "num_classes": 10}
    same = load_recipe(_write(tmp_path, recipe)).search_space()
    assert same.id == load_recipe(_write(tmp_path, MICRO_RECIPE)).search_space().id
    recipe["space"] = {"name": "mbv3-imagenet", "num_classes": 100}
    adapted = load_recipe(_write(tmp_path, recipe)).search_space()
    assert (adapted.name, adapted.in_channels, adapted.num_classes) == ("mbv3-imagenet", 3, 100)
    recipe["space"] = {"name": "mbv3-tiny", "classes": 5}
    with pytest.raises(
        RecipeError, match=r"space\.classes: unknown key; did you mean num_classes\?"
    ):
        load_recipe(_write(tmp_path, recipe))


def test_ofa_predictor_and_published_tables_are_recipe_keys(tmp_path: Path) -> None:
    data = copy.deepcopy(MICRO_RECIPE)
    data.update(
        devices=[{"name": "samsung-note10", "tables": "ofa/note10", "budget_ms": [32, 15, 23]}],
        search={"accuracy": "ofa-predictor", "ofa_predictor": "ofa/acc_predictor.pth"},
    )
    recipe = load_recipe(_write(tmp_path, data))
    assert recipe.devices[0].tables == "ofa/note10"
    # Several budgets on one device, as OFA's tutorial searches the Note10 (15-32 ms).
    assert recipe.devices[0].budgets() == (32.0, 15.0, 23.0)
    assert recipe.search.ofa_predictor == "ofa/acc_predictor.pth"


def test_per_op_is_a_device_key_that_reruns_the_profile_stage_only_when_set(
    tmp_path: Path,
) -> None:
    from edgenas.stage_inputs import profile_inputs

    data = copy.deepcopy(MICRO_RECIPE)
    data["devices"] = [{"name": "local-cpu", "per_op": True}, {"name": "npu-32x32-ws"}]
    data["stages"] = ["train", "profile"]
    recipe = load_recipe(_write(tmp_path, data))
    with_ops, without = recipe.devices
    assert with_ops.per_op and not without.per_op
    assert profile_inputs(recipe, with_ops)["device"]["per_op"] is True
    # Left out when not set, so runs recorded before the key existed stay up to date.
    assert "per_op" not in profile_inputs(recipe, without)["device"]


def test_a_profile_key_added_later_changes_recorded_runs_only_when_set(tmp_path: Path) -> None:
    from devices.profiles import DeviceProfile
    from edgenas.stage_inputs import profile_inputs

    data = copy.deepcopy(MICRO_RECIPE)
    data["devices"] = [{"name": "npu-32x32-ws"}, {"name": "local-cpu-litert-no-amx"}]
    data["stages"] = ["train", "profile"]
    recipe = load_recipe(_write(tmp_path, data))
    npu, litert = (profile_inputs(recipe, device)["profile"] for device in recipe.devices)
    # A profile at x86_amx's default records what it recorded before the key existed: its
    # run's tables (hours of a board's time) stay up to date.
    assert set(npu) == set(DeviceProfile.model_fields) - {"x86_amx"}
    assert litert["x86_amx"] is False


@pytest.mark.parametrize(
    ("stem_groups", "timed"), [("auto", ()), (1, ()), (2, ()), (3, (3,)), (5, (5,))]
)
def test_a_recipe_exporting_its_stem_in_groups_profiles_int8_tables_with_them(
    tmp_path: Path, stem_groups: int | str, timed: tuple[int, ...]
) -> None:
    from edgenas.stage_inputs import profile_inputs, timed_stem_groups

    data = copy.deepcopy(MICRO_RECIPE)
    data["devices"] = [{"name": "local-cpu", "precision": "int8", "budget_ms": 1.0}]
    data["export"] = {**data.get("export", {}), "stem_groups": stem_groups}
    recipe = load_recipe(_write(tmp_path, data))
    # The split every int8 table times (2, as auto splits) needs nothing more.
    assert timed_stem_groups(recipe) == timed
    inputs = profile_inputs(recipe, recipe.devices[0])
    # Left out when there is nothing more to time: recorded runs stay up to date.
    assert inputs.get("stem_groups", []) == list(timed)


@pytest.mark.parametrize(
    ("key", "set_value", "bound"),
    [
        # Each crashed with a traceback, the last after training (input audit).
        ("data.image_size", lambda r: r["data"].update(image_size=100000), 4096),
        ("data.seed", lambda r: r["data"].update(seed=2**70), 2**32 - 1),
        ("train.seed", lambda r: r["train"].update(seed=2**32), 2**32 - 1),
        ("train.threads", lambda r: r["train"].update(threads=10**9), 1024),
        ("search.seed", lambda r: r.update(search={"seed": 8589934592}), 2**32 - 1),
        (
            "train.phases[0].subnets_per_step",
            lambda r: r["train"]["phases"][0].update(subnets_per_step=10**6),
            100,
        ),
    ],
)
def test_numbers_beyond_what_can_run_are_refused_at_load(
    tmp_path: Path, key: str, set_value: Any, bound: int
) -> None:
    line = _refusal(tmp_path, set_value)
    assert line.endswith(f"{key}: Input should be less than or equal to {bound}")


def test_the_largest_seeds_load(tmp_path: Path) -> None:
    data = copy.deepcopy(MICRO_RECIPE)
    data["data"]["seed"] = data["train"]["seed"] = 2**32 - 1
    data["search"] = {"seed": 2**32 - 1}
    recipe = load_recipe(_write(tmp_path, data))
    assert recipe.data.seed == recipe.search.seed == recipe.train_config().seed == 2**32 - 1


@pytest.mark.parametrize(
    ("set_value", "message"),
    [
        # val_size: true trained with a validation set of one image (input audit).
        (
            lambda r: r["data"].update(val_size=True),
            "data.val_size: Input should be a valid integer, not true",
        ),
        (
            lambda r: r.update(devices=[{"name": "local-cpu", "per_op": "yes"}]),
            "devices[0].per_op: Input should be a valid boolean, not 'yes'",
        ),
        (
            lambda r: r.update(export={"int8": "yes"}),
            "export.int8: Input should be a valid boolean, not 'yes'",
        ),
        (
            lambda r: r["train"]["phases"][1].update(sandwich="yes"),
            "train.phases[1].sandwich: Input should be a valid boolean, not 'yes'",
        ),
        (
            lambda r: r["train"]["phases"][2].update(epochs=True),
            "train.phases[2].epochs: Input should be a valid integer, not true",
        ),
        (
            lambda r: r["train"].update(batch_size=64.0),
            "train.batch_size: Input should be a valid integer, not 64.0",
        ),
        (
            lambda r: r["data"].update(source=3),
            "data.source: Input should be a valid string, not 3",
        ),
    ],
)
def test_values_of_another_type_are_not_coerced(
    tmp_path: Path, set_value: Any, message: str
) -> None:
    assert _refusal(tmp_path, set_value).endswith(message)


def test_ints_still_load_where_a_number_is_asked(tmp_path: Path) -> None:
    # YAML reads `lr: 1` as an int: strictness must not refuse it for a float key.
    data = copy.deepcopy(MICRO_RECIPE)
    data["train"].update(momentum=0, weight_decay=0)
    data["train"]["phases"][0].update(lr=1, warmup_epochs=1, kd_ratio=0)
    data["devices"] = [
        {"name": "local-cpu", "budget_ms": 15},
        {"name": "npu-32x32-ws", "budget_ms": [1, 2]},
    ]
    data["export"] = {"min_int8_agreement": 1}
    recipe = load_recipe(_write(tmp_path, data))
    first = recipe.train_config().phases[0]
    assert (first.lr, first.warmup_epochs, recipe.train_config().momentum) == (1.0, 1.0, 0.0)
    assert recipe.devices[0].budgets() == 15.0 and recipe.devices[1].budgets() == (1.0, 2.0)


def test_exponents_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 3e-5 as a string, which the strict types refused as not a number.
    text = _write(tmp_path, copy.deepcopy(MICRO_RECIPE)).read_text()
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("train:\n", "train:\n  weight_decay: 3e-5\n  momentum: 9E-1\n", 1))
    config = load_recipe(path).train_config()
    assert (config.weight_decay, config.momentum) == (3e-5, 0.9)


def test_a_warmup_longer_than_its_phase_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(MICRO_RECIPE)
    data["train"]["phases"][0]["warmup_epochs"] = 5  # the phase has 1 epoch
    with pytest.raises(RecipeError) as err:
        load_recipe(_write(tmp_path, data))
    assert str(err.value).endswith(
        "train.phases[0]: warmup_epochs: 5 is more than the phase's 1 epoch(s): warm up for at "
        "most 1"
    )
    data["train"]["phases"][0]["warmup_epochs"] = 1  # the whole phase: allowed
    assert load_recipe(_write(tmp_path, data)).train_config().phases[0].warmup_epochs == 1


@pytest.mark.parametrize(
    ("set_value", "message"),
    [
        (
            lambda r: r.update(space=None),
            "space: give a built-in space's name (mbv3-imagenet, mbv3-tiny, ofa-mbv3-w1.0, "
            "ofa-mbv3-w1.2) or a space file, or {name: SPACE, in_channels: N, num_classes: N} "
            "to adapt one; not null",
        ),
        (
            lambda r: r.update(space=3),
            "or a space file, or {name: SPACE, in_channels: N, num_classes: N} to adapt one; not 3",
        ),
        (
            lambda r: r.update(space={"name": "mbv3-tiny", "num_classes": 1}),
            "space.num_classes: Input should be greater than or equal to 2",
        ),
        (
            lambda r: r.update(export={"stem_groups": 0}),
            "export.stem_groups: 0 is not a number of groups: give 1 or more, or auto",
        ),
        (  # before, dropped without a word (export audit)
            lambda r: r.update(export={"int8": False, "qat_epochs": 2}),
            "export: qat_epochs shapes the int8 files, and int8 is false: set int8: true, or "
            "leave qat_epochs out",
        ),
        (
            lambda r: r.update(data=None),
            "data: give a mapping of its keys (source, val_size, train_limit, image_size, seed, "
            "stream); not null",
        ),
        (
            lambda r: r["train"]["phases"].__setitem__(1, "kernel"),
            "train.phases[1]: give a mapping of its keys (name, epochs, lr, warmup_epochs, ks, e, "
            "d, subnets_per_step, kd_ratio, sort_channels, sandwich, distill, label_loss, "
            "smallest, ema_decay); not 'kernel'",
        ),
        (
            lambda r: r.update(devices=[{"name": "local-cpu", "budget_ms": 1, "calibrate": 5}]),
            "devices[0]: calibrate: 5 subnets cannot fit a calibrated predictor; give 0 (lut-sum "
            "only) or at least 10",
        ),
        (
            lambda r: r.update(train=None),
            "stage train needs a 'train' section; for a supernet you imported (edgenas import "
            "ofa-supernet), leave train out of 'stages'",
        ),
    ],
)
def test_errors_say_what_is_allowed_in_the_recipes_terms(
    tmp_path: Path, set_value: Any, message: str
) -> None:
    # pydantic's words leaked: "space.adapted: Input should be a valid dictionary or instance
    # of SpaceSection", "export.stem_groups.constrained-int: ... (and 1 more)" (input audit).
    line = _refusal(tmp_path, set_value)
    assert line.startswith(f"recipe {tmp_path / 'r.yaml'}: ") and line.endswith(message)
    for internal in (
        "Section",
        "adapted",
        "constrained-int",
        "Value error",
        "(top level)",
        " more)",
    ):
        assert internal not in line
