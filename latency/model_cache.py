"""A content-addressed cache of exported block and subnet models.

Every block is exported once per (format, precision) and serves every device: the file name
is a hash of what the model computes and how it was converted. TFLite conversion takes
about 2 s per block with litert-torch, so it runs in parallel worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.formats import ChannelAlignment, GraphForm, ModelFormat, Precision
from latency.block_models import block_input_shape, block_module
from latency.blocks import BlockSpec
from once_for_all.bn_recalibration import recalibrate_bn
from once_for_all.errors import EdgenasError
from once_for_all.files import output_folder
from once_for_all.progress import Progress
from once_for_all.quant_aware import consecutive_groups

# Bump when block models or their conversion change: old cache entries are then not reused.
# 2: TFLite in XNNPACK form, int8 ONNX with uint8 activations; 3: fold_rescales; 4: int8
# ranges clipped where hard-swish is flat; 5: int8 ONNX channels aligned to onnxruntime's kernels;
# 6: int8 ONNX channels aligned for the device's CPU kind (was x86 always); 7: int8 ONNX
# squeeze-excite gates with their shift in the conv's bias; 8: BN statistics from random
# batches (int8 TFLite residual ADDs ran outside XNNPACK's partition without them).
CACHE_VERSION = "8"
BN_STATISTICS_SINCE = 8  # the first version whose int8 TFLite subnets are as export writes them
CALIBRATION_SAMPLES = 8
BN_BATCHES, BN_BATCH_SIZE = 2, 16
Conversion = tuple[ModelFormat, Precision, GraphForm, ChannelAlignment]  # how a model is written


class ExportFailed(EdgenasError, RuntimeError):
    """A model that could not be converted; the message names it."""


# How often a wait for the conversions in flight reports progress (where a stop is seen).
_POLL_S = 0.5


def default_cache_dir() -> Path:
    """``$EDGENAS_CACHE``, else ``$XDG_CACHE_HOME/edgenas``, else ``~/.cache/edgenas``."""
    if env := os.environ.get("EDGENAS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgenas"


def _suffix(model_format: ModelFormat) -> str:
    return ".onnx" if model_format == "onnx" else ".tflite"


def model_digest(
    description: Mapping[str, Any],
    model_format: str,
    precision: str,
    form: GraphForm = "xnnpack",
    align_channels: ChannelAlignment = "none",
) -> str:
    content = {
        "model": description,
        "format": model_format,
        "precision": precision,
        # ONNX files have one form; a TFLite file's depends on the runtime (graph_form).
        "form": form if model_format == "tflite" else None,
        # int8 ONNX files pad their channels for a CPU kind's kernels; others have no padding.
        "channels": align_channels if (model_format, precision) == ("onnx", "int8") else None,
        "cache": CACHE_VERSION,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]


class ModelCache:
    """Exported models under ``root/<format>-<precision>/<hash>.<ext>``; a TFLite model in
    each ``graph_form`` its runtimes take (``export.formats.graph_form``), an int8 ONNX one
    with its channels aligned for each CPU kind (``export.onnx_channel_alignment``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def block_path(
        self,
        spec: BlockSpec,
        model_format: ModelFormat,
        precision: Precision,
        graph_form: GraphForm = "xnnpack",
        align_channels: ChannelAlignment = "none",
    ) -> Path:
        digest = model_digest(spec.to_dict(), model_format, precision, graph_form, align_channels)
        return self.root / f"{model_format}-{precision}" / f"block-{digest}{_suffix(model_format)}"

    def network_path(
        self,
        config: Mapping[str, Any],
        model_format: ModelFormat,
        precision: Precision,
        graph_form: GraphForm = "xnnpack",
        align_channels: ChannelAlignment = "none",
    ) -> Path:
        digest = model_digest(dict(config), model_format, precision, graph_form, align_channels)
        return self.root / f"{model_format}-{precision}" / f"net-{digest}{_suffix(model_format)}"

    def blocks(
        self,
        specs: Sequence[BlockSpec],
        model_format: ModelFormat,
        precision: Precision,
        *,
        graph_form: GraphForm = "xnnpack",
        align_channels: ChannelAlignment = "none",
        workers: int = 2,
        progress: Progress | None = None,
    ) -> dict[str, Path]:
        """Block key → model file, exporting what the cache lacks (each block once); progress
        is reported as stage ``"export"``."""
        conversion = (model_format, precision, graph_form, align_channels)
        jobs = [(spec.to_dict(), self.block_path(spec, *conversion)) for spec in specs]
        paths = self._run(jobs, _export_block, conversion, workers, progress)
        return {spec.key: path for spec, path in zip(specs, paths, strict=True)}

    def networks(
        self,
        configs: Sequence[Mapping[str, Any]],
        model_format: ModelFormat,
        precision: Precision,
        *,
        graph_form: GraphForm = "xnnpack",
        align_channels: ChannelAlignment = "none",
        stem_groups: int = 1,
        workers: int = 2,
        progress: Progress | None = None,
    ) -> list[Path]:
        """Whole static networks (random weights) for end-to-end measurements; with
        ``stem_groups`` > 1, their stem written in that many groups of channels, as int8 files
        whose stem export split (``export.stem_split``)."""
        conversion = (model_format, precision, graph_form, align_channels)
        split = {"stem_groups": stem_groups} if stem_groups > 1 else {}
        descriptions = [{**c, **split} for c in configs]
        jobs = [(d, self.network_path(d, *conversion)) for d in descriptions]
        return self._run(jobs, _export_network, conversion, workers, progress)

    def _run(
        self,
        jobs: Sequence[tuple[dict[str, Any], Path]],
        export_fn: Callable[[dict[str, Any], Path, Conversion], None],
        conversion: Conversion,
        workers: int,
        progress: Progress | None,
    ) -> list[Path]:
        todo = [(desc, path) for desc, path in jobs if not path.exists()]
        total, done = len(todo), 0
        if progress is not None:
            progress("export", 0, total)
        if not todo:
            return [path for _, path in jobs]
        # A --cache (or $EDGENAS_CACHE) that is a file or read-only: one line, no traceback.
        output_folder(
            todo[0][1].parent,
            error=ExportFailed,
            what="the model cache (--cache, or $EDGENAS_CACHE)",
        )
        # A worker costs a few seconds to start (importing torch, and litert-torch for
        # TFLite); that pays off from a handful of models on.
        if workers <= 1 or total < (2 if conversion[0] == "tflite" else 8):
            for desc, path in todo:
                export_fn(desc, path, conversion)
                done += 1
                if progress is not None:
                    progress("export", done, total)
            return [path for _, path in jobs]
        pool = ProcessPoolExecutor(
            max_workers=min(workers, total),
            mp_context=get_context("spawn"),
            initializer=_quiet_worker,
            initargs=(os.getpid(),),
        )
        stopped = False
        try:
            with _ctrl_c_blocked():  # the workers start in submit, inheriting it
                futures = [pool.submit(export_fn, desc, path, conversion) for desc, path in todo]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    done += 1
                if progress is not None:  # each poll too: a fleet's worker stops in it
                    progress("export", done, total)
        except BaseException:
            # Ctrl-C (a fleet's stop, raised by its progress) or a failed conversion stops the
            # conversions in flight rather than waiting for them: an int8 TFLite network took
            # 15-40 s, with no word meanwhile (walk-through). Each writes its model under a
            # temporary name: none is left half-written in the cache.
            running = getattr(pool, "_processes", None) or {}  # 3.14: terminate_workers()
            for process in list(running.values()):
                process.terminate()
            stopped = True
            raise
        finally:
            # Ctrl-C or a failed export: the queued models are dropped and those in flight
            # finish (a worker's own Ctrl-C had left one hung on a lock, the command with it).
            pool.shutdown(wait=True, cancel_futures=True)
            if stopped:
                # A terminated worker leaves its model's temporary file (walk-through).
                for _, path in todo:
                    for tmp in path.parent.glob(f".{path.name}.*.tmp*"):
                        tmp.unlink(missing_ok=True)
        return [path for _, path in jobs]


@contextmanager
def _ctrl_c_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread, and so in the worker processes it starts meanwhile (a
    spawned process inherits the mask): a Ctrl-C reaches a terminal's whole process group,
    and workers it interrupted while importing torch or converting printed tracebacks. The
    parent alone stops, and ends its pool; a Ctrl-C meanwhile is taken by another of its
    threads, or once unblocked. SIGTERM stays: the pool terminates workers with it."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _quiet_worker(parent: int) -> None:
    _exit_with_parent(parent)
    torch.set_num_threads(1)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The converters print C++ logs and progress bars of their own; failures still reach the
    # parent as exceptions, so a worker's stdout/stderr would only garble its progress bars.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this worker once its parent (the pid ``parent``, given by the parent itself: a
    worker still importing torch when the parent was killed would read init's) is gone: a
    parent killed with SIGKILL cannot stop its pool, whose workers would otherwise go on
    converting (and hold its output open)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _export_block(desc: dict[str, Any], path: Path, conversion: Conversion) -> None:
    spec = BlockSpec(
        kind=desc["kind"],
        key=desc["key"],
        input_shape=tuple(desc["input_shape"]),
        output_shape=tuple(desc["output_shape"]),
        config=desc["config"],
    )
    _export(block_module(spec), block_input_shape(spec), path, conversion)


def _export_network(desc: dict[str, Any], path: Path, conversion: Conversion) -> None:
    from once_for_all.static_net import build_from_config

    config = dict(desc)
    groups = config.pop("stem_groups", 1)
    torch.manual_seed(0)
    model = build_from_config(config).eval()
    stem = consecutive_groups(model.stem.conv.out_channels, groups) if groups > 1 else []
    _export(model, model.input_shape, path, conversion, stem)


def _export(
    model: nn.Module,
    shape: tuple[int, ...],
    path: Path,
    conversion: Conversion,
    stem_groups: Sequence[Sequence[int]] = (),
) -> None:
    """``model`` written as ``conversion`` says, its stem in ``stem_groups`` when given."""
    from export import export_onnx, export_tflite, quantize_onnx_int8, quantize_tflite_int8
    from export.stem_split import split_stem

    # Latency does not depend on the values, only on the ops: random calibration data will do.
    # But BN statistics are set from random batches, as a trained network has them: with a
    # fresh layer's (mean 0, variance 1) the activations grow block by block, and the int8
    # ranges with them, until XNNPACK refused residual ADDs whose scales had grown apart (17
    # of mbv3-tiny max's ran outside its partition), and the table timed a graph that export,
    # from a trained supernet, never ships.
    seeded = torch.Generator().manual_seed(0)
    batch = (BN_BATCH_SIZE, *shape[1:])
    recalibrate_bn(model, (torch.randn(batch, generator=seeded) for _ in range(BN_BATCHES)))
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((CALIBRATION_SAMPLES, *shape[1:]), dtype=np.float32)
    model_format, precision, form, align_channels = conversion
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.fp32{path.suffix}")
    try:
        if model_format == "onnx":
            model = split_stem(model, stem_groups)
            if precision == "fp32":
                export_onnx(model, path, input_shape=shape)
            else:
                export_onnx(model, tmp, input_shape=shape)
                quantize_onnx_int8(
                    tmp, path, calibration=calibration, align_channels=align_channels
                )
        else:
            # after the XNNPACK form's rewrites, which read the stem as the network has it
            if precision == "fp32":
                export_tflite(model, path, input_shape=shape, form=form, stem_groups=stem_groups)
            else:
                export_tflite(
                    model,
                    tmp,
                    input_shape=shape,
                    for_int8=True,
                    form=form,
                    stem_groups=stem_groups,
                )
                nhwc = np.moveaxis(calibration, 1, -1) if len(shape) == 4 else calibration
                quantize_tflite_int8(tmp, path, calibration=nhwc)
    except Exception as exc:
        raise ExportFailed(
            f"cannot export {path.name} as {model_format} {precision}: {exc}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
