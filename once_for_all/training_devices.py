"""Where training runs: what `edgenas train --device` and a recipe's ``train.device`` accept
(``once_for_all.distributed.training_device`` resolves them). This module imports nothing, so
the command line can offer the names without loading torch."""

from __future__ import annotations

from typing import Literal

# auto: this process's GPU where torch sees one (torchrun: one process per GPU), else the CPU.
TrainingDevice = Literal["auto", "cpu", "cuda"]
