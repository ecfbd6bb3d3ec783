"""Fashion-MNIST from the official IDX files (Debian's dataset-fashion-mnist), MD5-verified."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from once_for_all.data.errors import DataError
from once_for_all.data.spec import ImageSplit, RawDataset

FASHION_MNIST_ENV = "EDGENAS_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# MD5 of the decompressed files, as published by Zalando Research
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_INSTALL_HINT = (
    "install it with 'apt-get install dataset-fashion-mnist' "
    f"(or set {FASHION_MNIST_ENV} to a folder holding the four IDX files)"
)


def fashion_mnist_dir() -> Path:
    """The folder holding the IDX files: $EDGENAS_FASHION_MNIST_DIR, else Debian's location."""
    override = os.environ.get(FASHION_MNIST_ENV)
    return Path(override) if override else DEFAULT_FASHION_MNIST_DIR


def parse_idx(data: bytes, *, name: str) -> npt.NDArray[Any]:
    """Decode one IDX file (magic 0x0000, type byte, rank byte, big-endian int32 dims, payload)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    type_code, rank = data[2], data[3]
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        raise DataError(f"{name}: IDX type code 0x{type_code:02x} is not one of the IDX types")
    header_len = 4 + 4 * rank
    if rank == 0 or len(data) < header_len:
        raise DataError(f"{name}: IDX header is truncated or declares rank {rank}")
    dims = struct.unpack(f">{rank}i", data[4:header_len])
    if any(d < 0 for d in dims):
        raise DataError(f"{name}: IDX header has negative dimensions {list(dims)}")
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_len != expected:
        raise DataError(
            f"{name}: IDX header says {list(dims)} ({expected} bytes of data) but the file "
            f"holds {len(data) - header_len}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _read_verified(folder: Path, stem: str) -> npt.NDArray[Any]:
    plain, packed = folder / stem, folder / f"{stem}.gz"
    if packed.is_file():
        path = packed
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"Fashion-MNIST file {path} is not a valid gzip file ({exc}): reinstall "
                "'dataset-fashion-mnist'"
            ) from None
    elif plain.is_file():
        path = plain
        data = plain.read_bytes()
    else:
        raise DataError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}: {_INSTALL_HINT}")
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != FASHION_MNIST_MD5[stem]:
        raise DataError(
            f"Fashion-MNIST file {path} is corrupt (MD5 of its contents {digest}, expected "
            f"{FASHION_MNIST_MD5[stem]}): reinstall 'dataset-fashion-mnist'"
        )
    return parse_idx(data, name=str(path))


def load_fashion_mnist(folder: Path | None = None) -> RawDataset:
    """The official 60k/10k Fashion-MNIST, each file checked against its published MD5."""
    folder = fashion_mnist_dir() if folder is None else folder
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST not found in {folder}: {_INSTALL_HINT}")
    arrays = {stem: _read_verified(folder, stem) for stem in FASHION_MNIST_MD5}

    def split(prefix: str) -> ImageSplit:
        images = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"]).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"]).to(torch.int64)
        return ImageSplit(images, labels)

    return RawDataset("fashion-mnist", FASHION_MNIST_CLASSES, split("train"), split("t10k"))
