"""Reading a subnet from the command line: ``max``, ``min``, ``random`` or a JSON file."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from once_for_all import SearchSpace, Subnet


def choose_subnet(choice: str, space: SearchSpace, *, seed: int = 0) -> Subnet:
    from once_for_all import Subnet

    if choice == "max":
        return space.max_subnet()
    if choice == "min":
        return space.min_subnet()
    if choice == "random":
        return space.sample(random.Random(seed))
    return space.validate(Subnet.load(choice))
