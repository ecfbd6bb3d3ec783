"""What a data source holds, as one digest: the commands that evaluate a supernet's subnets
refuse data that changed since it was trained on it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from once_for_all.data.load import BUILTIN_SOURCES
from once_for_all.data.user_data import list_image_folder
from once_for_all.files import file_sha256


def source_digest(source: str) -> str | None:
    """SHA-256 of a data file's bytes, or of an image folder's listing as the loader lists
    it: each image's path (relative to the folder) and label. Files the loader does not read
    (.DS_Store, a README) do not count, nor do the images' bytes or times (the same data
    copied to another machine keeps its digest; reading every image of an ImageNet folder
    would take minutes). None for a built-in data set (its name stands for it) or a source
    that does not exist (loading it says so).

    An image added to, removed from or renamed in a folder moves the validation split drawn
    from its training images (by seed, over the listing), so that the images a supernet
    trained on could be scored as validation images."""
    if source in BUILTIN_SOURCES:
        return None
    path = Path(source).expanduser()
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    listing = list_image_folder(path)
    for split, files in (("train", listing.train), ("test", listing.test or [])):
        for file, label in files:
            # os.fsencode: a name that is not UTF-8 (a Windows zip's) keeps its own bytes
            name = os.fsencode(file.relative_to(path))
            digest.update(f"{split}|".encode() + name + f"|{label}\n".encode())
    return digest.hexdigest()
