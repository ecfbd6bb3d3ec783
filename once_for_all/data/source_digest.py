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
# A folder of train/ and test/ (or val/), as SIZED but each part digested apart (the
# training part, then the held-out one): "split:TRAIN:TEST". Training reads train/ alone
# (its validation split is drawn from it), so a held-out folder that changed leaves the
# training as it was (edgenas before 2026-12-08 digested both in one).
SPLIT = "split:"


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
    sized = like is None or like.startswith((SIZED, SPLIT))
    listing = list_image_folder(path)
    whole, parts = hashlib.sha256(), []
    for split, files in (("train", listing.train), ("test", listing.test or [])):
        part = hashlib.sha256()
        for file, label in files:
            # os.fsencode: a name that is not UTF-8 (a Windows zip's) keeps its own bytes
            name = os.fsencode(file.relative_to(path))
            size = f"|{_size(file)}" if sized else ""
            line = f"{split}|".encode() + name + f"|{label}{size}\n".encode()
            whole.update(line)
            part.update(line)
        parts.append(part.hexdigest())
    if listing.test is not None and (like is None or like.startswith(SPLIT)):
        return f"{SPLIT}{parts[0]}:{parts[1]}"
    return (SIZED if sized else "") + whole.hexdigest()


def training_part(digest: str) -> str:
    """What of a digest the training depends on: a train/ + test/ folder's training part,
    else all of it (a one-folder layout holds its test split out of the same images)."""
    return digest.split(":")[1] if digest.startswith(SPLIT) else digest


def held_out_part(digest: str) -> str | None:
    """A train/ + test/ folder's held-out part (None for any other digest)."""
    return digest.split(":")[2] if digest.startswith(SPLIT) else None


def digest_change(recorded: str, now: str) -> str | None:
    """What changed between two digests of one source, the second taken ``like`` the first:
    None (nothing), "held-out" (only a train/ + test/ folder's held-out folder: what training
    read and its validation split are as they were), or "training"."""
    if recorded == now:
        return None
    if training_part(recorded) == training_part(now) and recorded.startswith(SPLIT):
        return "held-out"
    return "training"


def _size(file: Path) -> int | str:
    try:
        return file.stat().st_size
    except OSError:  # gone since listed, or a broken link: unreadable, as the loader finds it
        return "-"
