"""Image folders too big to hold in memory (ImageNet's 1.28 M training JPEGs are about 190 GB
decoded at 224 px), read from disk batch by batch.

``stream_image_folder`` lists a folder (the layouts and bad-input checks of
``list_image_folder``: no class folders, an empty class folder, held-out classes the training
folder lacks) into a ``StreamBundle``: the ``DataSpec`` and train/val/test ``StreamSplit``s,
which hold file names and labels, no pixels, held out as ``load_data`` holds them out.
``StreamLoader`` yields what ``BatchLoader`` yields, normalised float32 batches and int64
labels, so training and evaluation code takes either; it decodes and normalises (the same
``normalize``) in DataLoader worker processes.

Transforms are OFA's: training images get a random-resized crop to the resolution of the
step, a horizontal flip and colour jitter (once_for_all.data.transforms); evaluation images
are resized to r / 0.875 on the shorter side and centre-cropped to r. Each batch comes at one
resolution, drawn per batch (OFA's elastic resolution) by a sampler seeded with (seed,
epoch), and each image's augmentation by a seed drawn with it, so an epoch's batches are the
same whatever the number of workers, and a resumed epoch (``start``) replays the rest.

Decoding is Pillow's, with JPEG draft mode: libjpeg scales a JPEG by 1/2, 1/4 or 1/8 in the
DCT domain while decoding whenever the crop then still holds the output size (a 500 x 375
photo centre-cropped to 128 px decodes at 250 x 188). Images are decoded per step at the
step's resolution, not once at the largest: draft mode makes the smaller steps cheaper, and
there is no decoded copy to keep. benchmarks/data.py measures both decoders and simplejpeg.

Images of any mode Pillow reads (grey, palette, RGBA, CMYK, 16-bit grey PNG) become the
spec's channels (``to_channels``). An unreadable or corrupt file is skipped and counted, not
fatal: one bad file among a million should not stop a days-long training. It is logged as a
warning naming the file (once per process: training, BN and evaluation loaders read the
same files), its batch comes one image short, and
``StreamLoader.skipped`` lists it; an epoch in which no image could be read is refused.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from once_for_all.data.batches import epoch_generator, normalize
from once_for_all.data.errors import DataError
from once_for_all.data.load import BUILTIN_SOURCES
from once_for_all.data.spec import DataBundle, DataSpec, ImageSplit
from once_for_all.data.splits import (
    BN_IMAGES,
    BN_SEED,
    TEST_HOLDOUT_SEED,
    channel_stats,
    eval_head,
    held_out_test_indices,
    spread_sample,
    validation_indices,
)
from once_for_all.data.transforms import (
    CROP_FRACTION,
    GRAY_MODES,
    center_crop,
    random_resized_crop_box,
    to_channels,
    train_augment,
)
from once_for_all.data.user_data import BAD_IMAGE, list_image_folder
from once_for_all.errors import one_line

log = logging.getLogger(__name__)
# What a folder's held images decoded again at other resolutions may take (hold_in_memory).
DECODED_BUDGET_BYTES = 2 * 2**30
_said_unreadable: set[Path] = set()  # files whose warning was given (once per process)

# A folder whose images would take more than this decoded streams when the choice is "auto":
# the peak-memory target for training on 2 cores.
STREAM_ABOVE_BYTES = 2 * 2**30
# Images whose headers decide the channels, and images decoded for mean/std, when not given
CHANNEL_PROBES = 256
STATS_IMAGES = 1000

# (index into the split, resolution, augmentation seed): one image of a batch
Item = tuple[int, int, int]
# How a data source is held: "auto" chooses by size (``streams``)
Holding = Literal["auto", "memory", "stream"]
HOLDINGS: tuple[Holding, ...] = get_args(Holding)


def default_workers() -> int:
    """The cores this process may run on: DataLoader worker processes by default."""
    return len(os.sched_getaffinity(0))


def streams(source: str, *, image_size: int | None, holding: Holding = "auto") -> bool:
    """Whether ``source`` (as ``load_data`` takes it) streams: "stream" insists (only an image
    folder can, at a given ``image_size``), "memory" refuses, "auto" streams a folder whose
    images would take more than ``STREAM_ABOVE_BYTES`` decoded as 3 x image_size**2 bytes each
    (files listed, none decoded; without ``image_size``, the first image's size, and a folder
    that would stream is refused until ``image_size`` is given)."""
    if holding not in HOLDINGS:
        raise DataError(f"holding {holding!r}: use {', '.join(HOLDINGS)}")
    folder = Path(source).expanduser()
    is_folder = source not in BUILTIN_SOURCES and folder.is_dir()
    if holding == "memory" or (holding == "auto" and not is_folder):
        return False
    if not is_folder:
        raise DataError(
            f"data {source!r} cannot stream: only a folder of class folders streams; hold it "
            "in memory (stream: memory, or auto)"
        )
    if holding == "stream" and image_size is None:
        raise DataError(
            f"data {source!r}: give image_size, the size streamed images are cropped to "
            "(e.g. 224), or hold the folder in memory (stream: memory)"
        )
    if holding == "stream":
        return True
    listing = list_image_folder(folder)
    files = listing.train + (listing.test or [])
    size = image_size or max(_header_size(files[0][0]))
    decoded = len(files) * 3 * size**2
    if decoded <= STREAM_ABOVE_BYTES:
        return False
    if image_size is None:
        raise DataError(
            f"data {source!r}: {len(files)} images would take {decoded / 2**30:.1f} GiB "
            "decoded, so they stream: give image_size, the size they are cropped to (e.g. 224)"
        )
    return True


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except BAD_IMAGE as exc:
        raise DataError(
            f"cannot read image {path} ({one_line(exc, limit=80)}): fix or remove it"
        ) from None


class PathTable:
    """File names as one byte string and offsets: forked DataLoader workers read these pages
    without copying them, where a list of a million ``str`` objects is copied page by page as
    reference counts change."""

    def __init__(self, names: Sequence[str]) -> None:
        encoded = [os.fsencode(name) for name in names]
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return os.fsdecode(self._blob[self._offsets[i] : self._offsets[i + 1]].tobytes())

    def select(self, indices: Sequence[int] | npt.NDArray[np.int64]) -> PathTable:
        return PathTable([self[int(i)] for i in indices])

    def __bytes__(self) -> bytes:
        """Every name and where each ends: equal tables give equal bytes (for hashing)."""
        return self._offsets.tobytes() + self._blob.tobytes()


@dataclass(frozen=True)
class StreamSplit:
    """Image files under ``root`` (``names`` relative to it) and their int64 labels."""

    root: Path
    names: PathTable
    labels: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.labels):
            raise DataError(f"stream split: {len(self.names)} files but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> Path:
        return self.root / self.names[i]

    def select(self, indices: Sequence[int] | npt.NDArray[np.int64]) -> StreamSplit:
        """The files at ``indices``, in that order."""
        index = np.asarray(indices, dtype=np.int64)
        return StreamSplit(self.root, self.names.select(index), self.labels[index])

    @classmethod
    def of(cls, root: Path, files: Sequence[tuple[Path, int]]) -> StreamSplit:
        names = PathTable([os.path.relpath(path, root) for path, _ in files])
        return cls(root, names, np.array([label for _, label in files], dtype=np.int64))


@dataclass(frozen=True)
class StreamBundle:
    """``DataBundle``'s streamed counterpart: the same spec and split roles, and the worker
    processes that the loaders built from it (training, evaluation, BN) decode with."""

    spec: DataSpec
    train: StreamSplit
    val: StreamSplit
    test: StreamSplit
    workers: int


def stream_image_folder(
    root: Path,
    *,
    image_size: int,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    val_size: int = 5000,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    workers: int | None = None,
) -> StreamBundle:
    """The folder at ``root`` listed for streaming; ``load_data``'s hold-outs and arguments.
    ``test_limit`` keeps that many test images spread over the classes (the ones
    ``load_data``'s ``test_read_limit`` reads), for an evaluation of the first N.

    ``channels`` defaults to 1 when the headers of a spread sample of ``CHANNEL_PROBES``
    training images are all grey, else 3. ``mean``/``std`` (a pretrained network's, e.g. OFA's
    ImageNet normalisation) default to the statistics of ``STATS_IMAGES`` training images
    centre-cropped to ``image_size``. ``workers`` decode processes (default: the core count)
    serve every loader built from the bundle.
    """
    if image_size < 1:
        raise DataError(f"image_size={image_size} must be >= 1")
    if (mean is None) != (std is None):
        raise DataError("give mean and std together (or neither, to compute them)")
    if workers is not None and workers < 0:
        raise DataError(f"workers={workers} must be >= 0 (0 decodes in this process)")
    workers = default_workers() if workers is None else workers
    listing = list_image_folder(root)
    name = root.resolve().name
    everything = StreamSplit.of(root, listing.train)
    if listing.test is not None:
        train, test = everything, StreamSplit.of(root, listing.test)
    else:
        kept, held = held_out_test_indices(torch.from_numpy(everything.labels), name=name)
        train, test = everything.select(kept.numpy()), everything.select(held.numpy())
    kept, held = validation_indices(
        len(train), val_size=val_size, seed=seed, train_limit=train_limit, name=name
    )
    train, val = train.select(kept.numpy()), train.select(held.numpy())
    if test_limit is not None:
        test = test.select(spread_sample(test.labels.tolist(), test_limit, seed=TEST_HOLDOUT_SEED))
    probes = spread_sample(train.labels.tolist(), CHANNEL_PROBES, seed=seed)
    if channels is None:
        channels = 1 if all(_mode(train.path(i)) in GRAY_MODES for i in probes) else 3
    if mean is None or std is None:
        sample = train.select(spread_sample(train.labels.tolist(), STATS_IMAGES, seed=seed))
        mean, std = _stats(sample, channels, image_size, workers)
    spec = DataSpec(
        name=name,
        channels=channels,
        image_size=image_size,
        num_classes=len(listing.class_names),
        class_names=listing.class_names,
        mean=tuple(mean),
        std=tuple(std),
    )
    return StreamBundle(spec, train, val, test, workers)


def _mode(path: Path) -> str:
    try:
        with Image.open(path) as image:
            return image.mode
    except BAD_IMAGE:
        return "RGB"  # skipped when read; it must not decide the channels


def _stats(
    sample: StreamSplit, channels: int, size: int, workers: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    decoder = _Decoder(sample, channels, augment=False)
    loader = DataLoader(
        decoder,
        batch_sampler=StepBatches(len(sample), batch_size=100, resolutions=(size,)),
        num_workers=workers,
        collate_fn=_Collate(None),  # uint8, for the histogram
    )
    images = [batch for batch, _, _ in loader if len(batch)]
    if not images:
        raise DataError(f"image folder {sample.root}: none of {len(sample)} images could be read")
    return channel_stats(torch.cat(images))


class StepBatches(Sampler[list[Item]]):
    """The batches of one epoch over ``n`` images: each a list of (index, resolution, seed),
    one resolution per batch drawn uniformly from ``resolutions`` (OFA's elastic resolution).
    Order, resolutions and seeds depend only on (``seed``, ``epoch``); ``start`` skips the
    first batches (a resumed epoch) without drawing anything differently. ``rows`` keeps
    those rows of every batch (a training process's shard of the global batch)."""

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        resolutions: Sequence[int],
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        rows: slice | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size} must be >= 1")
        if not resolutions or min(resolutions) < 1:
            raise DataError(f"resolutions={list(resolutions)}: give at least one, each >= 1")
        self.batch_size = batch_size
        self.count = n // batch_size if drop_last else math.ceil(n / batch_size)
        if not 0 <= start <= self.count:
            raise DataError(f"start={start}: the epoch has batches 0..{self.count - 1}")
        self.start = start
        self.rows = rows or slice(None)
        generator = epoch_generator(seed, epoch)
        self.order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        choice = torch.randint(len(resolutions), (self.count,), generator=generator)
        self.resolutions = [int(resolutions[i]) for i in choice.tolist()]
        self.seeds = torch.randint(2**62, (n,), generator=generator)

    def __len__(self) -> int:
        return self.count - self.start

    def __iter__(self) -> Iterator[list[Item]]:
        for b in range(self.start, self.count):
            batch = self.order[b * self.batch_size : (b + 1) * self.batch_size]
            index = batch[self.rows].tolist()
            r = self.resolutions[b]
            yield [(i, r, int(self.seeds[i])) for i in index]


class _Decoder(Dataset[tuple[npt.NDArray[np.uint8] | None, int, int, str]]):
    """Reads one (index, resolution, seed) item: (pixels [C, r, r] or None when unreadable,
    label, index, the reason it was unreadable)."""

    def __init__(self, split: StreamSplit, channels: int, *, augment: bool) -> None:
        self.split = split
        self.channels = channels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: Item) -> tuple[npt.NDArray[np.uint8] | None, int, int, str]:
        index, size, seed = item
        label = int(self.split.labels[index])
        rng = np.random.default_rng(seed) if self.augment else None
        try:
            pixels = decode(self.split.path(index), self.channels, size, rng)
        except BAD_IMAGE as exc:
            return None, label, index, one_line(exc, limit=80)
        return pixels, label, index, ""


def decode(
    path: Path, channels: int, size: int, rng: np.random.Generator | None
) -> npt.NDArray[np.uint8]:
    """One image as uint8 [channels, size, size]: OFA's train transform drawn from ``rng``, or
    its eval transform when ``rng`` is None. JPEGs decode in draft mode, scaled down in the DCT
    domain as far as the crop allows. Raises what Pillow raises for an unreadable file."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as image:
        width, height = image.size
        if rng is None:
            scale = math.ceil(size / CROP_FRACTION) / min(width, height)
            image.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()  # a truncated file fails here
            out = center_crop(to_channels(image, channels), size)
        else:
            left, top, right, bottom = random_resized_crop_box(width, height, rng)
            wanted = (
                math.ceil(width * size / (right - left)),
                math.ceil(height * size / (bottom - top)),
            )
            drafted = image.draft(mode, wanted)
            f = 1.0 if drafted is None else drafted[1][2] / width
            image.load()
            box = (left * f, top * f, right * f, bottom * f)
            out = train_augment(to_channels(image, channels), size, box, rng)
    pixels = np.asarray(out, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


class _Collate:
    """A batch's (normalised float32 images, labels, unreadable (index, reason) pairs): run in
    the worker, where normalising costs as much as decoding (about 1 ms per 224 px image
    here) and runs beside the training step instead of before it."""

    def __init__(self, spec: DataSpec | None) -> None:
        self.spec = spec

    def __call__(
        self, items: list[tuple[npt.NDArray[np.uint8] | None, int, int, str]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
        good = [(pixels, label) for pixels, label, _, _ in items if pixels is not None]
        bad = [(index, reason) for pixels, _, index, reason in items if pixels is None]
        labels = torch.tensor([label for _, label in good], dtype=torch.int64)
        if not good:
            return torch.empty(0), labels, bad
        images = torch.from_numpy(np.stack([pixels for pixels, _ in good]))
        return (images if self.spec is None else normalize(images, self.spec)), labels, bad


class StreamLoader:
    """``BatchLoader`` for a ``StreamSplit``: batches of (normalised float32 images [B, C, r, r],
    int64 labels), decoded by ``workers`` processes (the core count by default; 0 decodes in
    this process).

    ``augment`` applies OFA's train transforms at a resolution drawn per batch from
    ``resolutions`` (default: the spec's image size); without it, OFA's eval transform at
    ``resolutions[0]``. Order and augmentation depend only on (``seed``, epoch). ``limit``
    keeps the first ``limit`` images of the split. A batch is short by the unreadable images
    in it (see the module docstring); ``skipped`` lists their paths. ``normalise=False``
    yields the uint8 pixels instead. ``rows`` decodes only those rows of every batch: each
    training process decodes its own shard of the global batch, not all of it.
    """

    def __init__(
        self,
        split: StreamSplit,
        spec: DataSpec,
        *,
        batch_size: int,
        shuffle: bool,
        augment: bool = False,
        resolutions: Sequence[int] | None = None,
        seed: int = 0,
        drop_last: bool = False,
        limit: int | None = None,
        workers: int | None = None,
        normalise: bool = True,
        rows: slice | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise DataError(f"limit={limit} must be >= 1 (or None for the whole split)")
        if seed < 0:
            raise DataError(f"seed={seed} must be >= 0")
        if workers is not None and workers < 0:
            raise DataError(f"workers={workers} must be >= 0 (0 decodes in this process)")
        self.split = split if limit is None else split.select(np.arange(min(limit, len(split))))
        self.spec = spec
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.resolutions = tuple(resolutions or (spec.image_size,))
        if not augment:
            self.resolutions = self.resolutions[:1]
        self.seed = seed
        self.drop_last = drop_last
        self.workers = default_workers() if workers is None else workers
        self.normalise = normalise
        self.rows = rows
        self.skipped: list[Path] = []
        self._classes_lost: set[int] = set()  # classes warned of: none of their images read
        self._decoder = _Decoder(self.split, spec.channels, augment=augment)
        self.sampler(0)  # refuses a bad batch size or resolution now, not at the first epoch

    def sampler(self, epoch: int, *, start: int = 0) -> StepBatches:
        """The batches of ``epoch`` from batch ``start`` on, with their resolutions."""
        return StepBatches(
            len(self.split),
            batch_size=self.batch_size,
            resolutions=self.resolutions,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            seed=self.seed,
            epoch=epoch,
            start=start,
            rows=self.rows,
        )

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch`` from batch ``start`` on, deterministic for a given
        (seed, epoch) whatever ``workers``."""
        loader = DataLoader(
            self._decoder,
            batch_sampler=self.sampler(epoch, start=start),
            num_workers=self.workers,
            collate_fn=_Collate(self.spec if self.normalise else None),
        )
        yielded = unreadable = 0
        read: set[int] = set()  # classes with an image read this epoch
        lost: dict[int, int] = {}  # classes with images skipped: how many
        for images, labels, bad in loader:
            unreadable += len(bad)
            for index, reason in bad:
                path = self.split.path(index)
                label = int(self.split.labels[index])
                lost[label] = lost.get(label, 0) + 1
                if path not in self.skipped:
                    self.skipped.append(path)
                if path not in _said_unreadable:
                    _said_unreadable.add(path)
                    log.warning("skipped unreadable image %s (%s)", path, reason)
            if len(labels):
                yielded += len(labels)
                read.update(labels.tolist())
                yield images, labels
        if yielded == 0 and unreadable:
            raise DataError(
                f"none of the images of this epoch could be read (first: {self.skipped[0]}): "
                "check the folder's files"
            )
        for label in sorted(set(lost) - read - self._classes_lost):
            # Per file, this was one warning among others; the accuracy then leaves a whole
            # class out (data audit).
            self._classes_lost.add(label)
            log.warning(
                "class %s: none of its %d image(s) here could be read; what is trained or "
                "measured on this split leaves the class out",
                self.spec.class_names[label],
                lost[label],
            )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


def hold_in_memory(
    bundle: StreamBundle, *, train: int, val: int, test: int, bn: int = BN_IMAGES
) -> DataBundle:
    """At most ``train``, ``val`` and ``test`` images of the bundle's splits, decoded once by
    the eval transform at the spec's size into a ``DataBundle``: for work that reads the same
    images many times (a search recalibrates BN and evaluates per subnet; export calibrates
    and checks), which would otherwise decode them each time. ``val`` and ``test`` keep the
    images an evaluation limited to that many reads (``eval_head``), ``train`` a spread over
    the classes; unreadable files are skipped, as when streaming. ``bn`` images are held as
    ``hold_bn_images`` crops them, the ones evaluating on the stream recalibrates BN on.
    Training on it (export's fine-tune) augments with OFA's train transforms, as streaming
    does."""
    picked = spread_sample(bundle.train.labels.tolist(), train, seed=0)
    files = {
        "train": bundle.train.select(picked),
        "val": eval_head(bundle.val, val),
        "test": eval_head(bundle.test, test),
    }
    held = {name: _held_files(split, bundle) for name, split in files.items()}
    decoded: OrderedDict[tuple[str, int], ImageSplit] = OrderedDict()

    def decode_at(name: str, resolution: int) -> ImageSplit:
        if (name, resolution) in decoded:
            decoded.move_to_end((name, resolution))
        else:
            read, images = held[name]
            _, again = _held_files(read, bundle, size=resolution)
            if not torch.equal(again.labels, images.labels):  # a file read once, not twice
                raise DataError(
                    f"the {name} images of {bundle.spec.name} read differently at "
                    f"{resolution} px than at {bundle.spec.image_size} px (a file changed "
                    "meanwhile?): run the command again"
                )
            decoded[(name, resolution)] = again
            # The least recently used go beyond the budget: 2,000 images at each of
            # mbv3-imagenet's 25 resolutions would take 4.6 GB.
            while len(decoded) > 1 and (
                sum(v.images.nbytes for v in decoded.values()) > DECODED_BUDGET_BYTES
            ):
                decoded.popitem(last=False)
        return decoded[(name, resolution)]

    return DataBundle(
        bundle.spec,
        held["train"][1],
        held["val"][1],
        held["test"][1],
        train_transforms="ofa",
        bn=hold_bn_images(bundle, bn),
        decode_at=decode_at,
    )


def hold_bn_images(bundle: StreamBundle, images: int) -> ImageSplit:
    """``images`` training images spread over the classes, each cropped from its file by
    OFA's train transforms at the spec's size (random-resized crop, flip, colour jitter;
    seeded by ``BN_SEED``, whatever the workers), as OFA recalibrates BN; resized per
    subnet."""
    picked = spread_sample(bundle.train.labels.tolist(), images, seed=0)
    return _held(bundle.train.select(picked), bundle, augment=True, seed=BN_SEED)


def _held(
    split: StreamSplit, bundle: StreamBundle, *, augment: bool = False, seed: int = 0
) -> ImageSplit:
    return _held_files(split, bundle, augment=augment, seed=seed)[1]


def _held_files(
    split: StreamSplit,
    bundle: StreamBundle,
    *,
    augment: bool = False,
    seed: int = 0,
    size: int | None = None,
) -> tuple[StreamSplit, ImageSplit]:
    """The files of ``split`` that could be read, and their images decoded at ``size`` (the
    spec's by default)."""
    size = size or bundle.spec.image_size
    channels = bundle.spec.channels
    if len(split) == 0:
        return split, ImageSplit(
            torch.empty((0, channels, size, size), dtype=torch.uint8),
            torch.empty(0, dtype=torch.int64),
        )
    loader = StreamLoader(
        split,
        bundle.spec,
        batch_size=200,
        shuffle=False,
        augment=augment,
        resolutions=(size,),
        seed=seed,
        workers=bundle.workers,
        normalise=False,
    )
    batches = list(loader.epoch(0))
    images = ImageSplit(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    skipped = set(loader.skipped)
    if not skipped:
        return split, images
    kept = [i for i in range(len(split)) if split.path(i) not in skipped]
    return split.select(np.asarray(kept, dtype=np.int64)), images
