"""SSH host keys: OpenSSH fingerprints, looking keys up in known_hosts files, adding one.

A host on port 22 is named ``host`` in known_hosts; on any other port ``[host]:port``, as
OpenSSH (and paramiko) write it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from once_for_all.files import write_bytes

SSH_PORT = 22


@dataclass(frozen=True)
class HostKey:
    """A server's public host key, as known_hosts stores it (``key_type`` + ``base64``)."""

    key_type: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...
    base64: str

    @classmethod
    def from_pkey(cls, key: paramiko.PKey) -> HostKey:
        return cls(key.get_name(), key.get_base64())

    @property
    def fingerprint(self) -> str:
        """OpenSSH's form: ``SHA256:`` and the unpadded base64 of the key blob's SHA-256."""
        digest = hashlib.sha256(base64.b64decode(self.base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    def describe(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names ``host`` on ``port``."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


_REVOKED = "@revoked"


def load_host_keys(
    files: Sequence[Path], into: paramiko.HostKeys | None = None
) -> paramiko.HostKeys:
    """The entries of the readable ``files`` (hashed ones too), added to ``into`` if given;
    a key that a ``@revoked`` line names is left out even where another line trusts it.

    Lines that cannot be read (a key type paramiko does not know, a broken key, a marker
    such as ``@cert-authority``) are skipped, as OpenSSH skips them, instead of failing.
    """
    keys = into if into is not None else paramiko.HostKeys()
    entries = list(_entries(files))
    revoked = _revoked(entries)
    for marker, entry in entries:
        if marker is None and HostKey.from_pkey(entry.key) not in revoked:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def revoked_host_keys(files: Sequence[Path]) -> set[HostKey]:
    """The keys that ``@revoked`` lines of ``files`` name. OpenSSH never accepts them
    ("the key contained on the line is revoked and must not ever be accepted", sshd(8)); a
    revoked key is refused for every host here, whatever the line's host patterns."""
    return _revoked(_entries(files))


def _revoked(entries: Iterable[tuple[str | None, paramiko.hostkeys.HostKeyEntry]]) -> set[HostKey]:
    return {HostKey.from_pkey(e.key) for marker, e in entries if marker == _REVOKED}


def _entries(
    files: Sequence[Path],
) -> Iterator[tuple[str | None, paramiko.hostkeys.HostKeyEntry]]:
    """(marker or None, entry) for each readable line of the readable ``files``."""
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue  # a missing or unreadable file holds no keys, as for OpenSSH
        for number, line in enumerate(lines, 1):
            text = line.strip()
            marker = None
            if text.startswith("@"):
                marker, _, text = text.partition(" ")
                text = text.strip()
            if not text or text.startswith("#") or marker not in (None, _REVOKED):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(text, number)
            except Exception:  # paramiko raises several kinds for a bad line
                continue
            if entry is not None and entry.key is not None:
                yield marker, entry


def lookup_host_keys(files: Sequence[Path], host: str, port: int) -> list[HostKey]:
    """Every key the ``files`` hold for ``host`` on ``port``."""
    found = load_host_keys(files).lookup(known_hosts_name(host, port))
    if found is None:
        return []
    return [HostKey.from_pkey(k) for k in found.values()]


def add_known_host(path: Path, host: str, port: int, key: HostKey) -> None:
    """Append ``key`` for ``host``/``port`` to the known_hosts file ``path``, atomically.

    The folder is created with mode 0700 if missing (as ~/.ssh is); the file keeps its mode,
    0600 when new. A file that cannot be written raises ``WriteError``.
    """
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    try:
        old = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        old, mode = b"", 0o600
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = f"{known_hosts_name(host, port)} {key.key_type} {key.base64}\n".encode("ascii")
    write_bytes(path, old + line, mode=mode)
