"""Shared fixtures for the test suite."""

from __future__ import annotations

import signal

import pytest
import torch

# Tests run beside other work on 2 cores: one intra-op thread avoids OpenMP oversubscription,
# which otherwise slows small ops by orders of magnitude.
torch.set_num_threads(1)

# A test run started as a background job (`make test &` in a script) inherits SIGINT ignored,
# and so would every process it starts: the Ctrl-C tests would find nothing to interrupt.
# Python's own handler is what a terminal gives; processes started from here get the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def fmnist_small():  # type: ignore[no-untyped-def]
    """Fashion-MNIST with a small training split (real data, loaded once)."""
    from once_for_all.data import load_data

    return load_data("fashion-mnist", val_size=1000, train_limit=2000, seed=0)
