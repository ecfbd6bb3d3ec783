"""SSH host keys: OpenSSH fingerprints, looking keys up in known_hosts files, adding one.

A host on port 22 is named ``host`` in known_hosts; on any other port ``[host]:port``, as
OpenSSH (and paramiko) write it.
"""

from __future__ import annotations

import base64
import hashlib
import re
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
    """Every key the ``files`` trust for ``host`` on ``port``: lines whose host patterns
    match ``[host]:port`` (``host`` on port 22) as OpenSSH matches them (``*`` and ``?``
    wildcards, ``!`` negation, hashed names); revoked keys left out."""
    return [HostKey.from_pkey(k) for k in matching_keys(files, known_hosts_name(host, port))]


def matching_keys(files: Sequence[Path], name: str) -> list[paramiko.PKey]:
    """The keys of the ``files``' lines whose host patterns match ``name``, not revoked, each
    once, in file order. paramiko looks names up exactly: ``[10.0.0.*]:2222`` or
    ``[10.0.0.2]:*``, which OpenSSH matches, were "not in known_hosts" (walk-through)."""
    entries = list(_entries(files))
    revoked = _revoked(entries)
    found: dict[HostKey, paramiko.PKey] = {}
    for marker, entry in entries:
        key = HostKey.from_pkey(entry.key)
        if marker is None and key not in revoked and _matches(entry.hostnames, name):
            found.setdefault(key, entry.key)
    return list(found.values())


def _matches(patterns: Sequence[str], name: str) -> bool:
    """OpenSSH's match of one known_hosts line's host field (``patterns``, split at commas):
    a field that starts with ``|`` is one hash, commas and all, which matches the name it
    hashes; any other field is a pattern list (``match_hostname``), where a negated pattern
    that matches rules the line out, else any pattern that matches (names compare without
    case). A hash inside a list is only text to OpenSSH, and so here."""
    name = name.lower()
    if patterns and patterns[0].startswith("|"):
        field = ",".join(patterns)
        try:  # HMAC-SHA1 of the name under the line's salt
            return paramiko.HostKeys.hash_host(name, field) == field
        except Exception:  # not "|1|salt|hash", or a damaged salt: a line OpenSSH skips too
            return False
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_matches(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            hit = True
    return hit


def _pattern_matches(pattern: str, name: str) -> bool:
    # only * and ? are special: [ and ] are literal, as in "[host]:port"
    wildcards = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()
    )
    return re.fullmatch(wildcards, name, flags=re.DOTALL) is not None


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
