"""The model card written beside exported files: ``card.json`` for tools, ``card.md`` for
people. Both say the same: what the subnet is, how accurate each file is, how fast it is
predicted and measured to be on each device, how big it is and how to feed it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from export.errors import ExportError
from export.formats import AUTO_SPLIT_GROUPS, ModelFormat, Precision
from once_for_all.data.transforms import CROP_FRACTION
from once_for_all.files import read_json, write_text

# 2: files say how their runtime runs them; devices give speed-ups and a recommended file.
CARD_FORMAT = "edgenas.card/2"


class CardFile(TypedDict):
    """One exported model file (``ExportedFile.to_dict``)."""

    name: str
    format: ModelFormat
    precision: Precision
    bytes: int
    sha256: str
    export_seconds: float
    checks: dict[str, float]  # fp32: parity with PyTorch; int8: agreement and accuracy
    execution: dict[str, Any]  # export.runtime_graph: partitions, float nodes, graph form


class Int8Accuracy(TypedDict):
    accuracy: float
    drop: float  # from the PyTorch fp32 accuracy
    top1_agreement: float  # with PyTorch fp32


class CardAccuracy(TypedDict):
    split: str
    images: int
    fp32: float | None  # PyTorch; None when not verified
    int8: dict[str, Int8Accuracy]  # by file name


class DeviceCheck(TypedDict):
    """A file's top-1 classes on a device's first ``images`` test images, against PyTorch
    fp32's and the labels: the file as that device runs it (its runtime's kernels, delegate
    or providers), not as the host's runtime does."""

    images: int
    top1_agreement: float
    accuracy: float


class FileLatency(TypedDict):
    """One file measured on one device."""

    predicted: float | None  # by the device's predictor, for the file kind it was built on
    # median_ms, p10_ms, p90_ms, n, ...; Vela's cpu_fallback_ops; the device's placement
    # (and placement_text), init_ms and first_inference_ms where its runtime reports them
    measured: dict[str, Any]
    measured_at_baseline_ms: float | None
    reference_scale: float | None
    speedup_vs_fp32: NotRequired[float | None]  # the same format's fp32 median over this one's
    # A file with its stem split (export.stem_split): the prediction adds the split's cost in
    # this many groups, from the table's entry for it. Absent: it times the stem whole.
    predicted_stem_groups: NotRequired[int]
    on_device: NotRequired[DeviceCheck]  # absent: not checked there (see DeviceLatency)


class DeviceLatency(TypedDict):
    fingerprint: dict[str, Any]
    files: dict[str, FileLatency]
    recommended: NotRequired[str | None]  # the fastest file accurate enough
    recommended_meets_accuracy: NotRequired[bool]  # False: none is; the one that agrees best
    # A device nothing runs on (kind published: tables someone else measured) has no files:
    # why, and its predictor's latency for the subnet (None without one that covers it).
    not_measured: NotRequired[str]
    predicted: NotRequired[float | None]
    # Why its files were not checked on it: a device that returns latency only or whose
    # engine says nothing of accuracy (TensorRT int8 calibrated on random data), no images
    # asked or verified, or the check failed there.
    not_checked: NotRequired[str]


class Recommendation(TypedDict):
    rule: str
    min_int8_agreement: float


class Int8Calibration(TypedDict):
    split: str
    images: int  # those the int8 files' ranges were calibrated on (a fixed random pick)


class CardBody(TypedDict):
    """What an export says about its files (``run_export`` returns it)."""

    name: str
    edgenas_version: str
    supernet: dict[str, str]
    subnet: dict[str, Any]  # Subnet.to_dict
    finetune: dict[str, Any] | None
    data: dict[str, Any]  # DataSpec.to_dict
    macs: int
    params: int
    peak_activation_bytes: int
    accuracy: CardAccuracy
    int8_calibration: NotRequired[Int8Calibration]  # with int8 files
    files: list[CardFile]
    inputs: dict[str, dict[str, Any]]  # by file name: how to feed it
    latency: dict[str, DeviceLatency]  # by device name
    recommendation: Recommendation


class CardDocument(CardBody):
    """``card.json``: the body with its format tag."""

    format: str


def write_card(folder: Path, card: CardBody) -> None:
    """Write ``card.json`` and ``card.md`` into ``folder`` (each atomically)."""
    write_text(folder / "card.json", card_json(card), error=ExportError)
    write_text(folder / "card.md", card_markdown(card_document(card)), error=ExportError)


def card_document(card: CardBody) -> CardDocument:
    """The body with its format tag: what ``card.json`` holds."""
    return CardDocument(format=CARD_FORMAT, **card)


def card_json(card: CardBody) -> str:
    """``card.json``'s text (``edgenas export --json`` prints the same)."""
    return json.dumps(card_document(card), indent=1) + "\n"


def read_card(path: Path) -> CardDocument:
    """An export's ``card.json`` (a card of an older format is refused with one line)."""
    doc = read_json(
        path,
        formats=CARD_FORMAT,
        what="a model card",
        fix=f"export again with 'edgenas export ... --out {path.parent}'",
        error=ExportError,
    )
    # The tag alone let a card without its parts through, to a KeyError in the report.
    kinds = {"name": str, "subnet": dict, "data": dict, "accuracy": dict, "files": list}
    kinds |= {"inputs": dict, "latency": dict, "recommendation": dict}
    for key, kind in kinds.items():
        if not isinstance(doc.get(key), kind):
            raise ExportError(
                f"{path} is a damaged model card ('{key}' is not a {kind.__name__}): export "
                f"again with 'edgenas export ... --out {path.parent}'"
            )
    return cast(CardDocument, doc)


def execution_text(execution: Mapping[str, Any]) -> str:
    """How the runtime runs a file, in a few words (``ExportedFile.execution``)."""
    text = _runtime_text(execution)
    if execution.get("channels_aligned"):
        text += f"; channels aligned to onnxruntime's {execution['channels_aligned']} int8 convs"
    groups = execution.get("stem_groups")
    if groups:
        text += f"; stem in {len(groups)} int8 groups of channels"
    return text


def _runtime_text(execution: Mapping[str, Any]) -> str:
    if "partitions" in execution:
        parts = execution["partitions"]
        text = f"{parts} {execution['delegate']} partition{'s' if parts != 1 else ''}"
        if execution.get("graph_form") == "plain":
            text = f"plain graph for NPU compilers; on the CPU {text}"
        left = execution.get("not_delegated") or {}
        if left:
            text += "; not delegated: " + ", ".join(f"{op} x{n}" for op, n in left.items())
        return text
    if "float_nodes" in execution:
        floats = execution["float_nodes"]
        if not floats:
            return "quantized kernels only"
        return "in float: " + ", ".join(f"{op} x{n}" for op, n in floats.items())
    return "-"


def _placement_lines(latency: Mapping[str, Any]) -> list[str]:
    """Where each device ran each file, as its runtime reported (a device that reports
    nothing, such as a simulator, is left out), with the one-off costs a user pays at start."""
    lines = []
    for device, entry in latency.items():
        for name, timing in entry["files"].items():
            m = timing["measured"] or {}
            once = [
                f"{label} {m[key]:.4g} ms"
                for key, label in (("init_ms", "init"), ("first_inference_ms", "first inference"))
                if m.get(key) is not None
            ]
            if m.get("placement_text") or once:
                what = "; ".join(
                    [*([m["placement_text"]] if m.get("placement_text") else []), *once]
                )
                lines.append(f"- {device}, `{name}`: {what}")
    return ["", "Placement on the device:", "", *lines] if lines else []


def _amx_lines(card: CardBody) -> list[str]:
    """The devices whose profile refused the runtime Intel AMX (x86_amx: false): their int8
    times are of other kernels than the runtime picks by itself on that CPU."""
    int8 = {f["name"] for f in card["files"] if f["precision"] == "int8"}
    lines = [
        f"- {device}: Intel AMX refused to the runtime (x86_amx: false): its int8 kernels were "
        "not its AMX ones"
        for device, entry in card["latency"].items()
        if entry["fingerprint"].get("x86_amx") == "refused" and int8.intersection(entry["files"])
    ]
    return ["", *lines] if lines else []


def split_stem_note(card: CardBody) -> str | None:
    """A note for int8 files whose stem is in groups (export.stem_split) and whose prediction
    times the stem whole (a table without the split's entry: from before int8 tables had
    it, or not profiled with that number of groups), so that it leaves the split out."""
    groups = {
        f["name"]: len(f["execution"]["stem_groups"])
        for f in card["files"]
        if f["execution"].get("stem_groups")
    }
    whole = {
        name
        for entry in card["latency"].values()
        for name, timing in entry["files"].items()
        if timing["predicted"] is not None and "predicted_stem_groups" not in timing
    }
    names = sorted(set(groups) & whole)
    if not names:
        return None
    split = ", ".join(f"`{name}` has its stem in {groups[name]} groups" for name in names)
    # int8 tables time the stem in AUTO_SPLIT_GROUPS groups unasked; others take the option.
    other = sorted({groups[name] for name in names} - {AUTO_SPLIT_GROUPS})
    command = " ".join(["edgenas profile", *(f"--stem-groups {g}" for g in other)])
    return (
        f"{split}: the predictor's lookup table times the stem whole, so the prediction leaves "
        f"the split's cost out (the measured latency has it); `{command}` on the device's int8 "
        "table adds it (the table resumes)."
    )


# How images were resized where the card's accuracies were measured: shrinking without the
# antialiasing (cv2's INTER_LINEAR, tf.image.resize's default) changes the logits.
_BILINEAR = "bilinear, antialiased as PIL's resize is"


def card_markdown(card: CardDocument) -> str:
    subnet = card["subnet"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"A subnet of the Once-for-All supernet `{card['supernet']['path']}` "
        f"(space `{subnet['space']}`), exported by edgenas {card.get('edgenas_version', '')}.",
        "",
        "## Subnet",
        "",
        f"- resolution {subnet['r']} px, depth per stage {subnet['d']}",
        f"- kernel sizes {subnet['ks']}",
        f"- expand ratios {subnet['e']}",
        f"- {card['macs'] / 1e6:.2f} M MACs, {card['params'] / 1e3:.1f} k parameters, "
        f"peak activation memory {card['peak_activation_bytes'] / 1024:.1f} KiB (fp32)",
    ]
    finetune = card.get("finetune") or {}
    lines.append(
        f"- fine-tuned {finetune['epochs']} epoch(s) with distillation from the largest subnet"
        if finetune.get("epochs")
        else "- weights inherited from the supernet (BN statistics recalibrated)"
    )
    if finetune.get("qat_epochs"):
        lines.append(
            f"- then {finetune['qat_epochs']} epoch(s) of int8-aware fine-tuning (simulated int8 "
            "activations) for the int8 files' sake; every file, fp32 too, has its weights"
        )
    lines += [
        "",
        "## Files",
        "",
        "| file | precision | size | export s | check | runs as |",
        "|---|---|---|---|---|---|",
    ]
    for f in card["files"]:
        lines.append(
            f"| `{f['name']}` | {f['precision']} | {f['bytes'] / 1024:.1f} KiB | "
            f"{f['export_seconds']:.1f} | {_check(f['checks'])} | "
            f"{execution_text(f.get('execution') or {})} |"
        )
    acc = card["accuracy"]
    measured = f" ({acc['split']} split, {acc['images']} images)" if acc["images"] else ""
    lines += ["", f"## Accuracy{measured}", ""]
    if acc["images"]:
        lines.append(f"- PyTorch fp32: {percent(acc['fp32'])}")
        for name, value in acc.get("int8", {}).items():
            lines.append(
                f"- `{name}`: {percent(value['accuracy'])} (drop {100 * value['drop']:+.2f} pp, "
                f"top-1 agreement with fp32 {percent(value['top1_agreement'])})"
            )
    else:
        lines.append("- not verified (--no-verify)")
    calibration = card.get("int8_calibration")
    if calibration:
        lines.append(
            f"- int8 files calibrated on {calibration['images']} images of the "
            f"{calibration['split']} split"
        )
    lines += ["", "## Latency (ms)", ""]
    measured_any = any(entry["files"] for entry in card["latency"].values())
    if card["latency"]:
        lines += [
            "| device | file | predicted | measured median | p10-p90 | vs fp32 | "
            "at predictor's baseline | on the device: agreement, accuracy |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for device, entry in card["latency"].items():
            if "not_measured" in entry:
                lines.append(
                    f"| {device} | {entry['not_measured']} | {_ms(entry.get('predicted'))} | "
                    "- | - | - | - | - |"
                )
            for name, timing in entry["files"].items():
                m = timing["measured"]
                spread = f"{m['p10_ms']:.4g}-{m['p90_ms']:.4g}" if m else "-"
                speedup = timing.get("speedup_vs_fp32")
                chosen = ""
                if name == entry.get("recommended"):
                    chosen = (
                        " (recommended)"
                        if entry.get("recommended_meets_accuracy", True)
                        else " (recommended, below the agreement target)"
                    )
                fallback = (m or {}).get("cpu_fallback_ops")
                if fallback:
                    chosen += " (on the CPU: " + ", ".join(op["op"] for op in fallback) + ")"
                lines.append(
                    f"| {device} | `{name}`{chosen} | {_ms(timing['predicted'])} | "
                    f"{_ms(m['median_ms'] if m else None)} | {spread} | "
                    f"{speed_text(speedup)} | "
                    f"{_ms(timing['measured_at_baseline_ms'])} | "
                    f"{device_check_text(timing.get('on_device'))} |"
                )
        lines += _placement_lines(card["latency"])
        lines += _amx_lines(card)
        unchecked = [
            f"- {device}: {entry['not_checked']}"
            for device, entry in card["latency"].items()
            if entry.get("not_checked")
        ]
        lines += ["", "Not checked on the device:", "", *unchecked] if unchecked else []
        note = split_stem_note(card)
        lines += ["", note] if note else []
    if measured_any:
        least = percent(card["recommendation"]["min_int8_agreement"])
        checked = any(
            timing.get("on_device") for entry in card["latency"].values()
            for timing in entry["files"].values()
        )  # fmt: skip
        # Without int8 files, only a device's own check has an agreement to weigh.
        if any(f["precision"] == "int8" for f in card["files"]):
            chosen = (
                f"Recommended: the fastest file with a top-1 agreement with PyTorch fp32 of at "
                f"least {least}, else the one that agrees best (flagged): on a device that "
                "checked the files, the agreement measured there, fp32 files' too (an int8 "
                "file's, or the host's where that is lower and on more images); elsewhere fp32 "
                "files count as agreeing and int8 files by the host's check."
            )
            if not any(
                "top1_agreement" in f["checks"] for f in card["files"] if f["precision"] == "int8"
            ):
                chosen += (
                    " No int8 file was checked here (--no-verify): one is recommended only where "
                    "a device checked it, or runs int8 files alone (flagged)."
                )
        elif checked:
            chosen = (
                f"Recommended: on a device that checked the files, the fastest file with a "
                f"top-1 agreement with PyTorch fp32 of at least {least} there, else the one "
                "that agrees best (flagged); elsewhere the fastest file."
            )
        else:
            chosen = "Recommended: the fastest file."
        lines += [
            "",
            "vs fp32: this file's speed against the fp32 file of the same format (its latency "
            f"over this file's). {chosen}"
            + (
                " On the device: the file's top-1 agreement with PyTorch fp32 and accuracy on "
                "the first test images, classified by that device."
                if checked
                else ""
            ),
        ]
    if any(
        timing.get("measured_at_baseline_ms") is not None
        for entry in card["latency"].values()
        for timing in entry["files"].values()
    ):  # a predictor with a reference model timed beside the files
        lines += [
            "",
            "Timed devices drift; the last column scales the measurement by the reference model "
            "measured in the same call, to the conditions the predictor was profiled under.",
        ]
    if not card["latency"]:
        lines.append("- no device measured (pass --device NAME)")
    data = card["data"]
    r = subnet["r"]
    if data.get("resize") == "center-crop":  # cards before it was recorded: bilinear
        resized = (
            f"resized ({_BILINEAR}) so that the shorter side is {math.ceil(r / CROP_FRACTION)} "
            f"px and centre-cropped to {r}x{r} (OFA's evaluation transform)"
        )
    else:
        resized = f"resized ({_BILINEAR}) to {r}x{r}"
    lines += [
        "",
        "## Input",
        "",
        f"Images of `{data['name']}`: {data['channels']} channel(s), {resized}, "
        f"then `x = (pixel / 255 - mean) / std` per channel with "
        f"mean {data['mean']} and std {data['std']}. Output: {data['num_classes']} logits "
        f"({', '.join(data['class_names'][:10])}{', ...' if data['num_classes'] > 10 else ''}).",
        "",
    ]
    for name, spec in card["inputs"].items():
        text = f"- `{name}`: `{spec['name']}` {spec['dtype']} {spec['layout']} {spec['shape']}"
        q = spec.get("quantization")
        if q:
            o = spec["output_quantization"]
            text += (
                f"; quantize the normalised image as `q = round(x / {q['scale']:.6g})"
                f"{_plus(q['zero_point'])}` (clipped to -128..127); logits are "
                f"`(q{_plus(-o['zero_point'])}) * {o['scale']:.6g}`"
            )
        lines.append(text)
    return "\n".join(lines) + "\n"


def _check(checks: Mapping[str, float]) -> str:
    if "top1_agreement" in checks:
        return f"top-1 agreement {percent(checks['top1_agreement'])}"
    if "max_abs_diff" in checks:
        return f"max abs diff {checks['max_abs_diff']:.2g} vs PyTorch"
    return "-"


def device_check_text(check: DeviceCheck | None) -> str:
    """A file's check on a device: its top-1 agreement with fp32, its accuracy, on how many
    images ("-": not checked there)."""
    if check is None:
        return "-"
    agreement, accuracy = percent(check["top1_agreement"]), percent(check["accuracy"])
    return f"{agreement}, {accuracy} ({check['images']} images)"


def _plus(value: int) -> str:
    return f" + {value}" if value > 0 else f" - {-value}" if value < 0 else ""


def speed_text(speedup: float | None) -> str:
    """A file's speed against the same format's fp32 file (``speedup_vs_fp32``, fp32's time
    over its own), in words that say which way: a bare "0.68x" read as either ("-": none)."""
    if speedup is None or speedup <= 0:
        return "-"
    if round(speedup, 2) == 1:  # the fp32 file itself ("1.00x faster" read oddly)
        return "1.00x"
    if speedup >= 1:
        return f"{speedup:.2f}x faster"
    return f"{1 / speedup:.2f}x slower"


def percent(value: float | None) -> str:
    """A fraction as a percentage, 2 decimals ("-" for none), as cards and tables show it."""
    return "-" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
