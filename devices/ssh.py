"""The ``ssh`` device: the on-device runner on a board or phone, reached with paramiko.

One connection serves a whole session (kept alive, re-opened when it drops). The runner and
the models go by SFTP into a fresh temporary folder on the device, removed on ``close()``
and whenever a call fails. Models are measured in batches, one runner call each, so that a
dropped connection costs at most the batch in flight. Every argument of a remote command is
quoted: paths are data, never shell text.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko

from devices.base import (
    CLASSIFY_IMAGES_PER_CALL,
    Device,
    DeviceError,
    Runtime,
    register_device_kind,
)
from devices.known_hosts import HostKey, add_known_host
from devices.measurement import Fingerprint, MeasuredWith, Measurement
from devices.profiles import SshSection, validate_profile
from devices.runner_protocol import (
    RUNNER_PATH,
    RunnerJob,
    RunnerWarnings,
    RunSettings,
    build_job,
    classify_refusal,
    no_results,
    parse_classes,
    parse_fingerprint,
    parse_results,
    runner_failure,
    save_images,
)
from devices.ssh_connection import (
    SshTarget,
    UnreachableError,
    connect,
    fetch_host_key,
    resolve_target,
)
from once_for_all.processes import process_token, token_ended

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

T = TypeVar("T")
# In a remote folder: the client's process_token(). Not the local device's hostname and pid:
# a board is reached from several machines, and hostnames repeat across them.
_OWNER = "owner.json"
_SMALL_COMMAND_TIMEOUT_S = 30.0  # mktemp, rm, kill: these answer at once on a live device
_POLL_S = 0.5  # how often a long runner call checks the connection and the deadline
_EOF_POLL_S = 0.005  # how often a finished command's output is checked for its end
_NOTICE_DROP_S = 2.0  # how long a channel error waits for the transport to notice a drop


class _ConnectionLost(Exception):
    """The connection dropped in the middle of something; the caller may reconnect."""


class _CommandTimeout(Exception):
    pass


@dataclass
class _Session:
    """One logged-in connection with its remote folder and the files already uploaded."""

    client: paramiko.SSHClient
    transport: paramiko.Transport
    sftp: paramiko.SFTPClient
    folder: str
    uploaded: dict[tuple[str, int, int], str] = field(default_factory=dict)
    uploads: int = 0  # files uploaded so far, removed ones too: numbers their remote names

    def alive(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.client.close()


class SshDevice(Device):
    """Runs ``runner.py`` with the device's Python over SSH.

    ``host`` and the other connection options are resolved as OpenSSH would (see
    ``devices.ssh_connection``). ``command_timeout`` bounds one runner call of at most
    ``batch_size`` models. After a dropped connection the device reconnects (at most
    ``max_reconnects`` times in a row) and goes on with the batch in flight, keeping the
    batches already measured. ``reconnects`` and ``runner_calls`` count what happened.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        user: str | None = None,
        port: int | None = None,
        key_file: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        allow_agent: bool = True,
        look_for_keys: bool = True,
        python: str = "python3",
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        keepalive_s: float = 15.0,
        batch_size: int = 32,
        max_reconnects: int = 3,
        remote_tmpdir: str | None = None,
        ssh_config: str | os.PathLike[str] | None = None,
        settings: RunSettings | None = None,
    ) -> None:
        if batch_size < 1 or max_reconnects < 0:
            raise ValueError("batch_size must be >= 1 and max_reconnects >= 0")
        self.name = name
        self.target: SshTarget = resolve_target(
            name,
            host,
            user=user,
            port=port,
            key_file=key_file,
            known_hosts=known_hosts,
            allow_agent=allow_agent,
            look_for_keys=look_for_keys,
            connect_timeout=connect_timeout,
            ssh_config=ssh_config,
        )
        self.python = python
        self.command_timeout = command_timeout
        self.keepalive_s = keepalive_s
        self.batch_size = batch_size
        self.max_reconnects = max_reconnects
        self.remote_tmpdir = remote_tmpdir
        self.settings = settings or RunSettings()
        self.reconnects = 0
        self.runner_calls = 0
        self._session: _Session | None = None
        self._stale_folders: list[str] = []  # of sessions that dropped; removed on reconnect
        self._fingerprint: Fingerprint | None = None
        self._warnings = RunnerWarnings()

    def __enter__(self) -> SshDevice:
        return self

    @property
    def models_per_call(self) -> int:
        return self.batch_size

    @property
    def remote_folder(self) -> str | None:
        """The session's temporary folder on the device; None while not connected."""
        return self._session.folder if self._session is not None else None

    @property
    def per_op_times(self) -> bool:
        return self.settings.per_op_times()

    def measured_with(self) -> MeasuredWith:
        return self.settings.measured_with()

    def fingerprint(self) -> Fingerprint:
        """The device's fingerprint for its runtime and threads (asked once, cached)."""
        if self._fingerprint is None:
            job = build_job([], self.settings)
            with self._closing_on_error():
                payload = self._with_reconnect(
                    "while asking for its fingerprint", lambda: self._run_runner(self._open(), job)
                )
            self._fingerprint = parse_fingerprint(self.name, payload)
        return self._fingerprint

    def measure(
        self,
        models: Sequence[Path],
        *,
        runtime: Runtime | None = None,
        threads: int | None = None,
        warmup: int | None = None,
        runs: int | None = None,
        profile_ops: bool = False,
    ) -> list[Measurement]:
        if not models:
            return []
        settings = self.settings.override(
            runtime=runtime, threads=threads, warmup=warmup, runs=runs
        )
        paths = self._model_files(models)
        labels = [str(p) for p in models]
        starts = range(0, len(paths), self.batch_size)
        measured: list[Measurement] = []
        warnings: dict[str, None] = {}
        fingerprint: Fingerprint | None = None
        with self._closing_on_error():
            for number, start in enumerate(starts, 1):
                batch = paths[start : start + self.batch_size]

                def run_batch(batch: list[Path] = batch) -> str:
                    session = self._open()
                    remote = [self._upload(session, p) for p in batch]
                    return self._run_runner(
                        session, build_job(remote, settings, profile_ops=profile_ops)
                    )

                payload = self._with_reconnect(
                    f"while measuring batch {number} of {len(starts)} "
                    f"({len(measured)} of {len(paths)} models measured)",
                    run_batch,
                )
                results = parse_results(self.name, payload, labels[start : start + len(batch)])
                measured.extend(results.measurements)
                warnings.update(dict.fromkeys(results.warnings))
                fingerprint = results.fingerprint
        if settings == self.settings and fingerprint is not None:
            self._fingerprint = fingerprint
        for warning in self._warnings.new(list(warnings)):
            log.warning("device %r: %s", self.name, warning)
        return measured

    @property
    def classify_refusal(self) -> str | None:
        # every runtime of the runner (trtexec through its exported outputs), but a TensorRT
        # int8 engine calibrated on random data
        return classify_refusal(self.settings)

    def classify(
        self,
        models: Sequence[Path],
        images: npt.NDArray[np.floating],
        *,
        progress: Callable[[str], None] | None = None,
    ) -> list[list[int]]:
        """As ``measure``: calls of at most ``batch_size`` models and
        ``CLASSIFY_IMAGES_PER_CALL`` images, each well within the command timeout of a call
        that times ``batch_size`` models; each part of the images is uploaded once."""
        paths = self._model_files(models)
        classes: list[list[int]] = [[] for _ in paths]
        warnings: dict[str, None] = {}
        parts = range(0, len(images), CLASSIFY_IMAGES_PER_CALL)
        starts = range(0, len(paths), self.batch_size)
        calls = [(part, start) for part in parts for start in starts]
        with (
            tempfile.TemporaryDirectory(prefix="edgenas-images-") as tmp,
            self._closing_on_error(),
        ):
            for number, (first, start) in enumerate(calls, 1):
                part = images[first : first + CLASSIFY_IMAGES_PER_CALL]
                file = Path(tmp) / f"images-{first}.npy"
                if not file.exists():
                    save_images(file, part)
                batch = paths[start : start + self.batch_size]

                def run_batch(batch: list[Path] = batch, file: Path = file) -> str:
                    session = self._open()
                    remote = [self._upload(session, p) for p in batch]
                    job = build_job(
                        remote,
                        self.settings,
                        classify=self._upload(session, file),
                        engines=f"{session.folder}/engines",  # one build per file (trtexec)
                    )
                    return self._run_runner(session, job, classify=True)

                payload = self._with_reconnect(
                    f"while classifying images (call {number} of {len(calls)})", run_batch
                )
                results = parse_classes(self.name, payload, len(batch), len(part))
                for i, top1 in enumerate(results.top1, start):
                    classes[i].extend(top1)
                if progress is not None:
                    progress(f"{self.name}: {number} of {len(calls)} classify calls done")
                warnings.update(dict.fromkeys(results.warnings))
                if start == starts[-1]:  # the part's last call
                    self._remove_upload(file)
        for warning in self._warnings.new(list(warnings)):
            log.warning("device %r: %s", self.name, warning)
        return classes

    def named_on_the_command_line(self, profile: str) -> None:
        self.target = replace(self.target, profile=profile)

    def close(self) -> None:
        """Remove the remote folders and close the connection (safe to call twice)."""
        session, self._session = self._session, None
        leftovers, self._stale_folders = self._stale_folders, []
        if session is not None:
            leftovers = [session.folder, *leftovers]
            try:
                if session.alive():
                    self._remove_folders(session, leftovers)
                    leftovers = []
            except (_ConnectionLost, _CommandTimeout, DeviceError) as exc:
                log.warning("device %r: clean-up failed: %s", self.name, exc)
            finally:
                session.close()
        if leftovers:
            log.warning(
                "device %r: could not remove %s on %s: the connection is gone (edgenas removes "
                "it when it next connects to the device from this machine)",
                self.name,
                ", ".join(leftovers),
                self.target.address,
            )

    def server_host_key(self) -> HostKey:
        """The host key the device offers now, fetched without logging in or trusting it."""
        return fetch_host_key(self.target)

    def known_host_keys(self) -> list[HostKey]:
        """The keys known_hosts holds for this device's host and port."""
        return self.target.known_keys()

    def trust(self, key: HostKey) -> Path:
        """Add ``key`` for this device's host and port to its known_hosts file; returns it."""
        add_known_host(self.target.trust_file, self.target.hostname, self.target.port, key)
        return self.target.trust_file

    @contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            try:
                self.close()
            except Exception as exc:  # the first error is the one to report
                log.warning("device %r: clean-up failed: %s", self.name, exc)
            raise

    def _with_reconnect(self, what: str, step: Callable[[], T]) -> T:
        """``step()``, re-run on a fresh connection when the connection drops."""
        drops = 0
        while True:
            try:
                return step()
            except (_ConnectionLost, UnreachableError) as exc:
                if isinstance(exc, UnreachableError) and drops == 0:
                    raise  # never connected: nothing to go on with
                drops += 1
                self._drop_session()
                if drops > self.max_reconnects:
                    raise DeviceError(
                        f"device {self.name!r}: lost the connection to {self.target.address} "
                        f"{what}, and {self.max_reconnects} reconnects did not help ({exc}); "
                        "check the network and the device (power, dmesg), or raise "
                        "ssh.max_reconnects"
                    ) from None
                self.reconnects += 1
                log.warning(
                    "device %r: lost the connection to %s %s (%s); reconnecting (%d of %d)",
                    self.name,
                    self.target.address,
                    what,
                    exc,
                    drops,
                    self.max_reconnects,
                )
                time.sleep(min(2.0 ** (drops - 1) - 1.0, 5.0))

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._stale_folders.append(session.folder)
            session.close()

    def _open(self) -> _Session:
        """The live session, connecting and preparing the remote folder when needed."""
        if self._session is not None:
            if self._session.alive():
                return self._session
            self._drop_session()
            raise _ConnectionLost("the connection had dropped since the last call")
        client = connect(self.target, keepalive_s=self.keepalive_s)
        transport = client.get_transport()
        assert transport is not None  # a connected client has one
        try:
            with self._guard(transport, "preparing the remote folder"):
                if self._stale_folders:
                    self._remove_folders_with(transport, self._stale_folders)
                    self._stale_folders = []
                # SFTP first: a server without it (Dropbear, minimal boards) is refused
                # before a folder is made that nothing could then copy into.
                sftp = self._open_sftp(transport)
                folder = self._make_folder(transport)
                self._remove_orphaned_folders(transport, folder)
        except BaseException:
            client.close()
            raise
        session = _Session(client, transport, sftp, folder)
        self._session = session
        with self._guard(transport, "uploading runner.py"):
            sftp.put(str(RUNNER_PATH), f"{folder}/runner.py")
        return session

    def _open_sftp(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        """An SFTP client whose every read and write gives up after ``command_timeout`` s
        without progress: a device that hangs with its TCP connection up would otherwise
        block a transfer for ever (keepalives do not notice it)."""
        channel = transport.open_session(timeout=self.target.connect_timeout)
        channel.settimeout(self.command_timeout)
        try:
            channel.invoke_subsystem("sftp")
            return paramiko.SFTPClient(channel)
        except (paramiko.SSHException, EOFError) as exc:
            if _connection_gone(transport, exc):
                raise
            reason = str(exc) or "no sftp subsystem"
            raise DeviceError(
                f"device {self.name!r}: its SSH server refused SFTP ({reason}), which edgenas "
                "copies the models with; enable it on the device (OpenSSH: 'Subsystem sftp "
                "internal-sftp' in sshd_config; Dropbear: install an sftp-server, e.g. the "
                "openssh-sftp-server package)"
            ) from None

    def _make_folder(self, transport: paramiko.Transport) -> str:
        parent = (
            shlex.quote(self.remote_tmpdir.rstrip("/") or "/")
            if self.remote_tmpdir
            else '"${TMPDIR:-/tmp}"'
        )
        # whose folder it is: a client killed with SIGKILL, or cut off, cannot remove its own
        token = process_token()
        owner = f'printf %s {shlex.quote(json.dumps(token))} > "$d/{_OWNER}" && ' if token else ""
        script = (
            f'd=$(mktemp -d {parent}/edgenas.XXXXXX) && mkdir "$d/models" && {owner}printf %s "$d"'
        )
        status, out, err = self._exec(transport, script, timeout=_SMALL_COMMAND_TIMEOUT_S)
        # The last line: a login shell that prints something of its own comes first.
        lines = out.decode(errors="replace").strip().splitlines()
        folder = lines[-1].strip() if lines else ""
        if status != 0 or not folder.startswith("/") or "/edgenas." not in folder:
            where = self.remote_tmpdir or "$TMPDIR or /tmp"
            raise DeviceError(
                f"device {self.name!r}: cannot make a temporary folder in {where} on the device: "
                f"{_last_line(err) or f'exit status {status}'}; set ssh.remote_tmpdir to a "
                "writable folder"
            )
        return folder

    def _remove_orphaned_folders(self, transport: paramiko.Transport, folder: str) -> None:
        """Remove the folders beside ``folder`` that an edgenas process of this machine (and
        boot) made and that is certainly gone (``token_ended``): a client killed, or cut off
        when it would have removed its folder, left it on the device for good
        (walk-through). Folders of other machines, of live runs, and without an owner stay."""
        parent = shlex.quote(folder.rsplit("/", 1)[0] or "/")
        script = (
            f"for d in {parent}/edgenas.*; do "
            f'[ -f "$d/{_OWNER}" ] && printf "%s\\t%s\\n" "$d" "$(head -c 300 "$d/{_OWNER}")"; '
            "done; true"
        )
        status, out, _ = self._exec(transport, script, timeout=_SMALL_COMMAND_TIMEOUT_S)
        orphaned = []
        for line in out.decode(errors="replace").splitlines() if status == 0 else []:
            path, _, text = line.partition("\t")
            try:
                owner = json.loads(text)
            except ValueError:
                continue
            if path != folder and token_ended(owner):
                orphaned.append(path)
        if orphaned:
            log.info("device %r: removing %s, left by ended edgenas runs", self.name, orphaned)
            self._remove_folders_with(transport, orphaned)

    def _remove_folders(self, session: _Session, folders: Sequence[str]) -> None:
        with self._guard(session.transport, "removing the remote folder"):
            self._remove_folders_with(session.transport, folders)

    def _remove_folders_with(self, transport: paramiko.Transport, folders: Sequence[str]) -> None:
        # Only folders that mktemp made for us: never anything else, whatever happened.
        targets = [f for f in folders if f.startswith("/") and "/edgenas." in f]
        if not targets:
            return
        quoted = " ".join(shlex.quote(f) for f in targets)
        # A runner still working in one (a dropped connection or an interrupt leaves it
        # running on the device) is stopped first, or it would compete with the next
        # measurement for the CPU. Its pid counts only while its working folder is that
        # folder (compared as physical paths: /proc shows the cwd with links resolved), so
        # a pid that was reused since is never signalled.
        command = (
            f"for d in {quoted}; do "
            'p=$(cat "$d/runner.pid" 2>/dev/null) && here=$(cd "$d" && pwd -P) && '
            '[ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$here" ] && kill -TERM "$p"; '
            f"done; rm -rf -- {quoted}"
        )
        status, _, err = self._exec(transport, command, timeout=_SMALL_COMMAND_TIMEOUT_S)
        if status != 0:
            log.warning(
                "device %r: could not remove %s: %s", self.name, ", ".join(targets), _last_line(err)
            )

    def _upload(self, session: _Session, path: Path) -> str:
        """The model's path on the device, uploading it once per session."""
        key = _upload_key(path)
        remote = session.uploaded.get(key)
        if remote is None:
            # A counter keeps two local files of the same name apart; the name itself stays,
            # spaces and quotes included, as it is only ever passed as data.
            remote = f"{session.folder}/models/{session.uploads}-{path.name}"
            with self._guard(session.transport, f"uploading {path}"):
                session.sftp.put(str(path), remote)
            session.uploads += 1
            session.uploaded[key] = remote
        return remote

    def _remove_upload(self, path: Path) -> None:
        """Remove a file this session uploaded from the device (best effort; the folder goes
        at ``close``): a part of the images, which is large and not needed again."""
        session = self._session
        remote = session.uploaded.pop(_upload_key(path), None) if session else None
        if session is None or remote is None:
            return
        try:
            with self._guard(session.transport, f"removing {remote}"):
                session.sftp.remove(remote)
        except _ConnectionLost as exc:  # the next call reconnects and says so
            log.debug("device %r: %s", self.name, exc)
        except DeviceError as exc:
            log.warning("device %r: %s", self.name, exc)

    def _run_runner(self, session: _Session, job: RunnerJob, *, classify: bool = False) -> str:
        """One runner call: the job on stdin, the results read back from a file."""
        self.runner_calls += 1
        out_name = f"results-{self.runner_calls}.json"
        script = (
            f"cd {shlex.quote(session.folder)} && echo $$ > runner.pid && "
            f"exec {_remote_python(self.python)} runner.py --job - --out {shlex.quote(out_name)}"
        )
        try:
            status, _, err = self._exec(
                session.transport,
                script,
                stdin=json.dumps(job).encode(),
                timeout=self.command_timeout,
            )
        except _CommandTimeout:
            self._kill_runner(session)
            raise DeviceError(
                f"device {self.name!r}: the runner did not finish within "
                f"{self.command_timeout:g} s (ssh.command_timeout); "
                + (
                    "classify with fewer models per call (ssh.batch_size), check the files on "
                    "fewer images (export --device-check-images, recipe "
                    "export.device_check_images), or raise the timeout"
                    if classify
                    else "measure fewer models per batch (ssh.batch_size) or raise the timeout"
                )
            ) from None
        output = self._read_results(session, out_name)
        if status == 0 and not output:
            raise no_results(self.name, self.python, "ssh.python")
        if status == 0:
            return output
        # the shell's own statuses: 127 not found, 126 not a program (a folder, no x bit)
        if status in (126, 127) and not output:
            raise DeviceError(
                f"device {self.name!r}: cannot start Python {self.python!r} on "
                f"{self.target.host_label} ({_last_line(err) or 'not found'}); set ssh.python in "
                "the device profile to the Python that has numpy and the runtime"
            )
        if status is None:
            raise DeviceError(
                f"device {self.name!r}: the runner was killed on the device without an exit "
                f"status (out of memory?): {_last_line(err) or 'no output'}"
            )
        raise runner_failure(self.name, returncode=status, output=output, stderr=err.decode())

    def _read_results(self, session: _Session, name: str) -> str:
        path = f"{session.folder}/{name}"
        with self._guard(session.transport, "reading the results"):
            try:
                with session.sftp.open(path, "rb") as f:
                    return bytes(f.read()).decode()
            except FileNotFoundError:
                return ""

    def _kill_runner(self, session: _Session) -> None:
        """Stop the runner a timed-out call left running (best effort)."""
        script = f'cd {shlex.quote(session.folder)} && kill -TERM "$(cat runner.pid)"'
        try:
            self._exec(session.transport, script, timeout=_SMALL_COMMAND_TIMEOUT_S)
        except (_ConnectionLost, _CommandTimeout, paramiko.SSHException, OSError) as exc:
            log.warning("device %r: could not stop the timed-out runner: %s", self.name, exc)

    def _exec(
        self,
        transport: paramiko.Transport,
        script: str,
        *,
        timeout: float,
        stdin: bytes | None = None,
    ) -> tuple[int | None, bytes, bytes]:
        """Run ``script`` with ``sh`` on the device: (exit status or None, stdout, stderr).

        ``sh -c`` makes the script's syntax independent of the login shell.
        """
        deadline = time.monotonic() + timeout
        with self._guard(transport, "running a command"):
            channel = transport.open_session(timeout=self.target.connect_timeout)
            try:
                channel.exec_command("sh -c " + shlex.quote(script))
                if stdin is not None:
                    try:
                        channel.sendall(stdin)
                        channel.shutdown_write()
                    except OSError:
                        pass  # it exited before reading: its exit status says why
                out, err = bytearray(), bytearray()
                while not channel.status_event.wait(min(_POLL_S, deadline - time.monotonic())):
                    # Drain as it comes, so a chatty command cannot fill the SSH window.
                    _drain(channel, out, err)
                    if not transport.is_active():
                        raise _ConnectionLost("the connection dropped during a command")
                    if time.monotonic() >= deadline:
                        raise _CommandTimeout()
                # The exit status can come before the last of the output: under load the
                # folder mktemp printed was missing ("cannot make a temporary folder ... exit
                # status 0"). Read on to the end of the channel's data.
                while not (channel.eof_received or channel.closed):
                    _drain(channel, out, err)
                    if not transport.is_active() or time.monotonic() >= deadline:
                        break
                    time.sleep(_EOF_POLL_S)
                _drain(channel, out, err)
                if channel.exit_status < 0:  # closed without an exit status
                    if not transport.is_active():
                        raise _ConnectionLost("the connection dropped during a command")
                    return None, bytes(out), bytes(err)  # killed by a signal
                return channel.exit_status, bytes(out), bytes(err)
            finally:
                channel.close()

    @contextmanager
    def _guard(self, transport: paramiko.Transport, what: str) -> Iterator[None]:
        """SSH and socket errors become ``_ConnectionLost`` when the connection is gone, else
        a one-line DeviceError."""
        try:
            yield
        except TimeoutError as exc:  # an SFTP step that made no progress: the device hangs
            transport.close()
            raise _ConnectionLost(
                f"the device stopped answering while {what} (nothing for "
                f"{self.command_timeout:g} s, ssh.command_timeout)"
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _connection_gone(transport, exc):
                raise _ConnectionLost(f"the connection dropped while {what}") from exc
            if isinstance(exc, OSError) and exc.strerror:
                reason = exc.strerror
            else:
                reason = str(exc) or type(exc).__name__
            raise DeviceError(f"device {self.name!r}: {what} failed: {reason}") from None


def _upload_key(path: Path) -> tuple[str, int, int]:
    """What makes a local file the one already uploaded: its path, size and time."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while channel.recv_ready():
        out += channel.recv(65536)
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(65536)


def _remote_python(python: str) -> str:
    """``python`` quoted for ``sh``; a leading ``~/`` still means the login's home."""
    if python == "~" or python.startswith("~/"):
        return '"$HOME"' + shlex.quote(python[1:]) if len(python) > 1 else '"$HOME"'
    return shlex.quote(python)


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@register_device_kind("ssh")
def _ssh_from_profile(name: str, profile: dict[str, Any]) -> SshDevice:
    checked = validate_profile({**profile, "name": name, "kind": "ssh"}, where=repr(name))
    ssh: SshSection | None = checked.ssh
    assert ssh is not None  # the profile validator requires the section for kind ssh
    return SshDevice(
        name,
        host=ssh.host,
        user=ssh.user,
        port=ssh.port,
        key_file=ssh.key_file,
        known_hosts=ssh.known_hosts,
        allow_agent=ssh.allow_agent,
        look_for_keys=ssh.look_for_keys,
        python=ssh.python,
        connect_timeout=ssh.connect_timeout,
        command_timeout=ssh.command_timeout,
        keepalive_s=ssh.keepalive_s,
        batch_size=ssh.batch_size,
        max_reconnects=ssh.max_reconnects,
        remote_tmpdir=ssh.remote_tmpdir,
        settings=checked.run_settings(),
    )


def _connection_gone(transport: paramiko.Transport, exc: BaseException) -> bool:
    """Whether ``exc`` came from the connection going away. When the device goes, an SFTP or
    exec channel can see EOF before the transport's reader thread notices the closed socket
    (seen under load), so an error that is not a file error on the device waits a moment for it."""
    if not transport.is_active():
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return False  # e.g. no such file or permission denied on the device: the link is fine
    deadline = time.monotonic() + _NOTICE_DROP_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not transport.is_active():
            return True
    return False
