"""A conversion that fails because the disk is full says so; it blamed the model's ops."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from export.errors import conversion_error


def test_a_write_failure_anywhere_in_the_chain_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("converter failed") from exc
    except RuntimeError as wrapped:
        error = conversion_error(path, wrapped, "ONNX export failed: simplify the model's ops")
    assert str(error) == (
        f"cannot write {path}: No space left on device; free some space or choose another --out"
    )
    other = conversion_error(path, ValueError("bad op"), "ONNX export failed: simplify the ops")
    assert str(other) == "ONNX export failed: simplify the ops"
