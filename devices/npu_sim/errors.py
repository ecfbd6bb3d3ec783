"""The one error type of the NPU model: bad configs, topologies and models."""

from __future__ import annotations


class NpuSimError(ValueError):
    """Input the NPU model cannot use; the message names the file or layer, the value, the fix."""
