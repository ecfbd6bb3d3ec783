"""PyTorch → ONNX with the TorchScript exporter, checked and written atomically."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch
from torch import nn

from export._model_mode import eval_mode
from export._shapes import check_input_shape
from export.errors import ExportError, conversion_error
from once_for_all.errors import one_line
from once_for_all.files import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"  # the symbolic first dimension of a --dynamic-batch file
# The metadata entry of the test split's top-1 accuracy: fp32's, and in int8 files their own
# and their top-1 agreement with fp32 too.
ACCURACY_KEY = "edgenas.accuracy"


def export_onnx(
    model: nn.Module,
    path: Path,
    *,
    input_shape: tuple[int, ...],
    opset: int = 17,
    dynamic_batch: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (traced in eval mode; its own mode is left as it was) to ``path``.

    The graph has one input named ``input`` of ``input_shape`` (NCHW) and an output named
    ``output``; with ``dynamic_batch`` their first dimension is a symbolic ``batch``.
    ``metadata`` is stored as the model's ``metadata_props`` (see ``read_onnx_metadata``).
    Constants are folded and the result passes ``onnx.checker``. Returns ``path``.
    """
    shape = check_input_shape(input_shape)
    props = _check_metadata(metadata or {})
    path = Path(path)
    dynamic_axes = {INPUT_NAME: {0: BATCH}, OUTPUT_NAME: {0: BATCH}} if dynamic_batch else None
    sample = torch.randn(shape)
    with atomic_path(path, error=ExportError) as tmp:
        try:
            with eval_mode(model), warnings.catch_warnings(), torch.no_grad():
                # dynamo=False is a choice (the TorchScript exporter is fast and needs no
                # onnxscript); its deprecation notice says nothing a caller can act on.
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                torch.onnx.export(
                    model,
                    (sample,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    do_constant_folding=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=dynamic_axes,
                )
            proto = onnx.load(str(tmp))
            set_metadata_props(proto, props)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
        except Exception as exc:
            raise conversion_error(
                path,
                exc,
                f"ONNX export to {path} failed ({one_line(exc)}): check input_shape={shape} "
                f"and opset={opset}, or simplify the model's unsupported ops",
            ) from exc
    return path


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX model at ``path`` (weights are not loaded)."""
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ExportError(
            f"ONNX model {path} not found: export it first or check the path"
        ) from None
    except Exception as exc:
        raise ExportError(
            f"{path} is not a readable ONNX model ({one_line(exc)}): re-export it"
        ) from exc
    return {p.key: p.value for p in proto.metadata_props}


def update_onnx_metadata(path: Path, entries: Mapping[str, str]) -> None:
    """Set ``entries`` among the ``metadata_props`` of the ONNX model at ``path``, keeping
    the others; the file is replaced whole (never left half-written)."""
    props = _check_metadata(entries)
    proto = onnx.load(str(path))
    set_metadata_props(proto, {p.key: p.value for p in proto.metadata_props} | props)
    with atomic_path(Path(path), error=ExportError) as tmp:
        onnx.save(proto, str(tmp))


def set_metadata_props(proto: onnx.ModelProto, entries: Mapping[str, str]) -> None:
    """Make ``entries`` the model's ``metadata_props``, in their order, and nothing else."""
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_input_shape(nchw: tuple[int, ...], dynamic_batch: bool) -> list[int | str]:
    """The input shape of a file ``export_onnx`` wrote for ``nchw``: with ``dynamic_batch``,
    its first dimension is the symbolic ``batch``."""
    return [BATCH if dynamic_batch else nchw[0], *nchw[1:]]


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ExportError(
            f"metadata entry {bad[0]!r} is not str -> str: convert values with str() or json.dumps()"
        )
    return dict(metadata)
