"""What a data source holds, as one digest: the commands that evaluate a supernet's subnets
refuse data that changed since it was trained on it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from once_for_all.data.load import BUILTIN_SOURCES
from once_for_all.data.user_data import list_image_folder
from once_for_all.files import file_sha256

# The digest of a folder's listing with each image's size; one without a prefix (recorded by
# an earlier edgenas) lists names and labels only.
SIZED = "sized:"


def source_digest(source: str, *, like: str | None = None) -> str | None:
    """SHA-256 of a data file's bytes, or of an image folder's listing as the loader lists
    it: each image's path (relative to the folder), label and size. Files the loader does not
    read (.DS_Store, a README) do not count, nor do the images' times (the same data copied
    to another machine keeps its digest; reading every image of an ImageNet folder would take
    minutes). None for a built-in data set (its name stands for it) or a source that does not
    exist (loading it says so). ``like``: a digest recorded before, whose form (an earlier
    edgenas's listed no sizes) this one takes, to compare with it.

    An image added to, removed from or renamed in a folder moves the validation split drawn
    from its training images (by seed, over the listing), so that the images a supernet
    trained on could be scored as validation images; other images under the same names (of
    other sizes) are other data."""
    if source in BUILTIN_SOURCES:
        return None
    path = Path(source).expanduser()
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return None
    sized = like is None or like.startswith(SIZED)
    digest = hashlib.sha256()
    listing = list_image_folder(path)
    for split, files in (("train", listing.train), ("test", listing.test or [])):
        for file, label in files:
            # os.fsencode: a name that is not UTF-8 (a Windows zip's) keeps its own bytes
            name = os.fsencode(file.relative_to(path))
            size = f"|{_size(file)}" if sized else ""
            digest.update(f"{split}|".encode() + name + f"|{label}{size}\n".encode())
    return (SIZED if sized else "") + digest.hexdigest()


def _size(file: Path) -> int | str:
    try:
        return file.stat().st_size
    except OSError:  # gone since listed, or a broken link: unreadable, as the loader finds it
        return "-"
