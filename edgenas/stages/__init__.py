"""The stages of the job, one plain function each, with typed options and results:
``train`` (progressive shrinking into a run folder), ``profile`` (lookup tables and calibrated
predictors for one or more devices), ``search`` (the Pareto front and the subnet chosen under
each budget) and ``export`` (checked, measured model files with a card). The command line
and ``edgenas.pipeline`` (``edgenas run``) both call these.

``StageName`` names them, in the order a run does them: a recipe's ``stages`` and
`edgenas run --force` accept these names. (This package imports nothing of its own, so the
CLI can offer them without loading torch.)"""

from __future__ import annotations

from typing import Literal, get_args

StageName = Literal["train", "profile", "search", "export"]
STAGES: tuple[StageName, ...] = get_args(StageName)
