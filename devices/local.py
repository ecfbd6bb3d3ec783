"""The ``local`` device: the on-device runner in a subprocess on this host."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devices.base import (
    Device,
    DeviceError,
    Runtime,
    register_device_kind,
)
from devices.measurement import Fingerprint, MeasuredWith, Measurement
from devices.profiles import LocalSection, validate_profile
from devices.runner import PARENT_ENV
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
from once_for_all.processes import process_token, token_ended

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)


class LocalDevice(Device):
    """Runs ``runner.py`` with a Python on this host (``sys.executable`` unless given).

    The runner is copied into a fresh temporary folder and run from there, as on a remote
    target, so that it sees nothing of edgenas. ``timeout_s`` bounds one ``measure`` call.
    """

    def __init__(
        self,
        name: str = "local",
        *,
        python: str | os.PathLike[str] | None = None,
        settings: RunSettings | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.python = _interpreter(python) if python is not None else sys.executable
        self._where = _where(python) if python is not None else ""
        self.settings = settings or RunSettings()
        self.timeout_s = timeout_s
        self._fingerprint: Fingerprint | None = None
        self._warnings = RunnerWarnings()

    @property
    def per_op_times(self) -> bool:
        return self.settings.per_op_times()

    def measured_with(self) -> MeasuredWith:
        return self.settings.measured_with()

    def fingerprint(self) -> Fingerprint:
        """This host's fingerprint for the device's runtime and threads (asked once, cached)."""
        if self._fingerprint is None:
            self._fingerprint = parse_fingerprint(
                self.name, self._run(build_job([], self.settings))
            )
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
        # The runner's working folder is a temp folder, so relative paths are made absolute.
        job = build_job([os.path.abspath(p) for p in models], settings, profile_ops=profile_ops)
        results = parse_results(self.name, self._run(job), [str(p) for p in models])
        if settings == self.settings:
            self._fingerprint = results.fingerprint
        for warning in self._warnings.new(results.warnings):
            log.warning("device %r: %s", self.name, warning)
        return results.measurements

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
        progress: Callable[[str], None] | None = None,  # one call: nothing to tell between
    ) -> list[list[int]]:
        if not models:
            return []
        # The images go into the runner's folder, its working folder: a relative name.
        job = build_job([os.path.abspath(p) for p in models], self.settings, classify=IMAGES_FILE)
        results = parse_classes(self.name, self._run(job, images), len(models), len(images))
        for warning in self._warnings.new(results.warnings):
            log.warning("device %r: %s", self.name, warning)
        return results.top1

    def _run(self, job: RunnerJob, images: npt.NDArray[np.floating] | None = None) -> str:
        """One round trip: the job in (with ``images`` for a classify job), the runner's JSON
        results out."""
        remove_orphaned_folders()
        with tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX) as tmp:
            folder = Path(tmp)
            # whose folder it is: a process killed with SIGKILL cannot remove its own
            (folder / OWNER).write_text(json.dumps(process_token()))
            if images is not None:
                save_images(folder / IMAGES_FILE, images)
            runner = folder / "runner.py"
            shutil.copyfile(RUNNER_PATH, runner)
            job_path, out_path = folder / "job.json", folder / "results.json"
            job_path.write_text(json.dumps(job))
            command = [self.python, str(runner), "--job", str(job_path), "--out", str(out_path)]
            try:
                proc = subprocess.run(
                    command,
                    cwd=folder,
                    # the runner ends with this process, even one killed as it started
                    env={**os.environ, PARENT_ENV: str(os.getpid())},
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=self.timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                fewer = (
                    "check the files on fewer images (export --device-check-images)"
                    if images is not None
                    else "measure fewer models per call"
                )
                raise DeviceError(
                    f"device {self.name!r}: the runner did not finish within {self.timeout_s} s; "
                    f"{fewer} or raise the timeout (local.timeout_s)"
                ) from None
            except OSError as exc:
                raise DeviceError(
                    f"device {self.name!r}: cannot start Python {self.python!r}: {exc.strerror}"
                    f"{self._where}; "
                    "set local.python in the device profile to a Python interpreter"
                ) from None
            output = out_path.read_text() if out_path.exists() else ""
            if proc.returncode != 0:
                raise runner_failure(
                    self.name, returncode=proc.returncode, output=output, stderr=proc.stderr
                )
            if not output:
                raise no_results(self.name, self.python, "local.python")
            return output


FOLDER_PREFIX = "edgenas-local-"
IMAGES_FILE = "images.npy"
OWNER = "owner.json"


def remove_orphaned_folders() -> None:
    """Remove the runner folders of this machine's edgenas processes that are gone: one killed
    with SIGKILL left its folder in the temp folder (its runner ends with it: runner.py)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = json.loads((folder / OWNER).read_text())
        except (OSError, ValueError):
            continue  # not (yet) described: another's, or one being made
        if token_ended(owner):
            shutil.rmtree(folder, ignore_errors=True)


@register_device_kind("local")
def _local_from_profile(name: str, profile: dict[str, Any]) -> LocalDevice:
    checked = validate_profile({**profile, "name": name, "kind": "local"}, where=repr(name))
    local = checked.local or LocalSection()
    return LocalDevice(
        name, python=local.python, settings=checked.run_settings(), timeout_s=local.timeout_s
    )


def _interpreter(python: str | os.PathLike[str]) -> str:
    """A relative path to a Python (``.venv-openvino/bin/python``, ``Path("python")``) is
    taken from the folder edgenas runs in, not the runner's temporary folder that the
    subprocess starts in; ``~`` is expanded. Not resolved further: a venv's python is a link
    that must keep its own path. A bare name given as text (``python3``) is looked up on
    PATH, as the shell would."""
    text = os.path.expanduser(os.fspath(python))
    if os.path.isabs(text) or (os.sep not in text and not isinstance(python, os.PathLike)):
        return text
    return os.path.abspath(text)


def _relative(python: str | os.PathLike[str]) -> bool:
    return _interpreter(python) != os.path.expanduser(os.fspath(python))


def interpreter_problem(python: str | os.PathLike[str]) -> str | None:
    """Why ``python`` (a profile's local.python) cannot be started, as a clause naming it,
    or None: a path that is not an executable file, or a name not on PATH. Checked before
    long work (``edgenas run`` checks its devices before training)."""
    found = shutil.which(_interpreter(python))
    if found is not None:
        return None
    return f"local.python {os.fspath(python)!r} is not an executable file{_where(python)}"


def _where(python: str | os.PathLike[str]) -> str:
    if not _relative(python):
        return ""
    return (
        f" (a relative path, read from {os.getcwd()}, where edgenas runs: run edgenas from the "
        "folder it is relative to, or give an absolute path)"
    )
