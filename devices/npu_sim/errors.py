"""The one error type of the NPU model: bad configs, topologies and models."""

from __future__ import annotations

from once_for_all.errors import EdgenasError


class NpuSimError(EdgenasError, ValueError):
    """Input the NPU model cannot use; the message names the file or layer, the value, the fix."""
