"""edgenas runs OpenMP with passive waiting unless the user says otherwise (the contention
cliff of issue 24: benchmarks/contention.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.edgenas.conftest import REPO

PROBE = "import edgenas, os; print(os.environ['OMP_WAIT_POLICY'])"


def test_passive_waiting_is_the_default_and_the_user_setting_wins() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "PASSIVE"
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "ACTIVE"
