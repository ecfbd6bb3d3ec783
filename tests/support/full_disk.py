"""A real small file system (tmpfs of a few hundred KB) to fill up: what a full disk does to
a command, without filling the machine's disk. Mounting needs root (CI and this machine run
tests as root); elsewhere the tests that use it are skipped, saying why."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_filesystem(where: Path, size_kb: int) -> Iterator[Path]:
    """``where`` (created) as a fresh tmpfs of ``size_kb`` KB, unmounted afterwards."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
