"""PyTorch → fp32 TFLite with litert-torch, NHWC at the model's edges by default."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export._model_mode import eval_mode
from export._quiet import quiet_converters
from export._shapes import check_input_shape
from export.deferred_interrupt import interrupt_after_step
from export.errors import ExportError, conversion_error
from export.formats import GraphForm
from export.stem_split import split_stem
from export.xnnpack_form import xnnpack_form
from once_for_all.errors import one_line
from once_for_all.files import write_bytes


def export_tflite(
    model: nn.Module,
    path: Path,
    *,
    input_shape: tuple[int, ...],
    nhwc: bool = True,
    for_int8: bool = False,
    form: GraphForm = "xnnpack",
    stem_groups: Sequence[Sequence[int]] = (),
) -> Path:
    """Convert ``model`` (in eval mode; its own mode is left as it was) to an fp32 .tflite.

    With ``form="xnnpack"`` (the default) the model is converted in the form LiteRT's CPU
    delegate runs fast (``export.xnnpack_form``: wide depthwise convs as row bands), and
    ``for_int8`` also writes hard-swish in the form whose int8 version XNNPACK delegates: pass
    it for a file that ``quantize_tflite_int8`` will quantize. ``stem_groups`` (from
    ``once_for_all.quant_aware.stem_groups``) writes the stem as those groups of channels
    (``export.stem_split``), so that int8 quantization gives each its own scale. ``form="plain"`` converts the
    model as it is, for NPU compilers (``export.formats.graph_form``).

    ``input_shape`` is given in torch's NCHW order. With ``nhwc`` (the default) the .tflite
    takes its input channels-last, e.g. (1, 28, 28, 1) for (1, 1, 28, 28), as TFLite users
    feed it, and outputs of rank >= 3 come out channels-last too; 2-D outputs such as logits
    are unchanged. The batch size is fixed. Returns ``path``.
    """
    shape = check_input_shape(input_shape)
    path = Path(path)
    if nhwc and len(shape) < 3:
        raise ExportError(
            f"nhwc=True needs an (N, C, ...) input_shape of rank >= 3, got {shape}: pass nhwc=False"
        )
    sample = torch.randn(shape)
    try:
        with eval_mode(model), interrupt_after_step(), quiet_converters():
            import litert_torch  # type: ignore[import-untyped]  # seconds to import; only here

            module: nn.Module = xnnpack_form(model, int8=for_int8) if form == "xnnpack" else model
            module = split_stem(module, stem_groups)
            if nhwc:
                with torch.no_grad():
                    out = module(sample)
                outputs = out if isinstance(out, (tuple, list)) else (out,)
                spatial = [
                    i for i, o in enumerate(outputs) if isinstance(o, torch.Tensor) and o.ndim >= 3
                ]
                module = litert_torch.to_channel_last_io(module, args=[0], outputs=spatial).eval()
                sample = sample.permute(0, *range(2, len(shape)), 1).contiguous()
            edge: Any = litert_torch.convert(module, (sample,))
            content: bytes = edge.model_content()
    except ExportError:
        raise
    except Exception as exc:
        raise conversion_error(
            path,
            exc,
            f"TFLite conversion for {path} failed ({one_line(exc)}): check input_shape={shape}, "
            "or replace the ops litert-torch cannot lower",
        ) from exc
    write_bytes(path, content, error=ExportError)
    return path
