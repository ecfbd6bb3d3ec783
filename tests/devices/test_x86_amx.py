"""``x86_amx: false``: the runner refuses itself Intel AMX's tile registers before the runtime
loads, with a seccomp filter, so that XNNPACK and onnxruntime run their AVX512-VNNI int8
kernels. Each refusal runs in a process of its own: it cannot be undone in the process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from devices.measurement import Fingerprint
from devices.runner_protocol import RUNNER_PATH, RunSettings, build_job, parse_results
from tests.devices.conftest import Models, run_runner
from tests.support.amx import AMX, X86_64_LINUX

# Child code: try the refusal, and say how it ended and whether a seccomp filter is in place.
TRY_REFUSAL = (
    "try:\n"
    "    runner.refuse_x86_amx()\n"
    "    out = {'refused': True}\n"
    "except runner.RunnerError as exc:\n"
    "    out = {'kind': exc.kind, 'message': exc.message}\n"
    "out['seccomp'] = seccomp()\n"
    "print(json.dumps(out))\n"
)


def _in_child(code: str) -> dict[str, object]:
    """Run ``code`` (the runner module loaded as ``runner``) in a fresh Python; its last
    expression's value, printed as JSON, is the result."""
    prelude = (
        "import importlib.util, json, platform\n"
        f"spec = importlib.util.spec_from_file_location('runner', {str(RUNNER_PATH)!r})\n"
        "runner = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(runner)\n"
        "def seccomp():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('Seccomp:'):\n"
        "            return int(line.split()[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.skipif(not X86_64_LINUX, reason="refusing AMX is for x86-64 Linux")
def test_the_runner_refuses_amx_and_says_so(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    from tests.devices.tflite_models import int8_cnn

    model = int8_cnn(tmp_path / "cnn.tflite")
    settings = RunSettings(runtime="tflite", warmup=1, runs=3)
    default = run_runner(build_job([str(model)], settings), tmp_path)
    refused = run_runner(build_job([str(model)], replace(settings, x86_amx=False)), tmp_path)
    assert default.returncode == 0, default.payload
    assert refused.returncode == 0, refused.payload
    assert refused.payload["fingerprint"].get("x86_amx") == ("refused" if AMX else None)
    assert default.payload["fingerprint"].get("x86_amx") == ("available" if AMX else None)
    # The int8 file ran all the same, on XNNPACK.
    assert refused.payload["models"][0]["placement"]["delegate"] == "xnnpack"
    if AMX:
        results = parse_results("here", refused.payload, ["cnn"])
        assert results.fingerprint.x86_amx == "refused"
        assert results.fingerprint.to_dict()["x86_amx"] == "refused"
        # A fingerprint-only job says the same as one that measured (XNNPACK asks for the
        # tiles only when its delegate starts).
        alone = run_runner(build_job([], replace(settings, x86_amx=False)), tmp_path)
        assert alone.payload["fingerprint"]["x86_amx"] == "refused"
        alone = run_runner(build_job([], settings), tmp_path)
        assert alone.payload["fingerprint"]["x86_amx"] == "available"


@pytest.mark.skipif(not X86_64_LINUX, reason="refusing AMX is for x86-64 Linux")
def test_onnxruntime_runs_with_amx_refused(tmp_path: Path, models: Models) -> None:
    job = build_job([str(models.conv)], RunSettings(warmup=1, runs=3, x86_amx=False))
    run = run_runner(job, tmp_path)
    assert run.returncode == 0, run.payload
    assert run.payload["fingerprint"].get("x86_amx") == ("refused" if AMX else None)


@pytest.mark.skipif(not AMX, reason="no AMX to refuse on this machine")
def test_the_refusal_holds_for_the_process_its_threads_and_children() -> None:
    result = _in_child(
        "import ctypes, subprocess, sys, threading\n"
        "before = seccomp()\n"
        # A thread started before the refusal (a runtime's pool) is refused as well.
        "go, out = threading.Event(), {}\n"
        "def ask():\n"
        "    go.wait()\n"
        "    lib = ctypes.CDLL(None, use_errno=True)\n"
        "    out['rc'] = lib.syscall(158, 0x1023, 18)\n"
        "    out['errno'] = ctypes.get_errno()\n"
        "thread = threading.Thread(target=ask)\n"
        "thread.start()\n"
        "runner.refuse_x86_amx()\n"
        "go.set()\n"
        "thread.join()\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "asked = libc.syscall(runner.SYS_ARCH_PRCTL, runner.ARCH_REQ_XCOMP_PERM,\n"
        "                     runner.XFEATURE_XTILEDATA)\n"
        "errno = ctypes.get_errno()\n"
        "child = subprocess.run([sys.executable, '-c', 'import ctypes; "
        "libc = ctypes.CDLL(None, use_errno=True); "
        "print(libc.syscall(158, 0x1023, 18), ctypes.get_errno())'],\n"
        "                       capture_output=True, text=True).stdout.split()\n"
        # Other arch_prctl calls still pass: ARCH_GET_XCOMP_PERM reads the permissions.
        "mask = ctypes.c_ulong(0)\n"
        "got = libc.syscall(runner.SYS_ARCH_PRCTL, runner.ARCH_GET_XCOMP_PERM, "
        "ctypes.byref(mask))\n"
        "print(json.dumps({'before': before, 'after': seccomp(), 'asked': asked, "
        "'errno': errno, 'child': child, 'get': got, 'thread': [out['rc'], out['errno']], "
        "'granted': runner.x86_amx_granted()}))\n"
    )
    assert result["before"] == 0 and result["after"] == 2  # 2: a seccomp filter
    assert (result["asked"], result["errno"]) == (-1, 1)  # EPERM
    assert result["child"] == ["-1", "1"]
    assert result["thread"] == [-1, 1]
    assert result["get"] == 0 and result["granted"] is False


@pytest.mark.skipif(not AMX, reason="no AMX to refuse on this machine")
def test_tiles_taken_before_the_refusal_are_one_line() -> None:
    """A Python that loads a runtime as it starts holds the tiles for good: refused, not
    measured as if AMX had been refused."""
    result = _in_child("import ctypes\nctypes.CDLL(None).syscall(158, 0x1023, 18)\n" + TRY_REFUSAL)
    assert result == {
        "kind": "bad-job",
        "message": "AMX tiles were granted to this Python before they could be refused: it "
        "loaded a runtime as it started (sitecustomize, a .pth file, a wrapper script); remove "
        "that, or use a device profile without x86_amx: false",
        "seccomp": 0,
    }


def test_elsewhere_than_x86_64_there_is_nothing_to_refuse() -> None:
    result = _in_child(
        "platform.machine = lambda: 'aarch64'\n"
        "runner.refuse_x86_amx()\n"
        "print(json.dumps({'seccomp': seccomp(), 'granted': runner.x86_amx_granted()}))\n"
    )
    assert result == {"seccomp": 0, "granted": False}


def test_an_x86_64_system_but_linux_is_one_line() -> None:
    result = _in_child(
        "platform.machine = lambda: 'AMD64'\nplatform.system = lambda: 'Windows'\n" + TRY_REFUSAL
    )
    assert result == {
        "kind": "bad-job",
        "message": "x86_amx: false needs Linux (a seccomp filter), and this device runs "
        "Windows: use a device profile without x86_amx: false",
        "seccomp": 0,
    }


def test_a_job_with_x86_amx_of_another_kind_is_refused(tmp_path: Path) -> None:
    run = run_runner('{"x86_amx": "no"}', tmp_path)
    assert run.returncode == 2
    assert run.payload["error"]["message"] == "x86_amx must be true or false"


def test_older_fingerprints_read_without_it() -> None:
    old = {
        "host": "h",
        "cpu_model": "c",
        "cores": 2,
        "governor": "unknown",
        "runtime": "tflite",
        "runtime_version": "2.3",
        "threads": 1,
    }
    fingerprint = Fingerprint.from_dict(old)
    assert fingerprint.x86_amx == "" and "x86_amx" not in fingerprint.to_dict()
    granted = Fingerprint.from_dict({**old, "x86_amx": "granted"})
    assert granted.same_target(fingerprint)  # the refusal is told apart by measured_with
