"""Which process a recorded pid names, and whether it still runs: for what a killed process
leaves behind (a lock, a search worker's registration, a device runner's temporary folder),
which another process may remove only once its owner is gone."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_host() -> str:
    """Where this process's pid names it: the hostname, and on Linux the PID namespace.
    Containers that share a hostname (``docker run --network host`` takes the host's) each
    number their processes apart, so a pid read from another one's lock or registration says
    nothing here; by the hostname alone, a live worker's journal lock was taken for a killed
    one's and removed, and two writers could append at once."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}~pidns{namespace}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` (of this host and PID namespace) runs: an ended one that its
    parent has not reaped yet (a zombie, which still answers kill(pid, 0)) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (not Linux): kill's answer stands
    return state in ("Z", "X")
