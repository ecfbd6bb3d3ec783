"""Shared fixtures for the test suite."""

from __future__ import annotations

import pytest
import torch

# Tests run beside other work on 2 cores: one intra-op thread avoids OpenMP oversubscription,
# which otherwise slows small ops by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fmnist_small():  # type: ignore[no-untyped-def]
    """Fashion-MNIST with a small training split (real data, loaded once)."""
    from once_for_all.data import load_data

    return load_data("fashion-mnist", val_size=1000, train_limit=2000, seed=0)
