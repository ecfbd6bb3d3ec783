"""The one error type the export package raises."""

from __future__ import annotations

from once_for_all.errors import EdgenasError


class ExportError(EdgenasError, RuntimeError):
    """A model that could not be converted, quantized or written; the message names the
    problem and the fix on one line."""


def first_line(exc: BaseException) -> str:
    """The first line of a library's exception, short enough to quote inside an ExportError."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
