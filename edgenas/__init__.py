"""edgenas: hardware-aware neural architecture search for edge devices (the application)."""

import os

# OpenMP threads that wait spin by default, burning the cores a neighbouring process needs:
# two 2-thread trainings side by side ran at 0.04-0.37x their quiet speed, and at 0.45x
# (a fair share) with passive waiting, which costs nothing when quiet
# (benchmarks/contention.py). Set before torch loads its OpenMP runtime; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
