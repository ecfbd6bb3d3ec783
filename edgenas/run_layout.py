"""Where each stage of ``edgenas run`` keeps its files in a run folder: the one spelling of
the layout that the pipeline, its records and ``edgenas report`` share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECORD_NAME = "run.json"
LOG_NAME = "run.log"
SUPERNET_NAME = "supernet.pt"
CHECKPOINT_NAME = "checkpoint.pt"  # training's, until supernet.pt is written
SPACE_NAME = "space.json"  # the search space, written before training's first epoch


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run folder ``root``."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / RECORD_NAME

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def supernet(self) -> Path:
        return self.root / SUPERNET_NAME

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_NAME

    @property
    def devices(self) -> Path:
        """The profiled devices' folders (a ``--profiles`` folder for search and export)."""
        return self.root / "devices"

    def device(self, name: str) -> Path:
        """Device ``name``'s profile: its lookup table and predictor."""
        return self.devices / name

    def predictor(self, name: str) -> Path:
        # here: the latency package's import takes seconds, this module's none
        from latency.profile_files import PREDICTOR_NAME

        return self.device(name) / PREDICTOR_NAME

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def pareto(self) -> Path:
        return self.search / "pareto.json"

    @property
    def exports(self) -> Path:
        return self.root / "export"

    def export(self, subnet_key: str) -> Path:
        """The export of the subnet with this key."""
        return self.exports / subnet_key
