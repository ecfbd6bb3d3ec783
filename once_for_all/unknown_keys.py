"""An unknown key in a YAML file that a pydantic model checks (a recipe, a device profile),
named with the key it most likely meant: pydantic says only "Extra inputs are not
permitted", which read like a library's error rather than a typo to mend."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel


def unknown_key(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """What to say of the key at ``loc`` (pydantic's error location in ``model``): "unknown
    key", with the closest known key of its mapping, else the known keys."""
    known = _keys_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6) if loc else []
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key (known: {', '.join(known)})" if known else "unknown key"


def _keys_at(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The keys of the mapping at ``path`` in ``model``: list indices and the tags pydantic
    puts in a union's path (``space.adapted.classes``) are skipped; none where the path
    leaves the models (a plain dict)."""
    current = model
    for part in path:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        current = inner
    return [field.alias or name for name, field in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or inside ``X | None``, ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _model_in(arg)) is not None:
            return found
    return None
