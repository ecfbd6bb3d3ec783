"""`edgenas profile` and `edgenas latency predict|validate`: lookup tables and predictors."""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgenas.console import err_console, fail, stage_progress

if TYPE_CHECKING:
    from devices.measurement import Measurement
    from latency.predictors import CalibratedPredictor, LutSumPredictor
    from latency.table import TableHeader

latency_app = typer.Typer(
    help="Latency predictors: predict a subnet's latency, validate a predictor on its device.",
    no_args_is_help=True,
)
logging.getLogger("paramiko").addHandler(logging.NullHandler())

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON to stdout")]
QuietOption = Annotated[bool, typer.Option(help="no progress output")]
CacheOption = Annotated[
    Path | None,
    typer.Option(help="exported block/subnet models (default: $EDGENAS_CACHE or ~/.cache/edgenas)"),
]
WorkersOption = Annotated[
    int, typer.Option(min=1, help="parallel processes converting models (TFLite)")
]


class Format(str, Enum):
    onnx = "onnx"
    tflite = "tflite"


class PrecisionChoice(str, Enum):
    fp32 = "fp32"
    int8 = "int8"


def _user_errors() -> tuple[type[Exception], ...]:
    from devices import DeviceError
    from latency.model_cache import ExportFailed
    from latency.table import TableError
    from once_for_all import SubnetError

    return (DeviceError, TableError, SubnetError, ExportFailed, ValueError)


def profile_command(
    device: Annotated[str, typer.Argument(help="a bundled device profile or a profile YAML")],
    space: Annotated[str, typer.Option(help="search space, e.g. mbv3-tiny")],
    out: Annotated[Path, typer.Option(help="folder for lut.json and predictor.json")],
    model_format: Annotated[
        Format | None, typer.Option("--format", help="model files to measure (device default)")
    ] = None,
    precision: Annotated[
        PrecisionChoice | None, typer.Option(help="fp32 or int8 (device default)")
    ] = None,
    calibrate: Annotated[
        int, typer.Option(min=0, help="subnets measured end to end to calibrate (0: lut-sum only)")
    ] = 40,
    resolution: Annotated[
        list[int] | None,
        typer.Option(help="profile only this input resolution (repeatable; default: all)"),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="models per device call (one call measures them interleaved)")
    ] = 32,
    cache: CacheOption = None,
    workers: WorkersOption = 2,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Measure every distinct block of a space on a device (lut.json), then fit a calibrated
    predictor on subnets measured end to end (predictor.json). Rerun to resume."""
    from devices import open_device
    from latency.blocks import enumerate_blocks, profiled_resolutions
    from latency.end_to_end import MeasuredSubnets, random_subnets
    from latency.model_cache import ModelCache
    from latency.predictors import LutSumPredictor
    from latency.predictors import calibrate as fit_calibration
    from latency.profiler import profile_blocks, settings_for
    from once_for_all import get_space

    try:
        sp = get_space(space)
        resolutions = profiled_resolutions(sp, resolution or None)
        n_blocks = len(enumerate_blocks(sp, resolutions=resolutions))
        models = ModelCache(cache)
        with open_device(device) as dev:
            fp = dev.fingerprint()
            settings = settings_for(
                fp,
                dev.name,
                model_format=model_format.value if model_format else None,
                precision=precision.value if precision else None,
            )
            if not quiet:
                err_console.print(
                    f"{escape(sp.id)}: {n_blocks} distinct blocks to profile on "
                    f"{escape(dev.name)} ({fp.runtime}, {settings.model_format} {settings.precision})"
                )
            with stage_progress("blocks", quiet=quiet) as progress:
                table = profile_blocks(
                    dev,
                    sp,
                    out / "lut.json",
                    cache=models,
                    model_format=settings.model_format,
                    precision=settings.precision,
                    resolutions=resolutions,
                    batch_size=batch_size,
                    workers=workers,
                    progress=progress,
                )
            base = LutSumPredictor.from_table(sp, table)
            base.save(out / "lut-sum.json")
            predictor: LutSumPredictor | CalibratedPredictor = base
            if calibrate:
                subnets = random_subnets(
                    sp, calibrate, seed=0, resolutions=resolutions, extremes=True
                )
                store = MeasuredSubnets(out / "calibration.json", table.header)
                with stage_progress("calibration subnets", quiet=quiet) as progress:
                    measured = store.measure(
                        dev,
                        sp,
                        subnets,
                        cache=models,
                        settings=settings,
                        batch_size=batch_size,
                        workers=workers,
                        progress=progress,
                    )
                predictor = fit_calibration(base, subnets, measured)
            predictor.save(out / "predictor.json")
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    summary = {
        "space": sp.id,
        "device": table.header.device,
        "blocks": len(table),
        "lut": str(out / "lut.json"),
        "predictor": str(out / "predictor.json"),
        "kind": predictor.kind,
        "validation": getattr(predictor, "validation", {}),
        "reference": table.header.reference.to_dict() if table.header.reference else None,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    err_console.print(f"table: {len(table)} blocks in {escape(str(out / 'lut.json'))}")
    if predictor.kind == "calibrated":
        v = summary["validation"]
        assert isinstance(v, dict)
        _print_figures(
            f"calibration ({v['method']}; model {v['chosen']})",
            {"lut-sum": v["lut_sum"], "calibrated": v["calibrated"]},
        )
    err_console.print(f"predictor ({predictor.kind}): {escape(str(out / 'predictor.json'))}")


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


def _load(path: Path) -> LutSumPredictor | CalibratedPredictor:
    from latency.predictors import load_predictor

    return load_predictor(path)


@latency_app.command("predict")
def predict_command(
    predictor: Annotated[Path, typer.Option(help="predictor.json from edgenas profile")],
    subnet: Annotated[str, typer.Option(help="max, min, random, or a subnet JSON file")],
    seed: Annotated[int, typer.Option(help="seed for --subnet random")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Predicted latency of one subnet on the predictor's device."""
    from edgenas.subnet_choice import choose_subnet

    try:
        p = _load(predictor)
        chosen = choose_subnet(subnet, p.space, seed=seed)
        ms = p.predict(chosen)
    except _user_errors() as exc:
        raise fail(str(exc)) from None
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
        typer.echo(f"{ms:.4f} ms on {p.header.device} ({p.kind})")


@latency_app.command("validate")
def validate_command(
    device: Annotated[str, typer.Argument(help="the device the predictor was built for")],
    predictor: Annotated[Path, typer.Option(help="predictor.json from edgenas profile")],
    n: Annotated[
        int, typer.Option("--n", min=2, help="random subnets to measure end to end")
    ] = 100,
    seed: Annotated[int, typer.Option(help="seed of the validation subnets")] = 1,
    plot: Annotated[
        Path | None, typer.Option(help="scatter plot PNG (default: validation.png beside it)")
    ] = None,
    cache: CacheOption = None,
    workers: WorkersOption = 2,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Measure N random subnets (never used for fitting) end to end and compare with the
    predictor: RMSE, RMSPE, ±5%/±10% accuracy, Spearman ρ, Kendall τ, and a scatter plot."""
    from devices import open_device
    from latency.end_to_end import MeasuredSubnets, random_subnets
    from latency.metrics import validation_figures
    from latency.model_cache import ModelCache
    from latency.plots import scatter_plot
    from latency.profiler import ProfileSettings

    try:
        p = _load(predictor)
        calibration = [
            p.space.subnet_from_dict(s) for s in getattr(p, "calibration", {}).get("subnets", [])
        ]
        subnets = random_subnets(
            p.space,
            n,
            seed=seed + 1_000_003,
            resolutions=p.header.resolutions,
            exclude=calibration,
        )
        with open_device(device) as dev:
            p.header.check(what=f"predictor {predictor}", fingerprint=dev.fingerprint())
            settings = ProfileSettings(p.header.model_format, p.header.precision)
            store = MeasuredSubnets(predictor.parent / "validation.json", p.header)
            with stage_progress("validation subnets", quiet=quiet) as progress:
                measured = store.measure(
                    dev,
                    p.space,
                    subnets,
                    cache=ModelCache(cache),
                    settings=settings,
                    workers=workers,
                    progress=progress,
                )
            reference = _normalisation(store.header, [store.get(s) for s in subnets])
        predicted = p.predict_many(subnets)
        figures = validation_figures(predicted, measured)
        png = plot or predictor.parent / "validation.png"
        scatter_plot(
            predicted,
            measured,
            png,
            title=f"{p.kind} on {p.header.device} ({p.space.id}, n={n})",
            figures=figures,
        )
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    if as_json:
        keys = ("n", "rmse_ms", "rmspe", "within_5pct", "within_10pct", "spearman", "kendall")
        typer.echo(json.dumps({**{k: figures[k] for k in keys}, "reference": reference}))
        return
    err_console.print(_describe_normalisation(reference))
    rows = {p.kind: figures}
    if p.kind == "calibrated":
        rows = {"lut-sum": validation_figures(p.base.predict_many(subnets), measured), **rows}  # type: ignore[union-attr]
    _print_figures(f"validation on {p.header.device}: {n} held-out subnets", rows)
    err_console.print(f"scatter plot: {escape(str(png))}")
