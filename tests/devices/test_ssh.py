"""SshDevice and `edgenas devices` against a real OpenSSH server on 127.0.0.1.

The server (tests/devices/conftest.py, tests/support/sshd.py) has a throwaway host key and user
key; the device's Python is a separate virtual environment with tflite-runtime 2.14,
numpy < 2 and onnxruntime, as on a board. Nothing here reads or writes the real ~/.ssh: HOME
points at a temporary folder and every profile names its key and known_hosts files.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from devices import (
    DeviceError,
    HostKey,
    LocalDevice,
    Measurement,
    RunSettings,
    SshDevice,
    open_device,
)
from devices.ssh import _connection_gone
from devices.ssh_connection import UnreachableError
from once_for_all.processes import process_token
from tests.devices.conftest import REPO, Models
from tests.support.cli_here import edgenas_here
from tests.support.openvino import pinned_version, require_openvino
from tests.support.sshd import Sshd, free_port, generate_key, start_sshd
from tests.support.stalled_server import stalled_server

QUICK = RunSettings(warmup=1, runs=6)
# Quotes, spaces and a command substitution: if any of it reached a shell unquoted, the
# folder would not be found (or would be another one).
REMOTE_PARENT = "remote 'tmp' \"dir\" $(echo injected)"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def remote_parent(tmp_path: Path) -> Path:
    folder = tmp_path / REMOTE_PARENT
    folder.mkdir()
    return folder


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def python(device_python: Path, tmp_path: Path) -> Path:
    """The device Python, reached through a path with spaces and quotes."""
    return _script(
        tmp_path / "device \"py\" 'bin'" / "python",
        f'exec {shlex.quote(str(device_python))} "$@"',
    )


def _device(
    sshd: Sshd,
    remote_parent: Path,
    python: Path | str,
    *,
    name: str = "board",
    settings: RunSettings = QUICK,
    **ssh: Any,
) -> SshDevice:
    section = sshd.ssh_section(remote_tmpdir=str(remote_parent), **ssh)
    return SshDevice(name, python=str(python), settings=settings, **section)


def _agree(a: Measurement, b: Measurement) -> bool:
    """Sub-millisecond models on a busy 2-core machine: within 3x or 1 ms is "agree"."""
    low, high = sorted((a.median_ms, b.median_ms))
    return high - low <= 1.0 or high <= 3 * low


def _check_agreement(remote: Sequence[Measurement], local: Sequence[Measurement]) -> None:
    assert [m.model for m in remote] == [m.model for m in local]
    for r, loc in zip(remote, local, strict=True):
        assert r.n == loc.n and 0 < r.min_ms <= r.median_ms <= r.p90_ms
        assert _agree(r, loc), (r.model, r.median_ms, loc.median_ms)


def test_onnxruntime_results_agree_with_local(
    sshd: Sshd, remote_parent: Path, python: Path, device_python: Path, models: Models
) -> None:
    settings = RunSettings(warmup=3, runs=30)
    paths = [models.fc, models.conv, models.dw]  # names with spaces and quotes
    with _device(sshd, remote_parent, python, settings=settings) as device:
        remote = device.measure(paths)
        fingerprint = device.fingerprint()
    local = LocalDevice(python=device_python, settings=settings).measure(paths)
    assert [m.model for m in remote] == [str(p) for p in paths]
    _check_agreement(remote, local)
    assert fingerprint.host == socket.gethostname() and fingerprint.cores == os.cpu_count()
    assert fingerprint.runtime == "onnxruntime" and fingerprint.threads == 1


def test_tflite_runtime_results_agree_with_local(
    sshd: Sshd, remote_parent: Path, python: Path, device_python: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from devices.sanity_models import tflite_fully_connected, tflite_int8_add

    paths = [
        tflite_fully_connected(tmp_path / "fc 'q'.tflite", dynamic_batch=True),
        tflite_int8_add(tmp_path / "add int8.tflite"),
    ]
    settings = RunSettings(runtime="tflite", warmup=3, runs=30)
    with _device(sshd, remote_parent, python, settings=settings) as device:
        remote = device.measure(paths)
        fingerprint = device.fingerprint()
    local = LocalDevice(python=device_python, settings=settings).measure(paths)
    _check_agreement(remote, local)
    assert fingerprint.runtime == "tflite"
    assert fingerprint.runtime_version.startswith("tflite-runtime 2.14"), fingerprint


def test_a_board_classifies_as_the_same_python_does_here(
    sshd: Sshd,
    remote_parent: Path,
    python: Path,
    device_python: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The images go to the board in parts, each uploaded once, and each batch of models
    classifies each part there: the classes are those of the same runtime run here."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    import numpy as np

    import devices.ssh
    from tests.devices.tflite_models import int8_cnn

    monkeypatch.setattr(devices.ssh, "CLASSIFY_IMAGES_PER_CALL", 4)
    paths = [int8_cnn(tmp_path / f"cnn {k} 'q'.tflite", seed=k) for k in range(3)]
    images = np.random.default_rng(2).standard_normal((10, 3, 16, 16)).astype(np.float32)
    settings = RunSettings(runtime="tflite")
    with _device(sshd, remote_parent, python, settings=settings, batch_size=2) as device:
        assert device.classifies
        said: list[str] = []
        remote = device.classify(paths, images, progress=said.append)
        calls = device.runner_calls
        assert device._session is not None
        uploads = device._session.uploads
        left = sorted(p.name for p in Path(device.remote_folder or "").glob("models/*"))
    local = LocalDevice(python=device_python, settings=settings).classify(paths, images)
    assert remote == local and [len(c) for c in remote] == [10, 10, 10]
    assert len(set(remote[0])) > 1
    assert len({tuple(c) for c in remote}) == 3  # three models: in their order
    assert calls == 3 * 2  # parts of 4, 4 and 2 images, each with batches of 2 and 1 models
    assert said == [f"board: {n} of 6 classify calls done" for n in range(1, 7)]
    assert uploads == 3 + 3  # the models and each part once
    assert len(left) == 3 and not any("images-" in name for name in left)  # parts removed


def test_remote_runner_honours_delegates_and_providers(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    """The device's tflite-runtime 2.14: XNNPACK on and off; onnxruntime without CUDA."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="writing .tflite needs LiteRT")
    from tests.devices.tflite_models import float_split

    split = float_split(tmp_path / "split 'q'.tflite")
    placements = {}
    for delegate in ("xnnpack", "none"):
        settings = RunSettings(runtime="tflite", warmup=1, runs=3, delegate=delegate)
        with _device(sshd, remote_parent, python, settings=settings) as device:
            (m,) = device.measure([split])
        placements[delegate] = m.placement
    assert placements["xnnpack"] == {
        "delegate": "xnnpack",
        "delegated_nodes": 2,
        "cpu_nodes": 1,
        "partitions": 2,
        "fallback": {"ZEROS_LIKE": 1},
    }
    assert placements["none"] == {
        "delegate": "none",
        "delegated_nodes": 0,
        "cpu_nodes": 3,
        "partitions": 0,
        "fallback": {},
    }
    settings = RunSettings(warmup=1, runs=3, providers=("CUDAExecutionProvider",))
    with (
        _device(sshd, remote_parent, python, settings=settings) as device,
        pytest.raises(DeviceError) as info,
    ):
        device.measure([models.conv])
    message = str(info.value)
    assert "has no CUDAExecutionProvider (available: " in message
    assert message.endswith(
        "(onnxruntime-gpu for CUDA and TensorRT, onnxruntime-openvino for OpenVINO), or leave it "
        "out of the profile's providers"
    )
    assert "CPUExecutionProvider" in message and "\n" not in message


@pytest.mark.skipif(
    not (sys.platform == "linux" and os.uname().machine == "x86_64"),
    reason="refusing AMX is for x86-64 Linux",
)
def test_a_board_that_refuses_amx(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models
) -> None:
    """x86_amx: false reaches the runner on the board, which refuses itself the tiles there."""
    settings = RunSettings(warmup=1, runs=3, x86_amx=False)
    with _device(sshd, remote_parent, python, settings=settings) as device:
        (m,) = device.measure([models.conv])
        from devices.runner import x86_amx_state

        # "refused" where the CPU offers AMX (this project's Xeon; the board's runner refused
        # it), "" where it has none.
        assert device.fingerprint().x86_amx == ("refused" if x86_amx_state() else "")
    assert m.n == 3


def test_a_board_on_the_openvino_runtime(
    sshd: Sshd, remote_parent: Path, models: Models, tmp_path: Path
) -> None:
    # A board whose Python has the openvino package (.venv-openvino, reached through a path
    # with spaces and quotes): the job's openvino section and per-op times over SSH. The
    # property reaches OpenVINO: bf16 where the CPU has it, as the placement shows (elsewhere
    # f32, the runner's own, and only the section's way over SSH is checked).
    venv = require_openvino()
    flags = Path("/proc/cpuinfo").read_text().split()
    precision = "bf16" if {"amx_bf16", "avx512_bf16"} & set(flags) else "f32"
    python = _script(tmp_path / "ov \"py\" 'bin'" / "python", f'exec {shlex.quote(str(venv))} "$@"')
    settings = RunSettings(
        runtime="openvino",
        warmup=1,
        runs=6,
        openvino_properties=(("INFERENCE_PRECISION_HINT", precision),),
    )
    with _device(sshd, remote_parent, python, settings=settings) as device:
        assert device.per_op_times
        (m,) = device.measure([models.conv], profile_ops=True)
        fingerprint = device.fingerprint()
    assert (fingerprint.runtime, fingerprint.accelerator) == ("openvino", "CPU")
    assert fingerprint.runtime_version == pinned_version("openvino")
    placement = m.placement or {}
    assert (placement["device"], placement["inference_precision"]) == ("CPU", precision)
    assert m.ops and {op.where for op in m.ops} == {"CPU"}
    assert any(op.op_type.startswith("Convolution (") for op in m.ops), m.ops
    # A device the board's OpenVINO lacks (an eighth GPU): one line naming the ones it has.
    lacking = replace(settings, openvino_device="GPU.7")
    with (
        _device(sshd, remote_parent, python, settings=lacking) as device,
        pytest.raises(DeviceError) as info,
    ):
        device.measure([models.conv])
    (line,) = str(info.value).splitlines()
    assert "has no GPU.7 device (available: CPU" in line


def test_one_connection_for_the_session_and_a_cached_fingerprint(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models
) -> None:
    logins_before = sshd.log.read_text().count("Accepted publickey")
    with _device(sshd, remote_parent, python) as device:
        fingerprint = device.fingerprint()
        assert fingerprint.machine == platform.machine()  # the remote runner's, reported back
        folder = device.remote_folder
        device.measure([models.fc])
        device.measure([models.conv, models.fc], runs=3)  # other settings: no fingerprint update
        assert device.fingerprint() == fingerprint
        assert device.fingerprint() is device.fingerprint()
        assert device.remote_folder == folder
        assert device.runner_calls == 3 and device.reconnects == 0
    assert sshd.log.read_text().count("Accepted publickey") == logins_before + 1


def test_remote_folder_removed_after_close_and_after_an_error(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    device = _device(sshd, remote_parent, python)
    device.measure([models.fc, models.conv])
    folder = device.remote_folder
    assert folder is not None and Path(folder).parent == remote_parent
    uploaded = sorted(p.name for p in (Path(folder) / "models").iterdir())
    assert uploaded == ["0-linear.onnx", "1-conv model.onnx"]
    assert (Path(folder) / "runner.py").is_file()
    device.close()
    assert not Path(folder).exists() and list(remote_parent.iterdir()) == []
    device.close()  # twice is fine

    broken = tmp_path / "broken 'model'.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(DeviceError, match=r"^device 'board': cannot load model .*broken 'model'"):
        device.measure([models.fc, broken])
    assert device.remote_folder is None and list(remote_parent.iterdir()) == []
    # ... and the device still works afterwards, on a new connection.
    (m,) = device.measure([models.fc])
    assert m.n == QUICK.runs
    device.close()
    assert list(remote_parent.iterdir()) == []


def test_file_names_with_spaces_and_quotes(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    odd = tmp_path / 'it\'s a "model" $(echo x) ; `echo y`.onnx'
    odd.write_bytes(models.fc.read_bytes())
    same_name = tmp_path / "other" / models.fc.name  # same base name, another file
    same_name.parent.mkdir()
    same_name.write_bytes(models.conv.read_bytes())
    with _device(sshd, remote_parent, python) as device:
        results = device.measure([odd, models.dw, same_name, models.fc])
        folder = device.remote_folder
        assert folder is not None
        uploaded = sorted(p.name for p in (Path(folder) / "models").iterdir())
    assert [m.model for m in results] == [str(odd), str(models.dw), str(same_name), str(models.fc)]
    assert all(m.n == QUICK.runs for m in results)
    assert uploaded == sorted(
        ["0-" + odd.name, "1-" + models.dw.name, "2-linear.onnx", "3-linear.onnx"]
    )
    assert list(remote_parent.iterdir()) == []


def test_host_alias_and_options_from_ssh_config(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    """Only the alias in the profile: host, port, user, key and known_hosts from the config."""
    ssh_dir = Path(os.environ["HOME"]) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_text(
        "Host testboard\n"
        f"    HostName {sshd.host}\n"
        f"    Port {sshd.port}\n"
        f"    User {sshd.user}\n"
        f'    IdentityFile "{sshd.user_key}"\n'
        f'    UserKnownHostsFile "{sshd.known_hosts}"\n'
        "Host jumpy\n"
        "    ProxyJump bastion\n"
        "Host typo\n"
        "    Port 22x\n"
    )
    device = SshDevice(
        "aliased",
        host="testboard",
        python=str(python),
        allow_agent=False,
        look_for_keys=False,
        remote_tmpdir=str(remote_parent),
        settings=QUICK,
    )
    target = device.target
    assert (target.hostname, target.port, target.user) == (sshd.host, sshd.port, sshd.user)
    assert target.key_files == (sshd.user_key,) and target.trust_file == sshd.known_hosts
    with device:
        (m,) = device.measure([models.fc])
    assert m.n == QUICK.runs
    with pytest.raises(DeviceError, match=r"ProxyJump .* is not supported .*ProxyCommand ssh -W"):
        SshDevice("jump", host="jumpy")
    with pytest.raises(DeviceError) as info:
        SshDevice("typo", host="typo")
    assert str(info.value) == (
        f"device 'typo': Port '22x' for host 'typo' in {ssh_dir / 'config'} is not a port "
        "number; correct it there, or give ssh.port in the device profile"
    )
    assert SshDevice("typo", host="typo", port=2222).target.port == 2222


def test_a_server_without_sftp_is_named_and_leaves_no_remote_folder(
    tmp_path: Path, remote_parent: Path, python: Path, models: Models
) -> None:
    # Dropbear and minimal boards often have no sftp subsystem: it failed as "preparing the
    # remote folder failed: Channel closed." after making a folder it then left (review).
    server = start_sshd(tmp_path / "no-sftp", sftp=False)
    try:
        device = _device(server, remote_parent, python, name="no-sftp")
        with pytest.raises(DeviceError) as info, device:
            device.measure([models.fc])
    finally:
        server.stop()
    assert str(info.value).startswith("device 'no-sftp': its SSH server refused SFTP (")
    assert str(info.value).endswith(
        "which edgenas copies the models with; enable it on the device (OpenSSH: 'Subsystem "
        "sftp internal-sftp' in sshd_config; Dropbear: install an sftp-server, e.g. the "
        "openssh-sftp-server package)"
    )
    assert list(remote_parent.iterdir()) == []


def test_default_key_and_known_hosts_in_home(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models
) -> None:
    """As OpenSSH: ~/.ssh/id_ed25519 and ~/.ssh/known_hosts when nothing else is said."""
    ssh_dir = Path(os.environ["HOME"]) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "id_ed25519").write_bytes(sshd.user_key.read_bytes())
    (ssh_dir / "id_ed25519").chmod(0o600)
    sshd.write_known_hosts(ssh_dir / "known_hosts")
    device = SshDevice(
        "defaults",
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        python=str(python),
        allow_agent=False,
        remote_tmpdir=str(remote_parent),
        settings=QUICK,
    )
    with device:
        (m,) = device.measure([models.fc])
    assert m.n == QUICK.runs
    refusing = SshDevice(
        "no-keys",
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        allow_agent=False,
        look_for_keys=False,
    )
    with pytest.raises(DeviceError, match=r"no key was accepted \(tried no keys at all\)"):
        refusing.fingerprint()


@pytest.fixture
def ssh_agent(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent holding the server's user key; SSH_AUTH_SOCK points at it."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(
            ["ssh-add", "-q", str(sshd.user_key)], env=env, check=True, capture_output=True
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        agent.terminate()
        agent.wait()


def test_key_from_the_agent(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, ssh_agent: Path
) -> None:
    device = _device(sshd, remote_parent, python, key_file=None, allow_agent=True)
    assert device.target.key_files == ()
    with device:
        (m,) = device.measure([models.fc])
    assert m.n == QUICK.runs


def test_unknown_host_key_is_refused(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")

    def message(checked: Path) -> str:  # naming the file checked (walk-through)
        return (
            f"device 'board': host key for 127.0.0.1:{sshd.port} is not in known_hosts "
            f"({checked}); run 'edgenas devices trust board' after checking it"
        )

    device = _device(sshd, remote_parent, python, known_hosts=str(empty))
    with pytest.raises(DeviceError, match=f"^{re.escape(message(empty))}$"):
        device.measure([models.fc])
    missing = tmp_path / "no such known_hosts"
    device = _device(sshd, remote_parent, python, known_hosts=str(missing))
    with pytest.raises(DeviceError, match=re.escape(message(missing))):
        device.fingerprint()
    assert empty.read_text() == "" and not missing.exists()


@pytest.mark.parametrize(
    ("lines", "trusted"),
    [
        (["127.0.0.1 {key}"], True),  # OpenSSH: "found matching key w/out port"
        (["[127.0.0.*]:{port} {key}"], True),
        (["[127.0.0.1]:* {key}"], True),
        (["!127.0.0.1,127.0.0.* {key}"], False),
        (["[127.0.0.1]:{port} {other}", "127.0.0.1 {key}"], False),  # no fallback past it
        (["127.0.0.1 {other}"], False),
        (["[127.0.0.2]:{port} {key}"], False),
        (["{hashed} {key}"], True),
        (["x,{hashed} {key}"], False),  # a hash in a list is only text to OpenSSH (review)
        # several lines, one key type: any that matches trusts it (paramiko kept one; review)
        (["[127.0.0.1]:{port} {key}", "[127.0.0.*]:{port} {other}"], True),
        (["[127.0.0.*]:{port} {other}", "[127.0.0.1]:{port} {key}"], True),
    ],
    ids=[
        "no-port",
        "host-wildcard",
        "port-wildcard",
        "negated",
        "changed",
        "other",
        "other-host",
        "hashed",
        "hash-in-a-list",
        "two-lines",
        "two-lines-reversed",
    ],
)
def test_host_keys_are_trusted_where_openssh_trusts_them(
    sshd: Sshd, remote_parent: Path, python: Path, tmp_path: Path, lines: list[str], trusted: bool
) -> None:
    # Lines that ssh accepted were "not in known_hosts" here (walk-through): the reference
    # is OpenSSH's own client, with strict checking, on the same file.
    import paramiko

    other = generate_key(tmp_path / "other_host_key")
    hashed = paramiko.HostKeys.hash_host(f"[127.0.0.1]:{sshd.port}")
    known = tmp_path / "known_hosts"
    known.write_text(
        "".join(
            f"{line.format(key=sshd.host_key, other=other, port=sshd.port, hashed=hashed)}\n"
            for line in lines
        )
    )
    assert _ssh_trusts(sshd, known) is trusted  # what OpenSSH does with the file
    device = _device(sshd, remote_parent, python, known_hosts=str(known))
    assert _connects(device) is trusted
    assert device.target.trusts(HostKey(*sshd.host_key.split())) is trusted  # devices trust


@pytest.fixture(scope="module")
def two_key_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A server with an ed25519 and an ecdsa host key, as most are."""
    server = start_sshd(tmp_path_factory.mktemp("two-key-sshd"), more_host_keys=["ecdsa"])
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("lines", "trusted"),
    [
        (["[127.0.0.1]:{port} {ecdsa}"], True),  # the server is asked for its ecdsa key
        # asked for ed25519 first, as the other key's type: a key no line holds
        (["[127.0.0.1]:{port} {other}", "[127.0.0.1]:{port} {ecdsa}"], False),
        (["[127.0.0.1]:{port} {other}", "127.0.0.1 {ecdsa}"], False),  # a line of any type
        (["127.0.0.1 {ecdsa}"], False),  # the bare host's lines do not order key types
        (["127.0.0.1 {ed25519}"], True),
        (["{hashed},[127.0.0.1]:{port} {ed25519}"], False),  # the whole field is one hash
    ],
    ids=[
        "ecdsa-known",
        "two-lines",
        "changed-other-type",
        "no-port-ecdsa",
        "no-port-ed25519",
        "hash-first",
    ],
)
def test_host_keys_of_a_server_with_two_are_trusted_where_openssh_trusts_them(
    two_key_sshd: Sshd,
    remote_parent: Path,
    python: Path,
    tmp_path: Path,
    lines: list[str],
    trusted: bool,
) -> None:
    # Asked for its first key type (ed25519), a server known by its ecdsa key read as
    # changed, or unknown; a line of another key type for [host]:port ruled out the bare
    # host's line for OpenSSH, not here (review).
    import paramiko

    server = two_key_sshd
    other = generate_key(tmp_path / "other_host_key")
    values = {
        "port": server.port,
        "ecdsa": server.more_host_keys["ecdsa"],
        "ed25519": server.host_key,
        "other": other,
        "hashed": paramiko.HostKeys.hash_host(f"[127.0.0.1]:{server.port}"),
    }
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"{line.format(**values)}\n" for line in lines))
    assert _ssh_trusts(server, known) is trusted  # what OpenSSH does with the file
    assert _connects(_device(server, remote_parent, python, known_hosts=str(known))) is trusted


def _connects(device: SshDevice) -> bool:
    """Whether ``device`` connects (and runs the runner), closed after."""
    try:
        device.fingerprint()
        return True
    except DeviceError:
        return False
    finally:
        device.close()


def _ssh_trusts(server: Sshd, known: Path) -> bool:
    """Whether OpenSSH's ssh, with strict host key checking, connects on ``known``."""
    options = ["BatchMode=yes", "StrictHostKeyChecking=yes", f"UserKnownHostsFile={known}"]
    options.append("GlobalKnownHostsFile=/dev/null")
    ssh = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            *(arg for option in options for arg in ("-o", option)),
            *("-i", str(server.user_key), "-p", str(server.port), f"{server.user}@127.0.0.1"),
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return ssh.returncode == 0


def test_changed_host_key_is_refused(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    impostor = generate_key(tmp_path / "other_host_key")
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", impostor)
    old = HostKey(*impostor.split())
    new = HostKey(*sshd.host_key.split())
    device = _device(sshd, remote_parent, python, known_hosts=str(known_hosts))
    with pytest.raises(DeviceError) as info:
        device.measure([models.fc])
    message = str(info.value)
    assert message.startswith(
        f"device 'board': the host key of 127.0.0.1:{sshd.port} has CHANGED: "
        f"known_hosts has {old.describe()}, the server offers {new.describe()}"
    )
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in message and "\n" not in message


def test_revoked_host_key_is_refused(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    """A key known_hosts trusts on one line and marks @revoked on another is refused, by a
    connection and by devices trust (the real sshd's key, as OpenSSH refuses it)."""
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    with known_hosts.open("a") as f:
        f.write(f"@revoked * {sshd.host_key}\n")
    key = HostKey(*sshd.host_key.split())
    message = (
        f"device 'board': 127.0.0.1:{sshd.port} offers host key {key.describe()}, which "
        "known_hosts marks @revoked: it must never be trusted; get the device's current key "
        "from its administrator (or reinstall its host keys) before connecting"
    )
    device = _device(sshd, remote_parent, python, known_hosts=str(known_hosts))
    with pytest.raises(DeviceError, match=f"^{re.escape(message)}$"):
        device.measure([models.fc])
    home = tmp_path / "cli home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(known_hosts, home / ".ssh" / "known_hosts")
    before = (home / ".ssh" / "known_hosts").read_text()
    profile = sshd.write_profile(
        tmp_path / "board.yaml", "board", python=python, ssh={"known_hosts": None}
    )
    refused = _edgenas_here("devices", "trust", str(profile), "--yes", home=home)
    assert refused.returncode == 2 and "marks @revoked" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (home / ".ssh" / "known_hosts").read_text() == before


def test_fingerprints_match_ssh_keygen(sshd: Sshd, remote_parent: Path, python: Path) -> None:
    device = _device(sshd, remote_parent, python)
    offered = device.server_host_key()
    assert offered == HostKey(*sshd.host_key.split())
    listed = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=sshd.host_key, capture_output=True, text=True, check=True
    ).stdout.split()
    assert offered.fingerprint == listed[1]
    assert device.known_host_keys() == [offered]


def test_wrong_user_key_is_refused(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    generate_key(stranger)
    device = _device(sshd, remote_parent, python, key_file=str(stranger))
    with pytest.raises(DeviceError) as info:
        device.measure([models.fc])
    message = str(info.value)
    assert message.startswith(
        f"device 'board': cannot log in to 127.0.0.1:{sshd.port} as '{sshd.user}': "
        f"no key was accepted (tried {stranger})"
    )
    assert f"~{sshd.user}/.ssh/authorized_keys" in message and "ssh-add" in message


def test_missing_key_file_is_named(sshd: Sshd, remote_parent: Path, python: Path) -> None:
    with pytest.raises(DeviceError, match=r"ssh\.key_file '/nowhere/key' does not exist"):
        _device(sshd, remote_parent, python, key_file="/nowhere/key")


def test_a_key_file_that_is_no_private_key_is_named(
    sshd: Sshd, remote_parent: Path, python: Path, tmp_path: Path
) -> None:
    # Both were tried and the server blamed: "no key was accepted (tried ...); the public
    # key must be in ~user/.ssh/authorized_keys" (device audit).
    public = Path(f"{sshd.user_key}.pub")
    assert public.read_text().startswith("ssh-")
    with pytest.raises(DeviceError) as info:
        _device(sshd, remote_parent, python, key_file=str(public))
    assert str(info.value) == (
        f"device 'board': ssh.key_file {str(public)!r} is a public key (the .pub half), not "
        "the private key; give the private key's path (e.g. ~/.ssh/id_ed25519), or leave it "
        "out to use the agent and ~/.ssh"
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("my server\n")
    with pytest.raises(DeviceError, match=r"is not a private key \(one starts with '-----BEGIN'\)"):
        _device(sshd, remote_parent, python, key_file=str(notes))


def test_unreachable_host(sshd: Sshd, remote_parent: Path, python: Path, models: Models) -> None:
    port = free_port()  # nothing listens there
    device = _device(sshd, remote_parent, python, port=port, connect_timeout=3.0)
    with pytest.raises(
        DeviceError,
        match=rf"^device 'board': cannot reach 127\.0\.0\.1:{port} \(Connection refused\); "
        "check the address, the port",
    ):
        device.measure([models.fc])
    assert device.reconnects == 0


def _processes(argv: list[bytes]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if cmdline == argv:
                found.append(int(entry))
    return found


def test_command_timeout_stops_the_remote_command(
    sshd: Sshd, remote_parent: Path, models: Models, tmp_path: Path
) -> None:
    """A device "Python" that hangs: the call fails after command_timeout and the hanging
    process is stopped on the device."""
    token = str(900 + os.getpid() % 99)
    hang = _script(tmp_path / "hanging python", f"exec sleep {token}")
    device = _device(sshd, remote_parent, hang, command_timeout=1.0)
    with pytest.raises(
        DeviceError,
        match=r"^device 'board': the runner did not finish within 1 s \(ssh\.command_timeout\)",
    ):
        device.measure([models.fc])
    deadline = time.monotonic() + 10
    while _processes([b"sleep", token.encode()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes([b"sleep", token.encode()]) == []
    assert list(remote_parent.iterdir()) == []


def _runner_pids(parent: Path) -> set[int]:
    """Runner processes working in a folder under ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if b"runner.py" in cmdline and cwd.startswith(str(parent) + "/"):
            found.add(int(entry))
    return found


@pytest.fixture
def cut_during_second_runner(sshd: Sshd, remote_parent: Path) -> Iterator[list[int]]:
    """Kills the sshd processes serving the connection as soon as a second runner starts;
    the list gets how many processes were killed."""
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        seen: set[int] = set()
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            seen |= _runner_pids(remote_parent)
            if len(seen) >= 2:
                killed.append(sshd.kill_sessions())
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield killed
    stop.set()
    watcher.join()


def test_reconnects_after_a_cut_and_keeps_finished_batches(
    sshd: Sshd,
    remote_parent: Path,
    python: Path,
    models: Models,
    cut_during_second_runner: list[int],
) -> None:
    paths = [models.conv, models.dw, models.fc, models.fc, models.conv, models.dw]
    device = _device(sshd, remote_parent, python, batch_size=2)
    with device:
        results = device.measure(paths)
    assert cut_during_second_runner and cut_during_second_runner[0] >= 1
    assert [m.model for m in results] == [str(p) for p in paths]
    assert all(m.n == QUICK.runs for m in results)
    assert device.reconnects == 1
    # Batch 1 was not measured again: 3 batches + the one the cut interrupted.
    assert device.runner_calls == 4
    assert list(remote_parent.iterdir()) == []  # the dropped session's folder too


@pytest.mark.parametrize("pause_s", [0.0, 1.0], ids=["noticed-during-call", "noticed-before"])
def test_reconnects_when_the_connection_dropped_between_calls(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, pause_s: float
) -> None:
    with _device(sshd, remote_parent, python) as device:
        device.measure([models.fc])
        first = device.remote_folder
        assert sshd.kill_sessions() >= 1
        time.sleep(pause_s)  # paramiko's transport thread sees the cut within ~0.1 s
        (m,) = device.measure([models.conv])
        assert m.n == QUICK.runs and device.reconnects == 1
        assert device.remote_folder != first and first is not None
        assert not Path(first).exists()  # removed on reconnect
    assert list(remote_parent.iterdir()) == []


def test_folders_left_by_ended_runs_of_this_machine_are_removed(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models
) -> None:
    # A client killed, or cut off when it would have removed its folder, left it on the
    # device for good (walk-through). Only the folders of this machine's ended runs go: a
    # hostname and a PID namespace number repeat across machines (review).
    ended = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from once_for_all.processes import process_token; "
            "print(json.dumps(process_token()))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    gone = json.loads(ended.stdout)
    owners = {
        "edgenas.killed": gone,
        "edgenas.running": process_token(),
        "edgenas.pid-reused": {**process_token(), "start": 1},  # os.getpid() started later
        "edgenas.other-machine": {**gone, "boot": "another boot or machine"},
        "edgenas.other-namespace": {**gone, "pidns": 1},
        "edgenas.not-an-owner": "text",
    }
    for name, owner in owners.items():
        (remote_parent / name / "models").mkdir(parents=True)
        (remote_parent / name / "owner.json").write_text(json.dumps(owner))
    (remote_parent / "edgenas.older").mkdir()  # from before folders had owners: kept
    kept = sorted(set(owners) - {"edgenas.killed", "edgenas.pid-reused"} | {"edgenas.older"})
    with _device(sshd, remote_parent, python) as device:
        device.measure([models.fc])
        mine = Path(device.remote_folder or "")
        assert json.loads((mine / "owner.json").read_text()) == process_token()
        assert sorted(p.name for p in remote_parent.iterdir()) == sorted([*kept, mine.name])
    assert sorted(p.name for p in remote_parent.iterdir()) == kept


@pytest.mark.parametrize("banner", [False, True], ids=["no-banner", "silent-after-banner"])
def test_a_stalled_server_is_unreachable_not_a_refused_key(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path, banner: bool
) -> None:
    # It said "no key was accepted", though the key was fine, and did not reconnect (issue 24).
    with stalled_server(banner) as port:
        device = _device(sshd, remote_parent, python, port=port, connect_timeout=1.0)
        message = (
            rf"device 'board': the SSH server at 127.0.0.1:{port} did not complete the "
            "handshake within 1 s; check that the device is not hanging or overloaded, or "
            "raise ssh.connect_timeout in the profile"
            if banner
            else rf"device 'board': no SSH server answered at 127.0.0.1:{port} within 1 s (no "
            "SSH banner); check the port, that sshd runs and that the device is not hanging"
        )
        with pytest.raises(UnreachableError, match=f"^{re.escape(message)}$"):
            device.measure([models.fc])
        home = tmp_path / "cli home"
        home.mkdir()
        profile = sshd.write_profile(
            tmp_path / "stalled.yaml",
            "stalled",
            python=python,
            ssh={"port": port, "connect_timeout": 1.0, "remote_tmpdir": str(remote_parent)},
        )
        proc = _edgenas("devices", "check", str(profile), home=home)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {message}".replace("'board'", "'stalled'")]


def test_gives_up_after_max_reconnects(
    sshd: Sshd,
    remote_parent: Path,
    python: Path,
    models: Models,
    cut_during_second_runner: list[int],
) -> None:
    device = _device(sshd, remote_parent, python, batch_size=2, max_reconnects=0)
    with pytest.raises(
        DeviceError,
        match=rf"^device 'board': lost the connection to 127\.0\.0\.1:{sshd.port} while "
        r"measuring batch 2 of 2 \(2 of 4 models measured\), and 0 reconnects did not help",
    ):
        device.measure([models.conv, models.dw, models.fc, models.conv])


def _wait_for(find: Callable[[], list[int]], timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_a_runner_left_by_a_dropped_connection_is_stopped(
    sshd: Sshd, remote_parent: Path, tmp_path: Path, models: Models
) -> None:
    """The runner of a dropped connection keeps running on the device; the reconnect stops
    it before the batch runs again, so the two never compete for the CPU."""
    token = str(800 + os.getpid() % 99)
    hang = _script(tmp_path / "hanging python", f"exec sleep {token}")
    sleeping = partial(_processes, [b"sleep", token.encode()])
    seen: dict[str, Any] = {}

    def cut_then_end_the_second() -> None:
        (first,) = _wait_for(sleeping)
        sshd.kill_sessions()
        second = _wait_for(lambda: [p for p in sleeping() if p != first])
        seen["first alive then"] = first in sleeping()
        for pid in second:  # ends the re-run batch: the call fails, which ends the test
            os.kill(pid, signal.SIGKILL)

    watcher = threading.Thread(target=cut_then_end_the_second, daemon=True)
    watcher.start()
    with pytest.raises(DeviceError, match="killed on the device without an exit status"):
        _device(sshd, remote_parent, hang, command_timeout=60.0).measure([models.fc])
    watcher.join(30)
    assert seen == {"first alive then": False}
    assert sleeping() == [] and list(remote_parent.iterdir()) == []


@pytest.mark.parametrize("via_link", [False, True], ids=["folder", "through-a-symlink"])
def test_an_interrupt_stops_the_runner_on_the_device(
    sshd: Sshd, remote_parent: Path, tmp_path: Path, models: Models, via_link: bool
) -> None:
    """Ctrl-C while the runner works: closing the device stops it, also where the remote
    folder's path goes through a symlink (/proc shows the runner's cwd resolved)."""
    token = str(700 + os.getpid() % 99)
    parent = remote_parent
    if via_link:
        parent = tmp_path / "tmp link"
        parent.symlink_to(remote_parent)
    hang = _script(tmp_path / "hanging python", f"exec sleep {token}")
    sleeping = partial(_processes, [b"sleep", token.encode()])

    def interrupt() -> None:
        _wait_for(sleeping)
        _thread.interrupt_main()  # Ctrl-C

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        _device(sshd, parent, hang, command_timeout=60.0).measure([models.fc])
    assert _wait_for(lambda: [] if sleeping() else [1], timeout_s=10) == [1]
    assert list(remote_parent.iterdir()) == []


def test_a_device_that_hangs_mid_transfer_is_a_lost_connection(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models
) -> None:
    """A board that hangs keeps its TCP connection up and answers nothing: an upload gives
    up after command_timeout without progress instead of blocking for ever."""
    device = _device(
        sshd, remote_parent, python, command_timeout=1.5, connect_timeout=1.0, max_reconnects=0
    )
    device.fingerprint()  # connected, runner uploaded
    frozen = sshd.session_pids()
    result: dict[str, BaseException] = {}

    def measure() -> None:
        try:
            device.measure([models.conv])
        except BaseException as exc:
            result["error"] = exc

    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=measure, daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the upload to a hung device never gave up"
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        sshd.kill_sessions()
    error = result["error"]
    assert isinstance(error, DeviceError)
    assert str(error).startswith(
        f"device 'board': lost the connection to 127.0.0.1:{sshd.port} while measuring batch "
        "1 of 1 (0 of 1 models measured), and 0 reconnects did not help (the device stopped "
        "answering while uploading"
    )
    assert "(nothing for 1.5 s, ssh.command_timeout)" in str(error)


def _python_without(device_python: Path, folder: Path, blocked: Sequence[str]) -> Path:
    stubs = folder / "blocked"
    for name in blocked:
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(
            f'raise ImportError("No module named {name!r} (blocked for this test)")\n'
        )
    return _script(
        folder / "python-without",
        f'PYTHONPATH={shlex.quote(str(stubs))} exec {shlex.quote(str(device_python))} "$@"',
    )


@pytest.mark.parametrize(
    ("runtime", "blocked", "message"),
    [
        ("onnxruntime", ["onnxruntime"], r"onnxruntime is not installed .*pip install onnxruntime"),
        ("onnxruntime", ["numpy"], r"numpy is not installed .*pip install numpy"),
        (
            "tflite",
            ["ai_edge_litert", "tflite_runtime", "tensorflow"],
            r"no TFLite interpreter .*pip install ai-edge-litert",
        ),
    ],
)
def test_device_python_without_a_package_says_what_to_install(
    sshd: Sshd,
    remote_parent: Path,
    device_python: Path,
    models: Models,
    tmp_path: Path,
    runtime: str,
    blocked: list[str],
    message: str,
) -> None:
    lacking = _python_without(device_python, tmp_path, blocked)
    settings = RunSettings(runtime="tflite" if runtime == "tflite" else "onnxruntime")
    device = _device(sshd, remote_parent, lacking, settings=settings)
    with pytest.raises(DeviceError, match=rf"^device 'board': {message}"):
        device.fingerprint()
    assert list(remote_parent.iterdir()) == []


@pytest.mark.parametrize("python", ["/no such/python3", "/usr/bin"])
def test_device_python_that_does_not_exist(
    sshd: Sshd, remote_parent: Path, models: Models, python: str
) -> None:
    # a folder (a virtual environment's, say) ended "exit status 126: ... Permission denied",
    # with no fix (walk-through)
    device = _device(sshd, remote_parent, python)
    with pytest.raises(
        DeviceError,
        match=rf"^device 'board': cannot start Python '{python}' on 127\.0\.0\.1:"
        rf"{sshd.port} \(.*\); set ssh\.python",
    ):
        device.measure([models.fc])


def test_device_python_that_runs_nothing(sshd: Sshd, remote_parent: Path) -> None:
    device = _device(sshd, remote_parent, "/bin/true")
    with pytest.raises(
        DeviceError,
        match=r"^device 'board': '/bin/true' exited without running the runner \(exit status 0, "
        r"no results\), so it is not a Python interpreter; set ssh\.python in the device profile",
    ):
        device.fingerprint()
    assert list(remote_parent.iterdir()) == []


def test_profile_of_kind_ssh(
    sshd: Sshd, remote_parent: Path, python: Path, models: Models, tmp_path: Path
) -> None:
    path = sshd.write_profile(
        tmp_path / "board.yaml",
        "yaml-board",
        python=python,
        ssh={"remote_tmpdir": str(remote_parent), "batch_size": 2, "command_timeout": 120},
        runs=4,
        warmup=1,
    )
    with open_device(path) as device:
        assert isinstance(device, SshDevice)
        assert device.batch_size == 2 and device.command_timeout == 120
        assert (device.target.hostname, device.target.port) == ("127.0.0.1", sshd.port)
        (m,) = device.measure([models.conv])
    assert m.n == 4 and list(remote_parent.iterdir()) == []


def _edgenas(*args: str, home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "edgenas", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def _edgenas_here(*args: str, home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return edgenas_here(*args, stdin=stdin, env={"HOME": str(home), "SSH_AUTH_SOCK": None})


def test_cli_trust_then_check(
    sshd: Sshd, remote_parent: Path, python: Path, tmp_path: Path
) -> None:
    home = tmp_path / "cli home"
    home.mkdir()
    profile = sshd.write_profile(
        tmp_path / "testboard.yaml",
        "testboard",
        python=python,
        ssh={"known_hosts": None, "remote_tmpdir": str(remote_parent)},
        runtime="tflite",  # the built-in sanity model is then a .tflite for tflite-runtime
        warmup=1,
        runs=5,
    )
    known_hosts = home / ".ssh" / "known_hosts"

    refused = _edgenas("devices", "check", str(profile), home=home)
    assert refused.returncode == 2, refused.stderr
    assert "host key for 127.0.0.1:" in refused.stderr
    # The profile was given as a path: the suggested command names that path, not the
    # profile's name, which is no bundled profile (issue 24).
    assert f"run 'edgenas devices trust {profile}' after checking it" in refused.stderr
    assert "Traceback" not in refused.stderr

    declined = _edgenas_here("devices", "trust", str(profile), home=home, stdin="n\n")
    assert declined.returncode == 1 and not known_hosts.exists()
    key = HostKey(*sshd.host_key.split())
    assert key.fingerprint in declined.stdout
    # Ctrl-C at the question is no answer "no" (exit 1, "not trusted"; walk-through)
    asking = subprocess.Popen(
        [sys.executable, "-m", "edgenas", "devices", "trust", str(profile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
            "HOME": str(home),
            "PYTHONPATH": str(REPO),
        },
    )
    assert asking.stdout is not None
    while "must show the same fingerprint" not in asking.stdout.readline():
        pass
    time.sleep(0.5)  # at the question
    asking.send_signal(signal.SIGINT)
    _, err = asking.communicate(timeout=30)
    assert asking.returncode == 130 and not known_hosts.exists()
    assert err.strip() == (
        "interrupted: nothing was changed (trust: known_hosts is as it was); run the same "
        "command again"
    )

    trusted = _edgenas_here("devices", "trust", str(profile), "--yes", home=home)
    assert trusted.returncode == 0, trusted.stderr
    assert key.fingerprint in trusted.stdout and str(known_hosts) in trusted.stdout
    assert (known_hosts.parent.stat().st_mode & 0o777) == 0o700
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n"
    again = _edgenas_here("devices", "trust", str(profile), "--yes", home=home)
    assert again.returncode == 0 and "already trusted" in again.stdout

    checked = _edgenas_here("devices", "check", str(profile), "--json", home=home)
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert result["device"] == "testboard" and result["kind"] == "ssh"
    assert result["fingerprint"]["runtime_version"].startswith("tflite-runtime 2.14")
    assert result["sanity"]["model"] == "sanity.tflite" and result["sanity"]["n"] == 5
    assert result["sanity"]["median_ms"] > 0
    assert result["sanity"]["placement"]["delegate"] == "xnnpack"  # tflite-runtime's default
    assert list(remote_parent.iterdir()) == []


def test_cli_list_json(tmp_path: Path) -> None:
    listed = _edgenas_here("devices", "list", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["raspberry-pi-4"]["kind"] == "ssh" and rows["local-cpu"]["kind"] == "local"
    assert all(row["description"] for row in rows.values())


def test_cli_trust_refuses_to_replace_a_changed_key(
    sshd: Sshd, python: Path, tmp_path: Path
) -> None:
    home = tmp_path / "cli home"
    (home / ".ssh").mkdir(parents=True)
    impostor = generate_key(tmp_path / "other_host_key")
    known_hosts = sshd.write_known_hosts(home / ".ssh" / "known_hosts", impostor)
    before = known_hosts.read_text()
    profile = sshd.write_profile(
        tmp_path / "board.yaml", "board", python=python, ssh={"known_hosts": None}
    )
    refused = _edgenas_here("devices", "trust", str(profile), "--yes", home=home)
    assert refused.returncode == 2
    assert "known_hosts already holds another key for 127.0.0.1:" in refused.stderr
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in refused.stderr
    assert known_hosts.read_text() == before


def test_an_eof_counts_as_a_drop_once_the_transport_notices(
    sshd: Sshd, remote_parent: Path, python: Path
) -> None:
    """A channel can see EOF before paramiko's reader thread marks the transport inactive:
    the error is classed as a lost connection (so reconnects apply) once it does."""
    with _device(sshd, remote_parent, python) as device:
        device.fingerprint()  # connects
        assert device._session is not None
        transport = device._session.transport
        # a file error on a live link is the device's answer, at once
        assert not _connection_gone(transport, FileNotFoundError(errno.ENOENT, "no such file"))
        # an EOF while the link stays up is not a drop (after the grace period)
        assert not _connection_gone(transport, EOFError())
        # the link goes away a moment after the EOF: a drop
        threading.Timer(0.2, transport.close).start()
        assert _connection_gone(transport, EOFError())
