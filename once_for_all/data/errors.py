"""The one exception type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """Missing, corrupt or malformed data; the message names the problem and the fix in one line."""
