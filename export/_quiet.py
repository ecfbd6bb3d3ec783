"""Silencing what the TFLite tools print on their own: C++ logs (absl, TensorFlow Lite),
tqdm progress bars and conversion warnings. Their failures still arrive as exceptions, which
the callers turn into one-line ExportErrors, so nothing a user needs is lost."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_ENV = {
    "TQDM_DISABLE": "1",  # ai-edge-quantizer's calibration bar
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # read on every progress call, see litert_torch._config
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


@contextmanager
def quiet_converters() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null (C++ code writes there directly, past
    sys.stdout) and set the tools' quiet switches, for the duration of the block."""
    before = {key: os.environ.get(key) for key in _ENV}
    os.environ.update(_ENV)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
