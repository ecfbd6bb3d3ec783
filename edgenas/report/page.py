"""The report as one self-contained HTML page: inline CSS and inline SVG, no scripts, no
network. Each part of the run has its own ``<section id=...>``; a stage the run has not
finished gets a line saying so (from run.json's records), one the recipe leaves out a line
saying how to add it."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from edgenas.report import Warn, figures, ignore_warning
from edgenas.report.collect import RERUN, DeviceData, ReportError, RunData, rewritten_line
from edgenas.report.markdown import inline, to_html
from edgenas.run_record import SummaryRow, device_label
from edgenas.search.pareto import pareto_figure
from export.card import card_markdown, device_check_text, percent, speed_text
from latency.op_split import KINDS, split_by_kind
from latency.reference import reference_scale
from once_for_all.errors import one_line

SECTIONS = {
    "summary": "Chosen subnets",
    "training": "Training",
    "pareto": "Pareto fronts",
    "latency-predictors": "Latency predictors",
    "block-latency": "Block latency per device",
    "models": "Model cards",
}

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; color: #222; }
h1 { margin-top: 28px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; } .meta { color: #666; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; font-size: 12px; }
svg { max-width: 100%; height: auto; } .figure { margin: 12px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; } .grid > div { flex: 0 1 auto; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: 6px 10px; border-radius: 4px; }
details.card { border: 1px solid #ddd; border-radius: 6px; padding: 4px 14px; margin: 12px 0; }
details.card summary { cursor: pointer; font-weight: 600; padding: 6px 0; }
"""

# Marks a page as edgenas's: `edgenas report --out` overwrites only such a file.
GENERATOR = "edgenas report"


def _num(value: Any, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], numeric: frozenset[int] = frozenset()
) -> str:
    """A table of already-escaped cells; ``numeric`` columns align right."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{c}</td>" if j in numeric else f"<td>{c}</td>"
            for j, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _missing(text: str) -> str:
    return f"<p class='missing'>{inline(text)}</p>"


def _gone(data: RunData, stage: str, what: str) -> str | None:
    """A missing-part line for ``what``, which stage ``stage`` made: the stage finished and
    its output was moved or deleted since (None where it did not finish: ``_not_done``)."""
    if data.stage_state(stage) != "finished":
        return None
    return _missing(
        f"The `{stage}` stage finished, but {what} is missing (moved or deleted): run the "
        "recipe again (`edgenas run RECIPE`), which makes a stage's missing output again."
    )


def _not_done(data: RunData, stages: Sequence[str]) -> str | None:
    """Why the first of ``stages`` that the run has not finished left nothing to show, as a
    missing-part line; None when each finished or the recipe leaves it out."""
    for stage in stages:
        state = data.stage_state(stage)
        if state == "unfinished" and data.stopped:
            return _missing(
                f"The `{stage}` stage started and did not finish: the last run stopped with "
                f"`{data.stopped}`. Mend what it names (after an interruption, nothing), then "
                "run the same command again to go on."
            )
        if state == "unfinished":
            return _missing(
                f"The `{stage}` stage started and did not finish (it failed or was stopped: "
                "run.log says which); run the same command again to go on."
            )
        if state == "not run" and data.stopped:
            return _missing(
                f"The `{stage}` stage has not run yet: the last run stopped with `{data.stopped}`."
            )
        if state == "not run":
            return _missing(
                f"The `{stage}` stage has not run yet: a stage before it did not finish "
                "(run.log says why)."
            )
    return None


def _figure(svg: str, caption: str = "") -> str:
    cap = f"<p class='meta'>{inline(caption)}</p>" if caption else ""
    return f"<div class='figure'>{svg}{cap}</div>"


def _summary(data: RunData) -> str:
    rows = data.summary.get("chosen", []) if data.summary else []
    if not rows:
        return _not_done(data, ("train", "profile", "search", "export")) or _missing(
            "No subnet exported yet: the recipe needs devices with a budget and the stages "
            "`search` and `export`."
        )
    chosen = _table(
        [
            "device",
            "budget ms",
            "subnet",
            "acc fp32",
            "acc int8",
            "file",
            "predicted ms",
            "measured ms",
            "size KiB",
        ],
        (
            [
                html.escape(r["device"]),
                _num(r["budget_ms"], "g"),
                f"<code>{html.escape(r['subnet'])}</code>",
                percent(r["accuracy_fp32"]),
                "<br>".join(
                    f"{html.escape(n)}: {percent(a)}" for n, a in r["accuracy_int8"].items()
                ),
                f"<code>{html.escape(str(r['file']))}</code>" + _below_target(r),
                _num(r["latency_predicted_ms"]),
                _num(r["latency_measured_ms"]),
                _num(r["bytes"] / 1024 if r["bytes"] else None, ".1f"),
            ]
            for r in rows
        ),
        numeric=frozenset({1, 3, 6, 7, 8}),
    )
    return _rewritten(data) + chosen + _measured_files(rows)


def _rewritten(data: RunData) -> str:
    """The line saying which chosen subnets' folders were exported again since the run."""
    if not data.rewritten:
        return ""
    return _missing(rewritten_line(data.rewritten))


def _below_target(row: SummaryRow) -> str:
    """A flag for a recommended file that is the best of files none of which reached the
    agreement target, for one that takes longer than its budget, and for one of another
    precision than the device's table."""
    below = row.get("file_meets_accuracy") is False
    searched = row.get("searched_precision")
    return (
        (" (no file reached the agreement target)" if below else "")
        + (f" (over the {row['budget_ms']:g} ms budget)" if row.get("file_over_budget") else "")
        + (f" (the search held the {searched} files' latency to the budget)" if searched else "")
    )


def _measured_files(rows: Sequence[SummaryRow]) -> str:
    """Every file each device measured, as the card has it (the table above shows the
    recommended one): a user who ships another file (an int8 one for an NPU, a smaller one)
    weighs them here. Empty when no device measured a file (published tables only, or a
    summary of an earlier edgenas)."""
    table_rows = []
    for row in rows:
        device = html.escape(device_label(row, rows))
        for i, (name, m) in enumerate((row.get("measured_files") or {}).items()):
            speedup = m.get("speedup_vs_fp32")
            file = f"<code>{html.escape(name)}</code>"
            if name == row["file"]:
                file += f" <strong>recommended{_below_target(row)}</strong>"
            runs_as = html.escape(m.get("runs_as") or "-")
            if m.get("placement"):  # where the device's runtime ran it
                runs_as += f"<br><small>{html.escape(m['placement'])}</small>"
            table_rows.append(
                [
                    device if i == 0 else "",
                    file,
                    _num(m.get("latency_ms")),
                    speed_text(speedup),
                    percent(m.get("accuracy")),
                    percent(m.get("top1_agreement")),
                    html.escape(device_check_text(m.get("on_device"))),
                    runs_as,
                ]
            )
    if not table_rows:
        return ""
    caption = (
        "Every file each device measured. vs fp32: the fp32 file of the same format's latency "
        "over this one's (above 1: faster). Agreement: top-1 agreement with PyTorch fp32 on this "
        "host's runtime; on the device: agreement and accuracy as the device ran the file "
        "(-: not checked there, the model card says why). Recommended: the fastest file "
        "accurate enough."
    )
    return (
        f"<h3 id='measured-files'>Every measured file</h3><p class='meta'>{inline(caption)}</p>"
        + _table(
            [
                "device",
                "file",
                "ms",
                "vs fp32",
                "accuracy",
                "agreement with fp32",
                "on the device",
                "runs as",
            ],
            table_rows,
            numeric=frozenset({2, 3, 4, 5}),
        )
    )


def _training(data: RunData) -> str:
    if not data.history and data.imported:
        return _missing(f"No training history: supernet.pt is {data.imported}, not trained here.")
    if not data.history:
        return _not_done(data, ("train",)) or _missing(
            "No training history: this run has no supernet.pt or checkpoint.pt yet."
        )
    phases: dict[str, list[Mapping[str, Any]]] = {}
    for r in data.history:
        phases.setdefault(str(r["phase"]), []).append(r)
    table = _table(
        ["phase", "epochs", "val acc largest", "val acc smallest", "train loss", "minutes"],
        (
            [
                html.escape(name),
                str(len(rs)),
                percent(rs[-1]["val_acc_max"]),
                percent(rs[-1]["val_acc_min"]),
                _num(rs[-1]["train_loss"], ".3f"),
                _num(sum(float(r["seconds"]) for r in rs) / 60, ".1f"),
            ]
            for name, rs in phases.items()
        ),
        numeric=frozenset({1, 2, 3, 4, 5}),
    )
    svg = figures.to_svg(figures.training_curves(data.history), "training")
    return (
        _figure(
            svg,
            "Progressive shrinking: each phase opens more of the space (kernel, depth, expand).",
        )
        + table
    )


def _pareto(data: RunData) -> str:
    if data.pareto is None:
        return (
            _not_done(data, ("search",))
            or _gone(data, "search", "search/pareto.json")
            or _missing("No search in this run: add `search` to the recipe's stages.")
        )
    p = data.pareto
    svg = figures.to_svg(pareto_figure(p, data.trial_values), "pareto")
    caption = (
        f"{p.get('trials', '?')} trials, {len(p['front'])} subnets on the front; accuracy: "
        f"{p.get('accuracy', 'predicted')}. Dashed line: the device's latency budget; star: the "
        "subnet chosen for it."
    )
    return _figure(svg, caption)


_FIGURES = ("n", "rmse_ms", "rmspe", "within_5pct", "within_10pct", "spearman", "kendall")


def _predictors(data: RunData) -> str:
    if not data.devices:
        return _not_done(data, ("profile",)) or _missing(
            "No device profiled: add devices to the recipe and `profile` to its stages."
        )
    parts = []
    for device in data.devices:
        pred = device.predictor
        validation = pred.get("validation") or {}
        fp = pred["header"]["fingerprint"]
        header = pred["header"]
        meta = (
            f"<p class='meta'>{html.escape(pred['kind'])} predictor"
            f"{' (' + html.escape(validation['chosen']) + ')' if validation.get('chosen') else ''}; "
            f"{html.escape(fp['runtime'])} {html.escape(str(fp['runtime_version']))}, "
            f"{html.escape(header['model_format'])} {html.escape(header['precision'])}, "
            f"{html.escape(str(fp['cpu_model']))} on {html.escape(str(fp['host']))}, "
            f"{len(pred['block_ms'])} blocks. {inline(validation.get('method', ''))}</p>"
        )
        rows = [
            [html.escape(label), *(_fmt_figure(k, validation[key].get(k)) for k in _FIGURES)]
            for label, key in (("calibrated", "calibrated"), ("lut-sum", "lut_sum"))
            if key in validation
        ]
        table = (
            _table(["predictor", *_FIGURES], rows, numeric=frozenset(range(1, 8))) if rows else ""
        )
        fig = figures.predictor_scatter(device)
        scatter = (
            figures.to_svg(fig, f"scatter-{device.name}")
            if fig is not None
            else _missing("No end-to-end measurements (calibrate: 0): nothing to validate against.")
        )
        parts.append(
            f"<h3>{html.escape(device.name)}</h3>{meta}<div class='grid'><div>{scatter}</div>"
            f"<div>{table}</div></div>"
        )
    return "".join(parts)


def _fmt_figure(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "n":
        return str(int(value))
    if key in ("rmspe", "within_5pct", "within_10pct"):
        return percent(value)
    return _num(value, ".4g" if key == "rmse_ms" else ".3f")


def _blocks(data: RunData) -> str:
    if not data.devices:
        return _not_done(data, ("profile",)) or _missing(
            "No device profiled: no lookup tables to show."
        )
    parts = []
    shares = figures.latency_shares(data.devices)
    if shares is not None:
        parts.append(
            _figure(
                figures.to_svg(shares, "shares"),
                "Where each device spends the largest subnet's time, from its lookup table.",
            )
        )
    maps = [
        f"<div>{figures.to_svg(figures.block_heatmap(d), f'heatmap-{d.name}')}</div>"
        for d in data.devices
    ]
    parts.append(f"<div class='grid'>{''.join(maps)}</div>")
    parts.extend(_op_split(d) for d in data.devices if d.per_op_table is not None)
    return "".join(parts)


def _op_split(device: DeviceData) -> str:
    """Each block of the largest subnet with per-op times, its time split by kind of op."""
    table = device.per_op_table
    assert table is not None
    splits: list[tuple[str, str, dict[str, float]]] = []
    op_ms = run_ms = 0.0  # over the blocks whose profiled runs were timed
    for label, block in figures.largest_subnet_blocks(device):
        m = table.entries.get(block.key)
        if m is not None and m.ops:
            scale = reference_scale(m)  # op times normalised as the block's latency is
            split = {kind: ms * scale for kind, ms in split_by_kind(m.ops).items()}
            splits.append((label, block.key, split))
            profiled = (m.extra.get("profile") or {}).get("run_ms")
            if isinstance(profiled, int | float) and profiled > 0:
                op_ms += sum(op.ms for op in m.ops)
                run_ms += profiled
    if not splits:
        return ""
    kinds = [kind for kind in KINDS if any(kind in split for _, _, split in splits)]
    rows = [
        [
            html.escape(label),
            f"<code>{html.escape(key)}</code>",
            _num(table.ms(key)),
            *(
                f"{_num(split[kind])} ({100 * split[kind] / sum(split.values()):.0f}%)"
                if kind in split and sum(split.values()) > 0
                else "-"
                for kind in kinds
            ),
        ]
        for label, key, split in splits
    ]
    where = sorted({op.where for m in table.entries.values() for op in m.ops or () if op.where})
    ran = f", run on {', '.join(where)}" if where else ""
    caption = (
        f"{device.name}: where each block's time goes, from its per-op times "
        f"({table.header.runtime}{ran}): ms per kind of op, and its share of the block's op "
        "time. An activation the runtime fuses into a convolution counts with it."
    )
    if run_ms > 0:
        # What the ops leave out: the runtime's own work between them, and for runtimes that
        # count whole microseconds per op (OpenVINO), ops that take less. (benchmark_model
        # times its runs and its ops apart, so the ops can add up to more.)
        caption += f" The op times add up to {op_ms / run_ms:.0%} of the time of the profiled runs"
        caption += (
            "; the rest is the runtime's own work between ops, or time its profiler does not count."
            if op_ms < run_ms
            else "."
        )
    return (
        f"<h3 id='op-split-{html.escape(device.name)}'>{html.escape(device.name)}: time per "
        f"kind of op</h3><p class='meta'>{inline(caption)}</p>"
        + _table(
            ["block", "key", "block ms", *kinds],
            rows,
            numeric=frozenset(range(2, 3 + len(kinds))),
        )
    )


def _models(data: RunData) -> str:
    if not data.cards:
        return (
            _not_done(data, ("export",))
            or _gone(data, "export", "every exported subnet's card.json")
            or _missing("No exported models: add `export` to the recipe's stages.")
        )
    stale = ""
    if data.stage_state("search") == "unfinished":
        stale = _missing(
            "The search started again and did not finish: these models are those of the "
            "search before it."
        )
    return stale + "".join(
        f"<details class='card' open><summary>{html.escape(card['name'])}</summary>"
        f"{to_html(card_markdown(card), heading_offset=2)}</details>"
        for card in data.cards
    )


def _stages(data: RunData) -> str:
    stages = data.run.get("stages", {})
    started = data.run.get("started", {})
    if data.summary:  # the stages of this recipe's run (run.json keeps others' records)
        stages = {k: v for k, v in stages.items() if k in data.summary.get("stages", {})}
    if not stages:
        return ""
    return _table(
        ["stage", "seconds", "finished"],
        (
            [
                html.escape(k),
                _num(v.get("seconds"), ".1f"),
                "started again, not finished"
                if k in started
                else html.escape(str(v.get("finished", "-"))),
            ]
            for k, v in stages.items()
        ),
        numeric=frozenset({1}),
    )


BUILDERS: dict[str, Callable[[RunData], str]] = {
    "summary": _summary,
    "training": _training,
    "pareto": _pareto,
    "latency-predictors": _predictors,
    "block-latency": _blocks,
    "models": _models,
}


# The files each part is drawn from: named when one holds what edgenas does not write.
SOURCES = {
    "summary": "summary.json",
    "training": "the training checkpoint's history",
    "pareto": "search/pareto.json or the search's study",
    "latency-predictors": "a device's predictor.json",
    "block-latency": "a device's predictor.json or lut.json",
    "models": "an export's card.json",
}


def _section(data: RunData, key: str, warn: Warn) -> str:
    """Part ``key`` of the page; a part whose files were edited into what edgenas does not
    write (a number where an object goes, a key gone) says so rather than end the report:
    the readers check what every part needs, not each value deep in a card or predictor."""
    refused = ""
    for line in data.unreadable.get(key, []):  # a file that did not read: the others drawn
        said = f"{SECTIONS[key]}: {line}"
        warn(said, ReportError(said))
        refused += _missing(said)
    if refused and not _has_parts(data, key):
        return refused  # not "no search in this run"
    try:
        return refused + BUILDERS[key](data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        why = f"{type(exc).__name__}: {one_line(exc)}"
        line = (
            f"{SECTIONS[key]}: not drawn, {SOURCES[key]} holds what edgenas does not write "
            f"({why}); {RERUN}"
        )
        warn(line, exc)
        return _missing(line)


def _has_parts(data: RunData, key: str) -> bool:
    """Whether part ``key`` has anything of its own to draw."""
    if key == "pareto":
        return data.pareto is not None
    if key in ("latency-predictors", "block-latency"):
        return bool(data.devices)
    if key == "models":
        return bool(data.cards)
    return True


def _stopped(data: RunData) -> str:
    """Where the last run into the folder stopped, above all: the sections below show what
    the runs before it made, which a failed run (a recipe refused, say) left as they were."""
    if not data.stopped:
        return ""
    return _missing(
        f"The last `edgenas run` here stopped with `{data.stopped}`. The sections below show "
        "what was made before; mend what it names, then run it again."
    )


def render(data: RunData, *, warn: Warn = ignore_warning) -> str:
    """The whole page; ``warn`` gets a line for each part that could not be drawn."""
    versions = data.run.get("versions", {})
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    title = f"edgenas run {data.name}"
    nav = "".join(f"<a href='#{k}'>{html.escape(v)}</a>" for k, v in SECTIONS.items())
    body = "".join(
        f"<section id='{k}'><h2>{html.escape(SECTIONS[k])}</h2>{_section(data, k, warn)}</section>"
        for k in BUILDERS
    )
    if data.rewritten:  # drawn, but the two sections disagree
        line = rewritten_line(data.rewritten)
        warn(line, ReportError(line))
    recipe = html.escape(str(data.run.get("recipe_path", "")))
    space_field = data.run.get("recipe", {}).get("space", "")
    if isinstance(space_field, dict):  # a built-in space adapted to the data
        space_field = " ".join(f"{k}={v}" for k, v in space_field.items() if v is not None)
    space = html.escape(str(space_field))
    version = html.escape(str(versions.get("edgenas", "")))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='generator' content='{GENERATOR}'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='meta'>recipe <code>{recipe}</code>, space <code>{space}</code>, "
        f"edgenas {version}; report written {created}.</p>{_stopped(data)}"
        f"<nav>{nav}</nav>{_stages(data)}{body}</body></html>\n"
    )
