"""The adversarial round of issue 24: bad input to every ``edgenas`` command, classified.

    make demo   # once: writes runs/quickstart, the finished run folder the cases start from
    python -m benchmarks.adversarial --run runs/quickstart [--only SUBSTRING] [--jobs 2]
    python -m benchmarks.adversarial --run runs/quickstart --part scenarios   # or --part all

``--part cases`` (the default) runs the bad-input cases below; ``--part scenarios`` the
interruption, concurrency, network and disk scenarios of benchmarks/adversarial_scenarios.py
(kill -9 and Ctrl-C of train, search, profile and export, then a rerun or --resume; two
commands on one --out; ``edgenas run`` after only search.trials changed; stalled, refused
and untrusted SSH servers; a full and a read-only tmpfs), one at a time: 15 minutes on 2
shared cores.

Each case is a real ``python -m edgenas ...`` process (its own timeout) on a copy of the run
folder (copied to a temporary folder; the original is never written): bad numbers (nan, inf,
1e400, negative, zero), wrong types, missing, empty, truncated, non-UTF-8 and binary files
(checkpoint, recipe, subnet JSON, predictor and lut JSON, pareto.json with a future format
tag, SCALE-Sim cfg and topology), a table for another device, unknown devices and profiles,
an --out that is a file or lies under one, unknown subnet keys, data replaced after training
(other classes, RGB for grayscale), a garbage or torn line in study.log. Outcome classes:

- ``one-line error``: non-zero exit, no traceback, one line naming the problem (a typer usage
  error counts: its box holds one message line);
- ``handled``: exit 0 where that is right (a torn journal line, a valid control case);
- ``traceback``; ``silent wrong result``: exit 0 on input that must be refused;
- ``unclear message``: several lines, a huge line, or a line that does not name what is wrong;
- ``refused``: a non-zero exit where the input was valid;
- ``hang``: no answer within the case's timeout (work that should have been refused first);
- ``partial file left``: a failure that left a temporary or half-written file in its --out.

Prints one JSON object on stdout (counts per class, the non-clean cases with their first
stderr line; the scenarios' under ``scenarios``), progress on stderr. Root ignores permission
bits, so read-only folders are not among the cases; the scenarios mount a read-only tmpfs.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.command_line import ArgumentParser, Refused, at_least, run_main

Setup = Callable[[Path, Path], None]  # (run copy, the case's own folder)

BINARY = bytes(range(256)) * 8 + b"\x00\xff\xfe" * 100
NON_UTF8 = b"# caf\xe9 \xff\xfe\n"
CLEAN = ("one-line error", "handled")


@dataclass(frozen=True)
class Case:
    """``args`` may hold ``{R}`` (the run copy) and ``{T}`` (the case's folder). ``expect``:
    ``error`` (must be refused), ``ok`` (must succeed) or ``any`` (either, if clean).
    ``names``: a text the error line must contain (the file, option or value at fault).
    ``out``: the output folder checked for temporary files after a failure."""

    name: str
    args: list[str]
    expect: str = "error"
    names: str = ""
    setup: Setup | None = None
    out: str = ""
    timeout: float = 120.0


@dataclass
class Outcome:
    name: str
    outcome: str
    rc: int | None
    seconds: float
    first_line: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


# --- files a case writes into its folder ------------------------------------------------


def write(rel: str, content: bytes | str) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def truncated(src: str, rel: str) -> Setup:
    """Half of the run's file ``src`` (a write cut short)."""

    def setup(run: Path, tmp: Path) -> None:
        data = (run / src).read_bytes()
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data[: len(data) // 2])

    return setup


def edited_json(src: str, rel: str, edit: Callable[[Any], Any], raw: str = "") -> Setup:
    """The run's JSON file ``src`` changed by ``edit`` (which may return a new document);
    ``raw`` text replaces the string ``"@RAW@"`` (for NaN, which json.dumps would write)."""

    def setup(run: Path, tmp: Path) -> None:
        doc = json.loads((run / src).read_text())
        doc = edit(doc) or doc
        text = json.dumps(doc, indent=1)
        if raw:
            text = text.replace('"@RAW@"', raw)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)

    return setup


def copied(src: str, rel: str) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (run / src).is_dir():
            shutil.copytree(run / src, target)
        else:
            shutil.copy2(run / src, target)

    return setup


def appended(rel: str, text: bytes) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        with open(tmp / rel, "ab") as f:
            f.write(text)

    return setup


def chain(*steps: Setup) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        for step in steps:
            step(run, tmp)

    return setup


def recipe(rel: str, change: Callable[[dict[str, Any]], Any], raw: str = "") -> Setup:
    """The run's recipe (from run.json) changed by ``change``, as YAML; ``raw`` replaces
    the string ``@RAW@`` (YAML text such as ``1.0e+400`` that a dump would not write)."""

    def setup(run: Path, tmp: Path) -> None:
        import yaml

        doc = json.loads((run / "run.json").read_text())["recipe"]
        change(doc)
        text = yaml.safe_dump(doc, sort_keys=False)
        if raw:
            text = text.replace("'@RAW@'", raw).replace("@RAW@", raw)
        (tmp / rel).write_text(text.replace("{T}", str(tmp)))  # files in the case's folder

    return setup


def data_replaced(kind: str) -> Setup:
    """supernet.pt recorded as trained on an .npz, which now holds other data: other classes,
    or RGB where the net was trained on grayscale (the checkpoint's data spec is kept)."""

    def setup(run: Path, tmp: Path) -> None:
        import numpy as np

        from once_for_all.checkpoint import load_checkpoint, save_checkpoint

        rng = np.random.default_rng(0)
        shape = (400, 28, 28, 3) if kind == "rgb" else (400, 28, 28)
        labels = np.arange(400) % (10 if kind == "rgb" else 4)
        np.savez(tmp / "data.npz", x=rng.integers(0, 256, shape).astype(np.uint8), y=labels)
        payload: Any = load_checkpoint(run / "supernet.pt")
        payload["data"] = {**payload["data"], "source": str(tmp / "data.npz"), "val_size": 100}
        payload["data"].pop("train_limit", None)
        save_checkpoint(tmp / "supernet.pt", payload)

    return setup


def set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def recipe_with(dotted: str, value: Any, raw: str = "") -> Setup:
    return recipe("r.yaml", lambda doc: set_path(doc, dotted, value), raw=raw)


# --- the catalogue ----------------------------------------------------------------------

BAD_NUMBERS = [("nan", ".nan"), ("inf", ".inf"), ("1e400", "1.0e+400"), ("negative", "-1.0")]
PARETO = "search/pareto.json"
# the demo's two devices chose one member: a bare pareto.json is refused as ambiguous
FRONT0 = "{R}/search/pareto.json#0"
CPU = "devices/local-cpu"
NPU = "devices/npu-32x32-ws"


def file_cases(
    command: str,
    build: Callable[[str], list[str]],
    rel: str,
    src: str,
    names: str = "",
    *,
    every: bool = False,
) -> list[Case]:
    """Binary, non-UTF-8 and truncated versions of the file ``build`` puts at ``{T}/rel``
    (``src``: the run's file truncated; none when empty), and with ``every`` also missing,
    empty and a folder in its place (the kinds every reader shares: one command each)."""
    target = "{T}/" + rel
    cases = [
        Case(f"{command}: {rel} missing", build(target), names=names or rel),
        Case(f"{command}: {rel} empty", build(target), names=names or rel, setup=write(rel, b"")),
        Case(
            f"{command}: {rel} binary", build(target), names=names or rel, setup=write(rel, BINARY)
        ),
        Case(
            f"{command}: {rel} non-UTF-8",
            build(target),
            names=names or rel,
            setup=write(rel, NON_UTF8),
        ),
        Case(
            f"{command}: {rel} is a folder",
            build(target),
            names=names or rel,
            setup=lambda run, tmp: (tmp / rel).mkdir(parents=True),
        ),
    ]
    if src:
        cases.append(
            Case(
                f"{command}: {rel} truncated",
                build(target),
                names=names or rel,
                setup=truncated(src, rel),
            )
        )
    if not every:
        dropped = ("missing", "empty", "is a folder")
        cases = [c for c in cases if not c.name.endswith(dropped)]
    return cases


def out_cases(
    command: str, build: Callable[[str], list[str]], setup: Setup | None = None
) -> list[Case]:
    """--out that is a file, or lies under a file."""
    file_out = write("afile", b"a file\n")
    return [
        Case(
            f"{command}: --out is a file",
            build("{T}/afile"),
            names="afile",
            setup=chain(file_out, setup) if setup else file_out,
        ),
        Case(
            f"{command}: --out under a file",
            build("{T}/afile/out"),
            names="afile",
            setup=chain(file_out, setup) if setup else file_out,
        ),
    ]


def train_cases() -> list[Case]:
    def train(rec: str = "{T}/r.yaml", *extra: str) -> list[str]:
        return ["train", rec, "--out", "{T}/out", "--quiet", *extra]

    cases = file_cases("train", lambda p: train(p), "r.yaml", "", names="r.yaml", every=True)
    cases += [
        Case(
            "train: recipe YAML syntax error",
            train(),
            names="line",
            setup=write("r.yaml", "name: x\ntrain: {lr: [1,\n"),
        ),
        Case(
            "train: recipe is a YAML list",
            train(),
            names="r.yaml",
            setup=write("r.yaml", "- a\n- b\n"),
        ),
        Case(
            "train: unknown top-level key",
            train(),
            names="colour",
            setup=recipe_with("colour", "red"),
        ),
        Case(
            "train: unknown phase key",
            train(),
            names="speed",
            setup=recipe_with("train.phases.0.speed", 2),
        ),
        Case(
            "train: unknown space",
            train(),
            names="no-such-space",
            setup=recipe_with("space", "no-such-space"),
        ),
        Case("train: phases []", train(), names="phases", setup=recipe_with("train.phases", [])),
        Case(
            "train: batch_size 0",
            train(),
            names="batch_size",
            setup=recipe_with("train.batch_size", 0),
        ),
        Case(
            "train: batch_size 'abc'",
            train(),
            names="batch_size",
            setup=recipe_with("train.batch_size", "abc"),
        ),
        Case(
            "train: batch_size 1.5",
            train(),
            names="batch_size",
            setup=recipe_with("train.batch_size", 1.5),
        ),
        Case(
            "train: epochs -1",
            train(),
            names="epochs",
            setup=recipe_with("train.phases.0.epochs", -1),
        ),
        Case(
            "train: epochs 'two'",
            train(),
            names="epochs",
            setup=recipe_with("train.phases.0.epochs", "two"),
        ),
        Case("train: val_size 0", train(), names="val_size", setup=recipe_with("data.val_size", 0)),
        Case(
            "train: val_size -5", train(), names="val_size", setup=recipe_with("data.val_size", -5)
        ),
        Case(
            "train: train_limit 0",
            train(),
            names="train_limit",
            setup=recipe_with("data.train_limit", 0),
        ),
        Case(
            "train: threads 0 in recipe",
            train(),
            names="threads",
            setup=recipe_with("train.threads", 0),
        ),
        Case(
            "train: --threads 0",
            train("{T}/r.yaml", "--threads", "0"),
            names="threads",
            setup=recipe_with("name", "x"),
        ),
        Case(
            "train: --device tpu",
            train("{T}/r.yaml", "--device", "tpu"),
            names="tpu",
            setup=recipe_with("name", "x"),
        ),
        Case(
            "train: data source missing",
            train(),
            names="nothing.npz",
            setup=recipe_with("data.source", "/nonexistent/nothing.npz"),
        ),
        Case(
            "train: data .npz binary",
            train(),
            names="bad.npz",
            setup=chain(
                write("bad.npz", BINARY),
                recipe("r.yaml", lambda d: d["data"].update(source="{T}/bad.npz")),
            ),
        ),
        Case(
            "train: kd_ratio nan",
            train(),
            names="kd_ratio",
            setup=recipe_with("train.phases.1.kd_ratio", "@RAW@", raw=".nan"),
        ),
        Case(
            "train: momentum 2", train(), names="momentum", setup=recipe_with("train.momentum", 2.0)
        ),
        Case(
            "train: ks [4] not in space",
            train(),
            names="4",
            setup=recipe_with("train.phases.1.ks", [4]),
        ),
        Case(
            "train: out holds a finished supernet",
            train(),
            names="checkpoint",
            setup=chain(
                recipe_with("name", "x"),
                copied("supernet.pt", "out/supernet.pt"),
                copied("checkpoint.pt", "out/checkpoint.pt"),
            ),
        ),
        Case(
            "train: --resume of a corrupt checkpoint.pt",
            train("{T}/r.yaml", "--resume"),
            names="checkpoint.pt",
            setup=chain(recipe_with("name", "x"), write("out/checkpoint.pt", BINARY)),
        ),
    ]
    for label, raw in [*BAD_NUMBERS, ("zero", "0.0")]:
        cases.append(
            Case(
                f"train: lr {label}",
                train(),
                names="lr",
                setup=recipe_with("train.phases.0.lr", "@RAW@", raw=raw),
            )
        )
    cases += [
        Case(
            f"train: {c.name.split(': ', 1)[1]}",
            c.args,
            names="afile",
            setup=chain(recipe_with("name", "x"), c.setup) if c.setup else None,
        )
        for c in out_cases("train", lambda o: ["train", "{T}/r.yaml", "--out", o, "--quiet"])
    ]
    return cases


def eval_cases() -> list[Case]:
    def ev(ckpt: str = "{R}/supernet.pt", *extra: str) -> list[str]:
        return ["eval", ckpt, "--images", "100", *extra]

    max_subnet = "{R}/max.json"
    cases = file_cases("eval", lambda p: ev(p), "supernet.pt", "supernet.pt", every=True)
    cases += file_cases(
        "eval", lambda p: ev("{R}/supernet.pt", "--subnet", p), "subnet.json", "max.json"
    )
    cases += [
        Case(
            "eval: --subnet biggest", ev("{R}/supernet.pt", "--subnet", "biggest"), names="biggest"
        ),
        Case("eval: --images 0", ev("{R}/supernet.pt", "--images", "0"), names="images"),
        Case("eval: --images abc", ev("{R}/supernet.pt", "--images", "abc"), names="images"),
        Case("eval: --workers -1", ev("{R}/supernet.pt", "--workers", "-1"), names="workers"),
        Case("eval: --split train", ev("{R}/supernet.pt", "--split", "train"), names="split"),
        Case(
            "eval: --seed nan",
            ev("{R}/supernet.pt", "--subnet", "random", "--seed", "nan"),
            names="seed",
        ),
        Case(
            "eval: subnet unknown key",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="colour",
            setup=edited_json("max.json", "s.json", lambda d: d.update(colour=1)),
        ),
        Case(
            "eval: subnet ks too short",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="ks",
            setup=edited_json("max.json", "s.json", lambda d: d.update(ks=[3])),
        ),
        Case(
            "eval: subnet ks 4",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="4",
            setup=edited_json("max.json", "s.json", lambda d: d.update(ks=[4] * len(d["ks"]))),
        ),
        Case(
            "eval: subnet r 999",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="999",
            setup=edited_json("max.json", "s.json", lambda d: d.update(r=999)),
        ),
        Case(
            "eval: subnet r nan",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="r",
            setup=edited_json("max.json", "s.json", lambda d: d.update(r="@RAW@"), raw="NaN"),
        ),
        Case(
            "eval: subnet r '32'",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="r",
            setup=edited_json("max.json", "s.json", lambda d: d.update(r="32")),
        ),
        Case(
            "eval: subnet is a JSON list",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="s.json",
            setup=write("s.json", "[1, 2]"),
        ),
        Case(
            "eval: subnet of another space",
            ev("{R}/supernet.pt", "--subnet", "{T}/s.json"),
            names="space",
            setup=edited_json(
                "max.json", "s.json", lambda d: d.update(space="mbv3-imagenet-0000000000")
            ),
        ),
        Case(
            "eval: data replaced by other classes",
            ev("{T}/supernet.pt"),
            names="classes",
            setup=data_replaced("classes"),
        ),
        Case(
            "eval: data replaced by RGB",
            ev("{T}/supernet.pt"),
            names="channels",
            setup=data_replaced("rgb"),
        ),
        Case("eval: training checkpoint.pt", ev("{R}/checkpoint.pt"), expect="any"),
        Case(
            "eval: max subnet (control)", ev("{R}/supernet.pt", "--subnet", max_subnet), expect="ok"
        ),
    ]
    return cases


def profile_cases() -> list[Case]:
    def prof(*args: str) -> list[str]:
        return ["profile", *args, "--quiet"]

    npu_out = ["--space", "{R}/space.json", "--out", "{T}/p"]
    cases = file_cases("profile", lambda p: prof(p, *npu_out), "board.yaml", "", names="board.yaml")
    cases += file_cases(
        "profile",
        lambda p: prof("npu-32x32-ws", "--space", p, "--out", "{T}/p"),
        "space.json",
        "space.json",
    )
    cases += [
        Case("profile: unknown device", prof("no-such-board", *npu_out), names="no-such-board"),
        Case(
            "profile: unknown space",
            prof("npu-32x32-ws", "--space", "no-such-space", "--out", "{T}/p"),
            names="no-such-space",
        ),
        Case(
            "profile: YAML syntax error",
            prof("{T}/b.yaml", *npu_out),
            names="line",
            setup=write("b.yaml", "name: b\nkind: [npu-sim\n"),
        ),
        Case(
            "profile: unknown kind",
            prof("{T}/b.yaml", *npu_out),
            names="kind",
            setup=write("b.yaml", "name: b\nkind: toaster\n"),
        ),
        Case(
            "profile: npu rows 0",
            prof("{T}/b.yaml", *npu_out),
            names="rows",
            setup=write(
                "b.yaml", "name: b\nkind: npu-sim\nnpu: {rows: 0, cols: 8, dataflow: ws}\n"
            ),
        ),
        Case(
            "profile: npu clock nan",
            prof("{T}/b.yaml", *npu_out),
            names="clock",
            setup=write(
                "b.yaml",
                "name: b\nkind: npu-sim\nnpu: {rows: 8, cols: 8, dataflow: ws, clock_mhz: .nan}\n",
            ),
        ),
        Case(
            "profile: --calibrate -1",
            prof("npu-32x32-ws", *npu_out, "--calibrate", "-1"),
            names="calibrate",
        ),
        Case(
            "profile: --calibrate 5",
            prof("npu-32x32-ws", *npu_out, "--calibrate", "5"),
            expect="any",
            names="calibrate",
            setup=copied(NPU, "p"),
        ),
        Case(
            "profile: --passes 0", prof("npu-32x32-ws", *npu_out, "--passes", "0"), names="passes"
        ),
        Case(
            "profile: --batch-size 0",
            prof("npu-32x32-ws", *npu_out, "--batch-size", "0"),
            names="batch",
        ),
        Case(
            "profile: --resolution 0",
            prof("npu-32x32-ws", *npu_out, "--resolution", "0"),
            names="0",
        ),
        Case(
            "profile: --resolution 999",
            prof("npu-32x32-ws", *npu_out, "--resolution", "999"),
            names="999",
        ),
        Case(
            "profile: --format bogus",
            prof("npu-32x32-ws", *npu_out, "--format", "bogus"),
            names="bogus",
        ),
        Case(
            "profile: --precision int4",
            prof("npu-32x32-ws", *npu_out, "--precision", "int4"),
            names="int4",
        ),
        Case(
            "profile: samsung-note10 without --tables",
            prof("samsung-note10", *npu_out),
            names="tables",
        ),
        Case(
            "profile: --tables missing",
            prof("samsung-note10", *npu_out, "--tables", "{T}/none"),
            names="none",
        ),
        Case(
            "profile: --tables of binary files",
            prof("samsung-note10", *npu_out, "--tables", "{T}/tables"),
            names="tables",
            setup=chain(
                write("tables/note10_lookup_table.yaml", BINARY),
                write("tables/160_lookup_table.yaml", BINARY),
            ),
        ),
        Case(
            "profile: out holds another device's lut",
            prof("npu-32x32-ws", *npu_out),
            names="lut.json",
            setup=copied(CPU, "p"),
        ),
        Case(
            "profile: out holds a binary lut.json",
            prof("npu-32x32-ws", *npu_out),
            names="lut.json",
            setup=chain(copied(NPU, "p"), write("p/lut.json", BINARY)),
            out="{T}/p",
        ),
        Case(
            "profile: out holds a truncated lut.json",
            prof("npu-32x32-ws", *npu_out),
            names="lut.json",
            setup=chain(copied(NPU, "p"), truncated(f"{NPU}/lut.json", "p/lut.json")),
            out="{T}/p",
        ),
        Case(
            "profile: resume a finished profile (control)",
            prof("npu-32x32-ws", *npu_out, "--calibrate", "10"),
            expect="ok",
            setup=copied(NPU, "p"),
        ),
    ]
    cases += out_cases(
        "profile", lambda o: prof("npu-32x32-ws", "--space", "{R}/space.json", "--out", o)
    )
    return cases


def latency_cases() -> list[Case]:
    def predict(pred: str, subnet: str = "max", *extra: str) -> list[str]:
        return ["latency", "predict", "--predictor", pred, "--subnet", subnet, *extra]

    def validate(device: str, pred: str, *extra: str) -> list[str]:
        return ["latency", "validate", device, "--predictor", pred, "--n", "4", "--quiet", *extra]

    pj = f"{CPU}/predictor.json"
    cases = file_cases("latency predict", lambda p: predict(p), "predictor.json", pj)
    cases += file_cases(
        "latency predict", lambda p: predict("{R}/" + pj, p), "subnet.json", "max.json"
    )
    cases += [
        Case(
            "latency predict: future format tag",
            predict("{T}/p.json"),
            names="edgenas.predictor/9",
            setup=edited_json(pj, "p.json", lambda d: d.update(format="edgenas.predictor/9")),
        ),
        Case(
            "latency predict: unknown kind",
            predict("{T}/p.json"),
            names="crystal-ball",
            setup=edited_json(pj, "p.json", lambda d: d.update(kind="crystal-ball")),
        ),
        Case(
            "latency predict: negative block_ms",
            predict("{T}/p.json"),
            names="block",
            setup=edited_json(
                pj,
                "p.json",
                lambda d: d.update(block_ms={k: -abs(v) for k, v in d["block_ms"].items()}),
            ),
        ),
        Case(
            "latency predict: NaN block_ms --json",
            predict("{T}/p.json", "max", "--json"),
            names="block",
            setup=edited_json(
                pj,
                "p.json",
                lambda d: d.update(block_ms=dict.fromkeys(d["block_ms"], "@RAW@")),
                raw="NaN",
            ),
        ),
        Case(
            "latency predict: block_ms 'fast'",
            predict("{T}/p.json"),
            names="p.json",
            setup=edited_json(
                pj, "p.json", lambda d: d.update(block_ms=dict.fromkeys(d["block_ms"], "fast"))
            ),
        ),
        Case(
            "latency predict: Infinity coef",
            predict("{T}/p.json"),
            names="coef",
            setup=edited_json(
                pj,
                "p.json",
                lambda d: d["model"].update(coef=["@RAW@"] * len(d["model"]["coef"])),
                raw="Infinity",
            ),
        ),
        Case(
            "latency predict: missing block",
            predict("{T}/p.json"),
            names="block",
            setup=edited_json(
                pj, "p.json", lambda d: d.update(block_ms=dict(list(d["block_ms"].items())[:3]))
            ),
        ),
        Case(
            "latency predict: JSON list",
            predict("{T}/p.json"),
            names="p.json",
            setup=write("p.json", "[]"),
        ),
        Case(
            "latency predict: a lut.json given",
            predict("{R}/" + CPU + "/lut.json"),
            expect="any",
            names="lut.json",
        ),
        Case("latency predict: --subnet biggest", predict("{R}/" + pj, "biggest"), names="biggest"),
        Case(
            "latency predict: subnet of another space",
            predict("{R}/" + pj, "{T}/s.json"),
            names="space",
            setup=edited_json(
                "max.json", "s.json", lambda d: d.update(space="mbv3-imagenet-0000000000")
            ),
        ),
        Case(
            "latency predict: subnet d [9]",
            predict("{R}/" + pj, "{T}/s.json"),
            names="d",
            setup=edited_json("max.json", "s.json", lambda d: d.update(d=[9] * len(d["d"]))),
        ),
        Case(
            "latency predict: --seed abc",
            predict("{R}/" + pj, "random", "--seed", "abc"),
            names="seed",
        ),
        Case("latency predict: max (control)", predict("{R}/" + pj), expect="ok"),
        Case(
            "latency validate: unknown device",
            validate("no-such-board", "{R}/" + pj),
            names="no-such-board",
        ),
        Case(
            "latency validate: predictor of another device",
            validate("npu-32x32-ws", "{R}/" + pj),
            names="local-cpu",
        ),
        Case("latency validate: --n 1", validate("local-cpu", "{R}/" + pj, "--n", "1"), names="n"),
        Case(
            "latency validate: --passes 0",
            validate("local-cpu", "{R}/" + pj, "--passes", "0"),
            names="passes",
        ),
        Case(
            "latency validate: binary predictor",
            validate("npu-32x32-ws", "{T}/p.json"),
            names="p.json",
            setup=write("p.json", BINARY),
        ),
        Case(
            "latency validate: --plot under a file",
            validate("npu-32x32-ws", "{T}/p/predictor.json", "--plot", "{T}/afile/v.png"),
            names="afile",
            setup=chain(copied(NPU, "p"), write("afile", "x")),
        ),
        Case(
            "latency validate: --plot is a folder",
            validate("npu-32x32-ws", "{T}/p/predictor.json", "--plot", "{T}/p"),
            names="p",
            setup=copied(NPU, "p"),
        ),
        Case(
            "latency validate: npu (control)",
            validate("npu-32x32-ws", "{T}/p/predictor.json"),
            expect="ok",
            setup=copied(NPU, "p"),
        ),
    ]
    return cases


SEARCH = ["--supernet", "{R}/supernet.pt", "--trials", "30", "--accuracy-samples", "10", "--quiet"]


def search_cases() -> list[Case]:
    def search(*args: str, out: str = "{T}/o", device: str = "{R}/" + CPU) -> list[str]:
        return ["search", "--device", device, *SEARCH, "--out", out, *args]

    def ofa_search(*args: str) -> list[str]:
        # OFA's predictor evaluates no subnet: --accuracy-samples is refused with it
        samples = SEARCH.index("--accuracy-samples")
        return [
            *search(*args)[:3],
            *SEARCH[:samples],
            *SEARCH[samples + 2 :],
            "--out",
            "{T}/o",
            *args,
        ]

    study_copy = copied("search", "o")
    full = [
        "--trials",
        "1000",
        "--accuracy-samples",
        "60",
        "--budget-ms",
        "{B0}",
        "--budget-ms",
        "{B1}",
    ]

    def whole(*args: str) -> list[str]:
        return [
            "search", "--supernet", "{R}/supernet.pt", "--device", "{R}/" + CPU,
            "--device", "{R}/" + NPU, "--out", "{T}/o", "--quiet", "--eval-images", "1000",
            "--reevaluate", "12", *full, *args,
        ]  # fmt: skip

    cases = [
        Case(f"search: --budget-ms {label}", search("--budget-ms", text), names="budget")
        for label, text in [
            ("nan", "nan"),
            ("inf", "inf"),
            ("1e400", "1e400"),
            ("negative", "-1"),
            ("zero", "0"),
            ("abc", "abc"),
            ("'1,,2'", "1,,2"),
        ]
    ]
    cases += file_cases(
        "search", lambda p: search("--budget-ms", "1", "--enqueue", p), "enqueue.json", "max.json"
    )
    cases += file_cases(
        "search",
        lambda p: [
            "search",
            "--device",
            "{R}/" + CPU,
            "--supernet",
            p,
            "--out",
            "{T}/o",
            "--quiet",
        ],
        "supernet.pt",
        "supernet.pt",
    )
    cases += file_cases(
        "search", lambda p: search(device=p), "predictor.json", f"{CPU}/predictor.json"
    )
    cases += [
        Case(
            "search: 3 budgets for 1 device",
            search("--budget-ms", "1", "--budget-ms", "2", "--budget-ms", "3"),
            names="budget",
        ),
        Case("search: unknown device", search(device="no-such-board"), names="no-such-board"),
        Case(
            "search: device folder without predictor",
            search(device="{T}/empty"),
            names="empty",
            setup=lambda run, tmp: (tmp / "empty").mkdir(),
        ),
        Case(
            "search: predictor of another space",
            search(device="{T}/p.json"),
            names="space",
            setup=edited_json(
                f"{CPU}/predictor.json",
                "p.json",
                lambda d: d["header"].update(space_id="mbv3-imagenet-0000000000"),
            ),
        ),
        Case(
            "search: predictor with negative block_ms",
            search("--budget-ms", "1", device="{T}/p.json"),
            names="block",
            setup=edited_json(
                f"{CPU}/predictor.json",
                "p.json",
                lambda d: d.update(block_ms={k: -abs(v) for k, v in d["block_ms"].items()}),
            ),
        ),
        Case(
            "search: predictor with NaN block_ms",
            search("--budget-ms", "1", "--json", device="{T}/p.json"),
            names="block",
            setup=edited_json(
                f"{CPU}/predictor.json",
                "p.json",
                lambda d: d.update(block_ms=dict.fromkeys(d["block_ms"], "@RAW@")),
                raw="NaN",
            ),
        ),
        Case("search: --trials 0", search("--trials", "0"), names="trials"),
        Case(
            "search: --accuracy-samples 5",
            search("--accuracy-samples", "5"),
            names="accuracy-samples",
        ),
        Case("search: --reevaluate 0", search("--reevaluate", "0"), names="reevaluate"),
        Case("search: --eval-images 0", search("--eval-images", "0"), names="eval-images"),
        Case("search: --sampler bogus", search("--sampler", "bogus"), names="bogus"),
        Case("search: --accuracy bogus", search("--accuracy", "bogus"), names="bogus"),
        Case("search: --objective bogus", search("--objective", "bogus"), names="bogus"),
        Case(
            "search: --storage bogus scheme", search("--storage", "mongodb://x/y"), names="mongodb"
        ),
        Case(
            "search: --storage journal under a file",
            search("--storage", "journal:{T}/afile/s.log"),
            names="afile",
            setup=write("afile", "x"),
        ),
        Case(
            "search: --ofa-predictor missing",
            ofa_search("--accuracy", "ofa-predictor"),
            names="ofa-predictor",
        ),
        Case(
            "search: --ofa-predictor for the tiny space",
            ofa_search("--accuracy", "ofa-predictor", "--ofa-predictor", "{T}/a.pth"),
            names="space",
            setup=write("a.pth", BINARY),
        ),
        Case(
            "search: --enqueue unknown key",
            search("--budget-ms", "1", "--enqueue", "{T}/s.json"),
            names="s.json",
            setup=edited_json("max.json", "s.json", lambda d: d.update(colour=1)),
        ),
        Case(
            "search: --enqueue of another space",
            search("--budget-ms", "1", "--enqueue", "{T}/s.json"),
            names="s.json",
            setup=edited_json(
                "max.json", "s.json", lambda d: d.update(space="mbv3-imagenet-0000000000")
            ),
        ),
        Case(
            "search: data replaced by other classes",
            [
                "search",
                "--device",
                "{R}/" + CPU,
                "--supernet",
                "{T}/supernet.pt",
                "--out",
                "{T}/o",
                "--quiet",
                "--trials",
                "30",
                "--accuracy-samples",
                "10",
            ],
            names="classes",
            setup=data_replaced("classes"),
        ),
        Case(
            "search: garbage line in study.log",
            whole(),
            expect="any",
            names="study.log",
            setup=chain(study_copy, appended("o/study.log", b"this is not json\n")),
            out="{T}/o",
        ),
        Case(
            "search: torn last line in study.log",
            whole(),
            expect="ok",
            setup=chain(
                study_copy, appended("o/study.log", b'{"op_code": 4, "worker_id": "x", "trial_')
            ),
            out="{T}/o",
        ),
        Case(
            "search: binary study.log",
            whole(),
            names="study.log",
            setup=chain(study_copy, write("o/study.log", BINARY)),
            out="{T}/o",
        ),
        Case(
            "search: rerun of the finished study (control)",
            whole(),
            expect="ok",
            setup=study_copy,
            out="{T}/o",
        ),
        Case(
            "search: same study, other budget",
            [
                "search",
                "--supernet",
                "{R}/supernet.pt",
                "--device",
                "{R}/" + CPU,
                "--device",
                "{R}/" + NPU,
                "--out",
                "{T}/o",
                "--quiet",
                "--trials",
                "1000",
                "--accuracy-samples",
                "60",
                "--budget-ms",
                "0.5",
                "--budget-ms",
                "0.2",
            ],
            expect="any",
            names="budget",
            setup=study_copy,
            out="{T}/o",
        ),
    ]
    cases += out_cases("search", lambda o: search("--budget-ms", "1", out=o))
    return cases


def export_cases() -> list[Case]:
    def export(
        subnet: str = FRONT0,
        *extra: str,
        supernet: str = "{R}/supernet.pt",
        out: str = "{T}/o",
    ) -> list[str]:
        return [
            "export",
            "--supernet",
            supernet,
            "--subnet",
            subnet,
            "--out",
            out,
            "--format",
            "onnx",
            "--quiet",
            *extra,
        ]

    cases = file_cases("export", lambda p: export(p + "#0"), "pareto.json", PARETO)
    cases += file_cases("export", lambda p: export(supernet=p), "supernet.pt", "supernet.pt")
    cases += [
        Case(
            "export: pareto future format tag",
            export("{T}/pareto.json#0"),
            names="edgenas.pareto/7",
            setup=edited_json(PARETO, "pareto.json", lambda d: d.update(format="edgenas.pareto/7")),
            out="{T}/o",
        ),
        Case("export: pareto.json#9999", export("{R}/" + PARETO + "#9999"), names="9999"),
        Case("export: pareto.json#-1", export("{R}/" + PARETO + "#-1"), names="-1"),
        Case("export: pareto.json#abc", export("{R}/" + PARETO + "#abc"), names="abc"),
        Case(
            "export: pareto of another space",
            export("{T}/pareto.json#0"),
            names="space",
            setup=edited_json(
                PARETO, "pareto.json", lambda d: d.update(space="mbv3-imagenet-0000000000")
            ),
        ),
        Case(
            "export: subnet unknown key",
            export("{T}/s.json"),
            names="colour",
            setup=edited_json("max.json", "s.json", lambda d: d.update(colour=1)),
        ),
        Case("export: --format bogus", export(FRONT0, "--format", "bogus"), names="bogus"),
        Case("export: --format ''", export(FRONT0, "--format", ""), names="format"),
        Case(
            "export: --tflite-form bogus",
            export(FRONT0, "--tflite-form", "bogus"),
            names="bogus",
        ),
        Case("export: --opset 999", export(FRONT0, "--opset", "999"), names="opset"),
        Case(
            "export: --finetune-epochs -1",
            export(FRONT0, "--finetune-epochs", "-1"),
            names="finetune-epochs",
        ),
        Case(
            "export: --calibration-images 0",
            export(FRONT0, "--int8", "--calibration-images", "0"),
            names="calibration-images",
        ),
        Case(
            "export: --test-images 0",
            export(FRONT0, "--test-images", "0"),
            names="test-images",
        ),
        Case(
            "export: --min-int8-agreement 2",
            export(FRONT0, "--min-int8-agreement", "2"),
            names="min-int8-agreement",
        ),
        Case(
            "export: --min-int8-agreement nan",
            export(FRONT0, "--min-int8-agreement", "nan"),
            names="min-int8-agreement",
        ),
        Case(
            "export: --tolerance nan",
            export(FRONT0, "--tolerance", "nan"),
            names="tolerance",
        ),
        Case(
            "export: --tolerance -1",
            export(FRONT0, "--tolerance", "-1"),
            names="tolerance",
        ),
        Case(
            "export: --qat-epochs 1 without --int8",
            export(FRONT0, "--qat-epochs", "1"),
            expect="any",
            names="int8",
        ),
        Case(
            "export: --device unknown",
            export(FRONT0, "--device", "no-such-board"),
            names="no-such-board",
        ),
        Case("export: --threads 0", export(FRONT0, "--threads", "0"), names="threads"),
        Case(
            "export: data replaced by RGB",
            export("max", supernet="{T}/supernet.pt"),
            names="channels",
            setup=data_replaced("rgb"),
            out="{T}/o",
        ),
        Case("export: max onnx unverified (control)", export("max", "--no-verify"), expect="ok"),
    ]
    for label, text in [("nan", "nan"), ("inf", "inf"), ("1e400", "1e400"), ("negative", "-1")]:
        cases.append(
            Case(
                f"export: --finetune-lr {label}",
                export(FRONT0, "--finetune-epochs", "1", "--finetune-lr", text),
                names="finetune-lr",
            )
        )
    cases += out_cases("export", lambda o: export(out=o))
    return cases


def _binary_card(run: Path, tmp: Path) -> None:
    next((tmp / "run" / "export").glob("*/card.json")).write_bytes(BINARY)


def report_cases() -> list[Case]:
    run_copy = copied(".", "run")

    def report(*extra: str, run: str = "{T}/run") -> list[str]:
        return ["report", run, *extra]

    return [
        Case("report: run folder missing", report(run="{T}/none"), names="none"),
        Case(
            "report: run folder is a file",
            report(run="{T}/afile"),
            names="afile",
            setup=write("afile", "x"),
        ),
        Case(
            "report: empty folder",
            report(run="{T}/empty"),
            expect="any",
            names="empty",
            setup=lambda run, tmp: (tmp / "empty").mkdir(),
        ),
        Case(
            "report: binary pareto.json",
            report(),
            names="pareto.json",
            setup=chain(run_copy, write("run/" + PARETO, BINARY)),
        ),
        Case(
            "report: future pareto format",
            report(),
            names="edgenas.pareto/7",
            setup=chain(
                run_copy,
                edited_json(PARETO, "run/" + PARETO, lambda d: d.update(format="edgenas.pareto/7")),
            ),
        ),
        Case(
            "report: non-UTF-8 run.json",
            report(),
            names="run.json",
            setup=chain(run_copy, write("run/run.json", NON_UTF8)),
        ),
        Case(
            "report: truncated predictor.json",
            report(),
            names="predictor.json",
            setup=chain(run_copy, truncated(f"{CPU}/predictor.json", f"run/{CPU}/predictor.json")),
        ),
        Case(
            "report: binary card.json",
            report(),
            names="card.json",
            setup=chain(
                run_copy,
                _binary_card,
            ),
        ),
        Case(
            "report: NaN in summary.json",
            report(),
            expect="any",
            names="summary.json",
            setup=chain(run_copy, write("run/summary.json", '{"x": NaN}')),
        ),
        Case(
            "report: --out under a file",
            report("--out", "{T}/afile/r.html"),
            names="afile",
            setup=chain(run_copy, write("afile", "x")),
        ),
        Case("report: --out is a folder", report("--out", "{T}/run"), names="run", setup=run_copy),
        Case(
            "report: the demo run (control)",
            report("--out", "{T}/r.html"),
            expect="ok",
            setup=run_copy,
        ),
    ]


def run_cases() -> list[Case]:
    run_copy = copied(".", "run")

    def run(*extra: str, rec: str = "{T}/r.yaml", out: str = "{T}/run") -> list[str]:
        return ["run", rec, "--out", out, "--quiet", *extra]

    cases = file_cases("run", lambda p: run(rec=p), "r.yaml", "", names="r.yaml")
    cases += [
        Case(
            "run: lr nan",
            run(),
            names="lr",
            setup=chain(run_copy, recipe_with("train.phases.0.lr", "@RAW@", raw=".nan")),
        ),
        Case(
            "run: budget_ms nan",
            run(),
            names="budget",
            setup=chain(run_copy, recipe_with("devices.0.budget_ms", "@RAW@", raw=".nan")),
        ),
        Case(
            "run: budget_ms -1",
            run(),
            names="budget",
            setup=chain(run_copy, recipe_with("devices.0.budget_ms", -1.0)),
        ),
        Case(
            "run: trials 0",
            run(),
            names="trials",
            setup=chain(run_copy, recipe_with("search.trials", 0)),
        ),
        Case(
            "run: trials 'many'",
            run(),
            names="trials",
            setup=chain(run_copy, recipe_with("search.trials", "many")),
        ),
        Case(
            "run: unknown stage",
            run(),
            names="stages",
            setup=chain(run_copy, recipe_with("stages", ["train", "deploy"])),
        ),
        Case(
            "run: --force bogus",
            run("--force", "bogus"),
            names="bogus",
            setup=chain(run_copy, recipe_with("name", "quickstart")),
        ),
        Case(
            "run: unknown device, fresh folder",
            run(out="{T}/fresh"),
            names="no-such-board",
            setup=recipe_with("devices.0.name", "no-such-board"),
            timeout=90,
        ),
        Case(
            "run: unreachable ssh device, fresh folder",
            run(out="{T}/fresh"),
            names="127.0.0.1",
            setup=chain(
                write(
                    "ssh.yaml",
                    "name: gone\nkind: ssh\nruntime: onnxruntime\nssh: {host: 127.0.0.1, port: 1, python: python3, connect_timeout: 3}\n",
                ),
                recipe("r.yaml", lambda d: d["devices"][0].update(name="{T}/ssh.yaml")),
            ),
            timeout=90,
        ),
        Case(
            "run: data replaced by a binary .npz, fresh folder",
            run(out="{T}/fresh"),
            names="bad.npz",
            setup=chain(
                write("bad.npz", BINARY),
                recipe("r.yaml", lambda d: d["data"].update(source="{T}/bad.npz")),
            ),
        ),
        Case(
            "run: the finished demo (control)",
            run(),
            expect="ok",
            setup=chain(run_copy, recipe_with("name", "quickstart")),
        ),
    ]
    cases += out_cases("run", lambda o: run(out=o), setup=recipe_with("name", "quickstart"))
    return cases


def devices_cases() -> list[Case]:
    def check(profile: str) -> list[str]:
        return ["devices", "check", profile]

    ssh = "name: gone\nkind: ssh\nruntime: onnxruntime\nssh: {host: 127.0.0.1, port: 1, python: python3, connect_timeout: 3}\n"
    cases = file_cases("devices check", check, "board.yaml", "", every=True)
    local = "name: b\nkind: local\nruntime: onnxruntime\n"
    for what, names, text in (
        ("unknown key", "colour", local + "colour: red\n"),
        ("threads -1", "threads", local + "threads: -1\n"),
        ("runs 0", "runs", local + "runs: 0\n"),
        ("runtime bogus", "runtime", local.replace("onnxruntime", "bogus")),
    ):
        cases.append(
            Case(
                f"devices check: {what}",
                check("{T}/b.yaml"),
                names=names,
                setup=write("b.yaml", text),
            )
        )
    cases += [
        Case("devices list: extra argument", ["devices", "list", "extra"], names="extra"),
        Case("devices list: --json (control)", ["devices", "list", "--json"], expect="ok"),
        Case("devices check: unknown profile", check("no-such-board"), names="no-such-board"),
        Case(
            "devices check: YAML syntax error",
            check("{T}/b.yaml"),
            names="line",
            setup=write("b.yaml", "name: b\nkind: [ssh\n"),
        ),
        Case(
            "devices check: connect_timeout nan",
            check("{T}/b.yaml"),
            names="connect_timeout",
            setup=write("b.yaml", ssh.replace("connect_timeout: 3", "connect_timeout: .nan")),
        ),
        Case(
            "devices check: ssh port refused",
            check("{T}/b.yaml"),
            names="127.0.0.1",
            setup=write("b.yaml", ssh),
        ),
        Case("devices check: local-cpu (control)", check("local-cpu"), expect="ok"),
        Case(
            "devices trust: unknown profile",
            ["devices", "trust", "no-such-board", "--yes"],
            names="no-such-board",
        ),
        Case(
            "devices trust: a local device",
            ["devices", "trust", "local-cpu", "--yes"],
            names="local-cpu",
        ),
        Case(
            "devices trust: ssh port refused",
            ["devices", "trust", "{T}/b.yaml", "--yes"],
            names="127.0.0.1",
            setup=write("b.yaml", ssh),
        ),
    ]
    return cases


def npu_cases() -> list[Case]:
    cfg = str(Path(__file__).resolve().parents[1] / "tests/devices/data/scalesim/npu_8x8_ws.cfg")
    topo = str(Path(cfg).with_name("topology.csv"))

    def sim(config: str = cfg, *extra: str) -> list[str]:
        return ["npu", "simulate", "--config", config, *extra]

    def cfg_with(old: str, new: str) -> Setup:
        return write("c.cfg", Path(cfg).read_text().replace(old, new))

    cases = file_cases(
        "npu simulate", lambda p: sim(p, "--topology", topo), "c.cfg", "", every=True
    )
    cases += file_cases("npu simulate", lambda p: sim(cfg, "--topology", p), "t.csv", "")
    cases += file_cases("npu simulate", lambda p: sim(cfg, "--onnx", p), "m.onnx", "")
    cases += [
        Case(
            f"npu simulate: ArrayHeight {v}",
            sim("{T}/c.cfg", "--topology", topo),
            names="ArrayHeight",
            setup=cfg_with("ArrayHeight: 8", f"ArrayHeight: {v}"),
        )
        for v in ("0", "nan", "abc")
    ]
    cases += [
        Case(
            "npu simulate: Dataflow xs",
            sim("{T}/c.cfg", "--topology", topo),
            names="xs",
            setup=cfg_with("Dataflow: ws", "Dataflow: xs"),
        ),
        Case(
            "npu simulate: clock_mhz 0",
            sim("{T}/c.cfg", "--topology", topo),
            names="clock_mhz",
            setup=cfg_with("clock_mhz: 1000", "clock_mhz: 0"),
        ),
        Case(
            "npu simulate: no architecture section",
            sim("{T}/c.cfg", "--topology", topo),
            names="architecture",
            setup=write("c.cfg", "[general]\nrun_name = x\n"),
        ),
        Case(
            "npu simulate: topology stride 0",
            sim(cfg, "--topology", "{T}/t.csv"),
            names="t.csv",
            setup=write(
                "t.csv", Path(topo).read_text().splitlines()[0] + "\nc,12,12,3,3,8,16,0,\n"
            ),
        ),
        Case(
            "npu simulate: topology negative size",
            sim(cfg, "--topology", "{T}/t.csv"),
            names="t.csv",
            setup=write(
                "t.csv", Path(topo).read_text().splitlines()[0] + "\nc,-12,12,3,3,8,16,1,\n"
            ),
        ),
        Case(
            "npu simulate: topology short row",
            sim(cfg, "--topology", "{T}/t.csv"),
            names="t.csv",
            setup=write("t.csv", Path(topo).read_text().splitlines()[0] + "\nc,12,12\n"),
        ),
        Case(
            "npu simulate: both --topology and --onnx",
            sim(cfg, "--topology", topo, "--onnx", "{R}/x.onnx"),
            names="onnx",
        ),
        Case("npu simulate: neither --topology nor --onnx", sim(cfg), names="topology"),
        Case(
            "npu simulate: exported ONNX (control)", sim(cfg, "--onnx", "{R}/x.onnx"), expect="ok"
        ),
    ]
    return cases


def import_cases() -> list[Case]:
    def imp(file: str, *extra: str, out: str = "{T}/o") -> list[str]:
        return ["import", "ofa-supernet", file, "--out", out, *extra]

    cases = file_cases("import ofa-supernet", lambda p: imp(p), "ofa.pth", "", every=True)
    cases += [
        Case(
            "import ofa-supernet: our own supernet.pt", imp("{R}/supernet.pt"), names="supernet.pt"
        ),
        Case(
            "import ofa-supernet: --width 2.0",
            imp("{T}/ofa.pth", "--width", "2.0"),
            names="width",
            setup=write("ofa.pth", BINARY),
        ),
    ]
    # the file is refused before --out is looked at: the error names it
    cases += [
        Case(c.name, c.args, names="supernet.pt", setup=c.setup)
        for c in out_cases("import ofa-supernet", lambda o: imp("{R}/supernet.pt", out=o))
    ]
    return cases


def catalogue() -> list[Case]:
    return [
        *train_cases(),
        *eval_cases(),
        *profile_cases(),
        *latency_cases(),
        *search_cases(),
        *export_cases(),
        *report_cases(),
        *run_cases(),
        *devices_cases(),
        *npu_cases(),
        *import_cases(),
    ]


# --- running and classifying ------------------------------------------------------------


def prepare(source: Path, into: Path) -> Path:
    """A copy of the finished run folder, with a max-subnet JSON and an exported ONNX file."""
    run = into / "run"
    shutil.copytree(source, run)
    cards = sorted((run / "export").glob("*/card.json"))
    onnx = sorted((run / "export").glob("*/model.onnx"))
    if not cards or not onnx:
        raise SystemExit(f"{source} holds no export/*/card.json and model.onnx: run 'make demo'")
    shutil.copy2(onnx[0], run / "x.onnx")
    from once_for_all import get_space

    top = get_space(str(run / "space.json")).max_subnet()
    (run / "max.json").write_text(top.to_json())
    return run


def fill(text: str, run: Path, tmp: Path) -> str:
    """``text`` with the run folder, the case's folder and the study's budgets ({B0}, {B1}:
    the run's recipe's, which a rerun of its study must repeat) filled in."""
    text = text.replace("{R}", str(run)).replace("{T}", str(tmp))
    for i, budget in enumerate(study_budgets(run)):
        text = text.replace(f"{{B{i}}}", budget)
    return text


@functools.cache
def study_budgets(run: Path) -> tuple[str, ...]:
    """The devices' latency budgets in the run's recipe, in its order."""
    devices = json.loads((run / "run.json").read_text())["recipe"]["devices"]
    return tuple(str(d["budget_ms"]) for d in devices)


BOX = re.compile(r"^[\s│╭╰─]*(?:Error)?[\s─╮╯]*$")


def error_lines(stderr: str) -> list[str]:
    """The message lines of stderr: a typer usage box shrinks to the line(s) inside it."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    if any(line.startswith("Usage:") for line in lines) and any(
        "─ Error ─" in line for line in lines
    ):
        inside = [
            line.strip(" │") for line in lines if line.startswith("│") and not BOX.match(line)
        ]
        return [" ".join(inside)] if inside else lines
    return lines


def partial_files(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob(".*")
        if re.match(r"^\..*\.tmp", p.name) or p.name.startswith(".partial-")
    )


def run_case(case: Case, run: Path, work: Path, index: int) -> Outcome:
    tmp = work / f"case{index:03d}"
    tmp.mkdir()
    if case.setup is not None:
        case.setup(run, tmp)
    argv = [sys.executable, "-m", "edgenas", *(fill(a, run, tmp) for a in case.args)]
    env = {
        **os.environ,
        "COLUMNS": "200",
        "OMP_NUM_THREADS": "1",
        "EDGENAS_CACHE": str(work / "cache"),
    }
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", env=env, cwd=tmp,
            timeout=case.timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Outcome(case.name, "hang", None, round(time.monotonic() - started, 1))
    seconds = round(time.monotonic() - started, 1)
    lines = error_lines(proc.stderr)
    first = (
        lines[0][:300]
        if lines
        else proc.stdout.strip().splitlines()[0][:300]
        if proc.stdout.strip()
        else ""
    )
    detail: dict[str, Any] = {}

    def outcome(kind: str) -> Outcome:
        return Outcome(case.name, kind, proc.returncode, seconds, first, detail)

    if "Traceback (most recent call last)" in proc.stderr or proc.returncode < 0:
        tb = [line for line in proc.stderr.splitlines() if line.strip()]
        return Outcome(
            case.name,
            "traceback",
            proc.returncode,
            seconds,
            tb[-1][:300] if tb else f"signal {-proc.returncode}",
        )
    if proc.returncode == 0:
        if "NaN" in proc.stdout or "Infinity" in proc.stdout:
            detail["stdout"] = "non-finite number in the output"
            return outcome("silent wrong result")
        return outcome("silent wrong result" if case.expect == "error" else "handled")
    out = Path(fill(case.out, run, tmp)) if case.out else None
    left = partial_files(out) if out else []
    if left:
        detail["left"] = left
        return outcome("partial file left")
    if case.expect == "ok":
        return outcome("refused")
    message = " ".join(lines)
    if len(lines) != 1 or len(message) > 400:
        detail["lines"] = len(lines)
        return outcome("unclear message")
    wanted = fill(case.names, run, tmp) if case.names else ""
    if wanted and wanted.lower() not in message.lower():
        detail["should_name"] = wanted
        return outcome("unclear message")
    return outcome("one-line error")


def run_all_cases(cases: list[Case], run: Path, work: Path, jobs: int) -> list[Outcome]:
    results: list[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_case, c, run, work, i): c for i, c in enumerate(cases)}
        for future in concurrent.futures.as_completed(futures):
            case = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a broken case setup, not a finding
                result = Outcome(
                    case.name, "harness error", None, 0.0, f"{type(exc).__name__}: {exc}"
                )
            results.append(result)
            progress(result, len(results), len(cases))
    return results


def run_scenarios(wanted: list[str], run: Path, work: Path) -> list[Outcome]:
    """One at a time: they time signals, and start their own processes in pairs."""
    from benchmarks.adversarial_scenarios import run_scenario, scenarios

    # A shell starts a background job with SIGINT ignored, and its children inherit that:
    # Ctrl-C (SIGINT) would then not reach the commands under test at all.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    chosen = scenarios(wanted)
    results: list[Outcome] = []
    for i, (name, scenario) in enumerate(chosen):
        try:
            result = run_scenario(name, scenario, run, work / f"scenario{i:02d}")
        except Exception as exc:  # a broken scenario, not a finding
            result = Outcome(name, "harness error", None, 0.0, f"{type(exc).__name__}: {exc}")
        results.append(result)
        progress(result, len(results), len(chosen))
    return results


def progress(result: Outcome, done: int, total: int) -> None:
    print(
        f"[{done}/{total}] {result.outcome:20} {result.seconds:6.1f}s  {result.name}",
        file=sys.stderr,
    )


def summary(results: list[Outcome], clean: tuple[str, ...], seconds: float) -> dict[str, Any]:
    results = sorted(results, key=lambda r: r.name)
    return {
        "seconds": round(seconds),
        "counts": dict(Counter(r.outcome for r in results).most_common()),
        "not_clean": [
            {
                "case": r.name,
                "outcome": r.outcome,
                "rc": r.rc,
                "first_line": r.first_line,
                **r.detail,
            }
            for r in results
            if r.outcome not in clean
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(
        prog="python -m benchmarks.adversarial", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--run",
        type=Path,
        default=Path("runs/quickstart"),
        help="a finished demo run folder (make demo)",
    )
    p.add_argument(
        "--part",
        choices=["cases", "scenarios", "all"],
        default="cases",
        help="the bad-input cases, the interruption/concurrency/network/disk scenarios, or both",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only the cases (scenarios) whose name holds this text (repeatable: any of them)",
    )
    p.add_argument("--jobs", type=at_least(1), default=2, help="cases run at once (scenarios: one)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    wanted = [text.lower() for text in args.only] or [""]
    parts = ["cases", "scenarios"] if args.part == "all" else [args.part]
    cases = [c for c in catalogue() if any(text in c.name.lower() for text in wanted)]
    if args.list:
        from benchmarks.adversarial_scenarios import scenarios

        names = [c.name for c in cases] if "cases" in parts else []
        names += [n for n, _ in scenarios(wanted)] if "scenarios" in parts else []
        print("\n".join(names))
        return
    if not (args.run / "run.json").is_file():
        raise Refused(
            f"--run {args.run}: not a run folder (no run.json): run 'make demo' first, or give "
            "a finished run's folder"
        )
    report: dict[str, Any] = {
        "benchmark": "adversarial",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "run": str(args.run),
        "part": args.part,
        "only": args.only,
    }
    with tempfile.TemporaryDirectory(prefix="edgenas-adversarial-") as folder:
        work = Path(folder)
        run = prepare(args.run.resolve(), work)
        if "cases" in parts:
            started = time.monotonic()
            results = run_all_cases(cases, run, work, args.jobs)
            report["cases"] = len(results)
            report["commands"] = dict(Counter(r.name.split(":")[0] for r in results))
            report.update(summary(results, CLEAN, time.monotonic() - started))
        if "scenarios" in parts:
            started = time.monotonic()
            results = run_scenarios(wanted, run, work)
            report["scenarios"] = {
                "count": len(results),
                **summary(results, ("as documented",), time.monotonic() - started),
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    run_main(main)
