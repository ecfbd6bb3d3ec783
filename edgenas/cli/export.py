"""`edgenas export`: deployable ONNX and TFLite files of a subnet, fp32 and int8, checked
against PyTorch, measured on the target, described by a model card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgenas.cli.user_errors import fail, finite_from, given, given_flags, option_flag
from edgenas.console import err_console
from edgenas.recipe import MAX_THREADS
from edgenas.run_record import BELOW_TARGET
from export.formats import (
    DEVICE_CHECK_IMAGES,
    INT8_AGREEMENT_TARGET,
    MODEL_FORMATS,
    ONNX_OPSETS,
    STEM_GROUPS,
    ChannelAlignmentChoice,
    StemGroups,
    parse_stem_groups,
)
from once_for_all.progressive_shrinking import MAX_RATE

if TYPE_CHECKING:
    from export.card import CardBody

# Options that shape the int8 files only: given without --int8 they would do nothing.
INT8_ONLY = (
    "qat_epochs",
    "stem_groups",
    "calibration_images",
    "align_channels",
)


def _refuse_unused(
    ctx: typer.Context,
    formats: tuple[str, ...],
    verify: bool,
    fine_tuned: bool,
    measured: bool,
    asks: dict[str, bool],
) -> None:
    """Refuse an option that the others leave with nothing to do: given, it would be taken
    as done (an --opset for TFLite files only, a --tolerance with --no-verify, --profiles
    without a --device). ``measured``: whether a --device is given. ``asks``: whether an
    option's value asks for anything (--no-dynamic-batch, --align-channels none and
    --device-check-images 0 ask for what the others do anyway, and are taken)."""
    onnx, tflite = "onnx" in formats, "tflite" in formats
    no_onnx = ("shapes ONNX files, and --format writes none", "add onnx to --format")
    no_check = "which --no-verify skips", "leave --no-verify out"
    no_device = "and no --device is given", "add a --device"
    rules: tuple[tuple[str, bool, tuple[str, str]], ...] = (
        ("opset", not onnx, no_onnx),
        ("dynamic_batch", not onnx, no_onnx),
        ("align_channels", not onnx, no_onnx),
        (
            "tflite_form",
            not tflite,
            ("shapes TFLite files, and --format writes none", "add tflite to --format"),
        ),
        ("tolerance", not verify, ("bounds the fp32 files' check, " + no_check[0], no_check[1])),
        ("test_images", not verify, ("sizes the files' checks, " + no_check[0], no_check[1])),
        (
            "device_check_images",
            not verify,
            ("sizes the devices' checks, " + no_check[0], no_check[1]),
        ),
        (
            "device_check_images",
            not measured,
            ("sizes the devices' checks, " + no_device[0], no_device[1]),
        ),
        (
            "profiles",
            not measured,
            ("is where the devices' predictors are looked up, " + no_device[0], no_device[1]),
        ),
        (
            "finetune_lr",
            not fine_tuned,
            (
                "is the fine-tuning's, and nothing is fine-tuned",
                "add --finetune-epochs or --qat-epochs",
            ),
        ),
    )
    for name, unused, (why, fix) in rules:
        if unused and given(ctx, name) and asks.get(name, True):
            flag = option_flag(name)
            raise fail(f"{flag} {why}: {fix}, or leave {flag} out")


def _refuse_unused_min_agreement(devices: list[str], verify: bool, check_images: int) -> None:
    """Without --int8, --min-int8-agreement weighs only files a --device checks: refuse it
    where none will, rather than take it and do nothing."""
    from devices.profiles import load_profile

    if not devices:
        raise fail(
            "--min-int8-agreement weighs int8 files, and files checked on a --device: add "
            "--int8 or a --device, or leave it out"
        )
    why = None
    if not verify:
        why = "--no-verify leaves no test images to check with"
    elif check_images == 0:
        why = "--device-check-images 0 asks for no check"
    else:
        refusals = {d: load_profile(d).classify_refusal for d in devices}
        if all(refusals.values()):
            by_reason: dict[str, list[str]] = {}
            for name, reason in refusals.items():
                by_reason.setdefault(str(reason), []).append(name)
            reasons = "; ".join(f"{', '.join(n)}: {r}" for r, n in by_reason.items())
            why = f"no --device checks files ({reasons})"
    if why is not None:
        raise fail(
            f"--min-int8-agreement has nothing to weigh without --int8: {why}; add --int8, or "
            "leave it out"
        )


def export_command(
    ctx: typer.Context,
    supernet: Annotated[Path, typer.Option(help="supernet.pt from edgenas train")],
    subnet: Annotated[
        str,
        typer.Option(
            help="max, min, random, a subnet JSON file, pareto.json#K (front member K) or "
            "pareto.json (its chosen subnet)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="folder for the model files and card.md/card.json")],
    model_format: Annotated[
        str, typer.Option("--format", help=f"comma-separated: {', '.join(MODEL_FORMATS)}")
    ] = ",".join(MODEL_FORMATS),
    int8: Annotated[
        bool, typer.Option("--int8", help="also write int8 files (static, calibrated)")
    ] = False,
    device: Annotated[
        list[str] | None,
        typer.Option(help="device profile to measure the files on (repeatable)"),
    ] = None,
    profiles: Annotated[
        Path, typer.Option(help="where the devices' latency predictors are looked up")
    ] = Path("runs/profiles"),
    finetune_epochs: Annotated[
        int, typer.Option(min=0, help="fine-tune the subnet (distilling the largest) first")
    ] = 0,
    finetune_lr: Annotated[
        float,
        typer.Option(help="fine-tuning learning rate", callback=finite_from(0.0, MAX_RATE)),
    ] = 0.01,
    qat_epochs: Annotated[
        int,
        typer.Option(
            min=0,
            help="with --int8: quantization-aware fine-tuning epochs (int8-simulated "
            "activations, distilling the float subnet) for better int8 accuracy",
        ),
    ] = 0,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="training images that calibrate int8 ranges")
    ] = 256,
    stem_groups: Annotated[
        str,
        typer.Option(
            help="with --int8: write the stem as this many groups of channels by range, each "
            "with its own int8 scale (1: one scale for the stem's output; auto: whole, and 2 "
            "for a file whose agreement then misses --min-int8-agreement, if that agrees better)",
        ),
    ] = str(STEM_GROUPS),
    align_channels: Annotated[
        ChannelAlignmentChoice,
        typer.Option(
            help="with --int8: pad the int8 ONNX file's channel counts to what onnxruntime's "
            "int8 convs take on that CPU (same outputs); auto: the CPU of the --devices that "
            "run it on onnxruntime, or of this host",
        ),
    ] = "auto",
    test_images: Annotated[
        int | None, typer.Option(min=1, help="test images for int8 checks (default: all)")
    ] = None,
    min_int8_agreement: Annotated[
        float,
        typer.Option(
            help="top-1 agreement with fp32 (0 to 1) from which a file is recommended (the "
            "fastest such): an int8 file's, and on a --device that checked the files, every "
            "file's agreement there; without --int8, for --device checks only",
            callback=finite_from(0.0, 1.0),
        ),
    ] = INT8_AGREEMENT_TARGET,
    device_check_images: Annotated[
        int,
        typer.Option(
            min=0,
            help="test images each --device classifies with the files it measured: their "
            "top-1 agreement and accuracy as that device runs them (0: none)",
        ),
    ] = DEVICE_CHECK_IMAGES,
    tflite_form: Annotated[
        Literal["auto", "xnnpack", "plain"],
        typer.Option(
            help="TFLite graph form: xnnpack (CPUs: LiteRT's default delegate), plain (NPU "
            "compilers such as Vela), auto (plain when every --device is an NPU compiler)"
        ),
    ] = "auto",
    opset: Annotated[
        int, typer.Option(min=ONNX_OPSETS[0], max=ONNX_OPSETS[1], help="ONNX opset")
    ] = 17,
    dynamic_batch: Annotated[bool, typer.Option(help="ONNX with a symbolic batch size")] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            help="fp32 parity: max |runtime - PyTorch| allowed (times the largest |logit| "
            "where above 1)",
            callback=finite_from(0.0),
        ),
    ] = 1e-4,
    verify: Annotated[
        bool, typer.Option(help="check every file in its runtime (--no-verify to skip)")
    ] = True,
    data: Annotated[
        Path | None,
        typer.Option(
            help="ImageNet-layout folder (train/<wnid>/, val/<wnid>/) for a supernet that records "
            "no data (imported): BN recalibration and int8 calibration from train/, checks on "
            "val/ (--test-images, default 5000)"
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, max=MAX_THREADS, help="torch threads")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print card.json to stdout")] = False,
) -> None:
    """Export a subnet as ONNX and/or TFLite (fp32, and int8 with --int8), verify each file
    against PyTorch on real images, measure it on each --device, and write a model card."""
    from edgenas.stages.export import ExportJob, FinetuneSettings, run_export
    from export.card import card_json
    from export.subnet_export import ExportOptions

    formats = tuple(f.strip() for f in model_format.split(",") if f.strip())
    bad = [f for f in formats if f not in MODEL_FORMATS]
    if bad or not formats:
        raise fail(
            f"--format {model_format!r}: give {', '.join(MODEL_FORMATS)} or {','.join(MODEL_FORMATS)}"
        )
    if len(set(formats)) < len(formats):  # every file was exported, measured and listed twice
        raise fail(f"--format {model_format!r} names a format twice: give each once")
    if not int8:
        flags = given_flags(ctx, INT8_ONLY)
        if flags:
            raise fail(f"{flags[0]} shapes the int8 files: add --int8, or leave {flags[0]} out")
        if given(ctx, "min_int8_agreement"):
            _refuse_unused_min_agreement(device or [], verify, device_check_images)
    asks = {
        "dynamic_batch": dynamic_batch,
        "align_channels": align_channels not in ("auto", "none"),
        "tflite_form": tflite_form != "auto",
        "device_check_images": device_check_images > 0,
    }
    fine_tuned = finetune_epochs > 0 or qat_epochs > 0
    _refuse_unused(ctx, formats, verify, fine_tuned, bool(device), asks)
    if threads:
        import torch

        torch.set_num_threads(threads)
    job = ExportJob(
        supernet=supernet,
        subnet=subnet,
        out=out,
        options=ExportOptions(
            formats=formats,  # type: ignore[arg-type]  # checked against MODEL_FORMATS above
            int8=int8,
            calibration_images=calibration_images,
            stem_groups=_stem_groups(stem_groups),
            test_images=test_images,
            device_check_images=device_check_images,
            tolerance=tolerance,
            min_int8_agreement=min_int8_agreement,
            opset=opset,
            dynamic_batch=dynamic_batch,
            verify=verify,
        ),
        devices=tuple(device or ()),
        profiles=profiles,
        tflite_form=tflite_form,
        align_channels=align_channels,
        data=data,
        finetune=FinetuneSettings(epochs=finetune_epochs, lr=finetune_lr, qat_epochs=qat_epochs),
    )

    def say(message: str) -> None:
        if not quiet:
            err_console.print(f"[dim]export:[/dim] {escape(message)}", soft_wrap=True)

    def warn(message: str) -> None:  # said even with --quiet: it is not progress
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    card = run_export(job, say=say, warn=warn)
    if as_json:
        typer.echo(card_json(card), nl=False)
    elif not quiet:
        print_card(card, out)


def print_card(card: CardBody, out: Path) -> None:
    from export.card import execution_text, speed_text, split_stem_note

    acc = card["accuracy"]
    target = card["recommendation"]["min_int8_agreement"]
    table = Table(
        title=f"{card['name']}: {card['macs'] / 1e6:.2f}M MACs, {card['params'] / 1e3:.0f}k params",
        title_justify="left",
    )
    # A published device (tables, no device) has no files: a line of its own below.
    devices = [name for name, entry in card["latency"].items() if "not_measured" not in entry]
    # Each accuracy says on how many images: a device checks fewer than the export did.
    accuracy_col = f"{acc['split']} accuracy" + (
        f" ({acc['images']} images)" if acc["images"] else ""
    )
    # Folded, not cut, at a narrow width: device names differ by a suffix (a twin's -no-amx).
    for col in ("file", "size", "check", accuracy_col, "runs as"):
        table.add_column(col, overflow="fold")
    for device in devices:
        table.add_column(f"{device} ms\npredicted / measured (vs fp32)", overflow="fold")
    for f in card["files"]:
        checks = f["checks"]
        if "top1_agreement" in checks:
            check = f"agreement {100 * checks['top1_agreement']:.2f}%"
            if checks["top1_agreement"] < target:
                check = f"[yellow]{check} (< {100 * target:g}%)[/yellow]"
            accuracy = f"{checks['accuracy']:.4f}"
        elif "max_abs_diff" in checks:
            fp32 = acc["fp32"]  # as the int8 rows' (it printed 0.64 above 0.6400)
            accuracy = "-" if fp32 is None else f"{fp32:.4f}"
            check = f"max diff {checks['max_abs_diff']:.1e}"
        else:
            check, accuracy = "not verified", "-"
        latency = []
        for device in devices:
            entry = card["latency"][device]
            value = entry["files"].get(f["name"])
            if not value:
                latency.append("")
                continue
            at_baseline = value.get("measured_at_baseline_ms")
            speedup = value.get("speedup_vs_fp32")
            text = f"{_fmt(value['predicted'])} / {_fmt(value['measured']['median_ms'])}"
            if f["precision"] != "fp32" and speedup is not None:
                text += f" ({speed_text(speedup)})"
            if at_baseline is not None:
                text += f" ({_fmt(at_baseline)} at baseline)"
            checked = value.get("on_device")
            if checked is not None:
                agreed = f"agreement {100 * checked['top1_agreement']:.2f}%"
                if checked["top1_agreement"] < target:
                    agreed = f"[yellow]{agreed}[/yellow]"
                text += (
                    f"\n{agreed}, accuracy {checked['accuracy']:.4f} here "
                    f"({checked['images']} images)"
                )
            if f["name"] == entry.get("recommended"):
                text = f"[bold]{text} *[/bold]"
                if entry.get("recommended_meets_accuracy") is False:  # the best of those below
                    text += f"\n[yellow]{BELOW_TARGET}[/yellow]"
            latency.append(text)
        table.add_row(
            escape(f["name"]),
            f"{f['bytes'] / 1024:.0f} KiB",
            check,
            accuracy,
            escape(execution_text(f.get("execution") or {})),
            *latency,
        )
    Console(stderr=True).print(table)
    if devices:
        err_console.print(
            "* recommended: the fastest file that is fp32 or int8 with top-1 agreement "
            f">= {100 * target:g}% (on a device that checked the files: the agreement "
            "there, fp32 files' too, or the host's where lower on more images)"
        )
    if any(e.get("recommended_meets_accuracy") is False for e in card["latency"].values()):
        err_console.print(
            f"{BELOW_TARGET}: no file reached the agreement target there: the one that agrees best",
            highlight=False,
        )
    unchecked = {n: e["not_checked"] for n, e in card["latency"].items() if "not_checked" in e}
    reasons = set(unchecked.values())
    if len(unchecked) == len(devices) > 1 and len(reasons) == 1:
        # One reason for all (no images asked, the export not verified): said once.
        err_console.print(f"not checked on the devices: {escape(reasons.pop())}")
    else:
        for name, reason in unchecked.items():
            err_console.print(f"{escape(name)}: not checked on the device: {escape(reason)}")
    for name, entry in card["latency"].items():
        if "not_measured" in entry:
            err_console.print(
                f"{escape(name)}: predicted {_fmt(entry.get('predicted'))} ms; "
                f"{escape(entry['not_measured'])}"
            )
    note = split_stem_note(card)
    if note:
        err_console.print(escape(note))
    err_console.print(f"files and card.md in {escape(str(out))}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _stem_groups(value: str) -> StemGroups:
    try:
        return parse_stem_groups(value)
    except ValueError as exc:
        raise fail(str(exc)) from exc
