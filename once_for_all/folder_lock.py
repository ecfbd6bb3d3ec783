"""One writer per output folder: a command holds an exclusive lock on its ``--out`` folder
while it writes there, so two commands started on one folder cannot overwrite each other's
work (two trainings 0.3 s apart both printed "supernet written"; the folder held only one).

The lock is ``flock`` on the folder itself: no lock file to leave behind, and the kernel drops
it when the process dies, however it dies (kill -9 leaves no stale lock). Within one process
the lock is re-entrant (``edgenas run`` holds the run folder while its stages lock it again).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from once_for_all.errors import EdgenasError

# (device, inode) of each folder this process holds -> how many holders nest
_held: dict[tuple[int, int], int] = {}
_guard = threading.Lock()


class FolderBusyError(EdgenasError):
    """Another process is writing to the output folder."""


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` (which must exist) for the block; ``FolderBusyError`` at once if
    another process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _guard:
        nested = key in _held
        if not nested:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderBusyError(
                    f"{folder} is in use: another edgenas command is writing to it; wait for "
                    "it to finish, or choose another --out"
                ) from None
        _held[key] = _held.get(key, 0) + 1
    try:
        yield
    finally:
        with _guard:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        os.close(fd)  # the last descriptor of the locked description releases the lock
