"""folder_lock: one writer per output folder, re-entrant within a process, released by the
kernel however the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from once_for_all.folder_lock import FolderBusyError, folder_lock
from tests.support.folder_holder import HOLD, REPO, hold_folder


def test_a_folder_held_by_another_process_is_refused_until_it_dies(tmp_path: Path) -> None:
    holder = hold_folder(tmp_path)
    try:
        with pytest.raises(FolderBusyError, match=rf"^{tmp_path} is in use"), folder_lock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9 leaves no stale lock behind
        holder.wait()
    with folder_lock(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path: Path) -> None:
    with folder_lock(tmp_path), folder_lock(tmp_path):  # edgenas run, then its stage
        pass
    with folder_lock(tmp_path):
        holder = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    assert holder.returncode == 1 and "is in use" in holder.stderr
    hold_folder(tmp_path).kill()  # free again once the block ends
