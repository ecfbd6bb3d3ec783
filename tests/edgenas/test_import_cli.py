"""`edgenas import ofa-supernet`: the run folder it writes, and one line (exit 2, nothing
written) for every file that is not the OFA MobileNetV3 supernet asked for."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgenas.cli import app
from edgenas.stages.ofa_import import import_ofa_supernet
from once_for_all import get_space, load_supernet
from tests.edgenas.conftest import MICRO_RECIPE
from tests.edgenas.test_user_errors import edgenas, error_line
from tests.support.cli_here import edgenas_here
from tests.support.ofa_reference import import_ofa
from tests.support.ofa_supernets import save_reference


@pytest.fixture(scope="module")
def ofa_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ofa")
    files = {w: root / f"ofa_mbv3_d234_e346_k357_w{w}" for w in ("1.0", "1.2")}
    for w, path in files.items():
        save_reference(float(w), path)
    return files


def test_import_writes_a_run_folder_every_command_takes(
    ofa_files: dict[str, Path], tmp_path: Path
) -> None:
    source, out = ofa_files["1.0"], tmp_path / "run"
    proc = edgenas("import", "ofa-supernet", source, "--out", out)
    assert proc.returncode == 0, proc.stderr
    space = get_space("ofa-mbv3-w1.0")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    summary = " ".join(proc.stderr.split())
    assert f"space {space.id}" in summary and "7,678,880 parameters" in summary
    assert digest in summary
    assert sorted(p.name for p in out.iterdir()) == ["space.json", "supernet.pt"]
    assert get_space(str(out / "space.json")) == space  # what edgenas profile --space takes
    net, _, payload = load_supernet(out / "supernet.pt")
    assert net.space == space and payload["imported"]["sha256"] == digest
    # A run on it (stages without train): the report said it had no supernet.pt yet (review).
    from edgenas.report.collect import RunData, _history
    from edgenas.report.page import _training
    from edgenas.run_record import RunDocument

    history, imported = _history(out)
    assert history == [] and imported == f"{payload['imported']['ofa_net_id']} imported from OFA"
    page = _training(RunData(out, cast(RunDocument, {}), history=history, imported=imported))
    assert f"No training history: supernet.pt is {imported}, not trained here." in page


def _edit(
    source: Path, change: Callable[[dict[str, torch.Tensor]], object]
) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        state = torch.load(source, weights_only=True)["state_dict"]
        change(state)
        torch.save({"state_dict": state}, path)
        return path

    return make


def _resnet50_keys(path: Path) -> Path:
    # OFA's ResNet50 supernet's key names (its 150 MB of weights do not matter here).
    ofa = import_ofa()
    net = ofa.imagenet_classification.elastic_nn.networks.OFAResNets(
        dropout_rate=0,
        depth_list=[0, 1, 2],
        expand_ratio_list=[0.2, 0.25, 0.35],
        width_mult_list=[0.65, 0.8, 1.0],
    )
    torch.save({"state_dict": {k: torch.zeros(1) for k in net.state_dict()}}, path)
    return path


def _proxyless(path: Path) -> Path:
    ofa = import_ofa()
    net = ofa.imagenet_classification.elastic_nn.networks.OFAProxylessNASNets(
        dropout_rate=0, width_mult=1.3, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6]
    )
    torch.save({"state_dict": net.state_dict()}, path)
    return path


def _bad_files(files: dict[str, Path]) -> dict[str, tuple[Callable[[Path], Path], str]]:
    """Case name -> (make the file at a path, what the error line must say)."""
    w10 = files["1.0"]

    def truncated(path: Path) -> Path:
        data = w10.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    def html(path: Path) -> Path:  # what a download blocked by a login page leaves
        path.write_text("<!DOCTYPE html>\n<html><body>Sign in</body></html>")
        return path

    def random_bytes(path: Path) -> Path:  # torch's unpickler said it held objects to trust
        path.write_bytes(bytes(range(7, 107)))
        return path

    def other(path: Path) -> Path:
        torch.save({"weight": torch.zeros(3), "bias": torch.zeros(3)}, path)
        return path

    def no_state(path: Path) -> Path:
        torch.save([1, 2, 3], path)
        return path

    def pickled_object(path: Path) -> Path:
        state = torch.load(w10, weights_only=True)["state_dict"]
        torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, path)
        return path

    def drop(key: str) -> Callable[[dict[str, torch.Tensor]], object]:
        return lambda state: state.pop(key)

    def extra(state: dict[str, torch.Tensor]) -> None:
        state["blocks.3.conv.depth_conv.conv.3to1_matrix"] = torch.eye(1)

    def reshape(state: dict[str, torch.Tensor]) -> None:
        state["classifier.linear.weight"] = torch.zeros(10, 1280)

    return {
        "resnet50": (_resnet50_keys, "is OFA's ResNet50 supernet, not a MobileNetV3 one"),
        "proxyless": (_proxyless, "is OFA's ProxylessNAS supernet, not a MobileNetV3 one"),
        "other": (other, "is not an OFA MobileNetV3 supernet"),
        "no-state-dict": (no_state, "holds no state dict (a list)"),
        "pickled-object": (pickled_object, "holds objects other than tensors"),
        "truncated": (truncated, "is not a readable PyTorch file (truncated or damaged)"),
        "html": (html, "(a text file starting '<!DOCTYPE html>', not a PyTorch file)"),
        "random-bytes": (random_bytes, "(not a PyTorch file: it is neither a zip archive nor"),
        "unknown-key": (
            _edit(w10, extra),
            "unknown key 'blocks.3.conv.depth_conv.conv.3to1_matrix'",
        ),
        "missing-key": (
            _edit(w10, drop("blocks.4.conv.depth_conv.conv.7to5_matrix")),
            "key 'blocks.4.conv.depth_conv.conv.7to5_matrix' is missing",
        ),
        "shape": (
            _edit(w10, reshape),
            "classifier.linear.weight has shape [10, 1280], OFA's w1.0 MobileNetV3 supernet has [1000, 1280]",
        ),
        "w1.2-as-w1.0": (
            lambda path: files["1.2"],
            "is OFA's w1.2 supernet (ofa_mbv3_d234_e346_k357_w1.2), not w1.0: import it with --width 1.2",
        ),
        "no-file": (
            lambda path: path,
            "input.pth: download OFA's supernet (https://raw.githubusercontent.com/han-cai/"
            "files/master/ofa/ofa_nets/ofa_mbv3_d234_e346_k357_w1.0 or ...w1.2) and give its path",
        ),
    }


CASES = [
    "resnet50",
    "proxyless",
    "other",
    "no-state-dict",
    "pickled-object",
    "truncated",
    "html",
    "random-bytes",
    "unknown-key",
    "missing-key",
    "shape",
    "w1.2-as-w1.0",
    "no-file",
]


@pytest.mark.parametrize("name", CASES)
def test_a_bad_file_gets_one_line_and_writes_nothing(
    ofa_files: dict[str, Path], tmp_path: Path, name: str
) -> None:
    make, message = _bad_files(ofa_files)[name]
    source = make(tmp_path / "input.pth")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["import", "ofa-supernet", str(source), "--out", str(out), "--width", "1.0"],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert not out.exists()


def test_an_existing_supernet_is_not_overwritten(
    ofa_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "supernet.pt").write_bytes(b"mine")
    line = error_line(edgenas("import", "ofa-supernet", ofa_files["1.0"], "--out", out))
    assert f"{out / 'supernet.pt'} exists" in line
    assert (out / "supernet.pt").read_bytes() == b"mine"
    assert not (out / "space.json").exists()


def test_a_training_checkpoint_is_not_replaced_by_an_import(
    ofa_files: dict[str, Path], tmp_path: Path
) -> None:
    # The import went in, and the training's `train --resume` then replaced it (audit, 1).
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"mine")
    line = error_line(edgenas("import", "ofa-supernet", ofa_files["1.0"], "--out", out))
    assert line == (
        f"error: {out} holds a training checkpoint (checkpoint.pt), whose training would "
        "replace the imported supernet: import into another --out folder"
    )
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


def test_resuming_from_an_imported_supernet_says_to_start_from_it(
    ofa_files: dict[str, Path], tmp_path: Path
) -> None:
    # One copied as a run folder's checkpoint.pt crashed with KeyError: 'phases' (audit, 5).
    import_ofa_supernet(ofa_files["1.0"], tmp_path / "run")
    out = tmp_path / "train"
    out.mkdir()
    shutil.copyfile(tmp_path / "run" / "supernet.pt", out / "checkpoint.pt")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(MICRO_RECIPE))
    line = error_line(edgenas_here("train", recipe, "--out", out, "--resume"))
    assert line == (
        f"error: checkpoint {out / 'checkpoint.pt'} is an imported supernet, not a training "
        "checkpoint: start from it with train.init_from, training into another folder"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{ckpt}"],
        ["search", "--supernet", "{ckpt}", "--device", "npu-32x32-ws", "--out", "{out}"],
        ["export", "--supernet", "{ckpt}", "--subnet", "min", "--out", "{out}"],
    ],
    ids=lambda c: c[0],
)
def test_commands_that_need_data_say_an_imported_supernet_has_none(
    ofa_files: dict[str, Path], tmp_path: Path, command: list[str]
) -> None:
    import_ofa_supernet(ofa_files["1.0"], tmp_path / "run")
    ckpt, out = tmp_path / "run" / "supernet.pt", tmp_path / "out"
    result = CliRunner().invoke(
        app, [a.format(ckpt=ckpt, out=out) for a in command], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: checkpoint {ckpt} holds ofa_mbv3_d234_e346_k357_w1.0 imported from OFA, which "
        "records no data to evaluate or calibrate its subnets on: give --data FOLDER, an "
        "ImageNet-layout folder (FOLDER/train/<wnid>/*.JPEG, FOLDER/val/<wnid>/*.JPEG)"
    )
