"""The ``adb`` device: an Android phone over adb, measured by TFLite's ``benchmark_model``.

Each ``measure`` call picks the phone (the profile's serial, else the one attached), makes a
fresh folder ``<remote_tmpdir>/edgenas-<random>``, pushes the user's ``benchmark_model`` and
the models there, runs the models in batches (one ``adb shell`` per batch, one
``benchmark_model`` process per model) and removes the folder in a ``finally``. ``classify``
does the same with images: benchmark_model once per image, in parts of images per
``adb shell``. A phone that drops off (unplugged, USB reset) is waited for and the batch or
part in flight run again. Every argument of a remote command is quoted: ``adb shell`` hands
one string to ``sh``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import shlex
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from devices.adb_client import AdbClient, AdbResult, AdbTimeout, choose_serial
from devices.base import (
    CLASSIFY_IMAGES_PER_CALL,
    Device,
    DeviceError,
    Runtime,
    register_device_kind,
)
from devices.benchmark_model import (
    BenchmarkOutput,
    OpTime,
    command_line,
    failure_reason,
    log_lines,
    parse_output,
)
from devices.measurement import Fingerprint, MeasuredWith, Measurement, OperatorTime
from devices.profiles import AdbSection, validate_profile
from devices.runner_protocol import RunSettings

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from devices.tflite_io import TfliteInput, TfliteIO

log = logging.getLogger(__name__)

T = TypeVar("T")
_SMALL_COMMAND_TIMEOUT_S = 30.0  # devices, mkdir, chmod, rm, getprop: at once on a live phone
_MARK = "@@edgenas-model "
_EXIT = "@@edgenas-exit "
_CLASSIFIED = "@@edgenas-classified "
_IMAGE_FAILED = "@@edgenas-image-failed "
_NOT_WRITTEN = "@@edgenas-not-written "
_NO_IMAGES = "@@edgenas-no-images"
# p10 and p90 of a normal distribution, in standard deviations from the mean.
_Z90 = statistics.NormalDist().inv_cdf(0.9)
_Z75 = statistics.NormalDist().inv_cdf(0.75)


class _PhoneGone(Exception):
    """adb lost the phone in the middle of something; the caller may wait and go on."""


@dataclass
class _Session:
    """The phone's folder for one ``measure`` or ``classify`` call, and the files already
    pushed there."""

    folder: str
    binary: str
    pushed: dict[tuple[str, int, int], str] = field(default_factory=dict)
    uploads: int = 0  # folders of images pushed or of outputs: numbers their remote names
    images: dict[str, str] = field(default_factory=dict)  # local input folder -> remote


class AdbDevice(Device):
    """Measures TFLite models on an Android phone with ``benchmark_model`` over adb, and
    classifies images with them there.

    ``settings`` are the profile's (threads, cores as a taskset mask, warmup, runs, delegate).
    benchmark_model reports a run's count, avg, std, min and max but no per-run times: a
    measurement's median is its avg (unless the build prints a median), and p10/p90 are
    avg -/+ 1.28 std clipped to [min, max]; ``extra["statistics"]`` says so.
    """

    def __init__(
        self,
        name: str,
        *,
        benchmark_model: str | os.PathLike[str],
        serial: str | None = None,
        adb: str = "adb",
        server_port: int | None = None,
        remote_tmpdir: str = "/data/local/tmp",
        connect_timeout: float = 30.0,
        command_timeout: float = 600.0,
        batch_size: int = 16,
        max_reconnects: int = 3,
        settings: RunSettings | None = None,
    ) -> None:
        if batch_size < 1 or max_reconnects < 0:
            raise ValueError("batch_size must be >= 1 and max_reconnects >= 0")
        self.name = name
        self.binary = Path(benchmark_model).expanduser()
        self.serial = serial
        self.client = AdbClient(name, adb=adb, server_port=server_port)
        self.remote_tmpdir = remote_tmpdir.rstrip("/") or "/"
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.batch_size = batch_size
        self.max_reconnects = max_reconnects
        self.settings = settings or RunSettings(runtime="tflite")
        self.reconnects = 0
        self._session: _Session | None = None
        self._stale: list[str] = []  # folders of sessions the phone dropped; removed later
        self._fingerprint: Fingerprint | None = None

    @property
    def models_per_call(self) -> int:
        return self.batch_size

    @property
    def per_op_times(self) -> bool:
        return True

    def measured_with(self) -> MeasuredWith:
        return self.settings.measured_with()

    def fingerprint(self) -> Fingerprint:
        """The phone's fingerprint (model, SoC, cores, governor) for the profile's settings."""
        if self._fingerprint is None:
            self._check_binary()
            self._select_phone()
            self._fingerprint = self._read_fingerprint(self.settings)
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
        if runtime not in (None, "tflite"):
            raise DeviceError(
                f"device {self.name!r}: benchmark_model runs TFLite models only, not {runtime}"
            )
        settings = self.settings.override(threads=threads, warmup=warmup, runs=runs)
        paths = self._model_files(models)
        self._check_binary()
        measured: list[Measurement] = []
        starts = range(0, len(paths), self.batch_size)
        try:
            self._select_phone()
            for number, start in enumerate(starts, 1):
                batch = paths[start : start + self.batch_size]

                def run_batch(batch: list[Path] = batch) -> list[tuple[int, str]]:
                    return self._run_batch(batch, settings, profile_ops)

                outputs = self._with_reconnect(
                    f"while measuring batch {number} of {len(starts)} "
                    f"({len(measured)} of {len(paths)} models measured)",
                    run_batch,
                )
                for path, (status, text) in zip(batch, outputs, strict=True):
                    measured.append(self._measurement(path, status, text, settings, profile_ops))
            if self._fingerprint is None and settings == self.settings:
                self._fingerprint = self._read_fingerprint(settings)
        finally:
            self._clean_up()
        return measured

    @property
    def classify_refusal(self) -> str | None:
        return None

    def classify(
        self,
        models: Sequence[Path],
        images: npt.NDArray[np.floating],
        *,
        progress: Callable[[str], None] | None = None,
    ) -> list[list[int]]:
        """Each TFLite file's top-1 class of each image, on the phone as ``measure`` runs it
        (the profile's threads, cores and delegate). benchmark_model runs once per image, fed
        the image from a file (``--input_layer_value_files``) and writing the outputs to
        another (``--output_filepath``, which current LiteRT builds have). The images go to
        the phone in parts, laid out as the files' inputs take them (``devices.tflite_io``),
        each layout pushed once per part; one ``adb shell`` runs a part through one file.
        The first part is one image: a build without ``--output_filepath``, or a delegate
        the tool runs without, shows before the rest is pushed."""
        from devices.tflite_io import read_io  # numpy and LiteRT: only when classifying

        paths = self._model_files(models)
        if not paths or not len(images):
            return [[] for _ in paths]
        self._check_binary()
        ios = [read_io(path, images[0], self.name) for path in paths]
        classes: list[list[int]] = [[] for _ in paths]
        starts = [0, *range(1, len(images), CLASSIFY_IMAGES_PER_CALL)]
        calls = len(starts) * len(paths)
        try:
            self._select_phone()
            for number, (first, end) in enumerate(
                zip(starts, [*starts[1:], len(images)], strict=True)
            ):
                part = images[first:end]
                with tempfile.TemporaryDirectory(prefix="edgenas-images-") as tmp:
                    layouts: dict[tuple[object, ...], Path] = {}
                    for index, (path, io) in enumerate(zip(paths, ios, strict=True)):
                        inputs = layouts.get(io.input.layout)
                        if inputs is None:
                            inputs = Path(tmp) / str(len(layouts))
                            self._input_files(inputs, part, io.input, path)
                            layouts[io.input.layout] = inputs
                        call = number * len(paths) + index + 1
                        classes[index].extend(
                            self._with_reconnect(
                                f"while classifying images (call {call} of {calls})",
                                functools.partial(
                                    self._classify_part, path, io, inputs, first, len(part)
                                ),
                            )
                        )
                        if progress is not None:
                            progress(
                                f"{self.name}: {path.name} classified {len(classes[index])} "
                                f"of {len(images)} images"
                            )
                self._remove_images()
        finally:
            self._clean_up()
        return classes

    def close(self) -> None:
        """Remove what is left on the phone (``measure`` and ``classify`` already do; safe to
        call twice)."""
        self._clean_up()

    def _check_binary(self) -> None:
        """benchmark_model exists here and is executable, before anything is pushed."""
        fix = (
            "download LiteRT's Android benchmark_model (see the README) or build it, and set "
            "adb.benchmark_model in the device profile to its path"
        )
        if not self.binary.is_file():
            raise DeviceError(
                f"device {self.name!r}: benchmark_model not found at {self.binary}; {fix}"
            )
        if not os.access(self.binary, os.X_OK):
            raise DeviceError(
                f"device {self.name!r}: benchmark_model at {self.binary} is not executable; "
                f"chmod +x {shlex.quote(str(self.binary))}"
            )

    def _select_phone(self) -> None:
        entries = self._adb(lambda: self.client.devices(timeout=_SMALL_COMMAND_TIMEOUT_S))
        self.client.serial = choose_serial(self.name, entries, self.serial)

    def _with_reconnect(self, what: str, step: Callable[[], T]) -> T:
        """``step()``, run again after the phone comes back when adb loses it."""
        drops = 0
        while True:
            try:
                return step()
            except _PhoneGone as exc:
                drops += 1
                dropped, self._session = self._session, None
                if dropped is not None:
                    self._stale.append(dropped.folder)
                if drops > self.max_reconnects:
                    raise DeviceError(
                        f"device {self.name!r}: lost phone {self.client.serial} {what}, and "
                        f"{self.max_reconnects} reconnects did not help ({exc}); check the cable "
                        "and the phone, or raise adb.max_reconnects"
                    ) from None
                log.warning(
                    "device %r: lost phone %s %s (%s); waiting for it (%d of %d)",
                    self.name,
                    self.client.serial,
                    what,
                    exc,
                    drops,
                    self.max_reconnects,
                )
                self._wait_for_phone()
                if dropped is not None:  # its commands may still run on the phone
                    self._kill(dropped)
                    if self._remove_quietly([dropped.folder], dropped):
                        self._stale.remove(dropped.folder)
                self.reconnects += 1

    def _wait_for_phone(self) -> None:
        serial = self.client.serial or ""
        try:
            if ":" in serial:  # a network phone: adb does not reconnect it by itself
                self.client.run(["connect", serial], timeout=self.connect_timeout)
            self.client.run(["wait-for-device"], timeout=self.connect_timeout)
        except AdbTimeout:
            raise DeviceError(
                f"device {self.name!r}: phone {serial} did not come back within "
                f"{self.connect_timeout:g} s (adb.connect_timeout); check the cable and that "
                "USB debugging is still on"
            ) from None

    def _open(self) -> _Session:
        """The call's folder on the phone with benchmark_model in it, made when needed."""
        if self._session is not None:
            return self._session
        folder = f"{self.remote_tmpdir}/edgenas-{secrets.token_hex(6)}"
        self._shell_ok(f"mkdir -p -- {shlex.quote(folder)}/models", "making a folder")
        self._session = _Session(folder, f"{folder}/benchmark_model")
        self._push(self.binary, self._session.binary)
        self._shell_ok(f"chmod 755 -- {shlex.quote(self._session.binary)}", "chmod")
        return self._session

    def _run_batch(
        self, batch: Sequence[Path], settings: RunSettings, profile_ops: bool
    ) -> list[tuple[int, str]]:
        """(exit status, output) of benchmark_model for each model, from one adb shell."""
        session = self._open()
        remote = [self._push_model(session, path) for path in batch]
        parts = []
        for index, model in enumerate(remote):
            run = command_line(
                session.binary,
                model,
                threads=settings.threads,
                warmup=settings.warmup,
                runs=settings.runs,
                delegate=settings.delegate,
                delegate_options=settings.delegate_options,
                profile_ops=profile_ops,
                cores=settings.cores,
            )
            parts.append(f"echo '{_MARK}{index}'; {run} 2>&1; echo \"{_EXIT}$?\"")
        try:
            result = self.client.shell("; ".join(parts), timeout=self.command_timeout)
        except AdbTimeout:
            self._kill(session)
            raise DeviceError(
                f"device {self.name!r}: benchmark_model did not finish within "
                f"{self.command_timeout:g} s (adb.command_timeout); measure fewer models per "
                "batch (adb.batch_size) or raise the timeout"
            ) from None
        if result.device_gone:
            raise _PhoneGone(result.last_error)
        outputs = _split_batch(result.stdout, len(remote))
        if outputs is None:
            if result.returncode != 0:
                raise _PhoneGone(f"adb shell ended early: {result.last_error}")
            raise DeviceError(
                f"device {self.name!r}: the phone's shell returned no results for the batch "
                f"({result.last_error})"
            )
        return outputs

    def _input_files(
        self, folder: Path, images: npt.NDArray[np.floating], inp: TfliteInput, model: Path
    ) -> None:
        """``folder`` with ``0.bin``, ``1.bin``, ... : each image as the model's input."""
        folder.mkdir()
        for i, image in enumerate(images):
            x = inp.file(image, device=self.name, model=model.name)
            (folder / f"{i}.bin").write_bytes(x.tobytes())

    def _classify_part(
        self, path: Path, io: TfliteIO, inputs: Path, first: int, count: int
    ) -> list[int]:
        """The top-1 classes of ``count`` images from image ``first`` on (the files in
        ``inputs``) from one ``adb shell``: benchmark_model once per image, run in the
        images' folder (so no path of the phone's goes into --input_layer_value_files, which
        splits at ``,`` and ``:``), each image's outputs appended to one file, pulled."""
        from devices.tflite_io import classes_from_outputs

        session = self._open()
        model = self._push_model(session, path)
        images = session.images.get(str(inputs))
        if images is None:
            session.uploads += 1
            images = f"{session.folder}/images-{session.uploads}"
            self._push(inputs, images)
            session.images[str(inputs)] = images
        session.uploads += 1
        work = f"{session.folder}/run-{session.uploads}"
        self._shell_ok(f"mkdir -p -- {shlex.quote(work)}", "making a folder")
        settings = self.settings
        run = command_line(
            session.binary,
            model,
            threads=settings.threads,
            warmup=0,
            runs=1,
            delegate=settings.delegate,
            delegate_options=settings.delegate_options,
            cores=settings.cores,
            extra=[
                *self._delegate_cache(session, path),
                f"--output_filepath={work}/out.bin",
                *io.input.flags(""),
            ],
        )
        run += '"$i".bin'  # the last flag, the input file, ends in the loop's image number
        q = shlex.quote(work)
        script = (
            f'cd -- {shlex.quote(images)} || {{ echo "{_NO_IMAGES}"; exit 0; }}; '
            f"i=0; while [ $i -lt {count} ]; do {run} > {q}/log.txt 2>&1; s=$?; "
            f"if [ $s -ne 0 ] || [ ! -s {q}/out.bin ]; then "
            f'echo "{_IMAGE_FAILED}$i $s"; cat {q}/log.txt; exit 0; fi; '
            f"if [ $i -eq 0 ]; then cat {q}/log.txt; fi; "  # says where the first one ran
            f"cat {q}/out.bin >> {q}/outputs.bin && rm -f -- {q}/out.bin || "
            f'{{ echo "{_NOT_WRITTEN}$i"; exit 0; }}; '
            f'i=$((i + 1)); done; echo "{_CLASSIFIED}$i"'
        )
        try:
            result = self.client.shell(script, timeout=self.command_timeout)
        except AdbTimeout:
            self._kill(session)
            images_ = "1 image" if count == 1 else f"{count} images"
            raise DeviceError(
                f"device {self.name!r}: benchmark_model did not classify {images_} of "
                f"{path.name} within {self.command_timeout:g} s (adb.command_timeout); raise "
                "it, or check fewer images (--device-check-images)"
            ) from None
        if result.device_gone:
            raise _PhoneGone(result.last_error)
        stdout = result.stdout.replace("\r\n", "\n")
        if f"{_CLASSIFIED}{count}\n" not in stdout + "\n":
            raise self._classify_failure(path, first, stdout, result)
        self._check_accelerated(path, parse_output(stdout), settings)
        with tempfile.TemporaryDirectory(prefix="edgenas-outputs-") as tmp:
            local = Path(tmp) / "outputs.bin"
            pulled = self._adb(
                lambda: self.client.pull(
                    f"{work}/outputs.bin", str(local), timeout=self.command_timeout
                )
            )
            if pulled.device_gone:
                raise _PhoneGone(pulled.last_error)
            if pulled.returncode != 0 or not local.is_file():
                raise DeviceError(
                    f"device {self.name!r}: pulling the outputs of {path.name} from the phone "
                    f"failed: {pulled.last_error}; check the connection and the adb server "
                    "('adb devices'), then export again"
                )
            data = local.read_bytes()
        try:
            classes = classes_from_outputs(io, data, count)
        except ValueError as exc:
            raise DeviceError(
                f"device {self.name!r}: benchmark_model's outputs for {path.name} do not fit "
                f"its output tensors ({exc}); is the phone's benchmark_model of another "
                "TFLite version than the file?"
            ) from None
        self._remove_quietly([work], session)
        return classes

    def _delegate_cache(self, session: _Session, path: Path) -> list[str]:
        """A GPU (OpenCL) or NNAPI delegate compiles the model in every process: its
        ``--delegate_serialize_dir`` keeps what it compiled for the next image's process,
        under a token of the file's contents. None for CPU delegates, which compile nothing
        worth keeping."""
        if self.settings.delegate not in ("gpu", "nnapi"):
            return []
        token = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return [
            f"--delegate_serialize_dir={session.folder}",
            f"--delegate_serialize_token={token}",
        ]

    def _classify_failure(
        self, path: Path, first: int, stdout: str, result: AdbResult
    ) -> Exception:
        """Why a part of the images (from image ``first`` on) was not classified:
        benchmark_model failed on an image or wrote no outputs (a build before
        ``--output_filepath``), the phone could not write, the images pushed are gone, or
        the shell was cut off."""

        def image(number: str) -> str:  # the loop's number in the part: the image's in all
            return str(first + int(number)) if number.isdigit() else "?"

        if _NO_IMAGES in stdout:
            return DeviceError(
                f"device {self.name!r}: the images pushed for {path.name} are gone from the "
                f"phone's {self.remote_tmpdir}; set adb.remote_tmpdir to a folder that "
                "nothing else cleans"
            )
        _, marker, rest = stdout.partition(_NOT_WRITTEN)
        if marker:
            return DeviceError(
                f"device {self.name!r}: the phone could not write the outputs of image "
                f"{image(rest.split()[0] if rest.split() else '')} of {path.name} in "
                f"{self.remote_tmpdir}; free space there or set adb.remote_tmpdir to another "
                "folder the shell user can write"
            )
        _, marker, rest = stdout.partition(_IMAGE_FAILED)
        if not marker:
            if result.returncode != 0:
                return _PhoneGone(f"adb shell ended early: {result.last_error}")
            return DeviceError(
                f"device {self.name!r}: the phone's shell returned no classes for {path.name} "
                f"({result.last_error or _last(stdout) or 'no output'})"
            )
        head, _, text = rest.partition("\n")
        number, _, status = head.strip().partition(" ")
        code = int(status) if status.lstrip("-").isdigit() else -1
        subject = f"image {image(number)} of {path.name}"
        # A build before --output_filepath warns of it as of any flag it does not know (and
        # may fail on the input flags, whose "::" escaping came later).
        if re.search(r"Unconsumed cmdline flags:.*--output_filepath", text):
            return DeviceError(
                f"device {self.name!r}: benchmark_model wrote no outputs for {subject}: this "
                "build has no --output_filepath; use a current LiteRT build of "
                "benchmark_model to check files on the phone"
            )
        if code != 0:
            return self._model_failure(subject, code, text, parse_output(text), self.settings)
        return DeviceError(
            f"device {self.name!r}: benchmark_model wrote no outputs for {subject} "
            f"({_last(text) or 'it said nothing'}); check that {self.remote_tmpdir} has space, "
            "and that the build has --output_filepath (current LiteRT builds do)"
        )

    def _remove_images(self) -> None:
        """The images of a part, from the phone, once every file has classified them."""
        session = self._session
        if session is not None and session.images:
            folders, session.images = list(session.images.values()), {}
            self._remove_quietly(folders, session)

    def _remove_quietly(self, folders: Sequence[str], session: _Session | None = None) -> bool:
        """Best effort: what was measured is kept, and what stays goes with the session's
        folder at the end (a phone that dropped while removing leaves ``session`` stale,
        removed then too). Whether the folders are gone."""
        try:
            result = self.client.shell(
                "rm -rf -- " + " ".join(shlex.quote(f) for f in folders),
                timeout=_SMALL_COMMAND_TIMEOUT_S,
            )
        except (AdbTimeout, DeviceError) as exc:
            log.warning("device %r: could not remove %s: %s", self.name, ", ".join(folders), exc)
            return False
        if result.device_gone and session is not None and self._session is session:
            self._stale.append(session.folder)
            self._session = None
        elif result.returncode != 0:
            log.warning(
                "device %r: could not remove %s on the phone: %s",
                self.name,
                ", ".join(folders),
                result.last_error,
            )
        return result.returncode == 0

    def _measurement(
        self, path: Path, status: int, text: str, settings: RunSettings, profile_ops: bool
    ) -> Measurement:
        output = parse_output(text)
        if status != 0 or output.runs is None:
            raise self._model_failure(path.name, status, text, output, settings)
        self._check_accelerated(path, output, settings)
        return to_measurement(
            str(path),
            output,
            spread_threshold=settings.spread_threshold,
            delegate=settings.delegate,
            profile_ops=profile_ops,
        )

    def _check_accelerated(
        self, path: Path, output: BenchmarkOutput, settings: RunSettings
    ) -> None:
        """Refuse a run that an accelerator's delegate left to the CPU."""
        fell_back = _cpu_fallback(output) if _accelerator(settings.delegate) else None
        if fell_back is not None:
            raise DeviceError(
                f"device {self.name!r}: benchmark_model ran {path.name} on the CPU, not on "
                f"delegate {settings.delegate} ({fell_back}); check that phone "
                f"{self.client.serial} has that accelerator and its driver, or measure on the "
                "CPU with delegate: xnnpack in the profile"
            )

    def _model_failure(
        self, subject: str, status: int, text: str, output: BenchmarkOutput, settings: RunSettings
    ) -> DeviceError:
        """Why benchmark_model failed on ``subject`` (a model file, or an image of one)."""
        reason = failure_reason(output)
        if reason is not None and "could not apply" in reason:
            other = "delegate: none" if settings.delegate == "xnnpack" else "delegate: xnnpack"
            return DeviceError(
                f"device {self.name!r}: {reason} for {subject}; the delegate rejects this "
                f"model: measure it with another delegate ({other} in the profile)"
            )
        if status in (126, 127):
            return DeviceError(
                f"device {self.name!r}: benchmark_model cannot run on phone "
                f"{self.client.serial} ({_last(text) or f'exit status {status}'}); it must be "
                "an Android build for the phone's ABI (e.g. android_aarch64_benchmark_model)"
            )
        return DeviceError(
            f"device {self.name!r}: benchmark_model failed on {subject} (exit status "
            f"{status}): {reason or _last(text) or 'no output'}"
        )

    def _read_fingerprint(self, settings: RunSettings) -> Fingerprint:
        core = settings.cores[0] if settings.cores else 0
        props = (
            "ro.product.manufacturer",
            "ro.product.model",
            "ro.soc.model",
            "ro.board.platform",
        )
        script = "; ".join(
            [
                *(f'echo "$(getprop {p})"' for p in props),
                'echo "$(cat /sys/devices/system/cpu/possible 2>/dev/null)"',
                f'echo "$(cat /sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor '
                '2>/dev/null)"',
            ]
        )
        result = self._adb(lambda: self.client.shell(script, timeout=_SMALL_COMMAND_TIMEOUT_S))
        if result.returncode != 0:
            raise DeviceError(
                f"device {self.name!r}: reading the phone's properties failed: {result.last_error}"
            )
        lines = [line.strip() for line in result.stdout.replace("\r", "").splitlines()]
        maker, model, soc, board, possible, governor = (lines + [""] * 6)[:6]
        digest = hashlib.sha256(self.binary.read_bytes()).hexdigest()[:12]
        delegate = settings.delegate
        return Fingerprint(
            host=f"{maker} {model} {self.client.serial}".strip(),
            cpu_model=soc or board or "unknown",
            cores=_count_cpus(possible),
            governor=governor or "unknown",
            runtime="tflite",
            runtime_version=f"benchmark_model sha256:{digest}",
            threads=settings.threads,
            accelerator=delegate if delegate not in (None, "xnnpack") else "",
        )

    def _push_model(self, session: _Session, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        remote = session.pushed.get(key)
        if remote is None:
            # A counter keeps two local files of the same name apart.
            remote = f"{session.folder}/models/{len(session.pushed)}-{path.name}"
            self._push(path, remote)
            session.pushed[key] = remote
        return remote

    def _push(self, local: Path, remote: str) -> None:
        result = self._adb(
            lambda: self.client.push(str(local), remote, timeout=self.command_timeout)
        )
        if result.device_gone:
            raise _PhoneGone(result.last_error)
        if result.returncode != 0:
            raise DeviceError(
                f"device {self.name!r}: pushing {local} to the phone failed: {result.last_error}"
            )

    def _shell_ok(self, script: str, what: str) -> AdbResult:
        result = self._adb(lambda: self.client.shell(script, timeout=_SMALL_COMMAND_TIMEOUT_S))
        if result.device_gone:
            raise _PhoneGone(result.last_error)
        if result.returncode != 0:
            raise DeviceError(
                f"device {self.name!r}: {what} on the phone failed: {result.last_error}; set "
                "adb.remote_tmpdir to a folder the shell user can write (/data/local/tmp)"
            )
        return result

    def _adb(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except AdbTimeout as exc:
            raise DeviceError(
                f"device {self.name!r}: {exc}; check the phone and the adb server ('adb devices')"
            ) from None

    def _kill(self, session: _Session) -> None:
        """Stop the session's benchmark_model and shell loops, after a timeout or a drop
        (best effort: toybox has pkill, which reads a regular expression)."""
        folder = re.sub(r"([][\\.^$*+?(){}|])", r"\\\1", session.folder)
        # [b] matches b, and not the text of this very command (pkill's own shell).
        pattern = f"{folder}/[b]enchmark_model"
        try:
            self.client.shell(f"pkill -f {shlex.quote(pattern)}", timeout=_SMALL_COMMAND_TIMEOUT_S)
        except (AdbTimeout, DeviceError) as exc:
            log.warning("device %r: could not stop benchmark_model: %s", self.name, exc)

    def _clean_up(self) -> None:
        """Remove this device's folders on the phone; only ever ones it made."""
        folders = [*self._stale, *([self._session.folder] if self._session else [])]
        self._session, self._stale = None, []
        prefix = f"{self.remote_tmpdir}/edgenas-"
        targets = [f for f in folders if f.startswith(prefix) and "/" not in f[len(prefix) :]]
        if targets and self.client.serial is not None:
            self._remove_quietly(targets)


def to_measurement(
    model: str,
    output: BenchmarkOutput,
    *,
    spread_threshold: float,
    delegate: str | None = None,
    profile_ops: bool = False,
) -> Measurement:
    """A Measurement from one benchmark_model run's output (its timed runs must be there)."""
    if output.runs is None:
        raise ValueError(f"benchmark_model printed no timed runs for {model}")
    us = output.runs.values
    n = output.runs.count
    mean, std = us["avg"] / 1e3, us.get("std", 0.0) / 1e3
    low, high = us.get("min", us["avg"]) / 1e3, us.get("max", us["avg"]) / 1e3
    printed_median = "median" in us
    median = us["median"] / 1e3 if printed_median else mean
    p10, p90 = max(low, mean - _Z90 * std), min(high, mean + _Z90 * std)
    extra: dict[str, Any] = {
        "statistics": (
            "benchmark_model's count/avg/std/min/max; "
            + ("its median; " if printed_median else "median = avg; ")
            + "p10/p90 = avg -/+ 1.28 std within [min, max]; spread (IQR/median) from "
            "IQR = 1.35 std"
        ),
        "runtime": "benchmark_model",
    }
    if output.warmup_avg_us is not None:
        extra["warmup_avg_ms"] = output.warmup_avg_us / 1e3
    if output.memory_overall_mb is not None:
        extra["memory_footprint_mb"] = {
            "init": output.memory_init_mb,
            "overall": output.memory_overall_mb,
        }
    ops: tuple[OperatorTime, ...] | None = None
    if profile_ops and output.ops:
        ran_on = delegate or "xnnpack"
        ops = tuple(
            OperatorTime(op.name, op.node_type, op.ms, ran_on if _delegated(op) else "cpu")
            for op in output.ops
        )
        extra["profile"] = {"run_ms": mean}
    # spread_threshold is IQR over median, as the runner computes it from its runs; a normal
    # distribution's IQR is 1.349 std (benchmark_model prints no quartiles)
    spread = 2 * _Z75 * std / median if median > 0 else 0.0
    return Measurement(
        model=model,
        median_ms=median,
        mean_ms=mean,
        std_ms=std,
        p10_ms=p10,
        p90_ms=p90,
        min_ms=low,
        n=n,
        flagged=spread > spread_threshold,
        peak_memory_bytes=(
            round(output.memory_overall_mb * 2**20)
            if output.memory_overall_mb is not None
            else None
        ),
        ops=ops,
        placement=_placement(output, delegate),
        extra=extra,
        init_ms=output.init_us / 1e3 if output.init_us is not None else None,
        first_inference_ms=(
            output.first_inference_us / 1e3 if output.first_inference_us is not None else None
        ),
    )


def _accelerator(delegate: str | None) -> bool:
    """Whether ``delegate`` runs on something other than the CPU (benchmark_model's GPU,
    NNAPI and external delegates; XNNPACK and none are CPU paths)."""
    return delegate in ("gpu", "nnapi") or (delegate or "").startswith("external:")


def _cpu_fallback(output: BenchmarkOutput) -> str | None:
    """Why a run with an accelerator's delegate ran on the CPU, in the tool's own words;
    None where it does not say so. benchmark_model goes on without the delegate when it
    cannot create it ("GPU acceleration is unsupported on this platform.") or the delegate
    takes nothing ("Though NNAPI delegate is explicitly applied, the model graph will not be
    executed by the delegate.", even after NNAPI's "Replacing 31 out of 31 node(s)"), and
    a run whose only delegated nodes went to XNNPACK ran on the CPU. Older builds print
    none of these lines: nothing says the accelerator was not used."""
    said = [n for n in output.delegate_notes if n.startswith("Though ")]
    said += [w for w in output.warnings if "unsupported on this platform" in w]
    if said:
        return "; ".join(said)
    applied = any(n.startswith("Explicitly applied ") for n in output.delegate_notes)
    cpu_only = all("xnnpack" in kernel.lower() for kernel in output.delegated_to)
    if not applied and output.delegated_to and cpu_only:
        return "only XNNPACK, on the CPU, took nodes"
    return None


def _placement(output: BenchmarkOutput, delegate: str | None) -> dict[str, Any] | None:
    """Where the nodes ran, when the output says (the delegate's "Replacing N out of M
    node(s)" line); builtin operators in the op profile are the fallback."""
    if not output.replaced:
        return None
    delegated = sum(r[0] for r in output.replaced)
    total = max(r[1] for r in output.replaced)
    fallback: dict[str, int] = {}
    for op in output.ops:
        if not _delegated(op):
            fallback[op.node_type] = fallback.get(op.node_type, 0) + 1
    return {
        "delegate": delegate or "xnnpack",
        "delegated_nodes": delegated,
        "cpu_nodes": total - delegated,
        "partitions": sum(r[3] for r in output.replaced),
        "fallback": fallback,
    }


def _delegated(op: OpTime) -> bool:
    """Whether a delegate ran a row of the op profile: XNNPACK names its own operators
    ``Delegate/...``, other delegates show one ``...Delegate...`` node per partition."""
    return op.name.startswith("Delegate/") or "Delegate" in op.node_type


def _split_batch(stdout: str, count: int) -> list[tuple[int, str]] | None:
    """Each model's (exit status, output) from a batch's stdout; ``None`` when the output
    stops before every model's exit status (the shell was cut off)."""
    results: list[tuple[int, str]] = []
    current: list[str] | None = None
    for line in stdout.replace("\r\n", "\n").split("\n"):
        if line.startswith(_MARK):
            current = []
        elif line.startswith(_EXIT) and current is not None:
            status = line[len(_EXIT) :].strip()
            results.append((int(status) if status.isdigit() else -1, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return results if len(results) == count else None


def _count_cpus(possible: str) -> int:
    """CPUs in a kernel list such as ``0-7`` or ``0-3,6``; 0 when unknown."""
    total = 0
    for part in possible.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            total += int(hi) - int(lo) + 1 if hi.isdigit() else 1
    return total


def _last(text: str) -> str:
    lines = [line.strip() for line in log_lines(text) if line.strip()]
    return lines[-1] if lines else ""


@register_device_kind("adb")
def _adb_from_profile(name: str, profile: dict[str, Any]) -> AdbDevice:
    checked = validate_profile({**profile, "name": name, "kind": "adb"}, where=repr(name))
    adb: AdbSection | None = checked.adb
    assert adb is not None  # the profile validator requires the section for kind adb
    return AdbDevice(
        name,
        benchmark_model=adb.benchmark_model,
        serial=adb.serial,
        adb=adb.adb,
        server_port=adb.server_port,
        remote_tmpdir=adb.remote_tmpdir,
        connect_timeout=adb.connect_timeout,
        command_timeout=adb.command_timeout,
        batch_size=adb.batch_size,
        max_reconnects=adb.max_reconnects,
        settings=checked.run_settings(),
    )
