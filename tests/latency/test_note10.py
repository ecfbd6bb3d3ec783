"""OFA's Samsung Note10 tables as the device samsung-note10: parity with OFA's own
``LatencyTable.predict_efficiency``, the CLI import, and one-line errors for bad tables."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from devices.profiles import load_profile
from edgenas.cli.app import app
from latency.predictors import load_predictor
from latency.published import import_published
from latency.table import LatencyTable, TableError
from once_for_all import get_space
from tests.support.ofa_files import ofa_files
from tests.support.ofa_reference import as_subnet, import_ofa, ofa_latency_table, ofa_samples

SPACE = "ofa-mbv3-w1.2"
RESOLUTIONS = (160, 176, 192, 208, 224)


@pytest.fixture(scope="module")
def note10() -> Path:
    return ofa_files() / "note10"


def test_note10_predictions_equal_ofa_latency_table(note10: Path, tmp_path: Path) -> None:
    space = get_space(SPACE)
    imported = import_published(load_profile("samsung-note10"), space, note10, tmp_path)
    reference = ofa_latency_table(note10)
    import_ofa()
    samples = ofa_samples(200, seed=0)
    theirs = np.array([reference.predict_efficiency(s) for s in samples])
    subnets = [space.validate(as_subnet(s, space.id)) for s in samples]
    ours = imported.predictor.predict_many(subnets)
    assert np.max(np.abs(ours - theirs) / theirs) <= 1e-6
    # The files on disk say the same, and the predictor is read back equal.
    again = load_predictor(tmp_path / "predictor.json")
    np.testing.assert_array_equal(again.predict_many(subnets), ours)
    table = LatencyTable.load(tmp_path / "lut.json")
    assert table.header.resolutions == RESOLUTIONS
    assert table.header.fingerprint.runtime == "published"
    assert "raw.githubusercontent.com/han-cai/files/master/ofa/note10" in (
        table.header.fingerprint.cpu_model
    )
    assert table.header.fingerprint.runtime_version.startswith("sha256:")


def test_cli_profile_imports_the_tables_and_search_offers_only_their_resolutions(
    note10: Path, tmp_path: Path
) -> None:
    out = tmp_path / "samsung-note10"
    args = ["profile", "samsung-note10", "--space", SPACE, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--tables", str(note10), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "lut-sum" and summary["device"] == "samsung-note10"
    predictor = load_predictor(out / "predictor.json")
    assert predictor.header.resolutions == RESOLUTIONS
    space = get_space(SPACE)
    ms = predictor.predict(space.max_subnet(r=224))
    assert 15 < ms < 200  # OFA's Note10 budgets run 15-60 ms
    # The space starts at 128 px, the tables at 160: predict keeps to the tables' resolutions.
    path = out / "predictor.json"
    for choice, r in (("min", 160), ("max", 224), ("random", None)):
        result = CliRunner().invoke(
            app, ["latency", "predict", "--predictor", str(path), "--subnet", choice, "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["subnet"]["r"] in ((r,) if r else RESOLUTIONS)
    subnet = tmp_path / "subnet.json"
    subnet.write_text(json.dumps(space.min_subnet(r=128).to_dict()))
    result = CliRunner().invoke(
        app, ["latency", "predict", "--predictor", str(path), "--subnet", str(subnet)]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "samsung-note10's published tables cover resolutions 160, 176, 192, 208, 224, " in (
        result.output
    )
    assert "--resolution" not in result.output  # nothing more can be measured
    # The tables are fp32 TFLite: asking for anything else is refused, not imported as fp32.
    for given in (
        ["--precision", "int8"],
        ["--format", "onnx"],
        ["--stem-groups", "3"],
        ["--stem-groups", "3", "--precision", "int8"],
    ):
        result = CliRunner().invoke(
            app, [*args[:-1], str(tmp_path / "other"), "--tables", str(note10), *given]
        )
        assert result.exit_code == 2 and "Traceback" not in result.output, given
        assert "samsung-note10's published tables are of fp32 tflite models, not " in " ".join(
            result.output.split()
        )
        assert "leave out --precision/--format/--stem-groups" in result.output, given
    assert not (tmp_path / "other" / "lut.json").exists()
    result = CliRunner().invoke(app, [*args, "--tables", str(note10), "--precision", "fp32"])
    assert result.exit_code == 0, result.output  # what the tables are: accepted
    # Without the folder: one line saying what to give.
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "--tables DIR" in result.output and "Traceback" not in result.output


def bad_folder(note10: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "tables"
    shutil.copytree(note10, folder)
    return folder


def test_a_missing_layer_is_one_line_naming_key_and_file(note10: Path, tmp_path: Path) -> None:
    folder = bad_folder(note10, tmp_path)
    path = folder / "192_lookup_table.yaml"
    doc = yaml.safe_load(path.read_text())
    key = next(k for k in doc if k.startswith("Conv_1-"))
    del doc[key]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TableError) as err:
        import_published(load_profile("samsung-note10"), get_space(SPACE), folder, tmp_path / "o")
    message = str(err.value)
    assert "\n" not in message and key in message and str(path) in message
    assert not (tmp_path / "o" / "lut.json").exists()


def test_an_entry_without_a_mean_is_one_line(note10: Path, tmp_path: Path) -> None:
    folder = bad_folder(note10, tmp_path)
    path = folder / "160_lookup_table.yaml"
    doc = yaml.safe_load(path.read_text())
    key = next(k for k in doc if k.startswith("Conv-"))
    del doc[key]["mean"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TableError, match="has no 'mean'") as err:
        import_published(load_profile("samsung-note10"), get_space(SPACE), folder, tmp_path / "o")
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"), [("std", float("nan")), ("std", -1.0), ("mean", float("inf")), ("count", 0)]
)
def test_an_entry_with_a_figure_no_run_gives_is_one_line(
    note10: Path, tmp_path: Path, field: str, value: float
) -> None:
    # A NaN std was taken and written into lut.json, which JSON readers then refuse (review).
    folder = bad_folder(note10, tmp_path)
    path = folder / "160_lookup_table.yaml"
    doc = yaml.safe_load(path.read_text())
    key = next(k for k in doc if k.startswith("Conv-"))
    doc[key][field] = value
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TableError) as err:
        import_published(load_profile("samsung-note10"), get_space(SPACE), folder, tmp_path / "o")
    message = str(err.value)
    assert f"entry {key} has {field} {value!r}" in message and "download it again" in message
    assert not (tmp_path / "o" / "lut.json").exists()


def test_a_file_cut_short_is_called_incomplete_not_another_space(
    note10: Path, tmp_path: Path
) -> None:
    # Its first entries are the space's: a broken download, not tables for another space.
    folder = bad_folder(note10, tmp_path)
    path = folder / "176_lookup_table.yaml"
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(dict(list(doc.items())[:5])))
    with pytest.raises(
        TableError,
        match=rf"{path} lacks \d+ of the \d+ layers space {get_space(SPACE).id} needs at 176 px "
        r"\(first \S+\): the file is incomplete; download it again from https://\S+"
        r"176_lookup_table\.yaml$",
    ):
        import_published(load_profile("samsung-note10"), get_space(SPACE), folder, tmp_path / "o")


def test_a_space_adapted_to_its_data_is_another_space_not_an_incomplete_file(
    note10: Path, tmp_path: Path
) -> None:
    # Its 10-class classifier is the one layer the tables lack (they hold OFA's 1000-class
    # one): downloading them again cannot help (review).
    space = dataclasses.replace(get_space(SPACE), num_classes=10)
    with pytest.raises(TableError, match=r"has no entry Logits-.*the tables do not cover"):
        import_published(load_profile("samsung-note10"), space, note10, tmp_path / "o")


def test_a_missing_file_and_a_foreign_file_are_one_line(note10: Path, tmp_path: Path) -> None:
    folder = bad_folder(note10, tmp_path)
    (folder / "176_lookup_table.yaml").unlink()
    profile, space = load_profile("samsung-note10"), get_space(SPACE)
    with pytest.raises(TableError, match=r"no 176_lookup_table\.yaml in .*download it from https"):
        import_published(profile, space, folder, tmp_path / "o")
    (folder / "176_lookup_table.yaml").write_text("- just\n- a list\n")
    with pytest.raises(TableError, match="is not an OFA latency table"):
        import_published(profile, space, folder, tmp_path / "o")


def test_a_space_without_the_tables_resolutions_names_the_one_they_fit(
    note10: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        TableError,
        match=r"none of which space mbv3-tiny-\S+ has \(28, 30, 32\): .*--space ofa-mbv3-w1\.2",
    ):
        import_published(load_profile("samsung-note10"), get_space("mbv3-tiny"), note10, tmp_path)


def test_another_space_lacks_layers_and_says_which(note10: Path, tmp_path: Path) -> None:
    # The w1.0 space's channel widths are not in the Note10 tables (they are w1.2's).
    with pytest.raises(TableError, match=r"has no entry Conv-input:\d+x\d+x3-output:\S+x16"):
        import_published(
            load_profile("samsung-note10"), get_space("ofa-mbv3-w1.0"), note10, tmp_path
        )


def test_the_published_device_runs_nothing() -> None:
    from devices import DeviceError, open_device

    with pytest.raises(DeviceError, match="runs no models"):
        open_device("samsung-note10")


def test_a_fleet_imports_the_published_device_beside_measured_ones(
    note10: Path, tmp_path: Path
) -> None:
    from latency.fleet import FleetJob, ProfileOptions, profile_fleet
    from latency.model_cache import ModelCache

    job = FleetJob("samsung-note10", tmp_path / "n10", ProfileOptions(tables=note10))
    (result,) = profile_fleet([job], get_space(SPACE), cache=ModelCache(tmp_path / "cache"))
    assert result.ok, result.error
    assert result.kind == "lut-sum" and result.blocks == result.total_blocks > 0
    assert (tmp_path / "n10" / "predictor.json").is_file()
    # Without --tables the device fails with its one line; the fleet reports it.
    (result,) = profile_fleet(
        [FleetJob("samsung-note10", tmp_path / "n10b")],
        get_space(SPACE),
        cache=ModelCache(tmp_path / "cache"),
    )
    assert not result.ok and result.error is not None and "--tables DIR" in result.error


def test_tables_for_measured_devices_only_is_refused(note10: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["profile", "local-cpu", "--space", SPACE, "--tables", str(note10), "--out", str(tmp_path)],
    )
    assert result.exit_code != 0 and "--tables is the folder of a published device" in result.output


def test_export_measures_nothing_on_the_published_device(tmp_path: Path) -> None:
    from edgenas.stages.export import _measure

    said: list[str] = []
    space = get_space(SPACE)
    latency = _measure(["samsung-note10"], tmp_path, [], space.max_subnet(), {}, said.append)
    # No file runs there; without a predictor (profile --tables) there is no prediction either.
    assert latency == {
        "samsung-note10": {
            "fingerprint": {},
            "files": {},
            "not_measured": latency["samsung-note10"]["not_measured"],
            "predicted": None,
        }
    }
    assert latency["samsung-note10"]["not_measured"].startswith(
        "not measurable: published tables (measured by their publisher on "
    )
    assert said == ["not measured on samsung-note10: it is published tables, not a device"]


def test_exports_hint_for_published_tables_imports_them_for_the_subnets_resolution(
    note10: Path, tmp_path: Path
) -> None:
    # It said to profile the device without --tables (which that command refuses) and without
    # the resolution the table lacked (review).
    from edgenas.stages.export import ExportJob, _no_predictor

    space = get_space(SPACE)
    profiles = tmp_path / "profiles"
    job = ExportJob(tmp_path / "supernet.pt", "max", tmp_path / "o", profiles=profiles)
    out = profiles / "samsung-note10"

    def hint(r: int) -> str:
        return _no_predictor("samsung-note10", "samsung-note10", space, space.max_subnet(r=r), job)

    assert hint(176) == (
        f"samsung-note10: no latency prediction (no {out}/predictor.json): the card has no "
        f"latency for it; import its tables with 'edgenas profile samsung-note10 --space {SPACE} "
        f"--tables TABLES --out {out}' (TABLES: the folder of its R_lookup_table.yaml files)"
    )
    # Tables imported at 160 px only: the command extends them to the subnet's.
    import_published(load_profile("samsung-note10"), space, note10, out, resolutions=(160,))
    assert hint(176).startswith(
        f"samsung-note10: no latency prediction ({out}/predictor.json does not cover r176): "
    )
    assert f"--tables TABLES --resolution 160 --resolution 176 --out {out}'" in hint(176)
    # A resolution OFA published no table for: nothing to import.
    assert hint(128) == (
        "samsung-note10: no latency prediction: its published tables cover 160, 176, 192, 208, "
        "224 px, not r128; the card has no latency for it (export a subnet at one of those for "
        "a prediction)"
    )


def test_the_published_prediction_reaches_the_card_and_the_run_summary(
    note10: Path, tmp_path: Path
) -> None:
    """With its tables imported, export's card entry for samsung-note10 holds their
    prediction for the subnet, and the run summary's row shows it (it showed none)."""
    from edgenas.run_summary import _predicted_ms
    from edgenas.stages.export import _measure

    space = get_space(SPACE)
    imported = import_published(load_profile("samsung-note10"), space, note10, tmp_path / "p")
    subnet = space.max_subnet(r=224)
    predictors = {"samsung-note10": imported.predictor}
    latency = _measure(["samsung-note10"], tmp_path, [], subnet, predictors, lambda _: None)
    entry = latency["samsung-note10"]
    assert entry["predicted"] == imported.predictor.predict(subnet) > 0
    assert entry["fingerprint"]["runtime"] == "published"
    assert _predicted_ms(entry, None) == entry["predicted"]
    assert _predicted_ms(None, None) is None


def test_a_recipe_that_fixes_the_int8_stem_groups_imports_the_published_device(
    note10: Path, tmp_path: Path
) -> None:
    # The run's profile stage passed export.stem_groups to every device, and the published
    # one refused --stem-groups the user never gave (final review).
    from edgenas.pipeline import _profile
    from edgenas.recipe import load_recipe
    from edgenas.run_folder import RunFolder, RunOptions

    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: n10\nspace: {SPACE}\nstages: [profile]\nexport: {{stem_groups: 4}}\n"
        f"devices:\n  - {{name: samsung-note10, budget_ms: 30, tables: {note10}}}\n"
    )
    recipe = load_recipe(path)
    said: list[str] = []
    _profile(recipe, RunFolder(tmp_path / "run", recipe, path), RunOptions(quiet=True), said.append)
    assert (tmp_path / "run" / "devices" / "samsung-note10" / "predictor.json").is_file(), said
