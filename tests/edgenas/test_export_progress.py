"""What an interrupted export finished is taken over only as it was left: a file whose
bytes changed, or a progress record that does not read, is done again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgenas.stages.export_progress import (
    PROGRESS_NAME,
    DoneFile,
    finished_file,
    open_staging,
    save_progress,
)
from export.subnet_export import ExportedFile


def _finished(staging: Path, content: bytes) -> None:
    (staging / "model.onnx").write_bytes(content)
    file = ExportedFile(
        name="model.onnx",
        format="onnx",
        precision="fp32",
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        seconds=1.5,
        checks={"max_abs_diff": 1e-6},
    )
    _, progress = open_staging(staging.parent, staging.name.removeprefix(".partial-"))
    progress["files"]["model.onnx"] = DoneFile(file=file.to_dict(), input={"name": "input"})
    save_progress(staging, progress)


def test_a_finished_file_is_taken_over_while_its_bytes_are_unchanged(tmp_path: Path) -> None:
    staging, progress = open_staging(tmp_path, "k1")
    assert staging == tmp_path / ".partial-k1" and progress["files"] == {}
    _finished(staging, b"onnx bytes")
    _, progress = open_staging(tmp_path, "k1")
    kept = finished_file(staging, progress, "model.onnx")
    assert kept is not None
    assert kept[0].seconds == 1.5 and kept[0].checks == {"max_abs_diff": 1e-6}
    assert kept[1] == {"name": "input"}
    assert finished_file(staging, progress, "model.tflite") is None  # not finished

    (staging / "model.onnx").write_bytes(b"onnx bytes, cut by a kill")
    assert finished_file(staging, progress, "model.onnx") is None
    (staging / "model.onnx").unlink()
    assert finished_file(staging, progress, "model.onnx") is None


def test_a_damaged_record_or_another_key_starts_over(tmp_path: Path) -> None:
    staging, _ = open_staging(tmp_path, "k1")
    _finished(staging, b"onnx bytes")
    (staging / PROGRESS_NAME).write_text('{"format": "edgenas.export-progress/1", "files": [')
    assert open_staging(tmp_path, "k1")[1]["files"] == {}

    # Entries not of the shape written are not done: they raised KeyError and AttributeError
    # out of the export (review).
    _finished(staging, b"onnx bytes")
    doc = json.loads((staging / PROGRESS_NAME).read_text())
    doc["files"]["model.onnx"].pop("input")
    doc["files"]["model.tflite"] = "done"
    doc["devices"] = {"local-cpu": ["measured"], "pi": {"profile": 1, "latency": {}}}
    (staging / PROGRESS_NAME).write_text(json.dumps(doc))
    progress = open_staging(tmp_path, "k1")[1]
    assert progress["files"] == {} and progress["devices"] == {}
    assert finished_file(staging, progress, "model.onnx") is None

    _finished(staging, b"onnx bytes")
    other, progress = open_staging(tmp_path, "k2")  # other inputs: the old folder goes
    assert progress["files"] == {} and not staging.exists()
    assert [p.name for p in tmp_path.iterdir()] == [other.name]
