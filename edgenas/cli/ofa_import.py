"""`edgenas import ...`: supernets trained elsewhere, as edgenas run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from edgenas.console import err_console as console

import_app = typer.Typer(
    help="Import supernets trained elsewhere (OFA's published ImageNet supernets).",
    no_args_is_help=True,
)


@import_app.command("ofa-supernet")
def ofa_supernet_command(
    file: Annotated[
        Path, typer.Argument(help="OFA's ofa_mbv3_d234_e346_k357_w1.0 or _w1.2 checkpoint")
    ],
    out: Annotated[Path, typer.Option(help="folder for supernet.pt and space.json")],
    width: Annotated[
        Literal["1.0", "1.2"] | None,
        typer.Option(help="the width the file must have (default: the file's)"),
    ] = None,
) -> None:
    """Import OFA's MobileNetV3 supernet FILE (w1.0 or w1.2) as OUT/supernet.pt."""
    from edgenas.stages.ofa_import import import_ofa_supernet

    imported = import_ofa_supernet(file, out, width=width)
    console.print(
        f"{imported.ofa_net_id} -> {out / 'supernet.pt'}: space {imported.space.id}, "
        f"{imported.parameters:,} parameters, source sha256 {imported.sha256}"
    )
