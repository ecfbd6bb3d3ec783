"""The one exception type of the data package."""

from __future__ import annotations

from once_for_all.errors import EdgenasError


class DataError(EdgenasError, ValueError):
    """Missing, corrupt or malformed data; the message names the problem and the fix in one line."""
