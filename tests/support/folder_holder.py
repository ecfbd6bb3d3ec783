"""Another process holding an output folder's lock (``once_for_all.folder_lock``), as a
second edgenas command writing there would, until it is killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from once_for_all.folder_lock import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_folder(folder: Path) -> subprocess.Popen[str]:
    """A process that holds ``folder`` once this returns; kill it to release the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder
