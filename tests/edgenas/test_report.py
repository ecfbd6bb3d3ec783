"""The run report (``report.html``, ``edgenas report``): what it shows for a real micro run,
checked in a real headless Chromium, and what it says about a run that is not finished."""

from __future__ import annotations

import html
import html.parser
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgenas.report.collect import _trial_values
from edgenas.report.markdown import to_html
from tests.edgenas.conftest import MICRO_RECIPE, Run
from tests.support.cli_here import edgenas_here
from tests.support.folder_holder import hold_folder

SECTIONS = ("summary", "training", "pareto", "latency-predictors", "block-latency", "models")
FIGURES = {"training": 1, "pareto": 1, "latency-predictors": 2, "block-latency": 3}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "headless Chromium is missing: apt-get install chromium (make setup does)"
    return path


def headless(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # we are root in CI
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            *args,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Outline(html.parser.HTMLParser):
    """Sections, their headings and figures, and every external reference of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.headings: dict[str, str] = {}
        self.svgs: dict[str, int] = {}
        self.missing: dict[str, str] = {}
        self.external: list[str] = []
        self.tags: set[str] = set()
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.section = a.get("id")
        if self.section and tag == "svg":
            self.svgs[self.section] = self.svgs.get(self.section, 0) + 1
        if self.section and tag == "h2":
            self._in = "h2"
        if self.section and tag == "p" and "missing" in (a.get("class") or ""):
            self._in = "missing"
        for key in ("src", "href"):
            value = a.get(key) or ""
            if value and not value.startswith(("#", "data:")):
                self.external.append(value)

    def handle_data(self, data: str) -> None:
        if self._in and self.section:
            target = self.headings if self._in == "h2" else self.missing
            target[self.section] = target.get(self.section, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "p"):
            self._in = None


def outline(text: str) -> Outline:
    parser = Outline()
    parser.feed(text)
    return parser


class Tables(html.parser.HTMLParser):
    """Each table's body rows, as the text of their cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self.tables.append([])
            self._body = True
        elif tag == "tr" and self._body:
            self.tables[-1].append([])
        elif tag == "td":
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._body = False
        elif tag == "td" and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None


def measured_files_table(page: str) -> list[list[str]]:
    """The rows of the report's table of every measured file (after its heading)."""
    parser = Tables()
    parser.feed(page[page.index("<h3 id='measured-files'>") :])
    return parser.tables[0]


def test_the_run_report_renders_in_headless_chromium(micro_run: Run, tmp_path: Path) -> None:
    _, out, _, _ = micro_run
    # The run's latest summary: test_run's reruns may have changed the choice since.
    summary = json.loads((out / "summary.json").read_text())
    report = out / "report.html"
    assert summary["report"] == str(report)
    text = report.read_text()
    page = outline(text)
    assert not page.external, f"the report needs the network or other files: {page.external}"
    assert not {"script", "img", "link", "iframe"} & page.tags
    assert list(page.headings) == list(SECTIONS) and not page.missing
    for section, n in FIGURES.items():
        assert page.svgs.get(section, 0) >= n, section

    # What Chromium renders: the DOM it built from the file, and a screenshot of it.
    dom = headless(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    rendered = outline(dom.stdout)
    assert rendered.headings == page.headings and rendered.svgs == page.svgs
    shot = tmp_path / "report.png"
    proc = headless(report, tmp_path, f"--screenshot={shot}", "--window-size=1200,5000")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (5000, 1200)
    # Ink in every band of the page: the figures and tables drew, not a blank or error page.
    bands = np.array_split(pixels, 10)
    assert all((band < 200).mean() > 0.005 for band in bands[:8])

    # The content: every device, every training phase, the chosen subnet's card.
    for device in ("test-cpu", "npu-32x32-ws"):
        assert text.count(device) >= 3, device
    for phase in ("full", "kernel", "depth", "expand"):
        assert f">{phase}<" in text
    subnet = summary["chosen"][0]["subnet"]
    card = json.loads((out / "export" / subnet / "card.json").read_text())
    assert f"Model card: {subnet}" in text
    assert f"{100 * card['accuracy']['fp32']:.2f}%" in text
    # Every file each device measured, in a row of the summary's second table: its latency,
    # its placement as the device's runtime reported it, and its check on the device
    # (test-cpu checked its files on the test images; the simulator did not).
    files = measured_files_table(text)
    expected = [
        (r["device"], name, m) for r in summary["chosen"] for name, m in r["measured_files"].items()
    ]
    assert len(files) == len(expected) > 2
    assert any("placement" in m for _, _, m in expected)
    checked = 0
    for (device, name, m), cells in zip(expected, files, strict=True):
        assert cells[0] in ("", device) and cells[1].startswith(name)
        assert cells[1].endswith("recommended") == any(
            r["device"] == device and r["file"] == name for r in summary["chosen"]
        )
        assert cells[2] == f"{m['latency_ms']:.4g}"
        assert cells[7].startswith(m["runs_as"]) and cells[7].endswith(m.get("placement", ""))
        if device == "test-cpu":
            check = m["on_device"]
            checked += 1
            assert cells[6] == (
                f"{100 * check['top1_agreement']:.2f}%, {100 * check['accuracy']:.2f}% "
                f"({check['images']} images)"
            )
        else:
            assert cells[6] == "-"
    assert checked >= 2


def test_a_recommended_file_that_misses_the_agreement_target_says_so(micro_run: Run) -> None:
    from edgenas.report.collect import collect
    from edgenas.report.page import render

    data = collect(micro_run[1])
    assert data.summary is not None
    flag = "(no file reached the agreement target)"
    assert flag not in render(data)
    for row in data.summary["chosen"]:  # as if no test-cpu file had reached it
        row["file_meets_accuracy"] = row["device"] != "test-cpu"
    page = render(data)
    assert page.count(flag) == 2  # in the chosen row and beside the file in the files table
    cpu = next(r for r in data.summary["chosen"] if r["device"] == "test-cpu")
    flagged = [cells[1] for cells in measured_files_table(page) if flag in cells[1]]
    assert flagged == [f"{cpu['file']} recommended {flag}"]


def test_edgenas_report_writes_where_asked_and_refuses_what_is_not_a_run(
    micro_run: Run, tmp_path: Path
) -> None:
    _, out, _, _ = micro_run
    target = tmp_path / "elsewhere" / "r.html"

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return edgenas_here("report", *args)  # in-process: a process costs seconds of imports

    proc = report(str(out), "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target)
    assert list(outline(target.read_text()).headings) == list(SECTIONS)
    assert report(str(out), "--out", str(target)).returncode == 0  # its own report: rewritten
    # any other file was overwritten with HTML (a recipe, here)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: mine\n")
    proc = report(str(out), "--out", str(recipe))
    assert proc.returncode == 2
    assert f"--out {recipe} exists and is not an edgenas report" in " ".join(proc.stderr.split())
    assert recipe.read_text() == "name: mine\n"

    proc = report(str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path} is not a run folder (no run.json): give the folder that edgenas run wrote"
    ]
    proc = report(str(out / "run.json"))  # it said run.json was "not a run folder (no run.json)"
    assert proc.returncode == 2
    assert " ".join(proc.stderr.split()) == (
        f"error: {out / 'run.json'} is a file, not a run folder: give the folder that edgenas "
        f"run wrote (the one holding run.json, {out})"
    )
    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("*.pt", "*.onnx", "report.html"))
    pareto = broken / "search" / "pareto.json"
    good = json.loads(pareto.read_text())
    pareto.write_text('{"front": [')
    # A file that does not read is named in its part's place, and the rest is drawn (the
    # README's promise; the whole report was refused: walk-through).
    proc = report(str(broken))
    assert proc.returncode == 0 and (broken / "report.html").is_file()
    (warning,) = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    assert f"Pareto fronts: {pareto} is not a search's pareto.json" in warning
    # The right tag and damaged parts were tracebacks: KeyError, TypeError, IndexError, and
    # a card's KeyError (search audit).
    card = next(broken.glob("export/*/card.json"))
    for damage, said in (
        ({**good, "front": None}, "'front' is not a list of members with a subnet"),
        (
            {**good, "chosen": [{**good["chosen"][0], "index": 99}]},
            f"a choice's index 99 is not a member of the {len(good['front'])} on the front",
        ),
    ):
        pareto.write_text(json.dumps(damage))
        proc = report(str(broken))
        assert proc.returncode == 0, proc.stderr
        assert (
            f"warning: Pareto fronts: {pareto} is a damaged pareto.json ({said}): run the "
            "search again to rewrite it"
        ) in " ".join(proc.stderr.split())
    # A pareto.json another storage's study wrote (--storage) is not drawn over the trials
    # in search/ (other objectives ended in an IndexError, another count in a wrong plot).
    values = _trial_values(broken, good)
    assert values is not None and len(values) >= good["trials"]
    assert _trial_values(broken, {**good, "trials": len(values) + 1}) is None
    assert _trial_values(broken, {**good, "objectives": [*good["objectives"], "params"]}) is None
    pareto.write_text(json.dumps(good))
    card.write_text(json.dumps({"format": json.loads(card.read_text())["format"]}))
    proc = report(str(broken))
    assert proc.returncode == 0, proc.stderr
    assert f"{card} is a damaged model card ('name' is not a str)" in " ".join(proc.stderr.split())


def test_an_unfinished_run_says_which_stages_are_missing(tmp_path: Path) -> None:
    from edgenas.report import build_report

    (tmp_path / "run.json").write_text(
        json.dumps({"format": "edgenas.run/1", "recipe": {"name": "half", "space": "mbv3-tiny"}})
    )
    page = outline(build_report(tmp_path).read_text())
    assert list(page.headings) == list(SECTIONS)
    assert set(page.missing) == set(SECTIONS)
    assert "add `search`" not in page.missing["pareto"]  # code spans became <code>
    assert "search" in page.missing["pareto"] and not page.svgs


def _stopped_in_search(folder: Path) -> None:
    """A run.json in ``folder`` of a run trained and profiled, stopped in its search."""
    recipe = {**MICRO_RECIPE, "devices": [{"name": "npu-32x32-ws", "budget_ms": 5.0}]}
    finished = {"inputs": {}, "outputs": {}, "seconds": 1.0, "finished": "x"}
    run = {
        "format": "edgenas.run/1",
        "recipe": recipe,
        "stages": {"train": finished, "profile:npu-32x32-ws": finished},
        "started": {"search": {}},
    }
    (folder / "run.json").write_text(json.dumps(run))


def test_a_run_stopped_in_a_stage_says_it_did_not_finish(tmp_path: Path) -> None:
    # It said "No search in this run: add search to the recipe's stages" for a recipe whose
    # search had failed (audit, finding 3).
    from edgenas.report import build_report

    _stopped_in_search(tmp_path)
    page = outline(build_report(tmp_path).read_text())
    for section in ("summary", "pareto"):
        assert page.missing[section].startswith("The search stage started and did not finish")
    assert page.missing["models"].startswith("The export stage has not run yet")
    assert not any("recipe's stages" in page.missing[s] for s in ("summary", "pareto", "models"))


def test_the_line_the_last_run_stopped_with_is_shown(tmp_path: Path) -> None:
    # A run that failed on its recipe left the page of the run before it, and a stage it
    # stopped in said only "run the same command again" (walk-through).
    from edgenas.report import build_report

    _stopped_in_search(tmp_path)
    failure = "search failed: budget 5 ms: no subnet is that fast (the fastest takes 7.1 ms)"
    log = tmp_path / "run.log"
    log.write_text(  # as the pipeline writes it: an earlier run's failure, then this run's
        "2026-12-08T03:00:00 recipe r.yaml → run: stages train, profile, search\n"
        "2026-12-08T03:00:01 profile failed: npu-32x32-ws: no such profile\n"
        "2026-12-08T03:06:08 recipe r.yaml → run: stages train, profile, search\n"
        "2026-12-08T03:06:09 train: progressive shrinking (resumes from checkpoint.pt)\n"
        f"2026-12-08T03:06:10 {failure}\n"
    )
    text = build_report(tmp_path).read_text()
    page = outline(text)
    said = f"the last run stopped with {failure}. Mend what it names"
    assert said in page.missing["summary"] and said in page.missing["pareto"]
    banner = f"The last <code>edgenas run</code> here stopped with <code>{failure}</code>"
    assert banner in " ".join(html.unescape(text).split())
    assert "profile failed" not in text  # an earlier run's
    with log.open("a") as f:  # run again, to the end: nothing stopped it
        f.write("2026-12-08T03:10:00 recipe r.yaml → run: stages train, profile, search\n")
        f.write("2026-12-08T03:10:09 done: no export stage; summary in s, report in r\n")
    text = build_report(tmp_path).read_text()
    assert "stopped with" not in text and "search failed" not in text


def test_a_run_folder_a_command_works_in_is_not_reported(tmp_path: Path) -> None:
    # `edgenas report` wrote report.html into a folder edgenas run was training in, and drew
    # the training as a stage that failed or was stopped (walk-through).
    (tmp_path / "run.json").write_text(json.dumps({"format": "edgenas.run/1", "recipe": {}}))
    elsewhere = tmp_path.parent / f"{tmp_path.name}.html"
    holder = hold_folder(tmp_path)
    try:
        for out in ((), ("--out", elsewhere)):
            proc = edgenas_here("report", tmp_path, *out)
            assert proc.returncode == 2
            assert " ".join(proc.stderr.split()) == (
                f"error: {tmp_path} is in use: an edgenas command is working in it, whose stage "
                "under way the report would show as failed; wait for it to finish (edgenas run "
                "writes the report at its end)"
            )
        assert not (tmp_path / "report.html").exists() and not elsewhere.exists()
    finally:
        holder.kill()
        holder.wait()
    proc = edgenas_here("report", tmp_path)
    assert proc.returncode == 0 and (tmp_path / "report.html").is_file(), proc.stderr


def test_a_damaged_summary_says_how_to_write_it_again(tmp_path: Path) -> None:
    # "rerun the stage that writes it (edgenas run RECIPE --force STAGE)": no stage writes
    # summary.json, every run does at its end (walk-through).
    (tmp_path / "run.json").write_text(json.dumps({"format": "edgenas.run/1", "recipe": {}}))
    (tmp_path / "summary.json").write_text('{"format": "edgenas.run-summ')  # cut short
    proc = edgenas_here("report", tmp_path)
    line = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and line.startswith(f"error: {tmp_path / 'summary.json'}")
    assert line.endswith("rerun edgenas run on its recipe, which writes it again at its end")


def test_a_finished_stage_whose_file_is_gone_says_how_to_make_it_again(tmp_path: Path) -> None:
    # It said "add search to the recipe's stages" to a recipe that has it (run audit).
    from edgenas.report import build_report

    recipe = {**MICRO_RECIPE, "devices": [{"name": "npu-32x32-ws", "budget_ms": 5.0}]}
    finished = {"inputs": {}, "outputs": {}, "seconds": 1.0, "finished": "x"}
    stages = ("train", "profile:npu-32x32-ws", "search", "export:r28")
    run = {"format": "edgenas.run/1", "recipe": recipe, "stages": dict.fromkeys(stages, finished)}
    (tmp_path / "run.json").write_text(json.dumps(run))
    page = outline(build_report(tmp_path).read_text())
    assert page.missing["pareto"].startswith(
        "The search stage finished, but search/pareto.json is missing (moved or deleted): run "
        "the recipe again (edgenas run RECIPE), which makes a stage's missing output again."
    )
    assert page.missing["models"].startswith("The export stage finished, but every exported")


def test_the_report_shows_the_devices_of_the_recipe_only(micro_run: Run, tmp_path: Path) -> None:
    # A device the recipe no longer names kept its predictor and heatmaps in the report.
    from edgenas.report.collect import collect

    _, out, _, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.pt", "*.onnx"))
    assert {d.name for d in collect(copy).devices} == {"test-cpu", "npu-32x32-ws"}
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["devices"] == ["test-cpu", "npu-32x32-ws"]
    (copy / "summary.json").write_text(json.dumps({**summary, "devices": ["npu-32x32-ws"]}))
    assert [d.name for d in collect(copy).devices] == ["npu-32x32-ws"]
    # A summary of an earlier edgenas (rows without measured_files, no devices) still reads.
    older = [
        {
            k: v
            for k, v in row.items()
            if k not in ("measured_files", "latency_measured_at_baseline_ms")
        }
        for row in summary["chosen"]
    ]
    (copy / "summary.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "devices"} | {"chosen": older})
    )
    assert {d.name for d in collect(copy).devices} == {"test-cpu", "npu-32x32-ws"}


def test_a_chosen_subnet_exported_again_since_the_run_is_said(
    micro_run: Run, tmp_path: Path
) -> None:
    # A user's own export into a chosen subnet's folder left the summary's row (its int8
    # files, their latency) beside a card without them, and nothing said so (review).
    copy = tmp_path / "run"
    shutil.copytree(micro_run[1], copy, ignore=shutil.ignore_patterns("*.lock"))
    assert "warning" not in edgenas_here("report", str(copy)).stderr
    # The summary as it is now (the run tests before may have run the folder again).
    folder = Path(json.loads((copy / "summary.json").read_text())["chosen"][0]["folder"]).name
    proc = edgenas_here(
        "export", "--supernet", copy / "supernet.pt", "--subnet", "max", "--format", "onnx",
        "--no-verify", "--out", copy / "export" / folder, "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = edgenas_here("report", str(copy))
    assert proc.returncode == 0, proc.stderr
    (warning,) = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    said = f"export/{folder}: exported again since this run"
    assert warning.startswith(f"warning: {said}")
    assert warning.endswith("run the recipe again (edgenas run RECIPE), which exports its "
                            "choice there again")  # fmt: skip
    page = outline((copy / "report.html").read_text())
    assert list(page.missing) == ["summary"] and page.missing["summary"].startswith(said)


@pytest.mark.parametrize(
    "damage, said",
    [
        ({"stages": [1, 2]}, "stages is not an object"),
        ({"stages": {"train": 5}}, "stages['train'] is not an object"),
        ({"stages": {"train": {"inputs": 5, "outputs": {}}}}, "stages['train'] has no inputs"),
        ({"started": {"search": None}}, "started['search'] is not an object"),
        ({"recipe": 5}, "recipe is 5, not an object"),
        ({"versions": 5}, "versions is 5, not an object"),
        (
            {"stages": {"train": {"inputs": {}, "outputs": {}, "seconds": "x"}}},
            "stages['train'].seconds is \"x\", not a number or null",
        ),
    ],
)
def test_a_damaged_run_record_is_one_line(tmp_path: Path, damage: dict, said: str) -> None:
    # Each was a traceback in the report or the next run (run audit).
    run = {"format": "edgenas.run/1", "recipe": {"name": "x"}, "stages": {}, **damage}
    (tmp_path / "run.json").write_text(json.dumps(run))
    proc = edgenas_here("report", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"is not an edgenas run record ({said}" in line


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda s: s.update(devices=5), "devices is 5, not a list"),
        (lambda s: s.update(devices=[5]), "devices is not a list of names"),
        (lambda s: s["chosen"][0].update(folder=5), "chosen[0].folder is 5, not a string"),
        (
            lambda s: s["chosen"][1].update(budget_ms="x"),
            'chosen[1].budget_ms is "x", not a number',
        ),
        (
            lambda s: s["chosen"][0].update(accuracy_fp32=True),
            "chosen[0].accuracy_fp32 is true, not a number or null",
        ),
        (
            lambda s: s["chosen"][0].update(accuracy_int8={"model_int8.onnx": "x"}),
            "chosen[0].accuracy_int8 is not an object of numbers",
        ),
        (
            lambda s: s["chosen"][0].update(measured_files={"model.onnx": 5}),
            "chosen[0].measured_files['model.onnx'] is not an object",
        ),
    ],
)
def test_a_damaged_summary_is_one_line(
    micro_run: Run, tmp_path: Path, change: Any, said: str
) -> None:
    # Each was a traceback in the report, and so at the end of edgenas run (input audit).
    copy = tmp_path / "run"
    shutil.copytree(micro_run[1], copy, ignore=shutil.ignore_patterns("*.pt", "*.onnx"))
    summary = json.loads((copy / "summary.json").read_text())
    change(summary)
    (copy / "summary.json").write_text(json.dumps(summary))
    proc = edgenas_here("report", str(copy), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"is not an edgenas run summary ({said})" in line
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "damage, section, said",
    [
        (
            lambda run: _edit(run / "search" / "pareto.json", lambda p: p.update(devices=[5])),
            "pareto",
            "Pareto fronts: not drawn, search/pareto.json or the search's study holds what "
            "edgenas does not write (TypeError: ",
        ),
        (  # quoted in the warning: not read as the console's markup (it was a MarkupError)
            lambda run: _edit(
                run / "search" / "pareto.json", lambda p: p["devices"][0].update(name="[/x]")
            ),
            "pareto",
            "Pareto fronts: not drawn, search/pareto.json or the search's study holds what "
            "edgenas does not write (ValueError: 'latency_ms:[/x]' is not in list)",
        ),
        (
            lambda run: _edit(
                next(run.glob("export/*/card.json")), lambda c: c.update(accuracy={})
            ),
            "models",
            "Model cards: not drawn, an export's card.json holds what edgenas does not write "
            "(KeyError: 'images')",
        ),
        (
            lambda run: _edit(
                run / "devices" / "test-cpu" / "predictor.json", lambda p: p.update(validation=5)
            ),
            "latency-predictors",
            "Latency predictors: not drawn, a device's predictor.json holds what edgenas does "
            "not write (AttributeError: ",
        ),
    ],
)
def test_a_part_whose_files_were_damaged_is_left_out_and_named(
    micro_run: Run, tmp_path: Path, damage: Any, section: str, said: str
) -> None:
    # Values deep in a card, a predictor or pareto.json are not each checked when read: the
    # part drawn from them says it cannot be, and the rest of the report is drawn.
    copy, proc = _report_of_damaged_copy(micro_run, tmp_path, damage)
    (warning,) = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    assert warning.startswith(f"warning: {said}")
    assert warning.endswith("rerun the stage that writes it (edgenas run RECIPE --force STAGE)")
    page = outline((copy / "report.html").read_text())
    assert list(page.headings) == list(SECTIONS)
    assert list(page.missing) == [section] and page.missing[section].startswith(said)


@pytest.mark.parametrize(
    "damage, sections, said",
    [
        (
            lambda run: _edit(run / "search" / "pareto.json", lambda p: p.pop("chosen")),
            ["pareto"],
            "Pareto fronts: {run}/search/pareto.json is a damaged pareto.json ('chosen' is not",
        ),
        (
            lambda run: _cut(run / "search" / "pareto.json"),
            ["pareto"],
            "Pareto fronts: {run}/search/pareto.json is not a search's pareto.json (not valid",
        ),
        (
            lambda run: _edit(next(run.glob("export/*/card.json")), lambda c: c.update(format=5)),
            ["models"],
            "Model cards: {run}/export/",
        ),
        (
            lambda run: _cut(run / "devices" / "test-cpu" / "predictor.json"),
            ["latency-predictors", "block-latency"],
            "Latency predictors: {run}/devices/test-cpu/predictor.json is not a latency predictor",
        ),
        (
            lambda run: _cut(run / "devices" / "test-cpu" / "lut.json"),
            ["block-latency"],
            "Block latency per device: {run}/devices/test-cpu/lut.json",
        ),
    ],
    ids=["pareto-key", "pareto-cut", "card-format", "predictor-cut", "lut-cut"],
)
def test_a_part_whose_file_does_not_read_is_named_and_the_rest_drawn(
    micro_run: Run, tmp_path: Path, damage: Any, sections: list[str], said: str
) -> None:
    # A file cut short or of another format ended the whole report (walk-through), where the
    # README promises that part says so and the rest of the page is drawn.
    copy, proc = _report_of_damaged_copy(micro_run, tmp_path, damage)
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == len(sections)
    assert warnings[0].startswith(f"warning: {said.format(run=copy)}"), warnings[0]
    page = outline((copy / "report.html").read_text())
    assert list(page.headings) == list(SECTIONS)
    assert list(page.missing) == sections
    # The other device of the run is still drawn beside the one whose file was cut.
    if "block-latency" in sections:
        assert "npu-32x32-ws" in (copy / "report.html").read_text()


def _report_of_damaged_copy(
    micro_run: Run, tmp_path: Path, damage: Any
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`edgenas report` of a copy of the run that ``damage`` edited; it succeeds."""
    copy = tmp_path / "run"
    shutil.copytree(micro_run[1], copy, ignore=shutil.ignore_patterns("*.onnx", "*.lock"))
    damage(copy)
    proc = edgenas_here("report", str(copy))
    assert proc.returncode == 0, proc.stderr
    return copy, proc


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_a_part_a_run_could_not_draw_is_said_and_its_traceback_kept(
    micro_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In edgenas run, the files are its own: a part that cannot be drawn is likelier a bug
    # in the page. The warning went to run.log only, with no traceback, and not to the
    # terminal under --quiet (review).
    from edgenas.report import page

    recipe, out, cache, _ = micro_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.lock"))

    def broken(data: Any) -> str:
        raise TypeError("a bug in the page [/x]")  # and markup the console must not read

    monkeypatch.setitem(page.BUILDERS, "pareto", broken)
    monkeypatch.setenv("EDGENAS_CACHE", str(cache))
    proc = edgenas_here("run", recipe, "--out", copy, "--quiet")
    assert proc.returncode == 0, proc.stderr
    said = "Pareto fronts: not drawn, search/pareto.json or the search's study holds what"
    (warning,) = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    assert (
        warning.startswith(f"warning: {said}") and "(TypeError: a bug in the page [/x])" in warning
    )
    log = (copy / "run.log").read_text()
    assert f"report: {said}" in log and 'raise TypeError("a bug in the page [/x]")' in log
    assert (copy / "summary.json").is_file()


def _edit(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_card_markdown_becomes_escaped_html() -> None:
    text = to_html(
        "# Card <x>\n\nSome `a<b>` text\non two lines.\n\n- one\n- `two`\n\n"
        "| a | b |\n|---|---|\n| 1 | `<2>` |\n",
        heading_offset=1,
    )
    assert text.splitlines() == [
        "<h2>Card &lt;x&gt;</h2>",
        "<p>Some <code>a&lt;b&gt;</code> text on two lines.</p>",
        "<ul><li>one</li><li><code>two</code></li></ul>",
        "<table><thead><tr><th>a</th><th>b</th></tr></thead>"
        "<tbody><tr><td>1</td><td><code>&lt;2&gt;</code></td></tr></tbody></table>",
    ]
