"""The ``adb`` command (Debian's ``adb`` package, or Android's platform-tools): which phones it
sees, and running commands on one of them.

Every call is one ``adb`` process with a timeout. ``adb shell`` takes one string that the
phone's ``sh`` parses, so callers quote every argument (``shlex.quote``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from devices.base import DeviceError

# What adb prints when a phone goes away mid-command (unplugged, rebooted, USB reset) or is
# not there (yet); the device waits for it and goes on.
_GONE = (
    "no devices/emulators found",
    "device offline",
    "not found",
    "closed",
    "protocol fault",
    "connection reset",
    "device still authorizing",
)


@dataclass(frozen=True)
class AdbEntry:
    """One line of ``adb devices -l``: the serial, its state (``device`` when usable;
    ``unauthorized``, ``offline``, ``no permissions ...``, ...) and the ``key:value`` fields."""

    serial: str
    state: str
    fields: dict[str, str]

    @property
    def label(self) -> str:
        model = self.fields.get("model")
        return f"{self.serial} ({model})" if model else self.serial


@dataclass(frozen=True)
class AdbResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_error(self) -> str:
        """adb's own ``error:`` line, else the last line of stderr (else stdout)."""
        for line in self.stderr.splitlines():
            if line.startswith(("error:", "adb: error:")):
                return line.strip()
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}"

    @property
    def device_gone(self) -> bool:
        """adb itself failed because the phone was not there (rather than the command)."""
        first = next((ln for ln in self.stderr.splitlines() if ln.strip()), "")
        return first.startswith(("error:", "adb: error:")) and any(g in first for g in _GONE)

    @property
    def unauthorized(self) -> bool:
        """adb refused because the phone has not authorized this computer."""
        return any(
            line.startswith(("error:", "adb: error:")) and "unauthorized" in line
            for line in self.stderr.splitlines()
        )


_FIELD = re.compile(r"^[a-z_]+:\S*$")


class AdbTimeout(Exception):
    """An adb command ran past its timeout (and was killed)."""


def parse_devices(text: str) -> list[AdbEntry]:
    """The phones in ``adb devices -l`` (or ``adb devices``) output.

    Lines before "List of devices attached" (the daemon's start-up notes) are skipped. The
    state may have spaces (``no permissions (...); see [...]``): it runs up to the first
    ``key:value`` field (``usb:1-1``, ``model:Pixel_8``, ``transport_id:3``)."""
    entries: list[AdbEntry] = []
    started = False
    for line in text.splitlines():
        if not started:
            started = line.startswith("List of devices attached")
            continue
        words = line.split()
        if not words or words[0].startswith("*"):
            continue
        state: list[str] = []
        fields: dict[str, str] = {}
        for word in words[1:]:
            if _FIELD.match(word):
                key, _, value = word.partition(":")
                fields[key] = value
            elif not fields:
                state.append(word)
        entries.append(AdbEntry(words[0], " ".join(state), fields))
    return entries


def choose_serial(device: str, entries: Sequence[AdbEntry], serial: str | None) -> str:
    """The serial to use: ``serial`` when given, else the one attached phone; a one-line
    ``DeviceError`` that says what to do otherwise."""
    if serial is not None:
        match = [e for e in entries if e.serial == serial]
        if not match:
            seen = ", ".join(f"{e.serial} ({e.state})" for e in entries) or "none"
            raise DeviceError(
                f"device {device!r}: phone {serial!r} is not attached (adb devices lists: "
                f"{seen}); plug it in and enable USB debugging, 'adb connect {serial}' for a "
                "network phone, or fix adb.serial in the device profile"
            )
        _check_state(device, match[0])
        return serial
    usable = [e for e in entries if e.state == "device"]
    if len(usable) == 1:
        return usable[0].serial
    if len(usable) > 1:
        raise DeviceError(
            f"device {device!r}: {len(usable)} phones are attached "
            f"({', '.join(e.label for e in usable)}); set adb.serial in the device profile "
            "to the one to measure"
        )
    if entries:
        _check_state(device, entries[0])
    raise DeviceError(
        f"device {device!r}: no Android device attached (adb devices lists none); connect "
        "the phone by USB with USB debugging on (Settings > Developer options), or "
        "'adb connect HOST:PORT' for wireless debugging"
    )


def _check_state(device: str, entry: AdbEntry) -> None:
    if entry.state == "device":
        return
    if entry.state == "unauthorized":
        raise unauthorized_error(device, entry.serial)
    if entry.state == "offline":
        raise DeviceError(
            f"device {device!r}: phone {entry.serial} is offline; replug it (or 'adb reconnect "
            "offline'), and check that it is unlocked"
        )
    raise DeviceError(
        f"device {device!r}: phone {entry.serial} cannot be used ({entry.state}); fix the "
        "state adb devices shows (udev rules for 'no permissions')"
    )


def unauthorized_error(device: str, serial: str | None) -> DeviceError:
    return DeviceError(
        f"device {device!r}: phone {serial or '(the attached one)'} has not authorized this "
        "computer for USB debugging; unlock it and accept the 'Allow USB debugging?' prompt "
        "(revoke USB debugging authorizations in Developer options and replug if none appears)"
    )


class AdbClient:
    """The ``adb`` command for one phone (``serial``) and one adb server (``server_port``:
    adb's ``-P``; ``None``: the default server on 5037 or ``$ANDROID_ADB_SERVER_PORT``)."""

    def __init__(self, device: str, *, adb: str = "adb", server_port: int | None = None) -> None:
        self.device = device
        self.adb = adb
        self.server_port = server_port
        self.serial: str | None = None

    def base(self) -> list[str]:
        command = [self.adb]
        if self.server_port is not None:
            command += ["-P", str(self.server_port)]
        if self.serial is not None:
            command += ["-s", self.serial]
        return command

    def run(self, args: Sequence[str], *, timeout: float) -> AdbResult:
        """``adb [-P port] [-s serial] ARGS``; raises ``AdbTimeout`` past ``timeout`` seconds,
        and a one-line ``DeviceError`` when the phone has not authorized this computer."""
        try:
            proc = subprocess.run(
                [*self.base(), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AdbTimeout(f"adb {args[0]} did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise DeviceError(
                f"device {self.device!r}: cannot run adb ({self.adb!r}: {exc.strerror}); "
                "install it (Debian: apt-get install adb; or Android's platform-tools) or set "
                "adb.adb in the device profile to its path"
            ) from None
        result = AdbResult(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if result.returncode != 0 and result.unauthorized:
            raise unauthorized_error(self.device, self.serial)
        return result

    def devices(self, *, timeout: float) -> list[AdbEntry]:
        """The phones the adb server sees (starting the server if it is not running)."""
        saved, self.serial = self.serial, None
        try:
            result = self.run(["devices", "-l"], timeout=timeout)
        finally:
            self.serial = saved
        if result.returncode != 0:
            raise DeviceError(
                f"device {self.device!r}: 'adb devices' failed: {result.last_error}; check the "
                "adb server ('adb kill-server' and try again)"
            )
        return parse_devices(result.stdout)

    def shell(self, script: str, *, timeout: float) -> AdbResult:
        """``script`` run by the phone's ``sh`` (its exit status is adb's, adb 1.0.36+)."""
        return self.run(["shell", script], timeout=timeout)

    def push(self, local: str, remote: str, *, timeout: float) -> AdbResult:
        """A file, or a folder (with what is in it) to a ``remote`` path that does not exist."""
        return self.run(["push", local, remote], timeout=timeout)

    def pull(self, remote: str, local: str, *, timeout: float) -> AdbResult:
        """A file of the phone to ``local``."""
        return self.run(["pull", remote, local], timeout=timeout)
