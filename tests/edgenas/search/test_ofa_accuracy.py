"""OFA's published accuracy predictor as the search's accuracy source: parity with OFA's own
``AccuracyPredictor``, one-line errors for files that are not it and resolutions it cannot
encode, and `edgenas search --accuracy ofa-predictor` on the samsung-note10 device."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from devices.profiles import load_profile
from edgenas.search.problem import DeviceTarget, SearchProblem
from latency.blocks import enumerate_blocks
from latency.predictors import LutSumPredictor
from latency.published import import_published
from latency.table import TableError, TableHeader
from once_for_all import get_space
from once_for_all.accuracy_predictor import AccuracyPredictorError
from once_for_all.ofa_accuracy_predictor import OFA_RESOLUTIONS, load_ofa_accuracy_predictor
from tests.support.cli_here import edgenas_here
from tests.support.ofa_files import ofa_files
from tests.support.ofa_reference import as_subnet, import_ofa, ofa_samples

SPACE = "ofa-mbv3-w1.2"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def pth() -> Path:
    return ofa_files() / "acc_predictor.pth"


def test_predictions_equal_ofa_accuracy_predictor(pth: Path) -> None:
    import_ofa()
    from ofa.tutorial.accuracy_predictor import AccuracyPredictor

    reference = AccuracyPredictor(pretrained=False, device="cpu")
    reference.model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
    samples = ofa_samples(200, seed=1)
    theirs = reference.predict_accuracy(samples).numpy()[:, 0]
    space = get_space(SPACE)
    ours = load_ofa_accuracy_predictor(pth, space).predict_many(
        [space.validate(as_subnet(s, space.id)) for s in samples]
    )
    assert np.max(np.abs(ours - theirs)) <= 1e-6
    # A fraction, as OFA's tutorial prints it (x 100 for percent) and as edgenas measures.
    assert ours.min() > 0.6 and ours.max() < 0.9


def test_the_encoding_is_ofas(pth: Path) -> None:
    import_ofa()
    from ofa.tutorial.accuracy_predictor import AccuracyPredictor

    space = get_space(SPACE)
    predictor = load_ofa_accuracy_predictor(pth, space)
    for sample in ofa_samples(20, seed=2):
        subnet = as_subnet(sample, space.id)
        theirs = AccuracyPredictor.spec2feats(
            list(sample["ks"]), list(sample["e"]), list(sample["d"]), sample["r"][0]
        )
        np.testing.assert_array_equal(predictor.encode_many([subnet])[0], theirs.numpy())


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"0.weight": torch.zeros(400, 100)}, "0.weight has shape (400, 100)"),
        ([torch.zeros(3)], "not a state_dict of tensors"),
        ({"format": "edgenas.accuracy-predictor/1"}, "is an edgenas file"),
    ],
    ids=["wrong-shapes", "not-a-state-dict", "edgenas-predictor"],
)
def test_a_file_that_is_not_ofas_predictor_is_one_line(
    pth: Path, tmp_path: Path, payload: object, expected: str
) -> None:
    path = tmp_path / "other.pth"
    if isinstance(payload, dict) and "0.weight" in payload:
        payload = {**torch.load(pth, map_location="cpu", weights_only=True), **payload}
    torch.save(payload, path)
    with pytest.raises(AccuracyPredictorError) as err:
        load_ofa_accuracy_predictor(path, get_space(SPACE))
    assert expected in _one_line(err) and "acc_predictor.pth" in _one_line(err)


def test_a_corrupt_or_missing_file_is_one_line(pth: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(
        AccuracyPredictorError, match=r"corrupt or not a torch file \(unexpected EOF, expected"
    ) as err:
        load_ofa_accuracy_predictor(truncated, get_space(SPACE))
    _one_line(err)
    html = tmp_path / "acc_predictor.pth"  # what a download blocked by a login page leaves
    html.write_text("<!DOCTYPE html>\n<html>")
    with pytest.raises(
        AccuracyPredictorError, match=r"\(a text file starting '<!DOCTYPE html>', not a PyTorch"
    ):
        load_ofa_accuracy_predictor(html, get_space(SPACE))
    with pytest.raises(AccuracyPredictorError, match="not found"):
        load_ofa_accuracy_predictor(tmp_path / "absent.pth", get_space(SPACE))
    # A folder that is there was "not found" (walk-through: --ofa-predictor ofa/).
    with pytest.raises(AccuracyPredictorError, match=f"predictor {tmp_path} is a folder: give"):
        load_ofa_accuracy_predictor(tmp_path, get_space(SPACE))


def test_spaces_and_resolutions_it_cannot_encode_are_refused(pth: Path) -> None:
    with pytest.raises(AccuracyPredictorError, match="5 stages x 4 blocks") as err:
        load_ofa_accuracy_predictor(pth, get_space("mbv3-tiny"))
    _one_line(err)
    assert str(err.value).endswith(
        ": search ofa-mbv3-w1.2 (the supernet whose accuracies it learnt), or evaluate this "
        "space's subnets on a supernet of it (--accuracy predictor or direct)"
    )
    # Networks of the encoding's shape whose accuracies are not w1.2's
    for name, differ in (
        ("ofa-mbv3-w1.0", "(its feature_mix_width, width_mult differ)"),
        ("mbv3-imagenet", "(its feature_mix_width, width_mult, feature_mix_bias differ)"),
    ):
        with pytest.raises(
            AccuracyPredictorError, match=f"space {name}-.* is another network"
        ) as err:
            load_ofa_accuracy_predictor(pth, get_space(name))
        _one_line(err)
        assert differ in str(err.value)
    space = get_space(SPACE)
    transfer = replace(space, num_classes=5)
    with pytest.raises(AccuracyPredictorError, match=r"\(its num_classes differ\)"):
        load_ofa_accuracy_predictor(pth, transfer)
    # its own network offering other resolutions (or renamed) is still w1.2
    load_ofa_accuracy_predictor(pth, replace(space, name="mine", resolutions=(160, 224)))
    predictor = load_ofa_accuracy_predictor(pth, space)
    assert predictor.resolutions == (112, 128, 144, 160, 176, 192, 208, 224)
    with pytest.raises(AccuracyPredictorError, match=r"r=132: .* encodes only 112, 128") as err:
        predictor.predict(space.max_subnet(r=132))
    _one_line(err)


def _table_at(space_name: str, resolutions: tuple[int, ...]) -> LutSumPredictor:
    """A lut-sum predictor with a 1 ms entry per block, profiled at ``resolutions`` only."""
    from devices.measurement import Fingerprint

    space = get_space(space_name)
    keys = [b.key for b in enumerate_blocks(space, resolutions=resolutions)]
    header = TableHeader(
        space_id=space.id,
        device="board",
        fingerprint=Fingerprint("board", "cpu", 1, "n/a", "onnxruntime", "1", 1),
        model_format="onnx",
        precision="fp32",
        resolutions=resolutions,
    )
    return LutSumPredictor(space, header, dict.fromkeys(keys, 1.0))


def test_the_search_offers_only_resolutions_the_predictor_encodes(pth: Path) -> None:
    space = get_space(SPACE)
    ofa = load_ofa_accuracy_predictor(pth, space)

    def problem(resolutions: tuple[int, ...]) -> SearchProblem:
        device = DeviceTarget("board", _table_at(SPACE, resolutions))
        return SearchProblem(
            space,
            ofa.predict_many,
            (device,),
            accuracy_resolutions=ofa.resolutions,
            accuracy_name="OFA's accuracy predictor",
        )

    assert problem((132, 144, 160, 164)).resolutions == (144, 160)
    with pytest.raises(TableError, match=r"scores 112, 128, .* px only") as err:
        _ = problem((132, 164)).resolutions
    _one_line(err)
    assert set(problem(space.resolutions).resolutions) == set(OFA_RESOLUTIONS) - {112}


def search_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return edgenas_here("search", *args)


def search(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenas", "search", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


def test_search_with_ofa_predictor_on_samsung_note10(pth: Path, tmp_path: Path) -> None:
    space = get_space(SPACE)
    # Laid out as a run folder, for the report at the end.
    device = tmp_path / "devices" / "samsung-note10"
    import_published(load_profile("samsung-note10"), space, ofa_files() / "note10", device)
    out = tmp_path / "search"
    proc = search(
        "--accuracy", "ofa-predictor", "--ofa-predictor", pth, "--space", SPACE,
        "--device", device, "--budget-ms", "25", "--trials", "300", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "OFA's predicted ImageNet top-1" in proc.stderr  # the table's column
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["accuracy"].startswith("OFA's predicted ImageNet top-1 (OFA's accuracy predictor")
    assert "not measured" in doc["accuracy"]
    front = doc["front"]
    assert {m["subnet"]["r"] for m in front} <= {160, 176, 192, 208, 224}
    assert all(m["accuracy"]["measured"] is None for m in front)
    (chosen,) = doc["chosen"]
    best = front[chosen["index"]]
    assert best["latency_ms"]["samsung-note10"]["predicted"] <= 25
    assert 0.6 < best["accuracy"]["predicted"] < 0.9
    assert (out / "pareto.png").is_file()
    # The report names the figure, and the device as OFA's published measurements.
    from edgenas.report import build_report
    from edgenas.run_record import RUN_FORMAT, RunDocument, write_run

    write_run(
        tmp_path / "run.json",
        RunDocument(format=RUN_FORMAT, recipe_path="", recipe={}, versions={}, stages={}),
    )
    page = build_report(tmp_path).read_text()
    assert "OFA&#x27;s predicted ImageNet top-1" in page or "OFA's predicted ImageNet top-1" in page
    assert (
        "published by OFA at https://raw.githubusercontent.com/han-cai/files/master/ofa/note10/"
        in page
    )
    # Without the predictor file, or without a space: one line each, before any work
    # (in-process: a process each costs seconds of imports).
    here = search_here("--accuracy", "ofa-predictor", "--space", SPACE, "--device", device)
    assert here.returncode == 2 and "--ofa-predictor PATH" in here.stderr
    assert "Traceback" not in here.stderr
    here = search_here("--accuracy", "ofa-predictor", "--ofa-predictor", pth, "--device", device)
    assert here.returncode == 2 and "give --space" in here.stderr
    here = search_here("--ofa-predictor", pth, "--space", SPACE, "--device", device)
    assert here.returncode == 2 and "--ofa-predictor is for --accuracy ofa-predictor" in here.stderr
    # A predictor file that loads but gives NaN (one bias edited): Optuna fails such trials,
    # and the search asked for the same subnets for ever, at full CPU (walk-through).
    state = torch.load(pth, map_location="cpu", weights_only=True)
    bias = next(k for k in state if k.endswith("bias"))
    state[bias] = state[bias] * float("nan")
    nan_pth = tmp_path / "nan.pth"
    torch.save(state, nan_pth)
    here = search_here(
        "--accuracy", "ofa-predictor", "--ofa-predictor", nan_pth, "--space", SPACE,
        "--device", device, "--budget-ms", "25", "--trials", "50", "--out", tmp_path / "nan",
    )  # fmt: skip
    said = " ".join(here.stderr.split())
    assert here.returncode == 2 and "Traceback" not in said, said
    assert f"error: OFA's accuracy predictor {nan_pth} gave nan for subnet r" in said
    assert "not an accuracy: check its file (a damaged predictor gives NaN)" in said
    # Looked up by a device's name, a folder copied there is another device's: its latencies
    # were taken as that device's, without a word (walk-through).
    profiles = tmp_path / "profiles"
    shutil.copytree(device, profiles / "local-cpu")
    here = search_here(
        "--accuracy", "ofa-predictor", "--ofa-predictor", pth, "--space", SPACE,
        "--profiles", profiles, "--device", "local-cpu", "--out", tmp_path / "mixed",
    )  # fmt: skip
    assert here.returncode == 2 and " ".join(here.stderr.split()) == (
        f"error: --device local-cpu: {profiles / 'local-cpu' / 'predictor.json'} is the "
        "predictor of device 'samsung-note10', not 'local-cpu' (a folder copied or moved "
        "there): profile local-cpu into a folder of its own (edgenas profile local-cpu --space "
        "SPACE --out DIR) and give --device DIR"
    )
    assert not (tmp_path / "mixed").exists()
