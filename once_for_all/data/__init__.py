"""Data for edgenas: Fashion-MNIST, MNIST or the user's images, split and batched in memory,
or image folders too big for memory, streamed from disk (image_stream)."""

from __future__ import annotations

from once_for_all.data.batches import BatchLoader, normalize, resize_batch
from once_for_all.data.errors import DataError
from once_for_all.data.image_stream import (
    StreamBundle,
    StreamLoader,
    StreamSplit,
    stream_image_folder,
)
from once_for_all.data.load import load_data
from once_for_all.data.spec import DATASPEC_FORMAT, DataBundle, DataSpec, ImageSplit
from once_for_all.data.user_data import image_folder_classes

__all__ = [
    "DATASPEC_FORMAT",
    "BatchLoader",
    "DataBundle",
    "DataError",
    "DataSpec",
    "ImageSplit",
    "StreamBundle",
    "StreamLoader",
    "StreamSplit",
    "image_folder_classes",
    "load_data",
    "normalize",
    "resize_batch",
    "stream_image_folder",
]
