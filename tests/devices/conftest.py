"""Fixtures for the device tests: small real ONNX models and Pythons that lack a package."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from devices.runner_protocol import RUNNER_PATH
from tests.support.sshd import Sshd, sshd_missing, start_sshd

REPO = Path(__file__).resolve().parents[2]

# Names with spaces and quotes: paths must survive every hop as data, never as shell text.
MODEL_FILES = {
    "conv": "conv model.onnx",
    "dw": "depthwise 'dw' \"q\".onnx",
    "fc": "linear.onnx",
}


class _Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class _Depthwise(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(x)


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@dataclass(frozen=True)
class Models:
    """Paths of the test models; ``conv``, ``dw`` and ``fc`` appear in their node names."""

    conv: Path
    dw: Path
    fc: Path
    uint8_dynamic: Path

    def all(self) -> list[Path]:
        return [self.conv, self.dw, self.fc]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    specs: dict[str, tuple[torch.nn.Module, tuple[int, ...]]] = {
        "conv": (_Conv(), (1, 3, 16, 16)),
        "dw": (_Depthwise(), (1, 8, 16, 16)),
        "fc": (_Linear(), (1, 32)),
    }
    paths = {}
    for key, (module, shape) in specs.items():
        path = folder / MODEL_FILES[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module.eval(),
                (torch.randn(*shape),),
                str(path),
                input_names=[f"{key}_in"],
                output_names=[f"{key}_out"],  # onnxruntime names fused nodes after outputs
                dynamo=False,
            )
        paths[key] = path
    # A uint8 input with a dynamic batch dimension: the runner must pick 1 and random bytes.
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xf", "scale"], ["y"]),
        ],
        "uint8_dynamic",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [4], [0.5, 1.0, 2.0, 4.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    uint8_path = folder / "uint8 dynamic.onnx"
    onnx.save(model, str(uint8_path))
    return Models(conv=paths["conv"], dw=paths["dw"], fc=paths["fc"], uint8_dynamic=uint8_path)


@pytest.fixture
def python_without(tmp_path: Path) -> Callable[[Sequence[str]], Path]:
    """An interpreter (this one, wrapped) on which importing the given packages fails.

    Stands in for a device Python that lacks numpy or a runtime: stub packages that raise
    ImportError shadow the installed ones through PYTHONPATH.
    """

    def make(blocked: Sequence[str]) -> Path:
        stubs = tmp_path / "blocked"
        for name in blocked:
            package = stubs / name
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").write_text(
                f'raise ImportError("No module named {name!r} (blocked for this test)")\n'
            )
        wrapper = tmp_path / "python-without"
        wrapper.write_text(
            "#!/bin/sh\n"
            f'PYTHONPATH={shlex.quote(str(stubs))} exec {shlex.quote(sys.executable)} "$@"\n'
        )
        wrapper.chmod(0o755)
        return wrapper

    return make


@dataclass(frozen=True)
class RunnerRun:
    returncode: int
    payload: dict[str, Any]
    stderr: str


def run_runner(
    job: dict[str, Any] | str,
    folder: Path,
    *,
    python: str | Path = sys.executable,
    env: dict[str, str] | None = None,
) -> RunnerRun:
    """Copy runner.py into ``folder`` and run it there with the job on stdin, JSON on stdout."""
    runner = folder / "runner.py"
    shutil.copyfile(RUNNER_PATH, runner)
    text = job if isinstance(job, str) else json.dumps(job)
    proc = subprocess.run(
        [str(python), str(runner)],
        input=text,
        capture_output=True,
        text=True,
        cwd=folder,
        env=env if env is not None else dict(os.environ),
        timeout=120,
        check=False,
    )
    return RunnerRun(proc.returncode, json.loads(proc.stdout), proc.stderr)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH server on 127.0.0.1 with a throwaway host key and user key."""
    reason = sshd_missing()
    if reason:
        pytest.skip(f"no OpenSSH server for the ssh device tests: {reason}")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def device_python() -> Path:
    """The "device" Python of the SSH tests: tflite-runtime 2.14, numpy<2 and onnxruntime in
    their own virtual environment, as on a board (``EDGENAS_DEVICE_PYTHON`` overrides)."""
    python = Path(os.environ.get("EDGENAS_DEVICE_PYTHON", REPO / ".venv-device" / "bin" / "python"))
    if not python.exists():
        pytest.skip(f"no device Python at {python}: run 'make setup' to create .venv-device")
    return python
