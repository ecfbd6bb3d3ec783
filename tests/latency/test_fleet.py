"""`edgenas profile` over a fleet of real devices at once: the simulated NPU, this host's CPU,
boards on real sshd servers on 127.0.0.1, and boards that cannot be reached or go away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgenas.cli import app
from latency.blocks import enumerate_blocks
from latency.fleet import FleetJob, ProfileOptions, profile_fleet
from latency.model_cache import ModelCache
from latency.predictors import LutSumPredictor, load_predictor
from latency.table import LatencyTable
from once_for_all import get_space
from once_for_all.progress import Progress
from tests.support.cli_here import edgenas_here
from tests.support.sshd import Sshd, free_port, generate_key, sshd_missing, start_sshd

TINY = get_space("mbv3-tiny")
R = 28  # one resolution keeps the tables small: 74 blocks
BLOCKS = len(enumerate_blocks(TINY, resolutions=(R,)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
QUICK = {"runs": 3, "warmup": 1}


def _command(*args: str | Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "edgenas", *map(str, args), "--cache", str(cache)]


def _profile_args(*devices: str | Path, profiles: Path) -> list[str | Path]:
    return [
        "profile",
        *devices,
        "--space",
        "mbv3-tiny",
        "--profiles",
        profiles,
        "--resolution",
        str(R),
        "--calibrate",
        "0",
    ]


@pytest.fixture(scope="module")
def cache(model_cache_dir: Path) -> Path:
    return model_cache_dir


def _board(sshd: Sshd, folder: Path, name: str, python: Path, **ssh: object) -> Path:
    remote = folder / f"{name} tmp"
    remote.mkdir(parents=True)
    return sshd.write_profile(
        folder / f"{name}.yaml",
        name,
        python=python,
        ssh={"remote_tmpdir": str(remote), "connect_timeout": 3.0, **ssh},
        **QUICK,
    )


def _complete(folder: Path, device: str) -> None:
    table = LatencyTable.load(folder / "lut.json")
    assert table.header.device == device
    assert set(table.entries) == {s.key for s in enumerate_blocks(TINY, resolutions=(R,))}
    assert isinstance(load_predictor(folder / "predictor.json"), LutSumPredictor)


def test_good_devices_finish_and_bad_ones_are_reported(
    sshd: Sshd, device_python: Path, tmp_path: Path, cache: Path
) -> None:
    good = _board(sshd, tmp_path, "good-board", device_python)
    # Nobody listens on this port; the other board's server offers another host key.
    unreachable = _board(sshd, tmp_path, "off-board", device_python, port=free_port())
    stranger = " ".join(generate_key(tmp_path / "other_host_key").split()[:2])
    known = sshd.write_known_hosts(tmp_path / "known_hosts_other", stranger)
    impostor = _board(sshd, tmp_path, "impostor-board", device_python, known_hosts=str(known))
    profiles = tmp_path / "profiles"
    args = _profile_args("npu-32x32-ws", good, unreachable, impostor, profiles=profiles)

    proc = edgenas_here(*args, "--json", "--cache", cache)

    assert proc.returncode == 1, proc.stderr
    results = {d["name"]: d for d in json.loads(proc.stdout)["devices"]}
    assert [d["status"] for d in results.values()] == ["ok", "ok", "failed", "failed"]
    for name in ("npu-32x32-ws", "good-board"):
        _complete(profiles / name, name)
        assert results[name]["blocks"] == BLOCKS and results[name]["kind"] == "lut-sum"
        assert results[name]["predictor"] == str(profiles / name / "predictor.json")
    assert "cannot reach" in results["off-board"]["error"]
    assert "host key" in results["impostor-board"]["error"]
    for name in ("off-board", "impostor-board"):
        error = results[name]["error"]
        assert "\n" not in error and f"'{name}'" in error
        assert results[name]["predictor"] is None and results[name]["blocks"] == 0
        assert not (profiles / name).exists()  # nothing measured: no empty folder left
        assert f"error: {error}" in " ".join(proc.stderr.split())  # also said on stderr
    assert list((tmp_path / "good-board tmp").iterdir()) == []  # remote folders cleaned up

    # A rerun skips the finished devices' work and shows the summary table.
    before = {n: (profiles / n / "lut.json").read_bytes() for n in ("npu-32x32-ws", "good-board")}
    again = edgenas_here(*args, "--cache", cache)
    assert again.returncode == 1 and again.stdout == ""
    assert before == {n: (profiles / n / "lut.json").read_bytes() for n in before}
    summary = " ".join(again.stderr.split())
    assert "failed: device 'off-board': cannot reach" in summary
    assert f"{BLOCKS}/{BLOCKS}" in summary and "2 of 4 device(s) failed" in summary
    # When every device fails, there are no others to call complete.
    both = edgenas_here(*_profile_args(unreachable, impostor, profiles=profiles), "--cache", cache)
    assert both.returncode == 1
    assert "All 2 devices failed. Fix the cause" in " ".join(both.stderr.split())


def test_a_device_that_goes_away_is_reported_and_the_others_finish(
    sshd: Sshd, device_python: Path, tmp_path: Path, cache: Path
) -> None:
    reason = sshd_missing()
    if reason:
        pytest.skip(reason)
    flaky_server = start_sshd(tmp_path / "flaky-sshd")
    try:
        flaky = _board(flaky_server, tmp_path, "flaky-board", device_python, max_reconnects=1)
        steady = _board(sshd, tmp_path, "steady-board", device_python)
        profiles = tmp_path / "profiles"
        args = _profile_args(flaky, steady, "npu-32x32-ws", profiles=profiles)
        proc = subprocess.Popen(
            _command(*args, "--batch-size", "8", "--json", cache=cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        lut = profiles / "flaky-board" / "lut.json"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if lut.exists() and len(json.loads(lut.read_text())["entries"]) >= 5:
                break
            time.sleep(0.05)
        flaky_server.stop()  # the board goes away: sessions cut, nothing listens any more
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        flaky_server.stop()
    assert proc.returncode == 1, stderr
    results = {d["name"]: d for d in json.loads(stdout)["devices"]}
    assert results["flaky-board"]["status"] == "failed", "the run finished before the stop"
    assert "lost the connection" in results["flaky-board"]["error"]
    partial = LatencyTable.load(lut)  # what it measured stays saved for a rerun
    assert 5 <= len(partial) < BLOCKS == results["flaky-board"]["total_blocks"]
    assert results["flaky-board"]["blocks"] == len(partial)
    for name in ("steady-board", "npu-32x32-ws"):
        assert results[name]["status"] == "ok"
        _complete(profiles / name, name)


def test_host_devices_take_turns_after_every_export(tmp_path: Path, cache: Path) -> None:
    """Timings on this host never overlap with another host device's measuring, nor with an
    export; an unreachable board fails beside them without holding them up."""
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("name: fleet-cpu\nkind: local\nruntime: onnxruntime\nthreads: 1\n")
    off = tmp_path / "off.yaml"
    off.write_text(
        f"name: off-board\nkind: ssh\nssh: {{host: 127.0.0.1, port: {free_port()}, "
        "allow_agent: false, look_for_keys: false, connect_timeout: 2}\n"
    )
    options = ProfileOptions(calibrate=0, resolutions=(R,))
    events: list[tuple[str, str, int, int]] = []

    def progress(name: str) -> Progress:
        return lambda stage, done, total: events.append((name, stage, done, total))

    jobs = [FleetJob(str(d), tmp_path / "out" / d.stem, options) for d in (cpu, off)]
    jobs.insert(1, FleetJob("npu-32x32-ws", tmp_path / "out" / "npu", options))
    results = profile_fleet(
        jobs,
        TINY,
        cache=ModelCache(cache),
        progress=progress,
    )
    assert [r.ok for r in results] == [True, True, False]
    assert "cannot reach" in (results[2].error or "")
    measuring = [(i, e[0]) for i, e in enumerate(events) if e[1].startswith("measure")]
    exports = [i for i, e in enumerate(events) if e[1].startswith("export")]
    assert measuring and max(exports) < measuring[0][0]
    order = [name for _, name in measuring]
    first = order[0]
    assert order == [first] * order.count(first) + [n for n in order if n != first]
    assert {"fleet-cpu", "npu-32x32-ws"} == set(order)


def test_a_stopped_fleet_ends_every_device_as_interrupted(tmp_path: Path, cache: Path) -> None:
    """What Ctrl-C does: workers stop at their next progress report, and say to rerun."""
    stop = threading.Event()
    stop.set()
    options = ProfileOptions(calibrate=0, resolutions=(R,))
    jobs = [FleetJob(name, tmp_path / name, options) for name in ("npu-32x32-ws", "local-cpu")]
    results = profile_fleet(jobs, TINY, cache=ModelCache(cache), stop=stop)
    assert [r.name for r in results] == ["npu-32x32-ws", "local-cpu"]
    for result in results:
        assert result.error == "interrupted; run the same command again to resume"
        assert not (result.out / "predictor.json").exists()


def test_fleet_usage_errors_are_one_line_and_write_nothing(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "out"
    runner = CliRunner()

    def profile(*args: str | Path) -> tuple[int, str]:
        result = runner.invoke(app, [*map(str, args), "--cache", str(cache)])
        return result.exit_code, " ".join(result.stderr.split())

    code, err = profile(
        "profile", "npu-32x32-ws", "local-cpu", "--space", "mbv3-tiny", "--out", out
    )
    assert code == 2 and "use --profiles DIR instead" in err
    code, err = profile(*_profile_args("npu-32x32-ws", "npu-32x32-ws", profiles=out))
    assert code == 2 and "would both write" in err
    code, err = profile(*_profile_args("npu-32x32-ws", "no-such-board", profiles=out))
    assert code == 2 and "unknown device profile 'no-such-board'" in err
    code, err = profile(*_profile_args("npu-32x32-ws", profiles=out), "--out", out)
    assert code == 2 and "not both" in err
    # A setting its kind refuses was found once the device was built, after the other
    # devices had been profiled, and ended with exit 1 (review).
    bad_array = tmp_path / "bad-array.yaml"
    bad_array.write_text("name: x\nkind: npu-sim\nnpu: {rows: '32'}\n")
    code, err = profile(*_profile_args("npu-32x32-ws", bad_array, profiles=out))
    assert (code, err) == (2, "error: device 'x': npu: rows='32': expected a positive integer")
    assert not out.exists()
