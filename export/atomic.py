"""Writing converter outputs so that no reader ever sees a half-written model file.

``once_for_all.checkpoint.atomic_torch_save`` covers torch objects only; converters here
produce bytes, or insist on writing a path themselves, so they get a temporary path instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export.errors import ExportError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds,
    delete it if the block raises. The temporary name keeps the suffix (some writers look)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
        raise ExportError(
            f"cannot write {path}: {reason}; choose an output folder you can write to"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); a model file is an ordinary file (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise ExportError(
                f"cannot write {path}: {exc.strerror or exc}; free disk space or choose another folder"
            ) from exc
