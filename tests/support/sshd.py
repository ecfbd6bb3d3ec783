"""A throwaway OpenSSH server on 127.0.0.1, for the ssh device's tests and benchmark.

It runs Debian's ``/usr/sbin/sshd`` in the foreground with a config, a host key and a user
key generated in a temporary folder, listening on a free high port. Whoever runs it can log
in as themselves (root included, by key only). Nothing outside the folder is touched except
the privilege-separation directory sshd insists on (``/run/sshd``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")


def sshd_missing() -> str | None:
    """Why no test server can run here, or None when one can."""
    if not SSHD.exists():
        return f"{SSHD} is not installed (apt-get install openssh-server; make setup does it)"
    return None


def generate_key(path: Path, key_type: str = "ed25519") -> str:
    """A new passphrase-less key (ed25519 unless given) at ``path``; returns its public line."""
    path.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", key_type, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    folder: Path
    port: int
    user: str
    user_key: Path  # private key whose public half is authorized
    host_key: str  # the server's public host key line: "ssh-ed25519 AAAA..."
    known_hosts: Path  # a known_hosts file that trusts this server
    process: subprocess.Popen[bytes]
    log: Path
    more_host_keys: dict[str, str] = field(default_factory=dict)  # key type -> public line

    host = "127.0.0.1"

    @property
    def known_hosts_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    def write_known_hosts(self, path: Path, host_key: str | None = None) -> Path:
        """A known_hosts file with ``host_key`` (default: the real one) for this server."""
        path.write_text(f"{self.known_hosts_name} {host_key or self.host_key}\n")
        return path

    def ssh_section(self, **overrides: Any) -> dict[str, Any]:
        """A profile's ``ssh`` section that logs in to this server with explicit files only."""
        section: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.user_key),
            "known_hosts": str(self.known_hosts),
            "allow_agent": False,
            "look_for_keys": False,
            "connect_timeout": 10.0,
        }
        section.update(overrides)
        return section

    def write_profile(
        self,
        path: Path,
        name: str,
        *,
        python: str | os.PathLike[str],
        ssh: Mapping[str, Any] | None = None,
        **top: Any,
    ) -> Path:
        """A device profile YAML for this server; ``ssh`` entries override the section."""
        profile: dict[str, Any] = {
            "name": name,
            "kind": "ssh",
            "description": "throwaway sshd on 127.0.0.1",
            **top,
            "ssh": self.ssh_section(python=str(python), **dict(ssh or {})),
        }
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        return path

    def session_pids(self) -> list[int]:
        """The sshd processes serving connections (the per-connection children), not the
        listener and not the commands they run."""
        children = _children()
        found: list[int] = []
        todo = list(children.get(self.process.pid, []))
        while todo:
            pid = todo.pop()
            if _comm(pid).startswith("sshd"):
                found.append(pid)
                todo.extend(children.get(pid, []))
        return found

    def kill_sessions(self) -> int:
        """Cut every open connection as a network failure would; returns how many processes
        were killed. Commands the sessions started keep running, as they would."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended by itself
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        """Take the server down as a board that powers off: sessions cut, nobody listening.
        The listener is frozen first: a client that reconnects the moment its session drops
        would otherwise be served by a listener that has not exited yet, and that new session
        would outlive it."""
        self.process.send_signal(signal.SIGSTOP)  # send_signal is a no-op once it has exited
        self.kill_sessions()
        self.process.kill()  # connections waiting to be accepted are reset
        self.process.wait()


def start_sshd(
    folder: Path, *, timeout_s: float = 15.0, sftp: bool = True, more_host_keys: Sequence[str] = ()
) -> Sshd:
    """Start sshd with everything in ``folder``; waits until it answers with its banner.
    ``sftp=False``: without the sftp subsystem, as Dropbear without an sftp-server.
    ``more_host_keys``: key types (ecdsa, rsa) of host keys it has besides its ed25519 one,
    whose public lines are ``Sshd.more_host_keys``."""
    reason = sshd_missing()
    if reason:
        raise RuntimeError(reason)
    folder.mkdir(parents=True, exist_ok=True)
    host_key_path = folder / "ssh_host_ed25519_key"
    host_key = generate_key(host_key_path)
    more = {t: generate_key(folder / f"ssh_host_{t}_key", t) for t in more_host_keys}
    user_key = folder / "id_ed25519"
    authorized = folder / "authorized_keys"
    authorized.write_text(generate_key(user_key) + "\n")
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    user = getpass.getuser()
    last_error = ""
    for _ in range(5):  # another process may take the free port before sshd binds it
        port = free_port()
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {port}",
                    f"HostKey {host_key_path}",
                    *(f"HostKey {folder / f'ssh_host_{t}_key'}" for t in more),
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {folder / 'sshd.pid'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {user}",
                    "StrictModes no",
                    "UsePAM no",
                    "PrintMotd no",
                    "MaxStartups 50",
                    "MaxSessions 50",
                    *(["Subsystem sftp internal-sftp"] if sftp else []),
                    "",
                ]
            )
        )
        log = folder / "sshd.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        if _wait_for_banner(port, process, timeout_s):
            known_hosts = folder / "known_hosts"
            server = Sshd(folder, port, user, user_key, host_key, known_hosts, process, log, more)
            server.write_known_hosts(known_hosts)
            return server
        if process.poll() is None:
            process.kill()
        process.wait()
        last_error = log.read_text(errors="replace").strip()
    raise RuntimeError(f"sshd did not start: {last_error or 'no output'}")


def _wait_for_banner(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
