"""Checks shared by the converters."""

from __future__ import annotations

from export.errors import ExportError


def check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, or an ExportError saying what is wrong."""
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ExportError(
            f"input_shape={shape!r} is not a shape: give positive ints in NCHW order, e.g. (1, 1, 28, 28)"
        )
    return shape
