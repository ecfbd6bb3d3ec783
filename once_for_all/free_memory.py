"""How much memory this process can still take: what a step that builds a large array in
memory (a data set resized whole) checks first, for a one-line refusal in place of the
kernel's OOM killer."""

from __future__ import annotations


def available_memory() -> int | None:
    """Bytes of memory this process can still take without swapping, or None where that is
    not known: Linux's MemAvailable, or less under a control group's limit (a container's
    memory limit, which its OOM killer enforces whatever the host has free)."""
    free = [f for f in (_meminfo_available(), _cgroup_headroom()) if f is not None]
    return min(free) if free else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom(
    membership: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup"
) -> int | None:
    """The memory limit of this process's control group less what it uses (cgroup v2's
    memory.max and memory.current, or v1's limit_in_bytes and usage_in_bytes)."""
    try:
        with open(membership) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            folder, limit, used = f"{root}{path}", "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            folder = f"{root}/memory{path}"
            limit, used = "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        try:
            with open(f"{folder}/{limit}") as f:
                cap = f.read().strip()
            with open(f"{folder}/{used}") as f:
                usage = int(f.read())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:  # "max", or v1's "unlimited" near 2**63
            return max(0, int(cap) - usage)
    return None
