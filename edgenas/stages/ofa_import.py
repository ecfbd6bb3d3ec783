"""`edgenas import ofa-supernet`: one of OFA's published MobileNetV3 supernets as the folder
`edgenas train --out` writes (``supernet.pt``, ``space.json``), so that every command that
takes a trained supernet takes it. Not a stage of a run: it replaces the train stage."""

from __future__ import annotations

from pathlib import Path

from edgenas.run_layout import CHECKPOINT_NAME, SPACE_NAME, SUPERNET_NAME
from once_for_all.checkpoint import CheckpointError
from once_for_all.files import output_folder, write_json
from once_for_all.ofa_import import ImportedSupernet, import_ofa_file, write_imported


def import_ofa_supernet(source: Path, out: Path, *, width: str | None = None) -> ImportedSupernet:
    """Check ``source`` completely, then write ``out/supernet.pt`` and ``out/space.json``.
    A bad file writes nothing; an existing ``out/supernet.pt`` is refused, and so is a
    training's ``out/checkpoint.pt`` (its ``--resume`` would replace the import)."""
    target = out / SUPERNET_NAME
    if target.exists():
        raise CheckpointError(
            f"{target} exists: import into another --out folder, or delete it first"
        )
    if (out / CHECKPOINT_NAME).exists():
        raise CheckpointError(
            f"{out} holds a training checkpoint ({CHECKPOINT_NAME}), whose training would "
            "replace the imported supernet: import into another --out folder"
        )
    imported = import_ofa_file(source, width=width)
    output_folder(out)
    write_imported(imported, target)
    try:
        write_json(out / SPACE_NAME, imported.space.to_dict())
    except BaseException:
        target.unlink(missing_ok=True)  # no supernet without its space file
        raise
    return imported
