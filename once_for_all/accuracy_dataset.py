"""Evaluated subnets for fitting an accuracy predictor: sampled, evaluated with inherited
weights, and cached per subnet in a JSON file so that an interrupted run resumes.

Cache file (``"format": "edgenas.accuracy-cache/1"``)::

    {"format": "edgenas.accuracy-cache/1",
     "header": {"space": "<space id>", "supernet": "<weights fingerprint>",
                "split": "val", "bn_images": 2000, "limit": null, "data": "<fingerprint>",
                "method": 3},
     "entries": {"<subnet JSON>": 0.8125, ...}}

An accuracy is only valid for the supernet weights and the evaluation settings that produced
it, so the header pins both and a cache made with others is refused. ``method`` is how
``evaluate_subnet`` picks its images (``EVAL_METHOD``): a cache of an older method is started
afresh, with a warning, as its accuracies are not what this one measures.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np

from once_for_all.data import DataBundle
from once_for_all.data.image_stream import StreamBundle, StreamSplit
from once_for_all.elastic_supernet import OFAMobileNetV3
from once_for_all.errors import EdgenasError
from once_for_all.evaluation import BN_IMAGES, evaluate_subnet
from once_for_all.files import read_json, write_json
from once_for_all.progress import Progress
from once_for_all.search_space import SearchSpace
from once_for_all.splits import EVAL_SPLITS
from once_for_all.subnet import Subnet, SubnetError

CACHE_FORMAT = "edgenas.accuracy-cache/1"
# How evaluate_subnet picks its images. 2: BN statistics from a random slice of the training
# split, a limited evaluation on images spread over the classes (eval_head), where 1 took the
# first images of each split (in class order for an image folder: a few classes only). 3: a
# folder not held whole (streamed, or an imported supernet's) recalibrates BN on crops of
# OFA's train transforms, and an imported supernet's validation split is a fixed hold-out.
# 4: such a folder's images held in memory are decoded again at a subnet's resolution below
# the folder's image size, as eval streams them, not the held crop resized.
EVAL_METHOD = 4
METHOD_CHANGES = {
    1: "BN statistics and limited evaluations took the first images of each split, not a "
    "random slice and a spread over the classes",
    2: "a streamed or imported folder's BN statistics came from centre crops, not from "
    "OFA's train-transform crops as in eval, and an imported supernet's validation "
    "images depended on how many were asked for",
    3: "a streamed or imported folder's images were evaluated below its image size as its "
    "held crops resized, not decoded at the subnet's resolution as in eval",
}
log = logging.getLogger(__name__)
SPLITS = EVAL_SPLITS


def evaluation_method(data: DataBundle | StreamBundle | None) -> int:
    """The evaluation method (``EVAL_METHOD``) that ``data``'s accuracies are measured by:
    methods 3 and 4 changed only folders not held whole, so data held whole in memory is
    still evaluated as by method 2, which its caches and studies keep."""
    if isinstance(data, DataBundle) and data.bn is None:
        return 2
    return EVAL_METHOD


class AccuracyCacheError(EdgenasError, ValueError):
    """An accuracy cache that is corrupt or was made for another supernet or other settings."""


class CacheDocument(TypedDict):
    """An accuracy cache file (see the module's docstring)."""

    format: str
    header: dict[str, Any]  # CacheHeader.to_dict()
    entries: dict[str, float]  # subnet JSON -> accuracy


def read_accuracy_cache(path: Path) -> CacheDocument:
    """The accuracy cache at ``path``; a file that is not one raises ``AccuracyCacheError``
    with one line. Its header and entries are not checked here (``AccuracyCache.open`` does)."""
    doc = read_json(
        path,
        formats=CACHE_FORMAT,
        what="an accuracy cache",
        fix="delete it to start over, or choose another cache path",
        error=AccuracyCacheError,
    )
    return cast(CacheDocument, doc)


def write_accuracy_cache(path: Path, doc: CacheDocument) -> None:
    write_json(path, doc)


def supernet_fingerprint(supernet: OFAMobileNetV3) -> str:
    """First 16 hex digits of a SHA-256 over the supernet's state (names, dtypes, shapes,
    values). Equal weights give equal fingerprints whichever file they were loaded from, and
    a retrained or fine-tuned supernet gets a new one. About 30 ms for ``mbv3-imagenet``."""
    digest = hashlib.sha256()
    for name, tensor in supernet.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(data: DataBundle | StreamBundle, split: str) -> str:
    """First 16 hex digits of a SHA-256 over what an evaluation reads: the ``split`` it
    scores and the training split that BN recalibration draws from. Images held in memory
    are hashed by content (pixels and labels: about 0.1 s for Fashion-MNIST); a streamed
    folder by its listing (file names and labels), since reading every file of an ImageNet
    folder would cost minutes."""
    digest = hashlib.sha256()
    # a folder's held BN images (``DataBundle.bn``), which BN draws from instead of train
    bn = "bn" if isinstance(data, DataBundle) and data.bn is not None else "train"
    for name in (split, bn):
        part = getattr(data, name)
        digest.update(f"{name}|{len(part)}|".encode())
        if isinstance(part, StreamSplit):
            digest.update(bytes(part.names))
            digest.update(np.ascontiguousarray(part.labels).tobytes())
        else:
            digest.update(f"{tuple(part.images.shape)}|".encode())
            digest.update(part.images.contiguous().numpy().tobytes())
            digest.update(part.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CacheHeader:
    """What an accuracy depends on besides the subnet: the space, the supernet's weights, the
    data (``data_fingerprint``) and the evaluation settings (``evaluate_subnet``'s ``split``,
    ``bn_images`` and ``limit``) and method (``EVAL_METHOD``). ``data`` is "" in caches
    written before it was recorded, which therefore do not match."""

    space: str
    supernet: str
    split: str = "val"
    bn_images: int = BN_IMAGES
    limit: int | None = None
    data: str = ""
    method: int = 1  # caches written before it was recorded: the first method

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> CacheHeader:
        if not isinstance(data, dict):
            raise TypeError("header must be an object")
        return cls(**data)

    def mismatch(self, other: CacheHeader) -> str | None:
        """A description of the first field that differs from ``other``, or None."""
        for name, mine in self.to_dict().items():
            theirs = getattr(other, name)
            if mine != theirs:
                return f"{name} {mine!r}, not {theirs!r}"
        return None


class AccuracyCache:
    """Subnet → accuracy, persisted as JSON at ``path`` and written atomically.

    Use ``AccuracyCache.open``. ``put`` saves every ``save_every`` new entries; call ``save``
    at the end (``evaluate_many`` does both). Entries are keyed by the subnet's JSON; given
    its ``space`` (``open`` does), by its canonical form, so that two subnets that differ
    only in the entries of skipped blocks, one network, are evaluated once (a search's
    samplers propose such pairs: its parameters include every slot's choices).
    """

    def __init__(
        self,
        path: Path,
        header: CacheHeader,
        entries: dict[str, float] | None = None,
        *,
        save_every: int = 8,
        space: SearchSpace | None = None,
    ) -> None:
        if save_every < 1:
            raise ValueError(f"save_every={save_every} must be >= 1")
        self.path = path
        self.header = header
        self.save_every = save_every
        self._space = space
        self._entries: dict[str, float] = {}
        for key, accuracy in (entries or {}).items():
            # caches written before the keys were canonical: the first of a network's entries
            self._entries.setdefault(self._key(Subnet.from_json(key)), accuracy)
        self._unsaved = 0

    def _key(self, subnet: Subnet) -> str:
        return (self._space.canonical(subnet) if self._space is not None else subnet).to_json()

    @classmethod
    def open(
        cls,
        path: str | Path,
        supernet: OFAMobileNetV3,
        *,
        split: str = "val",
        bn_images: int = BN_IMAGES,
        limit: int | None = None,
        data: DataBundle | StreamBundle | None = None,
        save_every: int = 8,
        fix: str = "delete it or choose another cache path",
    ) -> AccuracyCache:
        """The cache at ``path`` for ``supernet`` evaluated on ``data`` with these settings:
        its entries if the file exists (refused with ``AccuracyCacheError``, ending in
        ``fix``, if it was made for another space, other weights, other data or other
        settings), else an empty cache that ``save`` will create. Without ``data`` the data
        is not checked."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: allowed {', '.join(SPLITS)}")
        if bn_images < 1 or (limit is not None and limit < 1):
            raise ValueError(
                f"bn_images={bn_images} and limit={limit} must be >= 1 (limit may be None)"
            )
        header = CacheHeader(
            space=supernet.space.id,
            supernet=supernet_fingerprint(supernet),
            split=split,
            bn_images=bn_images,
            limit=limit,
            data=data_fingerprint(data, split) if data is not None else "",
            method=evaluation_method(data),
        )
        p = Path(path)
        if not p.exists():
            return cls(p, header, save_every=save_every, space=supernet.space)
        found, entries = _read_cache(p)
        if found.method > header.method:
            raise AccuracyCacheError(
                f"accuracy cache {p} was made by a newer edgenas (evaluation method "
                f"{found.method}, this one's is {header.method}): {fix}"
            )
        # Its data fingerprint is not comparable either: a streamed folder's held images were
        # other ones (the first of each split).
        same_else = replace(header, method=found.method, data=found.data)
        if found.method < header.method and found.mismatch(same_else) is None:
            # The same subnets, other images: evaluated again, the file replaced at the first save.
            log.warning(
                "accuracy cache %s was made by an older edgenas, whose %s: its %d accuracies are "
                "evaluated again",
                p,
                METHOD_CHANGES.get(found.method, f"evaluation method {found.method} differs"),
                len(entries),
            )
            return cls(p, header, save_every=save_every, space=supernet.space)
        differs = found.mismatch(header)
        if differs is not None:
            raise AccuracyCacheError(f"accuracy cache {p} was made with {differs}: {fix}")
        try:
            return cls(p, header, entries, save_every=save_every, space=supernet.space)
        except (SubnetError, ValueError) as exc:
            raise AccuracyCacheError(
                f"accuracy cache {p} is damaged ({exc}): delete it to start over"
            ) from None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, subnet: Subnet) -> bool:
        return self._key(subnet) in self._entries

    def get(self, subnet: Subnet) -> float | None:
        """The cached accuracy of ``subnet``, or None."""
        return self._entries.get(self._key(subnet))

    def put(self, subnet: Subnet, accuracy: float) -> None:
        """Record an accuracy; saves the file once ``save_every`` entries are unsaved."""
        if subnet.space != self.header.space:
            raise SubnetError(
                f"subnet is for space {subnet.space!r}, but this cache is for {self.header.space!r}"
            )
        if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
            raise ValueError(f"accuracy {accuracy!r} must be a fraction in [0, 1]")
        self._entries[self._key(subnet)] = float(accuracy)
        self._unsaved += 1
        if self._unsaved >= self.save_every:
            self.save()

    def items(self) -> list[tuple[Subnet, float]]:
        """Every cached (subnet, accuracy), in insertion order."""
        return [(Subnet.from_json(k), v) for k, v in self._entries.items()]

    def save(self) -> None:
        """Write the whole cache atomically (a kill leaves the previous file intact)."""
        write_accuracy_cache(
            self.path,
            CacheDocument(format=CACHE_FORMAT, header=self.header.to_dict(), entries=self._entries),
        )
        self._unsaved = 0


def evaluate_many(
    supernet: OFAMobileNetV3,
    subnets: Sequence[Subnet],
    data: DataBundle,
    *,
    cache: AccuracyCache,
    progress: Progress | None = None,
) -> list[float]:
    """Accuracy of each subnet (in order) with inherited weights, via ``evaluate_subnet`` with
    the cache's settings (split, BN images, image limit). Subnets already in ``cache`` are not
    evaluated again; new results are saved every ``cache.save_every`` subnets and when the
    call ends, also on an error or Ctrl-C, so a killed run loses at most a few evaluations.
    Progress (stage ``"evaluate"``) is reported after each subnet, cached ones included.
    Raises ``AccuracyCacheError`` if ``supernet`` is not the one the cache was opened for."""
    space = supernet.space
    if cache.header.space != space.id or cache.header.supernet != supernet_fingerprint(supernet):
        raise AccuracyCacheError(
            f"accuracy cache {cache.path} was opened for another supernet: open it with the one you evaluate"
        )
    for subnet in subnets:
        space.validate(subnet)
    settings = cache.header
    results: list[float] = []
    try:
        for done, subnet in enumerate(subnets, start=1):
            acc = cache.get(subnet)
            if acc is None:
                acc = evaluate_subnet(
                    supernet,
                    subnet,
                    data,
                    split=settings.split,
                    bn_images=settings.bn_images,
                    limit=settings.limit,
                )
                cache.put(subnet, acc)
            results.append(acc)
            if progress is not None:
                progress("evaluate", done, len(subnets))
    finally:
        cache.save()
    return results


def sample_dataset(space: SearchSpace, n: int, *, seed: int) -> list[Subnet]:
    """The max and min subnets followed by ``n`` random ones (``n + 2`` in all), every one a
    distinct network: subnets that differ only in unused block entries count as the same,
    since they encode (and evaluate) identically. The same ``seed`` gives the same list."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    rng = random.Random(seed)
    subnets = [space.max_subnet(), space.min_subnet()]
    seen = {space.encode(s).tobytes() for s in subnets}
    # Bounded so that a request larger than a (tiny) space fails instead of looping forever.
    for _ in range(100 * n + 1000):
        if len(subnets) == n + 2:
            return subnets
        subnet = space.sample(rng)
        key = space.encode(subnet).tobytes()
        if key not in seen:
            seen.add(key)
            subnets.append(subnet)
    if len(subnets) == n + 2:
        return subnets
    raise ValueError(
        f"found only {len(subnets) - 2} distinct random subnets of space {space.id} (asked for {n}); ask for fewer"
    )


def _read_cache(path: Path) -> tuple[CacheHeader, dict[str, float]]:
    doc = read_accuracy_cache(path)
    try:
        header = CacheHeader.from_dict(doc["header"])
        entries = {str(k): float(v) for k, v in doc["entries"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AccuracyCacheError(
            f"accuracy cache {path} is damaged ({exc}): delete it to start over"
        ) from None
    return header, entries
