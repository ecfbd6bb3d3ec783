"""The data splits a subnet's accuracy is measured on: ``val`` during search (held out from
training), ``test`` for final reporting. This module imports nothing, so the command line
can offer the names without loading torch."""

from __future__ import annotations

from typing import Literal, get_args

EvalSplit = Literal["val", "test"]
EVAL_SPLITS: tuple[EvalSplit, ...] = get_args(EvalSplit)
