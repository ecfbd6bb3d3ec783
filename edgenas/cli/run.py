"""`edgenas run RECIPE`: the whole job (train, profile, search, export) in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgenas.console import err_console
from edgenas.recipe import MAX_THREADS
from edgenas.run_layout import RunLayout
from edgenas.run_record import (
    BELOW_TARGET,
    OVER_BUDGET,
    RunSummary,
    device_label,
    searched_mark,
)
from edgenas.stages import STAGES, StageName


def _stage_names(values: list[str] | None) -> list[str] | None:
    """--force's callback: stage names, repeated or comma-separated (export's --format is)."""
    if not values:
        return values
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in STAGES]
    if bad or not names:
        raise typer.BadParameter(
            f"{bad[0] if bad else ''!r} is not a stage: give {', '.join(STAGES)}, repeated or "
            "comma-separated"
        )
    return list(dict.fromkeys(names))


def run_command(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML, e.g. recipes/quickstart.yaml")],
    out: Annotated[
        Path | None, typer.Option(help="run folder (default: runs/<recipe name>)")
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STAGE[,STAGE]",
            callback=_stage_names,
            help=f"redo these stages ({', '.join(STAGES)}; repeatable or comma-separated), and "
            "the stages that depend on them, even if up to date",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_THREADS, help="torch threads (default: the recipe's)"),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Train, profile, search and export as the recipe says, into one run folder. Stages
    whose inputs and outputs are unchanged are skipped, so a killed run resumes."""
    from edgenas.pipeline import run_recipe
    from edgenas.run_folder import RunOptions

    options = RunOptions(
        out=out, force=tuple(cast(list[StageName], force or ())), quiet=quiet, threads=threads
    )
    summary = run_recipe(recipe, options, err_console)
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        print_summary(summary)


def print_summary(summary: RunSummary) -> None:
    if not summary["chosen"] and (_print_searched(summary) or _print_made(summary)):
        return
    folders = list(dict.fromkeys(row["folder"] for row in summary["chosen"]))
    Console(stderr=True).print(chosen_table(summary, folders))
    files = files_table(summary)
    if files is not None:
        Console(stderr=True).print(files)
    if any(row.get("file_meets_accuracy") is False for row in summary["chosen"]):
        err_console.print(
            f"{BELOW_TARGET}: no file reached the top-1 agreement target "
            "(--min-int8-agreement, export.min_int8_agreement): the one that agrees best",
            highlight=False,
        )
    if any(row.get("file_over_budget") for row in summary["chosen"]):
        err_console.print(
            f"{OVER_BUDGET}: the file takes longer than the budget the subnet was chosen "
            "under; its card says what it runs as (a stem in groups costs time: "
            "export.stem_groups: 1 keeps it whole), or choose under a tighter budget",
            highlight=False,
        )
    said: set[str] = set()
    for row in summary["chosen"]:
        if (mark := searched_mark(row)) and row["device"] not in said:
            said.add(row["device"])
            precision = row["searched_precision"]
            err_console.print(
                f"{mark}: the search held {row['device']}'s {precision} latency to its budget; "
                "the card recommends a file of another precision (the fastest accurate "
                f"enough: its {precision} files missed the agreement target or ran slower; "
                "every measured file is above)",
                highlight=False,
                markup=False,
            )
    for i, folder in enumerate(folders, start=1):
        err_console.print(f"#{i}: {escape(folder)}", highlight=False, soft_wrap=True)
    _print_paths(summary)


def _print_paths(summary: RunSummary) -> None:
    """Where the run's summary and report are: the last lines of what a run prints."""
    err_console.print(f"summary: {escape(summary['run'])}/summary.json", highlight=False)
    if summary.get("report"):
        err_console.print(f"report: {escape(summary['report'])}", highlight=False)


def _print_searched(summary: RunSummary) -> bool:
    """A run that exported nothing (no export stage): the subnets its search chose, as
    `edgenas search` prints them (an empty table said nothing was chosen). False without a
    search that can be read."""
    from edgenas.cli.search import print_choice
    from edgenas.search.pareto import read_pareto
    from once_for_all.errors import EdgenasError

    pareto = RunLayout(Path(summary["run"])).pareto
    # Only this run's: a profile-only recipe rerun where another searched keeps its search/.
    if "search" not in summary.get("stages", {}) or not pareto.is_file():
        return False
    try:
        document = read_pareto(pareto)
    except EdgenasError:
        return False
    print_choice(document, pareto.parent)
    _print_paths(summary)
    return True


def _print_made(summary: RunSummary) -> bool:
    """A run that chose no subnet (a recipe that trains or profiles only): what it made, not
    an empty table of chosen subnets. False where it searched (the table says what it did)."""
    if "search" in summary.get("stages", {}):
        return False
    layout = RunLayout(Path(summary["run"]))
    made = [f"supernet: {layout.supernet}"] if "train" in summary["stages"] else []
    made += [
        f"{key.split(':', 1)[1]}: {layout.device(key.split(':', 1)[1])}"
        for key in summary["stages"]
        if key.startswith("profile:")
    ]
    for line in made or ["nothing to show: the recipe neither trains, profiles nor searches"]:
        err_console.print(escape(line), highlight=False, soft_wrap=True)
    _print_paths(summary)
    return True


def chosen_table(summary: RunSummary, folders: list[str]) -> Table:
    """A row per device budget: the subnet's accuracy (fp32, and the file's where it is an
    int8 file), latency (predicted, measured, and
    measured at the device's baseline), size, and the recommended file and its export folder
    (``#i``, numbered as in ``folders``). Narrow enough for 80 columns with a device name of
    20 characters: the numbers stack in their cells, file names stay whole, and a longer
    device name folds."""
    table = Table(title=f"{summary['recipe']}: chosen subnets", title_justify="left")
    files = [row["file"] or "-" for row in summary["chosen"]]
    marks = [mark for row in summary["chosen"] if (mark := searched_mark(row))]
    table.add_column("device", overflow="fold")
    table.add_column("budget\nms", no_wrap=True, justify="right")
    table.add_column("acc\nfp32\nfile", no_wrap=True, justify="right")
    table.add_column("ms pred\nmeasured\n(base)", no_wrap=True, justify="right")
    table.add_column("size\nKiB", no_wrap=True, justify="right")
    table.add_column(
        "file\nexport",
        no_wrap=True,
        min_width=max([len(BELOW_TARGET), *map(len, files), *map(len, marks)]),
    )
    for row, file in zip(summary["chosen"], files, strict=True):
        fp32 = row["accuracy_fp32"]
        accuracies = ["-" if fp32 is None else f"{fp32:.3f}"]
        # The shown file's own, where it is an int8 file (a bare list of every int8 file's
        # could not say which was which); the others' are in the card.
        if (shown := row["accuracy_int8"].get(file)) is not None:
            accuracies.append(f"{shown:.3f}")
        ms = [_ms(row["latency_predicted_ms"]), _ms(row["latency_measured_ms"])]
        if base := row.get("latency_measured_at_baseline_ms"):
            ms.append(f"({_ms(base)})")
        table.add_row(
            escape(row["device"]),
            f"{row['budget_ms']:g}",
            "\n".join(accuracies),
            "\n".join(ms),
            f"{row['bytes'] / 1024:.0f}" if row["bytes"] else "-",
            f"{escape(file)}\n#{folders.index(row['folder']) + 1}"
            + (f"\n{BELOW_TARGET}" if row.get("file_meets_accuracy") is False else "")
            + (f"\n{OVER_BUDGET}" if row.get("file_over_budget") else "")
            + (f"\n{mark}" if (mark := searched_mark(row)) else ""),
        )
    return table


def files_table(summary: RunSummary) -> Table | None:
    """Every file each device measured, as the card has it: the chosen row shows one file, and
    a user picking another (an int8 file for an NPU, a smaller one) weighs them here. Under a
    line per device (and budget), narrow enough for 80 columns: each int8 file's accuracy is
    in the card (the table above shows the chosen file's). None when no device measured a
    file (a published device, or a summary of an earlier edgenas)."""
    from export.card import percent, speed_text

    chosen = summary["chosen"]
    if not any(r.get("measured_files") for r in chosen):
        return None
    table = Table(title="every measured file (* recommended)", title_justify="left")
    # File names stay whole, and so do device names of up to 20 characters (all the bundled
    # profiles' but one); a longer device's line folds.
    names = [len(f"{name} *") for r in chosen for name in r.get("measured_files") or {}]
    labels = [min(len(device_label(r, chosen)), 20) for r in chosen]
    table.add_column("file", overflow="fold", min_width=max([len(BELOW_TARGET), *names, *labels]))
    table.add_column("ms\nvs fp32", no_wrap=True, justify="right")
    table.add_column("agreement\nwith fp32", no_wrap=True, justify="right")
    table.add_column("on the\ndevice", no_wrap=True, justify="right")
    table.add_column("runs as", overflow="fold")
    for row in chosen:
        measured = row.get("measured_files") or {}
        if not measured:
            continue
        table.add_row(f"[bold]{escape(device_label(row, chosen))}[/bold]")
        for name, m in measured.items():
            speedup = m["speedup_vs_fp32"]
            runs_as = [t for t in (m["runs_as"], m.get("placement")) if t and t != "-"]
            checked = m.get("on_device")
            recommended = name == row["file"]
            below = recommended and row.get("file_meets_accuracy") is False
            table.add_row(
                escape(name)
                + (" *" if recommended else "")
                + (f"\n{BELOW_TARGET}" if below else ""),
                _ms(m["latency_ms"]) + ("" if speedup is None else f"\n{speed_text(speedup)}"),
                percent(m["top1_agreement"]),
                "-" if checked is None else percent(checked["top1_agreement"]),
                escape("; ".join(runs_as) or "-"),
            )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
