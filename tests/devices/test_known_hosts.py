"""known_hosts files: OpenSSH's names and fingerprints, lines it skips, appending a key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devices.known_hosts import (
    HostKey,
    add_known_host,
    known_hosts_name,
    lookup_host_keys,
    revoked_host_keys,
)
from tests.support.sshd import generate_key


@pytest.fixture
def key(tmp_path: Path) -> HostKey:
    return HostKey(*generate_key(tmp_path / "host_key").split())


def test_names_as_openssh_writes_them() -> None:
    assert known_hosts_name("pi4.local", 22) == "pi4.local"
    assert known_hosts_name("10.0.0.2", 2222) == "[10.0.0.2]:2222"


def test_fingerprint_is_the_one_ssh_keygen_shows(key: HostKey) -> None:
    line = f"{key.key_type} {key.base64}"
    listed = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=line, capture_output=True, text=True, check=True
    ).stdout.split()
    assert key.fingerprint == listed[1] and key.fingerprint.startswith("SHA256:")
    assert not key.fingerprint.endswith("=")


def test_append_keeps_other_entries_and_the_mode(key: HostKey, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        "@cert-authority *.lan ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyFromACA\n"
        "other.host ssh-ed25519 AAAAbroken-base64 and the last line has no newline"
    )
    path.chmod(0o644)
    add_known_host(path, "10.0.0.2", 2222, key)
    lines = path.read_text().splitlines()
    assert lines[2].startswith("other.host ") and len(lines) == 4
    assert lines[3] == f"[10.0.0.2]:2222 {key.key_type} {key.base64}"
    assert path.stat().st_mode & 0o777 == 0o644
    assert lookup_host_keys([path], "10.0.0.2", 2222) == [key]
    assert lookup_host_keys([path], "10.0.0.2", 22) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_new_file_in_a_new_private_folder(key: HostKey, tmp_path: Path) -> None:
    path = tmp_path / "home" / ".ssh" / "known_hosts"
    add_known_host(path, "pi4", 22, key)
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == f"pi4 {key.key_type} {key.base64}\n"


def test_hashed_entries_are_found(key: HostKey, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    add_known_host(path, "10.0.0.2", 2222, key)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    assert path.read_text().startswith("|1|")
    assert lookup_host_keys([path], "10.0.0.2", 2222) == [key]


def test_a_revoked_key_is_never_trusted(key: HostKey, tmp_path: Path) -> None:
    """OpenSSH refuses a key that a @revoked line names even where another line trusts it
    (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT)."""
    path = tmp_path / "known_hosts"
    add_known_host(path, "10.0.0.2", 2222, key)
    assert lookup_host_keys([path], "10.0.0.2", 2222) == [key]
    revocations = tmp_path / "ssh_known_hosts"
    revocations.write_text(f"@revoked * {key.key_type} {key.base64}\n")
    assert lookup_host_keys([path, revocations], "10.0.0.2", 2222) == []
    assert revoked_host_keys([path, revocations]) == {key}
    assert revoked_host_keys([path]) == set()


def test_host_patterns_match_as_ssh_keygen_finds_them(tmp_path: Path) -> None:
    # paramiko looks names up exactly, so lines that OpenSSH matches by pattern were "not in
    # known_hosts" (walk-through); ssh-keygen -F is OpenSSH's own lookup.
    keys = [HostKey(*generate_key(tmp_path / f"key{i}").split()) for i in range(7)]
    patterns = [
        "[10.0.0.*]:2222",
        "[10.0.0.2]:*",
        "10.0.0.2",
        "*.LAN,!bad.lan",
        "[10.0.0.?]:2222",
        "pi4,[pi4]:2200",
        "!10.0.0.3,10.0.0.*",
    ]
    path = tmp_path / "known_hosts"
    path.write_text(
        "".join(f"{p} {k.key_type} {k.base64}\n" for p, k in zip(patterns, keys, strict=True))
    )
    names = [("10.0.0.2", 2222), ("10.0.0.3", 2222), ("10.0.0.12", 2222), ("10.0.0.2", 22)]
    names += [("10.0.0.3", 22), ("10.0.0.4", 22), ("pi.lan", 22), ("bad.lan", 22)]
    names += [("pi4", 2200), ("pi4", 22), ("[pi4]", 2200), ("other", 22)]
    for host, port in names:
        name = known_hosts_name(host, port)
        found = subprocess.run(
            ["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True
        ).stdout
        expected = [k for k in keys if k.base64 in found]
        assert lookup_host_keys([path], host, port) == expected, name


def test_a_damaged_hashed_name_is_skipped(key: HostKey, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"|1|not-base64|x {key.key_type} {key.base64}\n")
    assert lookup_host_keys([path], "10.0.0.2", 22) == []
