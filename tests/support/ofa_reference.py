"""OFA's reference implementation (PyPI ``ofa``, installed by ``make setup`` without its
dependencies), importable on this machine.

The networks, the tutorial's ``AccuracyPredictor``, ``LatencyTable`` and ``EvolutionFinder``
need none of the modules stubbed here; OFA's package imports them at module level for its
data loaders and model zoo: torchvision (which does not import beside the CPU torch build:
"operator torchvision::nms does not exist") and gdown (downloads). The stubs raise if
anything does use them, so a test can never pass on a stub.
"""

from __future__ import annotations

import random
import sys
import types
from pathlib import Path
from typing import Any

import yaml

from once_for_all.subnet import Subnet

OFA_VERSION = "0.1.0.post202307202001"


class _Unavailable:
    """Stands in for a torchvision class that OFA subclasses at import time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "torchvision is stubbed in edgenas's tests (see tests/support/ofa_reference.py)"
        )


def _stub_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)

    def missing(attr: str) -> Any:
        raise AttributeError(
            f"{name}.{attr} is stubbed in edgenas's tests: OFA's networks do not use it"
        )

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def install_stubs() -> None:
    """Put stand-ins for torchvision and gdown into ``sys.modules`` unless the real ones are
    importable. Idempotent."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        functional = _stub_module("torchvision.transforms.functional")
        transforms = _stub_module(
            "torchvision.transforms",
            functional=functional,
            RandomResizedCrop=_Unavailable,
            InterpolationMode=_Unavailable,
        )
        datasets = _stub_module("torchvision.datasets")
        sys.modules["torchvision"] = _stub_module(
            "torchvision", transforms=transforms, datasets=datasets
        )
        sys.modules["torchvision.transforms"] = transforms
        sys.modules["torchvision.transforms.functional"] = functional
        sys.modules["torchvision.datasets"] = datasets
    try:
        import gdown  # noqa: F401
    except ImportError:
        sys.modules["gdown"] = _stub_module("gdown")


def import_ofa() -> types.ModuleType:
    """The ``ofa`` package with its network and tutorial modules loaded (stubs installed first)."""
    install_stubs()
    import ofa
    import ofa.imagenet_classification.elastic_nn.networks
    import ofa.tutorial

    return ofa


# The resolutions of OFA's published Note10 tables (and of its evolution's ArchManager).
NOTE10_RESOLUTIONS = (160, 176, 192, 208, 224)


def ofa_latency_table(folder: Path) -> Any:
    """OFA's LatencyTable over the local files. Its LatencyEstimator downloads, then calls
    yaml.load without a Loader (an error in PyYAML 6): built without __init__ here."""
    import_ofa()
    from ofa.tutorial.latency_table import LatencyEstimator, LatencyTable

    table = LatencyTable.__new__(LatencyTable)
    table.latency_tables = {}
    for r in NOTE10_RESOLUTIONS:
        estimator = LatencyEstimator.__new__(LatencyEstimator)
        estimator.lut = yaml.safe_load((folder / f"{r}_lookup_table.yaml").read_text())
        table.latency_tables[r] = estimator
    return table


def ofa_samples(n: int, seed: int) -> list[dict[str, Any]]:
    """Subnets as OFA's evolution samples them (its ArchManager, on its own seeded RNG)."""
    from ofa.tutorial.evolution_finder import ArchManager

    state = random.getstate()
    random.seed(seed)
    try:
        manager = ArchManager()
        return [manager.random_sample() for _ in range(n)]
    finally:
        random.setstate(state)


def as_subnet(sample: dict[str, Any], space_id: str) -> Subnet:
    return Subnet.from_ofa(sample, space_id)
