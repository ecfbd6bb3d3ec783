"""Where OFA's published files are on this machine (``acc_predictor.pth``, ``note10/*.yaml``):
``$EDGENAS_OFA_FILES``, else ``shared/ofa`` beside the checkout (``../shared/ofa``), else
``/work/shared/ofa``. Tests that need them skip, saying so, where none is found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]


def ofa_files() -> Path:
    candidates = [
        *([Path(os.environ["EDGENAS_OFA_FILES"])] if os.environ.get("EDGENAS_OFA_FILES") else []),
        _ROOT.parent / "shared" / "ofa",
        Path("/work/shared/ofa"),
    ]
    for folder in candidates:
        if (folder / "acc_predictor.pth").is_file() and (folder / "note10").is_dir():
            return folder
    pytest.skip(f"OFA's published files not found (looked in {', '.join(map(str, candidates))})")
