"""Fixtures of the latency tests: the SSH test device (a real sshd on 127.0.0.1 and the
"device" Python), and one folder of exported models that the modules share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.devices.conftest import device_python, sshd

__all__ = ["device_python", "model_cache_dir", "sshd"]


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model cache's folder for every module that profiles mbv3-tiny in ONNX: its files are
    named by a hash of what they compute and how they were converted, so a block exported for
    one module's table is the same file another module's table needs."""
    return tmp_path_factory.mktemp("model-cache")
