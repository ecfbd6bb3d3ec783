"""OFA's reference implementation (PyPI ``ofa``, installed by ``make setup`` without its
dependencies), importable on this machine.

The networks, the tutorial's ``AccuracyPredictor``, ``LatencyTable`` and ``EvolutionFinder``
need none of the modules stubbed here; OFA's package imports them at module level for its
data loaders and model zoo: torchvision (which does not import beside the CPU torch build:
"operator torchvision::nms does not exist") and gdown (downloads). The stubs raise if
anything does use them, so a test can never pass on a stub.
"""

from __future__ import annotations

import sys
import types
from typing import Any

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
