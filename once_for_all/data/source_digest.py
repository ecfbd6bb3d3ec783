"""What a data source holds, as one digest: the commands that evaluate a supernet's subnets
refuse data that changed since it was trained on it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from once_for_all.data.load import BUILTIN_SOURCES


def source_digest(source: str, *, times: bool = False) -> str | None:
    """SHA-256 of a data file's bytes, or of a folder's listing: each file's path (relative to
    the folder) and size, and with ``times`` its modification time. Without them the same data
    copied to another machine keeps its digest; the images' bytes are not read, which for an
    ImageNet folder would take minutes. None for a built-in data set (its name stands for it)
    or a source that does not exist (loading it says so).

    A file added to, removed from or renamed in a folder moves the validation split drawn
    from its training images (by seed, over the listing), so that the images a supernet
    trained on could be scored as validation images."""
    if source in BUILTIN_SOURCES:
        return None
    path = Path(source).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    if not path.is_dir():
        return None
    for top, dirs, files in os.walk(path, followlinks=True):
        dirs.sort()  # os.walk descends in this order
        for name in sorted(files):
            file = Path(top) / name
            try:
                stat = file.stat()
                entry = f"{stat.st_size}|{stat.st_mtime_ns}" if times else str(stat.st_size)
            except OSError:  # a broken link: listed by its name alone
                entry = "-"
            digest.update(f"{file.relative_to(path)}|{entry}\n".encode())
    return digest.hexdigest()
