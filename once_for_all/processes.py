"""Which process a recorded pid names, and whether it still runs: for what a killed process
leaves behind (a lock, a search worker's registration, a device runner's temporary folder),
which another process may remove only once its owner is gone."""

from __future__ import annotations

import os
from pathlib import Path


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


def process_token() -> dict[str, str | int] | None:
    """This process, as a later process of the same kernel can tell whether it still runs:
    the kernel's boot id (new at every boot, one per machine, where hostnames repeat across
    machines and every host's first PID namespace has the same number), the PID namespace,
    the pid and its start time (a pid taken again since names another process). None
    without /proc (not Linux), where nothing could tell."""
    try:
        return {
            "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "pidns": os.stat("/proc/self/ns/pid").st_ino,
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
        }
    except (OSError, IndexError, ValueError):
        return None


def token_ended(token: object) -> bool:
    """Whether the process a ``process_token`` names is known to have ended: it ran on this
    kernel's boot, in this PID namespace, and its pid now names no process started when it
    did. False wherever that cannot be told (another machine, boot or namespace, a token
    that does not read): only a process that is certainly gone counts as ended."""
    mine = process_token()
    if mine is None or not isinstance(token, dict):
        return False
    if token.get("boot") != mine["boot"] or token.get("pidns") != mine["pidns"]:
        return False
    pid, start = token.get("pid"), token.get("start")
    if type(pid) is not int or type(start) is not int or not 0 < pid < 2**31:  # nor bools
        return False
    if not alive(pid):
        return True
    try:
        return _start_time(pid) != token.get("start")
    except (OSError, IndexError, ValueError):
        return not alive(pid)  # it ended between the two looks


def _start_time(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot (/proc/PID/stat's 22nd field)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
