"""The one error type the export package raises, and how a failed conversion becomes one."""

from __future__ import annotations

import errno
from pathlib import Path

from once_for_all.errors import EdgenasError


class ExportError(EdgenasError, RuntimeError):
    """A model that could not be converted, quantized or written; the message names the
    problem and the fix on one line."""


# The errors that mean the system could not write (not that the model is wrong).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG})


def conversion_error(path: Path, exc: BaseException, message: str) -> ExportError:
    """The error for a failed conversion writing ``path``: ``message`` (which names the
    model's problem), unless ``exc`` is, or was caused by, a failure to write, such as a full
    disk, which the message then names instead (it blamed the model's ops)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            return ExportError(
                f"cannot write {path}: {seen.strerror}; free some space or choose another --out"
            )
        seen = seen.__cause__ or seen.__context__
    return ExportError(message)
