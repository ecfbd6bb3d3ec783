"""Files the project writes and reads: atomic writes, format-checked JSON documents, and why a
file given as a torch file cannot be read as one.

Every file is written to a temporary name in its own folder, flushed to disk and renamed over
the target, so a reader (or a run killed half-way) never sees half a file. The parent folder is
created. A folder that cannot be written raises ``WriteError`` with one line that names the
path and the reason. (``devices/runner.py`` keeps its own copy: it runs standalone on boards.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from once_for_all.errors import EdgenasError, one_line


class WriteError(EdgenasError):
    """An output that cannot be written where the user asked."""


class DocumentError(EdgenasError):
    """A file that is not the versioned JSON document it should be."""


@contextmanager
def atomic_path(
    path: Path, *, mode: int | None = None, error: type[EdgenasError] = WriteError
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; if the block succeeds, the file is flushed to
    disk and renamed over ``path``; if it raises, the file is deleted. The temporary name
    keeps the suffix (some writers look at it). ``mode`` defaults to an ordinary file's
    permissions (0666 less the umask). An ``OSError`` (also one raised by the block) becomes
    ``error`` (a layer may ask for its own class) with one line naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
    except OSError as exc:
        raise _write_error(path, exc, error) from None
    try:
        if mode is not None:
            tmp.chmod(mode)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc, error) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def output_folder(
    path: Path, *, error: type[EdgenasError] = WriteError, what: str = "the output folder"
) -> Path:
    """Create the output folder ``path`` (and its parents) and check that files can be
    written in it, so that a bad ``--out`` fails before any work with one line naming the
    problem (a file in the way, a read-only folder) and ``what`` the folder is for. Returns
    ``path``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.unlink(_create_temp(path / ".write-check"))
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
        raise error(
            f"cannot use {path} as {what}: {reason}; choose a folder you can write to"
        ) from None
    return path


@contextmanager
def output_folder_for_work(
    path: Path, *, records: frozenset[str] = frozenset(), error: type[EdgenasError] = WriteError
) -> Iterator[Path]:
    """``output_folder(path)`` around a block of work: when the block fails and this call
    created the folder, and the folder then holds nothing but files named in ``records``
    (what describes the work, not work a rerun resumes), the folder goes too, and so do the
    parents this call created that are left empty, so that a command refused once it started
    leaves nothing behind (a run's ``devices/`` once its one device's folder went)."""
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]
    output_folder(path, error=error)
    try:
        yield path
    except BaseException:
        if created and path.is_dir() and all(p.name in records for p in path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)
            for parent in created[1:]:
                try:
                    parent.rmdir()  # only while empty: another command may write there now
                except OSError:
                    break
        raise


def write_bytes(
    path: Path,
    data: bytes | memoryview,
    *,
    mode: int | None = None,
    error: type[EdgenasError] = WriteError,
) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path, mode=mode, error=error) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The first bytes of what torch.save writes (a zip archive), and of its legacy format (a pickle).
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"


def torch_file_head(path: Path) -> bytes:
    """The first bytes of ``path``, enough for ``not_a_torch_file`` (OSError as opening)."""
    with Path(path).open("rb") as f:
        return f.read(512)


def not_a_torch_file(head: bytes) -> str | None:
    """Why a file that starts with ``head`` cannot be a PyTorch file, or None where it may be
    one: a zip archive or a pickle. torch's readers fail on anything else with words about
    their internals (a miniz error, an opcode, '101'), or say it holds Python objects."""
    if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        return None
    if not head:
        return "the file is empty"
    first_line = head.decode("utf-8", errors="replace").split("\n")[0].rstrip("\r")
    if first_line and first_line.replace("\t", " ").isprintable() and "\ufffd" not in first_line:
        return f"a text file starting {first_line[:40]!r}, not a PyTorch file"
    return "not a PyTorch file: it is neither a zip archive nor a pickle"


def torch_load_failure(head: bytes, exc: Exception) -> str:
    """Why ``torch.load`` failed with ``exc`` on a file that starts with ``head``, in a
    user's words: bytes that fail anywhere in torch's readers and unpicklers raise many
    exception types, and a zip archive cut short raises miniz's "failed finding central
    directory. This is an internal miniz error. If you ..."."""
    problem = not_a_torch_file(head)
    if problem is not None:
        return problem
    if head.startswith(_ZIP_MAGIC):
        return "truncated or damaged"
    return one_line(exc, limit=120)


def write_torch(path: Path, obj: object, *, error: type[EdgenasError] = WriteError) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically. Serialised in memory first: torch's
    writer reports a full disk as a RuntimeError ("unexpected pos"), a plain write as the
    OSError that becomes ``error``'s one line."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer(), error=error)


def write_text(
    path: Path, text: str, *, mode: int | None = None, error: type[EdgenasError] = WriteError
) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_path``)."""
    write_bytes(path, text.encode("utf-8"), mode=mode, error=error)


def write_json(path: Path, doc: object, *, indent: int | None = 1) -> None:
    """Write ``doc`` as JSON to ``path`` atomically. NaN and infinity are refused: they are
    not JSON, and no reader of ours would accept them."""
    try:
        text = json.dumps(doc, indent=indent, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None  # a bug: a NaN reached a document
    write_text(path, text + "\n")


def read_json(
    path: Path,
    *,
    formats: str | tuple[str, ...],
    what: str,
    fix: str,
    error: type[EdgenasError] = DocumentError,
) -> dict[str, Any]:
    """The JSON object in ``path``, whose ``"format"`` must be one of ``formats``. Anything
    else (missing, unreadable, not UTF-8, not JSON, another format) raises ``error`` with one
    line: ``{path} is not {what} (...): {fix}``."""
    path = Path(path)
    accepted = (formats,) if isinstance(formats, str) else formats
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} does not exist: {fix}") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 or not JSON
        raise error(f"{path} is not {what} ({_read_reason(exc)}): {fix}") from None
    found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
    if found not in accepted:
        expected = " or ".join(repr(f) for f in accepted)
        raise error(f"{path} is not {what} (format {found!r}, expected {expected}): {fix}")
    return doc


def _read_reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {one_line(exc)}"
    return one_line(exc)


def _create_temp(path: Path) -> Path:
    # Not mkstemp: it makes the file 0600, and reading the umask to undo that (os.umask
    # sets it to read it) races with threads that create files meanwhile. O_EXCL with a
    # random name is mkstemp's own method; mode 0666 lets the kernel apply the umask.
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _write_error(path: Path, exc: OSError, error: type[EdgenasError]) -> EdgenasError:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
    fix = (
        "free some space or choose another folder"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose a folder you can write to"
    )
    return error(f"cannot write {path}: {reason}; {fix}")


def _fsync(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())
