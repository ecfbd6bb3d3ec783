"""The one interface every target implements, and the registry of device kinds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devices.measurement import Fingerprint, MeasuredWith, Measurement
from once_for_all.errors import EdgenasError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Runtime = Literal["onnxruntime", "tflite", "openvino", "tensorrt"]


# Where per-op times come from, for messages: the targets whose ``per_op_times`` is true.
PER_OP_TARGETS = (
    "onnxruntime (its profiler, on local and ssh devices), TFLite's benchmark_model "
    "(--enable_op_profiling, on adb devices), TensorRT's trtexec (--dumpProfile), OpenVINO's "
    "performance counters (on its CPU), and the "
    "npu-sim and vela simulators"
)

# Why a simulator's files are not checked on it (Device.classify_refusal).
LATENCY_ONLY = "it returns latency only (Vela and the NPU simulator give no outputs)"
# Images per classify call on a board or phone: 250 float32 images at 224 px are 150 MB.
CLASSIFY_IMAGES_PER_CALL = 250


class DeviceError(EdgenasError, RuntimeError):
    """A target that cannot be used as asked; the message names the device and the fix."""


class Device(ABC):
    """A target that runs model files and reports their latency.

    ``measure`` takes many models in one call (many small models per round trip is what makes
    table building fast) and returns one ``Measurement`` per model, in the same order.
    """

    name: str

    @abstractmethod
    def fingerprint(self) -> Fingerprint: ...

    @abstractmethod
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
        """``None`` arguments take the device profile's values."""

    @property
    def classify_refusal(self) -> str | None:
        """Why ``classify`` does not run models on images on this target, as the card says
        it, or None where it does (the runner's devices and benchmark_model's phones);
        targets that only time models (the simulators) do not."""
        return LATENCY_ONLY

    @property
    def classifies(self) -> bool:
        return self.classify_refusal is None

    def classify(
        self,
        models: Sequence[Path],
        images: npt.NDArray[np.floating],
        *,
        progress: Callable[[str], None] | None = None,
    ) -> list[list[int]]:
        """Each model's top-1 class of each of ``images`` (float, N x C x H x W), run on the
        target as ``measure`` runs it: its runtime, delegate or providers, and threads.
        ``progress`` is told how far a long check has come, in a line."""
        raise DeviceError(
            f"device {self.name!r} cannot classify images: it returns latency only; check "
            "the files' accuracy on a device of kind local, ssh or adb"
        )

    def _model_files(self, models: Sequence[Path]) -> list[Path]:
        """``models`` as paths, each an existing file, before anything goes to the target."""
        paths = [Path(p) for p in models]
        for path in paths:
            if not path.is_file():
                raise DeviceError(f"device {self.name!r}: model file not found: {path}")
        return paths

    def measured_with(self) -> MeasuredWith:
        """The settings this device measures with that change what a latency means and that
        its fingerprint leaves out; none for the simulators, which have none."""
        return ()

    @property
    def per_op_times(self) -> bool:
        """Whether ``measure(..., profile_ops=True)`` gives each model's ``ops`` (per-op
        times); targets that cannot leave them ``None``. See ``PER_OP_TARGETS``."""
        return False

    @property
    def models_per_call(self) -> int | None:
        """The most models one runner call measures together (interleaved); ``None``: all
        models of a ``measure`` call. Callers that compare models keep them in one call."""
        return None

    def named_on_the_command_line(self, profile: str) -> None:  # noqa: B027 - optional hook
        """How commands name this device's profile (a bundled name or a YAML path), for the
        commands that messages suggest; ``open_device`` says it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; devices are also context managers."""

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


DeviceFactory = Callable[[str, dict[str, Any]], Device]
_KINDS: dict[str, DeviceFactory] = {}


def register_device_kind(kind: str) -> Callable[[DeviceFactory], DeviceFactory]:
    """Register a factory ``(name, profile_dict) -> Device`` for profile ``kind``."""

    def deco(factory: DeviceFactory) -> DeviceFactory:
        _KINDS[kind] = factory
        return factory

    return deco


def device_kinds() -> list[str]:
    return sorted(_KINDS)


def create_device(kind: str, name: str, profile: dict[str, Any]) -> Device:
    try:
        factory = _KINDS[kind]
    except KeyError:
        raise DeviceError(
            f"device {name!r}: unknown kind {kind!r}; known kinds: {', '.join(device_kinds())}"
        ) from None
    return factory(name, profile)
