"""The one error type the export package raises."""

from __future__ import annotations

from once_for_all.errors import EdgenasError


class ExportError(EdgenasError, RuntimeError):
    """A model that could not be converted, quantized or written; the message names the
    problem and the fix on one line."""
