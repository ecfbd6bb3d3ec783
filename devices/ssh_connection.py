"""Where an SSH target is and how to log in, resolved as OpenSSH would; connecting to it.

A profile's ``ssh.host`` is an alias from ~/.ssh/config (``HostName``, ``User``, ``Port``,
``IdentityFile``, ``IdentitiesOnly``, ``ProxyCommand``, ``UserKnownHostsFile``) or a host
name; the profile's own ``user``, ``port``, ``key_file`` and ``known_hosts`` override the
config. Keys come from the agent, the identity files and the default ``~/.ssh/id_*`` files;
no password is ever stored or asked for. Host keys are checked against known_hosts and an
unknown or changed key is refused: ``StrictHostKeyChecking`` is always ``yes`` here.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import paramiko

from devices.base import DeviceError
from devices.known_hosts import (
    SSH_PORT,
    HostKey,
    known_hosts_name,
    lookup_host_keys,
    matching_keys,
    revoked_host_keys,
)

_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


@dataclass(frozen=True)
class SshTarget:
    """One SSH target with every option resolved; ``known_hosts[0]`` is where trust writes."""

    device: str  # the device's name, for messages
    alias: str  # the profile's ssh.host
    hostname: str
    port: int
    user: str
    key_files: tuple[Path, ...]
    allow_agent: bool
    look_for_keys: bool
    known_hosts: tuple[Path, ...]
    global_known_hosts: tuple[Path, ...]
    proxy_command: str | None
    connect_timeout: float
    # How commands name the device's profile: its bundled name, or the YAML file's path
    # (a profile given by path cannot be found by its name).
    profile: str = ""

    @property
    def trust_command(self) -> str:
        return f"edgenas devices trust {shlex.quote(self.profile or self.device)}"

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def host_label(self) -> str:
        """The host as the user knows it: ``host``, or ``host:port`` off port 22."""
        return self.hostname if self.port == SSH_PORT else self.address

    @property
    def trust_file(self) -> Path:
        return self.known_hosts[0]

    def known_keys(self) -> list[HostKey]:
        """The keys known_hosts trusts for this host and port."""
        return lookup_host_keys(
            [*self.known_hosts, *self.global_known_hosts], self.hostname, self.port
        )

    def trusts(self, key: HostKey) -> bool:
        """Whether a connection takes ``key`` as the host's (``host_key_status``)."""
        return host_key_status(self, key) == "trusted"

    def trusted_keys(self) -> tuple[list[paramiko.PKey], list[paramiko.PKey]]:
        """The keys of the lines that match ``[host]:port``, and off port 22 those of the
        lines for the bare host (OpenSSH's fallback), as OpenSSH matches lines."""
        files = [*self.known_hosts, *self.global_known_hosts]
        with_port = matching_keys(files, known_hosts_name(self.hostname, self.port))
        bare = matching_keys(files, self.hostname) if self.port != SSH_PORT else []
        return with_port, bare

    def revoked_keys(self) -> set[HostKey]:
        """The keys known_hosts marks ``@revoked``."""
        return revoked_host_keys([*self.known_hosts, *self.global_known_hosts])


def resolve_target(
    device: str,
    host: str,
    *,
    user: str | None = None,
    port: int | None = None,
    key_file: str | os.PathLike[str] | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    allow_agent: bool = True,
    look_for_keys: bool = True,
    connect_timeout: float = 10.0,
    ssh_config: str | os.PathLike[str] | None = None,
) -> SshTarget:
    """The target for ``host`` with ~/.ssh/config (or ``ssh_config``) applied."""
    config_path = Path(ssh_config) if ssh_config is not None else Path("~/.ssh/config")
    config_path = config_path.expanduser()
    options: dict[str, object] = {}
    if config_path.is_file():
        try:
            options = dict(paramiko.SSHConfig.from_path(str(config_path)).lookup(host))
        except (OSError, paramiko.ConfigParseError, ValueError) as exc:
            raise DeviceError(f"device {device!r}: cannot read {config_path}: {exc}") from None
    if options.get("proxyjump") and not options.get("proxycommand"):
        raise DeviceError(
            f"device {device!r}: ProxyJump in {config_path} is not supported for host {host!r}; "
            "write it as 'ProxyCommand ssh -W %h:%p JUMPHOST' instead"
        )
    keys: list[Path] = []
    if key_file is not None:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise DeviceError(
                f"device {device!r}: ssh.key_file {str(key_file)!r} does not exist; "
                "give the private key's path, or leave it out to use the agent and ~/.ssh"
            )
        if (problem := _not_a_private_key(path)) is not None:
            raise DeviceError(
                f"device {device!r}: ssh.key_file {str(key_file)!r} {problem}; give the "
                "private key's path (e.g. ~/.ssh/id_ed25519), or leave it out to use the agent "
                "and ~/.ssh"
            )
        keys.append(path)
    keys += [Path(str(p)).expanduser() for p in _as_list(options.get("identityfile"))]
    identities_only = str(options.get("identitiesonly", "no")).lower() == "yes"
    if known_hosts is not None:
        user_files = [Path(known_hosts).expanduser()]
    elif options.get("userknownhostsfile"):
        user_files = [Path(p).expanduser() for p in str(options["userknownhostsfile"]).split()]
    else:
        user_files = [Path(p).expanduser() for p in _USER_KNOWN_HOSTS]
    global_files = [
        Path(p).expanduser()
        for p in str(options.get("globalknownhostsfile", " ".join(_GLOBAL_KNOWN_HOSTS))).split()
    ]
    proxy = options.get("proxycommand")
    config_port = str(options.get("port", SSH_PORT))
    if port is None and not (config_port.isdigit() and 0 < int(config_port) < 65536):
        raise DeviceError(
            f"device {device!r}: Port {config_port!r} for host {host!r} in {config_path} is "
            "not a port number; correct it there, or give ssh.port in the device profile"
        )
    return SshTarget(
        device=device,
        alias=host,
        hostname=str(options.get("hostname", host)),
        port=port if port is not None else int(config_port),
        user=user or str(options.get("user") or getpass.getuser()),
        key_files=tuple(dict.fromkeys(p for p in keys if p.is_file())),
        allow_agent=allow_agent,
        look_for_keys=look_for_keys and not identities_only,
        known_hosts=tuple(user_files),
        global_known_hosts=tuple(global_files),
        proxy_command=str(proxy) if proxy and str(proxy).lower() != "none" else None,
        connect_timeout=connect_timeout,
    )


class UnreachableError(DeviceError):
    """The host did not answer (or no SSH server did): worth trying again later."""


class UnknownHostKeyError(paramiko.SSHException):
    """Raised by the refusing policy; carries the key the server offered."""

    def __init__(self, key: HostKey) -> None:
        super().__init__(f"unknown host key {key.describe()}")
        self.key = key


class RevokedHostKeyError(UnknownHostKeyError):
    """The server offered a key that a ``@revoked`` line of known_hosts names."""


HostKeyStatus = Literal["trusted", "changed", "unknown", "revoked"]


def host_key_status(target: SshTarget, offered: HostKey) -> HostKeyStatus:
    """What OpenSSH makes of the key ``offered`` (sshconnect.c, ``check_host_key``): trusted
    where a line that matches ``[host]:port`` holds it; changed where such lines exist, of
    any key type, but none holds it; else, off port 22, trusted where a line for the bare
    host holds it ("found matching key w/out port"), and unknown otherwise. A ``@revoked``
    key is never trusted."""
    if offered in target.revoked_keys():
        return "revoked"
    with_port, bare = target.trusted_keys()
    if offered in {HostKey.from_pkey(k) for k in with_port}:
        return "trusted"
    if with_port:
        return "changed"
    return "trusted" if offered in {HostKey.from_pkey(k) for k in bare} else "unknown"


class _RefuseUnknownHosts(paramiko.MissingHostKeyPolicy):
    """Decides every host key (paramiko's own store stays empty: it looks names up exactly
    and keeps one key per type) by ``host_key_status``."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        offered = HostKey.from_pkey(key)
        status = host_key_status(self.target, offered)
        if status == "revoked":
            raise RevokedHostKeyError(offered)
        if status == "changed":
            known = self.target.trusted_keys()[0]
            same = [k for k in known if k.get_name() == key.get_name()]
            raise paramiko.BadHostKeyException(hostname, key, (same or known)[0])
        if status == "unknown":
            raise UnknownHostKeyError(offered)


def _asking_for_known_key_types(target: SshTarget) -> Callable[..., paramiko.Transport]:
    """A transport factory whose transport asks the server for the key types of the lines for
    ``[host]:port`` first, as OpenSSH orders its host key algorithms (``order_hostkeyalgs``;
    the bare host's lines do not count there): else a server with several host keys answers
    with its first (ed25519), and a host known by another key read as changed."""
    with_port, _ = target.trusted_keys()
    wanted: list[str] = []
    for key in with_port:
        name = key.get_name()
        for algorithm in ("rsa-sha2-512", "rsa-sha2-256", name) if name == "ssh-rsa" else (name,):
            if algorithm not in wanted:
                wanted.append(algorithm)

    def make(*args: Any, **kwargs: Any) -> paramiko.Transport:
        transport = paramiko.Transport(*args, **kwargs)
        options = transport.get_security_options()
        offered = list(options.key_types)
        first = [t for t in wanted if t in offered]
        options.key_types = tuple(first + [t for t in offered if t not in first])
        return transport

    return make


def _not_a_private_key(path: Path) -> str | None:
    """Why the file at ``path`` cannot be an SSH private key, or None where it may be one
    (OpenSSH's and PEM's formats, text that starts with ``-----BEGIN``): paramiko tried it
    and said only that no key was accepted, as if the server had refused it."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if head.startswith(b"-----BEGIN") or b"PuTTY-User-Key-File" in head:
        return None
    if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        return "is a public key (the .pub half), not the private key"
    return "is not a private key (one starts with '-----BEGIN')"


def connect(target: SshTarget, *, keepalive_s: float = 15.0) -> paramiko.SSHClient:
    """A logged-in client with verified host key and keepalive, or a one-line DeviceError."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_RefuseUnknownHosts(target))
    timeout = target.connect_timeout
    try:
        client.connect(
            target.hostname,
            port=target.port,
            username=target.user,
            # paramiko takes a list here (its stubs say a str)
            key_filename=cast(Any, [str(p) for p in target.key_files]),
            allow_agent=target.allow_agent,
            look_for_keys=target.look_for_keys,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            sock=_proxy(target),
            transport_factory=_asking_for_known_key_types(target),
        )
    except Exception as exc:
        transport = client.get_transport()
        # Logging in means the key exchange is done: a server that stalls before (no banner,
        # no key exchange, as a board that powers off does) must not read as a refused key.
        logging_in = (
            transport is not None
            and transport.is_active()
            and _key_exchanged(transport)
            and not transport.is_authenticated()
        )
        banner_seen = bool(transport is not None and transport.remote_version)
        client.close()
        error = _connect_error(target, exc, logging_in=logging_in, banner_seen=banner_seen)
        if error is None:
            raise
        raise error from None
    transport = client.get_transport()
    assert transport is not None  # connect() succeeded
    transport.set_keepalive(max(1, round(keepalive_s)))
    if isinstance(transport.sock, socket.socket):
        # Requests and replies are small: without this, Nagle's algorithm and delayed ACKs
        # hold some of them back by tens of milliseconds (OpenSSH sets it as well).
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def fetch_host_key(target: SshTarget) -> HostKey:
    """The host key the server offers, without logging in and without trusting it."""
    sock: socket.socket | paramiko.ProxyCommand | None = None
    transport: paramiko.Transport | None = None
    try:
        sock = _proxy(target) or socket.create_connection(
            (target.hostname, target.port), timeout=target.connect_timeout
        )
        transport = _asking_for_known_key_types(target)(sock)
        transport.banner_timeout = target.connect_timeout
        transport.start_client(timeout=target.connect_timeout)
        return HostKey.from_pkey(transport.get_remote_server_key())
    except Exception as exc:
        error = _connect_error(target, exc, logging_in=False)
        if error is None:
            raise
        raise error from None
    finally:
        if transport is not None:
            transport.close()
        elif sock is not None:
            sock.close()


def unknown_host_message(target: SshTarget) -> str:
    return (
        f"device {target.device!r}: host key for {target.host_label} is not in known_hosts "
        f"({', '.join(map(str, target.known_hosts))}); run '{target.trust_command}' after "
        "checking it"
    )


def revoked_host_message(target: SshTarget, key: HostKey) -> str:
    return (
        f"device {target.device!r}: {target.host_label} offers host key {key.describe()}, "
        "which known_hosts marks @revoked: it must never be trusted; get the device's current "
        "key from its administrator (or reinstall its host keys) before connecting"
    )


def _proxy(target: SshTarget) -> paramiko.ProxyCommand | None:
    return paramiko.ProxyCommand(target.proxy_command) if target.proxy_command else None


def _connect_error(
    target: SshTarget, exc: BaseException, *, logging_in: bool, banner_seen: bool = True
) -> DeviceError | None:
    """The one-line error for a failed connection; None for what is not a connection error."""
    prefix = f"device {target.device!r}:"
    if isinstance(exc, RevokedHostKeyError):
        return DeviceError(revoked_host_message(target, exc.key))
    if isinstance(exc, UnknownHostKeyError):
        return DeviceError(unknown_host_message(target))
    if isinstance(exc, paramiko.BadHostKeyException):
        known = HostKey.from_pkey(exc.expected_key).describe()
        offered = HostKey.from_pkey(exc.key).describe()
        name = known_hosts_name(target.hostname, target.port)
        return DeviceError(
            f"{prefix} the host key of {target.host_label} has CHANGED: known_hosts has {known}, "
            f"the server offers {offered}; this may be an attack, or the device was reinstalled. "
            f"If you know why, remove the old key (ssh-keygen -R '{name}' -f {target.trust_file}) "
            f"and run '{target.trust_command}'"
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return DeviceError(
            f"{prefix} cannot log in to {target.address} as {target.user!r}: a private key is "
            "encrypted; load it into your ssh-agent (ssh-add KEYFILE), edgenas never asks for "
            "passphrases"
        )
    if isinstance(exc, paramiko.AuthenticationException) or (
        logging_in and isinstance(exc, paramiko.SSHException)
    ):
        return DeviceError(
            f"{prefix} cannot log in to {target.address} as {target.user!r}: no key was accepted "
            f"(tried {_tried(target)}); the public key must be in ~{target.user}/.ssh/"
            "authorized_keys on the device, or the key loaded in your ssh-agent (ssh-add)"
        )
    if isinstance(exc, paramiko.ProxyCommandFailure):
        return DeviceError(f"{prefix} the ProxyCommand for {target.alias!r} failed: {exc}")
    if isinstance(exc, socket.gaierror):
        return DeviceError(
            f"{prefix} cannot resolve host name {target.hostname!r} ({exc.strerror}); check "
            "ssh.host in the profile or the HostName in ~/.ssh/config"
        )
    if isinstance(exc, (OSError, EOFError)):
        reason = "timed out" if isinstance(exc, TimeoutError) else _reason(exc)
        return UnreachableError(
            f"{prefix} cannot reach {target.address} ({reason}); check the address, the port, "
            "that the device is on and its SSH server running, and the network"
        )
    if isinstance(exc, paramiko.SSHException):
        if ("banner" in str(exc).lower() or not banner_seen) and isinstance(
            exc.__context__, EOFError
        ):
            # at once, not after the timeout: something at the port ends every connection
            return UnreachableError(
                f"{prefix} the server at {target.address} closed the connection before "
                "sending an SSH banner; check the port, and that no firewall or connection "
                "limit (OpenSSH's MaxStartups) turns edgenas away"
            )
        if "banner" in str(exc).lower() or not banner_seen:
            return UnreachableError(
                f"{prefix} no SSH server answered at {target.address} within "
                f"{target.connect_timeout:g} s (no SSH banner); check the port, that sshd runs "
                "and that the device is not hanging"
            )
        if not logging_in:
            # Connected, but the server never finished the handshake (paramiko then says
            # "No existing session"): it hangs, or is overloaded; a reconnect may succeed.
            return UnreachableError(
                f"{prefix} the SSH server at {target.address} did not complete the handshake "
                f"within {target.connect_timeout:g} s; check that the device is not hanging or "
                "overloaded, or raise ssh.connect_timeout in the profile"
            )
        return DeviceError(f"{prefix} SSH connection to {target.address} failed: {exc}")
    return None


def _key_exchanged(transport: paramiko.Transport) -> bool:
    try:
        transport.get_remote_server_key()
    except paramiko.SSHException:
        return False
    return True


def _tried(target: SshTarget) -> str:
    tried = [str(p) for p in target.key_files]
    if target.allow_agent:
        tried.append("the ssh-agent" if os.environ.get("SSH_AUTH_SOCK") else "no ssh-agent")
    if target.look_for_keys:
        tried.append("~/.ssh/id_*")
    return ", ".join(tried) if tried else "no keys at all"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = list(exc.errors.values())
        strerror = getattr(errors[0], "strerror", None) if errors else None
        return str(strerror) if strerror else "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
