"""`edgenas profile` and `edgenas latency predict|refit|validate`: lookup tables and predictors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgenas.cli.user_errors import SEED_MAX, fail, given, given_flags, interrupted
from edgenas.console import err_console, stage_progress
from edgenas.ctrl_c import INTERRUPTED
from edgenas.run_layout import RunLayout
from export.formats import AUTO_SPLIT_GROUPS, ModelFormat, Precision
from latency.predictors import MIN_CALIBRATION
from latency.profile_files import LUT_NAME, PREDICTOR_NAME

if TYPE_CHECKING:
    from devices.measurement import Measurement
    from latency.fleet import DeviceResult, ProfileOptions
    from latency.predictors import CalibratedPredictor, LutSumPredictor
    from latency.table import TableHeader

latency_app = typer.Typer(
    help="Latency predictors: predict a subnet's latency, validate a predictor on its device.",
    no_args_is_help=True,
)
logging.getLogger("paramiko").addHandler(logging.NullHandler())
DEFAULT_PROFILES = Path("runs/profiles")  # where search and export look device names up


def _calibration_count(value: int) -> int:
    """Option callback: a count that cannot fit a calibrated predictor fails first (it failed
    after the whole table was measured)."""
    if 0 < value < MIN_CALIBRATION:
        raise typer.BadParameter(
            f"{value} subnets cannot fit a calibrated predictor; give 0 (lut-sum only) or at "
            f"least {MIN_CALIBRATION}"
        )
    return value


JsonOption = Annotated[bool, typer.Option("--json", help="print JSON to stdout")]
QuietOption = Annotated[bool, typer.Option(help="no progress output")]
CacheOption = Annotated[
    Path | None,
    typer.Option(help="exported block/subnet models (default: $EDGENAS_CACHE or ~/.cache/edgenas)"),
]
WorkersOption = Annotated[
    int, typer.Option(min=1, help="parallel processes converting models (TFLite)")
]
PassesOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="device calls measuring each end-to-end subnet, in a shuffled order each; its "
        "latency is their median (default: 3 on timed devices, 1 on simulators)",
    ),
]


def profile_command(
    ctx: typer.Context,
    device: Annotated[
        list[str],
        typer.Argument(
            help="bundled device profiles or profile YAMLs; several are profiled at once"
        ),
    ],
    space: Annotated[
        str, typer.Option(help="search space: a built-in name (mbv3-tiny) or a space.json")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="one device's folder for lut.json and predictor.json"),
    ] = None,
    profiles: Annotated[
        Path | None,
        typer.Option(
            help="a folder per device: PROFILES/<device name>/ (default without --out: "
            "runs/profiles, where search and export look devices up)"
        ),
    ] = None,
    model_format: Annotated[
        ModelFormat | None, typer.Option("--format", help="model files to measure (device default)")
    ] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="fp32 or int8 (device default)")
    ] = None,
    calibrate: Annotated[
        int,
        typer.Option(
            min=0,
            help=f"subnets measured end to end to calibrate: 0 (lut-sum only) or at least "
            f"{MIN_CALIBRATION}",
            callback=_calibration_count,
        ),
    ] = 40,
    passes: PassesOption = None,
    resolution: Annotated[
        list[int] | None,
        typer.Option(
            help="profile only this input resolution (repeatable; default: all); more than "
            "the table in --out covers extend it in place"
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="models per device call (one call measures them interleaved)")
    ] = 32,
    tables: Annotated[
        Path | None,
        typer.Option(
            help="for a published device (samsung-note10): the folder holding its tables, "
            "imported instead of measured"
        ),
    ] = None,
    per_op: Annotated[
        bool,
        typer.Option(
            "--per-op",
            help="also store each block's per-op times (op type, ms, where it ran) in lut.json: "
            "onnxruntime, benchmark_model (adb), trtexec and the simulators give them",
        ),
    ] = False,
    stem_groups: Annotated[
        list[int] | None,
        typer.Option(
            "--stem-groups",
            min=2,
            help=f"int8 tables: also time the stem split in this many groups (repeatable), for "
            f"files exported with --stem-groups N; they always time it in {AUTO_SPLIT_GROUPS}, "
            "as --stem-groups auto splits it",
        ),
    ] = None,
    cache: CacheOption = None,
    workers: WorkersOption = 2,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Measure every distinct block of a space on a device (lut.json), then fit a calibrated
    predictor on subnets measured end to end (predictor.json). Rerun to resume; rerun with
    more --resolution options (the table's and new ones) to extend the table in place.

    With --profiles, every device given is profiled at once, one worker each, into
    PROFILES/<device name>/; a device that fails is reported at the end (exit code 1) and the
    others finish. A published device (samsung-note10: OFA's Note10 tables) is imported
    from --tables instead: the same two files, a lut-sum predictor."""
    from devices import load_profile
    from latency.fleet import ProfileOptions

    if out is not None and profiles is not None:
        raise fail("give --out (one device's folder) or --profiles (a folder per device), not both")
    if out is not None and len(device) > 1:
        raise fail(
            f"--out is one device's folder, and {len(device)} devices were given; use "
            "--profiles DIR instead (each device writes DIR/<device name>/)"
        )
    if calibrate == 0 and given(ctx, "passes"):
        raise fail(
            "--passes are of the calibration subnets, and --calibrate 0 measures none: leave one of them out"
        )
    if all(load_profile(d).kind == "published" for d in device):
        # Nothing is measured or exported: these were taken and did nothing.
        measuring = given_flags(ctx, ("calibrate", "passes", "batch_size", "workers"))
        if measuring:
            flag = measuring[0]
            raise fail(
                f"{flag}: {', '.join(device)} {'is' if len(device) == 1 else 'are'} published "
                f"latency tables, imported as they are, and nothing is measured; leave {flag} out"
            )
    if tables is not None and all(load_profile(d).kind != "published" for d in device):
        raise fail(
            "--tables is the folder of a published device's tables (e.g. samsung-note10); "
            "the devices given are measured"
        )
    # Without --precision a device measures its default (fp32 for most, int8 for Vela): the
    # groups asked would be left out of an fp32 table silently. A published device says
    # itself that nothing more can be measured (profile_published).
    fp32 = [
        d
        for d in device
        if stem_groups
        and load_profile(d).kind != "published"
        and (precision or _default_precision(d)) != "int8"
    ]
    if fp32:
        raise fail(
            f"--stem-groups times split stems for int8 files; {fp32[0]} measures fp32 files "
            "here, which keep the stem whole: give --precision int8 or leave --stem-groups out"
        )
    options = ProfileOptions(
        tables=tables,
        model_format=model_format,
        precision=precision,
        calibrate=calibrate,
        passes=passes,
        resolutions=tuple(resolution) if resolution else None,
        batch_size=batch_size,
        workers=workers,
        per_op=per_op,
        stem_groups=tuple(stem_groups or ()),
    )
    if out is not None:
        _profile_one(device[0], space, out, options, cache=cache, quiet=quiet, as_json=as_json)
    else:
        _profile_fleet(
            device,
            space,
            profiles or DEFAULT_PROFILES,
            options,
            cache=cache,
            quiet=quiet,
            as_json=as_json,
        )


def _profile_one(
    device: str,
    space: str,
    out: Path,
    options: ProfileOptions,
    *,
    cache: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    from edgenas.stages.profile import profile
    from latency.model_cache import ModelCache
    from once_for_all import get_space

    def say(message: str) -> None:
        if not quiet:
            err_console.print(escape(message))

    sp = get_space(space)
    profiled = profile(device, sp, out, options, cache=ModelCache(cache), quiet=quiet, say=say)
    table, predictor = profiled.table, profiled.predictor
    summary = {
        "space": sp.id,
        "device": table.header.device,
        "blocks": len(table),
        "lut": str(out / LUT_NAME),
        "predictor": str(out / PREDICTOR_NAME),
        "kind": predictor.kind,
        "validation": getattr(predictor, "validation", {}),
        "reference": table.header.reference.to_dict() if table.header.reference else None,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    err_console.print(f"table: {len(table)} blocks in {escape(str(out / LUT_NAME))}")
    if predictor.kind == "calibrated":
        v = summary["validation"]
        assert isinstance(v, dict)
        _print_figures(
            f"calibration ({v['method']}; model {v['chosen']})",
            {"lut-sum": v["lut_sum"], "calibrated": v["calibrated"]},
        )
    err_console.print(f"predictor ({predictor.kind}): {escape(str(out / PREDICTOR_NAME))}")


def _profile_fleet(
    devices: list[str],
    space: str,
    profiles: Path,
    options: ProfileOptions,
    *,
    cache: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    from devices import load_profile
    from edgenas.stages.profile import profile_many
    from latency.blocks import profiled_resolutions
    from latency.fleet import HOST_KINDS, FleetJob, check_fleet
    from latency.model_cache import ModelCache
    from once_for_all import get_space

    sp = get_space(space)
    jobs = [FleetJob(d, profiles / load_profile(d).name, options) for d in devices]
    kinds = {p.name: p.kind for p in check_fleet(jobs)}
    profiled_resolutions(sp, options.resolutions)  # the same for every device: check once
    if not quiet:
        err_console.print(
            f"{escape(sp.id)}: profiling {len(jobs)} device(s) at once into "
            f"{escape(str(profiles))}/<device>/",
            highlight=False,
        )
        local = [n for n, k in kinds.items() if k == "local"]
        if local and len(kinds) > 1:
            host = [n for n, k in kinds.items() if k in HOST_KINDS]
            turns = ", one device at a time" if len(host) > 1 else ""
            err_console.print(
                f"[dim]{escape(', '.join(host))}: measured on this host's CPU once every "
                f"device's models are exported{turns}, so that local timings are not taken "
                "beside other work; remote devices measure in parallel[/dim]",
                highlight=False,
            )
    outcome = profile_many(jobs, sp, cache=ModelCache(cache), quiet=quiet)
    results = outcome.results
    failed = [r for r in results if not r.ok]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "space": sp.id,
                    "profiles": str(profiles),
                    "devices": [r.to_dict() for r in results],
                    "failed": len(failed),
                }
            )
        )
    elif not quiet:
        _print_fleet(results)
    for r in failed if quiet or as_json else ():
        error = r.error or ""
        named = error if f"'{r.name}'" in error else f"device {r.name!r}: {error}"
        err_console.print(f"[bold red]error:[/] {escape(named)}", highlight=False, soft_wrap=True)
    if outcome.interrupted:
        raise interrupted(INTERRUPTED["profile"])
    if failed:
        if not quiet and not as_json:
            if len(failed) < len(results):
                done = f"{len(failed)} of {len(results)} device(s) failed; the others are complete."
            elif len(results) > 1:
                done = f"All {len(results)} devices failed."
            else:
                done = "The device failed."
            err_console.print(
                f"{done} Fix the cause and run the same command again: finished work is skipped.",
                highlight=False,
            )
        raise typer.Exit(code=1)


def _print_fleet(results: list[DeviceResult]) -> None:
    table = Table(title="profiles", title_justify="left")
    # Nothing is cut at a narrow width: device names (twins differ by a suffix), errors and
    # folders fold onto more lines instead.
    table.add_column("device", no_wrap=True, min_width=max(len(r.name) for r in results))
    for col in ("status", "blocks", "predictor", "folder"):
        table.add_column(col, justify="right" if col == "blocks" else "left", overflow="fold")
    for r in results:
        status = "[green]ok[/]" if r.ok else f"[red]failed:[/] {escape(r.error or '')}"
        predictor = r.kind or "-"
        figures = r.validation.get("calibrated") if r.kind == "calibrated" else None
        if figures:
            predictor += (
                f" (cv: ±10% {100 * figures['within_10pct']:.0f}%, ρ {figures['spearman']:.3f})"
            )
        table.add_row(
            escape(r.name),
            status,
            f"{r.blocks}/{r.total_blocks}",
            predictor,
            escape(str(r.out)),
        )
    Console(stderr=True).print(table)


def _print_figures(title: str, rows: dict[str, dict[str, float]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("predictor", "n", "RMSE ms", "RMSPE", "±5%", "±10%", "Spearman ρ", "Kendall τ"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    for name, f in rows.items():
        table.add_row(
            name,
            str(int(f["n"])),
            f"{f['rmse_ms']:.4f}",
            f"{100 * f['rmspe']:.1f}%",
            f"{100 * f['within_5pct']:.0f}%",
            f"{100 * f['within_10pct']:.0f}%",
            f"{f['spearman']:.3f}",
            f"{f['kendall']:.3f}",
        )
    Console(stderr=True).print(table)


def _normalisation(
    header: TableHeader, measurements: list[Measurement | None]
) -> dict[str, float] | None:
    """How the validation measurements were normalised (``None``: raw timings)."""
    from latency.reference import reference_scale

    ref = header.reference
    if ref is None or ref.baseline_ms is None:
        return None
    scales = sorted(reference_scale(m) for m in measurements if m is not None)
    return {
        "baseline_ms": ref.baseline_ms,
        "scale_min": scales[0],
        "scale_median": scales[len(scales) // 2],
        "scale_max": scales[-1],
    }


def _describe_normalisation(reference: dict[str, float] | None) -> str:
    if reference is None:
        return (
            "measured latencies are compared as measured: the predictor has no reference "
            "model (a simulated device, or a table made before reference models)"
        )
    return (
        "measured latencies are normalised to the table's reference model (baseline "
        f"{reference['baseline_ms']:.4f} ms): raw × {reference['scale_min']:.3f}–"
        f"{reference['scale_max']:.3f} (median {reference['scale_median']:.3f})"
    )


PREDICTOR_HELP = "predictor.json from edgenas profile, or the folder that holds it"


def _predictor_file(path: Path) -> Path:
    """Option callback: a folder holding predictor.json (edgenas profile's --out) stands for
    that file, as search's --device takes it (it was "not a latency predictor (Is a
    directory)"; walk-through). A folder without one says why it has none."""
    if not path.is_dir():
        return path
    if (path / PREDICTOR_NAME).is_file():
        return path / PREDICTOR_NAME
    if (path / LUT_NAME).is_file():
        raise typer.BadParameter(
            f"{path} holds a table ({LUT_NAME}) but no {PREDICTOR_NAME}: its profile did not "
            "finish; run the same edgenas profile command again to finish it"
        )
    raise typer.BadParameter(
        f"{path} is a folder without {PREDICTOR_NAME}: give the predictor.json that edgenas "
        "profile wrote, or the --out folder that holds it"
    )


def _load(path: Path) -> LutSumPredictor | CalibratedPredictor:
    from latency.predictors import load_predictor

    return load_predictor(path)


@latency_app.command("predict")
def predict_command(
    predictor: Annotated[Path, typer.Option(help=PREDICTOR_HELP, callback=_predictor_file)],
    subnet: Annotated[str, typer.Option(help="max, min, random, or a subnet JSON file")],
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed for --subnet random")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Predicted latency of one subnet on the predictor's device (max, min and random at
    the resolutions its table covers)."""
    from edgenas.subnet_choice import choose_subnet

    p = _load(predictor)
    chosen = choose_subnet(subnet, p.space, seed=seed, resolutions=p.header.resolutions)
    ms = p.predict(chosen)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "subnet": chosen.to_dict(),
                    "latency_ms": ms,
                    "device": p.header.device,
                    "kind": p.kind,
                }
            )
        )
    else:
        # max, min and random are at a resolution the table covers: say which (walk-through)
        typer.echo(f"{ms:.4f} ms on {p.header.device} ({p.kind}), subnet {chosen.key}")


@latency_app.command("refit")
def refit_command(
    predictor: Annotated[Path, typer.Argument(help=PREDICTOR_HELP, callback=_predictor_file)],
) -> None:
    """Fit a calibrated predictor again from the calibration subnets and times it keeps,
    where edgenas refuses it because its model predicts no time for some subnet (an older
    edgenas's fit, or an edited file). Measures nothing, so the device is not needed."""
    from latency.predictors import refit_refused

    devices = predictor.resolve().parent.parent  # a run keeps it as RUN/devices/NAME/
    run = devices.parent
    if (
        predictor.name == PREDICTOR_NAME
        and devices.name == "devices"
        and _run_refits(run, predictor.resolve().parent.name)
    ):
        # Rewriting a run's recorded output would have edgenas run profile the device again.
        raise fail(
            f"{predictor} belongs to the run folder {run}: rerun edgenas run on its recipe, "
            "which refits it and records the refit"
        )
    done = refit_refused(predictor)
    typer.echo(f"{predictor}: {done}" if done else f"{predictor} loads as it is: nothing to refit")


def _run_refits(run: Path, device: str) -> bool:
    """Whether rerunning the run folder ``run`` rewrites ``device``'s predictor: the recipe it
    last ran names the device and either profiles it (again where its files changed or the
    profile stopped, else refitting the predictor: the pipeline's ``_refit_refused``), or
    searches or exports with its files as the profile stage wrote them (``_refit_recorded``).
    A run.json or recipe that does not read counts: the run is left to edgenas run. Anything
    else (a copy the user put there, a device the recipe dropped) is the user's to refit:
    refused, it would send them to a rerun that never refits it."""
    from edgenas.recipe import Recipe
    from edgenas.run_folder import RunFolder
    from once_for_all.errors import EdgenasError

    layout = RunLayout(run)
    if not layout.record.is_file():
        return False
    try:
        recipe = Recipe.model_validate(json.loads(layout.record.read_text())["recipe"])
        recorded = RunFolder(run, recipe, layout.record)
    except (OSError, ValueError, KeyError, TypeError, EdgenasError):
        return True
    if not any(_names_device(section.name, device) for section in recipe.devices):
        return False
    key = f"profile:{device}"
    stages = recipe.planned_stages
    if "profile" in stages:
        return key in recorded.stages or key in recorded.started
    return (
        key in recorded.stages
        and key not in recorded.started
        and not recorded.changed_outputs(key)
        and bool({"search", "export"} & set(stages))
    )


def _names_device(section: str, device: str) -> bool:
    """Whether a recipe's device section ``section`` (a profile's name or path) is ``device``."""
    from devices.base import DeviceError
    from edgenas.stage_inputs import device_name

    try:
        return device_name(section) == device
    except DeviceError:  # a profile gone since: that rerun fails before it rewrites anything
        return False


@latency_app.command("validate")
def validate_command(
    device: Annotated[str, typer.Argument(help="the device the predictor was built for")],
    predictor: Annotated[Path, typer.Option(help=PREDICTOR_HELP, callback=_predictor_file)],
    n: Annotated[
        int,
        typer.Option(
            "--n",
            min=2,
            max=10_000,  # hours of measuring already; more drew subnets silently for minutes
            help="random subnets to measure end to end (as many again at the resolutions "
            "each extension of the table added)",
        ),
    ] = 100,
    seed: Annotated[
        int, typer.Option(min=0, max=SEED_MAX, help="seed of the validation subnets")
    ] = 1,
    passes: PassesOption = None,
    stem_groups: Annotated[
        int,
        typer.Option(
            "--stem-groups",
            min=1,
            help="int8: measure the subnets with their stem in this many groups of channels, "
            "as export writes a split stem, against the table's split-stem prediction",
        ),
    ] = 1,
    plot: Annotated[
        Path | None,
        typer.Option(help="scatter plot PNG (default: validation.png beside it)"),
    ] = None,
    cache: CacheOption = None,
    workers: WorkersOption = 2,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Measure N random subnets (never used for fitting) end to end and compare with the
    predictor: RMSE, RMSPE, ±5%/±10% accuracy, Spearman ρ, Kendall τ, and a scatter plot.
    With --stem-groups 2 the subnets are int8 files with their stem split, kept apart in
    validation-stem2.json."""
    from devices import open_device
    from latency.end_to_end import MeasuredSubnets, table_subnets
    from latency.metrics import validation_figures
    from latency.model_cache import ModelCache
    from latency.plots import scatter_plot
    from latency.predictors import CalibratedPredictor
    from latency.profiler import ProfileSettings
    from once_for_all.files import output_folder

    loaded = _load(predictor)
    split = f"-stem{stem_groups}" if stem_groups > 1 else ""
    p = loaded.split_stem(stem_groups) if split else loaded
    if p is None and loaded.header.precision != "int8":
        raise fail(
            f"predictor {predictor} has no entry for the stem in {stem_groups} groups: it is "
            f"for {loaded.header.precision} files, whose stem is never split; validate the "
            "predictor of an int8 table (edgenas profile --precision int8)"
        )
    if p is None:
        raise fail(
            f"predictor {predictor} has no entry for the stem in {stem_groups} groups: profile "
            f"the device again with --stem-groups {stem_groups} (the table resumes: only the "
            "split stems are measured)"
        )
    png = plot or predictor.parent / f"validation{split}.png"
    if png.is_dir():
        raise fail(f"--plot {png} is a folder: give the PNG file's path")
    if png.is_file() and not _is_png(png):  # a mistyped path overwrote notes with the plot
        raise fail(
            f"--plot {png} exists and is not a PNG image: give a new path or a plot's (a plot "
            "never overwrites other files)"
        )
    output_folder(png.parent)  # before measuring, not after
    calibration = [
        p.space.subnet_from_dict(s) for s in getattr(p, "calibration", {}).get("subnets", [])
    ]
    # N per group of resolutions the table got (an extended table's: its earlier ones too).
    subnets = table_subnets(p.space, n, p.header, seed=seed + 1_000_003, exclude=calibration)
    with open_device(device) as dev:
        p.header.check(
            what=f"predictor {predictor}",
            fingerprint=dev.fingerprint(),
            measured_with=dev.measured_with(),
            device=dev.name,
            elsewhere=f"profile {dev.name} again (edgenas profile) and validate that predictor",
        )
        settings = ProfileSettings.of(p.header)
        store = MeasuredSubnets(predictor.parent / f"validation{split}.json", p.header)
        with stage_progress("validation subnets", quiet=quiet) as progress:
            measured = store.measure(
                dev,
                p.space,
                subnets,
                cache=ModelCache(cache),
                settings=settings,
                passes=passes,
                workers=workers,
                progress=progress,
                stem_groups=stem_groups,
            )
        reference = _normalisation(store.header, [store.get(s) for s in subnets])
    predicted = p.predict_many(subnets)
    figures = validation_figures(predicted, measured)
    scatter_plot(
        predicted,
        measured,
        png,
        title=f"{p.kind} on {p.header.device} ({p.space.id}, n={len(subnets)}"
        + (f", stem in {stem_groups} groups)" if split else ")"),
        figures=figures,
    )
    if as_json:
        keys = ("n", "rmse_ms", "rmspe", "within_5pct", "within_10pct", "spearman", "kendall")
        typer.echo(json.dumps({**{k: figures[k] for k in keys}, "reference": reference}))
        return
    err_console.print(_describe_normalisation(reference))
    rows = {p.kind: figures}
    if isinstance(loaded, CalibratedPredictor):
        base = loaded.base.split_stem(stem_groups) if split else loaded.base
        assert base is not None  # the calibrated one's split came from it
        rows = {"lut-sum": validation_figures(base.predict_many(subnets), measured), **rows}
    _print_figures(f"validation on {p.header.device}: {len(subnets)} held-out subnets", rows)
    err_console.print(f"scatter plot: {escape(str(png))}")


def _default_precision(device: str) -> Precision:
    """The precision ``device`` measures without --precision (``profile_settings``'s)."""
    from devices import load_profile
    from latency.profiler import RUNTIME_PRECISIONS

    return RUNTIME_PRECISIONS.get(load_profile(device).files_runtime, ("fp32",))[0]


def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False
