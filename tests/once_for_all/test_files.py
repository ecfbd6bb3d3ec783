"""once_for_all.files and once_for_all.errors on a real filesystem: atomic writes (whole file,
no temp left, old content kept on failure, parents created, clear errors for unwritable
places), format-checked JSON reading, and one-line error text."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from once_for_all.errors import EdgenasError, one_line
from once_for_all.files import (
    DocumentError,
    WriteError,
    atomic_path,
    output_folder_for_work,
    read_json,
    write_bytes,
    write_json,
    write_text,
)


class LayerError(EdgenasError):
    """Stands for a layer's own error class (ExportError, TableError...)."""


def test_write_text_writes_the_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    text = "line\n" * 10_000 + "é"
    write_text(path, text)
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_new_file_has_an_ordinary_files_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_bytes(tmp_path / "a.bin", b"\x00\x01")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"


def test_mode_argument_sets_the_files_mode(tmp_path: Path) -> None:
    write_text(tmp_path / "known_hosts", "host key\n", mode=0o600)
    assert stat.S_IMODE((tmp_path / "known_hosts").stat().st_mode) == 0o600


def test_atomic_path_keeps_the_suffix_and_renames_on_success(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.exists()
        assert not path.exists()  # nothing at the target until the block succeeds
        tmp.write_bytes(b"png")
    assert path.read_bytes() == b"png"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_exception_in_the_block_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous model")
    with pytest.raises(RuntimeError, match="converter failed"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a mod")
        raise RuntimeError("converter failed")
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_oserror_in_the_block_is_a_write_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text("{}")
    message = r"cannot write .*lut\.json: disk full; free some space or choose another folder"
    with pytest.raises(WriteError, match=message), atomic_path(path):
        raise OSError(28, "disk full")
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["lut.json"]


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "run" / "devices" / "pi4" / "lut.json"
    write_json(path, {"format": "edgenas.lut/2"})
    assert json.loads(path.read_text()) == {"format": "edgenas.lut/2"}
    assert [p.name for p in path.parent.iterdir()] == ["lut.json"]


def test_a_file_where_a_folder_should_be_names_that_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with pytest.raises(WriteError) as info:
        write_text(blocker / "sub" / "out.txt", "x")
    message = str(info.value)
    assert f"{blocker} is a file, not a folder" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


def test_a_layer_chooses_its_own_error_class(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with pytest.raises(LayerError, match="is a file, not a folder"):
        write_bytes(blocker / "model.tflite", b"x", error=LayerError)


@pytest.mark.skipif(os.name != "posix", reason="folder permissions as POSIX has them")
def test_a_read_only_folder_is_a_write_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "out.txt").write_text("old")
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(WriteError, match=r"cannot write .*out\.txt: Permission denied"):
            write_text(folder / "out.txt", "new")
        assert (folder / "out.txt").read_text() == "old"
        assert [p.name for p in folder.iterdir()] == ["out.txt"]
    finally:
        folder.chmod(0o755)


def test_work_that_fails_takes_the_folders_it_made_and_only_those(tmp_path: Path) -> None:
    # A run refused in its profile stage left runs/x/devices/ behind (the device's own folder
    # went): the README says such a run leaves no folder.
    run = tmp_path / "runs" / "x"
    with pytest.raises(RuntimeError), output_folder_for_work(run, records=frozenset({"run.log"})):
        (run / "run.log").write_text("started")
        with output_folder_for_work(run / "devices" / "board"):
            raise RuntimeError("cannot reach the board")
    assert list(tmp_path.iterdir()) == []
    # A folder that existed stays, and so does a parent something else wrote to meanwhile.
    (tmp_path / "runs").mkdir()
    with pytest.raises(RuntimeError), output_folder_for_work(run / "a" / "b"):
        (run / "other.txt").write_text("written by another command")
        raise RuntimeError("failed")
    assert sorted(p.name for p in run.iterdir()) == ["other.txt"]
    # Work that succeeds keeps what it made.
    with output_folder_for_work(run / "c" / "d"):
        pass
    assert (run / "c" / "d").is_dir()


def test_write_json_refuses_nan_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_json(tmp_path / "pareto.json", {"accuracy": math.nan})
    assert list(tmp_path.iterdir()) == []


def test_write_json_indents_and_ends_with_a_newline(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n "a": [\n  1,\n  2\n ]\n}\n'


READ = {"formats": ("edgenas.lut/2", "edgenas.lut/1"), "what": "a latency table"}
FIX = "give the lut.json that edgenas profile wrote"


def test_read_json_returns_a_document_of_an_accepted_format(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({"format": "edgenas.lut/2", "entries": {}}))
    assert read_json(path, **READ, fix=FIX) == {"format": "edgenas.lut/2", "entries": {}}


def test_read_json_accepts_an_older_format_it_lists(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({"format": "edgenas.lut/1"}))
    assert read_json(path, **READ, fix=FIX)["format"] == "edgenas.lut/1"


def test_read_json_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    with pytest.raises(DocumentError) as info:
        read_json(path, **READ, fix=FIX)
    assert str(info.value) == f"{path} does not exist: {FIX}"


def test_read_json_of_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text('{"format": "edgenas.lut/2",')
    with pytest.raises(
        DocumentError, match=r"lut\.json is not a latency table \(not valid JSON: Expecting"
    ) as info:
        read_json(path, **READ, fix=FIX)
    assert str(info.value).endswith(f": {FIX}") and "\n" not in str(info.value)


def test_read_json_of_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(DocumentError, match=r"is not a latency table \('utf-8' codec can't decode"):
        read_json(path, **READ, fix=FIX)


def test_read_json_of_another_format(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({"format": "edgenas.pareto/1"}))
    with pytest.raises(DocumentError) as info:
        read_json(path, **READ, fix=FIX)
    assert str(info.value) == (
        f"{path} is not a latency table (format 'edgenas.pareto/1', expected "
        f"'edgenas.lut/2' or 'edgenas.lut/1'): {FIX}"
    )


def test_read_json_of_a_list_names_its_type(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text("[1, 2]")
    with pytest.raises(LayerError, match=r"\(format 'list', expected 'edgenas.lut/2'"):
        read_json(path, formats="edgenas.lut/2", what="a latency table", fix=FIX, error=LayerError)


def test_read_json_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"is not a latency table \(Is a directory\)"):
        read_json(tmp_path, **READ, fix=FIX)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad value"), "bad value"),
        (ValueError("first line\nsecond line\nthird"), "first line"),
        (ValueError("\n  \n  indented first\nsecond"), "indented first"),
        (KeyError("model"), "'model'"),
        (RuntimeError(), "RuntimeError"),
        (ValueError("   \n "), "ValueError"),
    ],
)
def test_one_line(exc: BaseException, expected: str) -> None:
    assert one_line(exc) == expected


def test_one_line_cuts_at_the_limit() -> None:
    exc = ValueError("x" * 500 + "\nmore")
    assert one_line(exc) == "x" * 200
    assert one_line(exc, limit=120) == "x" * 120
