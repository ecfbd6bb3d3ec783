"""The summary an ``edgenas run`` ends with (``summary.json``, and the table the command
prints): one row per device budget, read from the cards of the subnets it exported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgenas.recipe import Recipe
from edgenas.run_folder import RunFolder
from edgenas.run_record import SUMMARY_FORMAT, MeasuredFile, RunSummary, SummaryRow, over_budget
from edgenas.stage_inputs import device_name
from export.card import DeviceLatency, execution_text, read_card


def _measured_file(
    value: Mapping[str, Any],
    described: Mapping[str, Any],
    int8: Mapping[str, Any] | None,
    card: Mapping[str, Any],
) -> MeasuredFile:
    """One file of a card as measured on one device, for the run summary."""
    out = MeasuredFile(
        latency_ms=value["measured"]["median_ms"],
        speedup_vs_fp32=value.get("speedup_vs_fp32"),
        runs_as=execution_text(described.get("execution") or {}),
        accuracy=int8["accuracy"] if int8 else card["accuracy"]["fp32"],
        top1_agreement=int8["top1_agreement"] if int8 else None,
    )
    placement = value["measured"].get("placement_text")
    if placement:
        out["placement"] = placement
    if "on_device" in value:
        out["on_device"] = value["on_device"]
    return out


def _predicted_ms(on_device: DeviceLatency | None, shown: str | None) -> float | None:
    """The predicted latency of the file shown for a device; a device nothing runs on
    (published tables, samsung-note10) has no file, only its tables' prediction."""
    if on_device is None:
        return None
    if shown is not None:
        return on_device["files"][shown]["predicted"]
    return on_device.get("predicted")


def build_summary(recipe: Recipe, run: RunFolder, exported: list[dict[str, Any]]) -> RunSummary:
    """One row per device budget: the chosen subnet, its accuracy and latency, its files."""
    rows: list[SummaryRow] = []
    for entry in exported:
        card = read_card(entry["folder"] / "card.json")
        files = {f["name"]: f for f in card["files"]}
        int8 = card["accuracy"]["int8"]
        for choice in entry["chosen_for"]:
            device = choice["device"]
            on_device = card["latency"].get(device)
            measured = on_device["files"] if on_device else {}
            # The card's recommendation: the fastest file accurate enough, else (flagged) the
            # one that agrees best.
            shown = on_device.get("recommended") if on_device else None
            row = SummaryRow(
                device=device,
                budget_ms=choice["budget_ms"],
                subnet=entry["subnet"],
                accuracy_fp32=card["accuracy"]["fp32"],
                accuracy_int8={n: v["accuracy"] for n, v in card["accuracy"]["int8"].items()},
                file=shown,
                latency_predicted_ms=_predicted_ms(on_device, shown),
                latency_measured_ms=measured[shown]["measured"]["median_ms"] if shown else None,
                latency_measured_at_baseline_ms=measured[shown].get("measured_at_baseline_ms")
                if shown
                else None,
                bytes=files[shown]["bytes"] if shown else None,
                folder=str(entry["folder"]),
                files=sorted(files),
                measured_files={
                    name: _measured_file(value, files[name], int8.get(name), card)
                    for name, value in measured.items()
                },
            )
            if shown is not None and on_device is not None:
                row["file_meets_accuracy"] = on_device.get("recommended_meets_accuracy", True)
            if shown is not None:
                row["file_over_budget"] = over_budget(row)
            if shown is not None and on_device is not None:
                # An int8 table whose files missed the agreement target or ran slower: the
                # fp32 file the card recommends is not what the budget held. (An fp32 table's
                # int8 file recommended is faster than the file the budget held.)
                predicted = [n for n, f in measured.items() if f["predicted"] is not None]
                searched = files[predicted[0]]["precision"] if predicted else None
                if searched == "int8" and shown not in predicted:
                    row["searched_precision"] = searched
            rows.append(row)
    devices = [device_name(d.name) for d in recipe.devices]
    current = _current_stages(recipe, devices, [e["subnet"] for e in exported])
    summary = RunSummary(
        format=SUMMARY_FORMAT,
        run=str(run.root),
        recipe=recipe.name,
        stages={k: v.get("seconds") for k, v in run.stages.items() if k in current},
        chosen=rows,
        devices=devices,
    )
    if not rows and "search" in summary["stages"]:
        # It printed the search's choices, and its JSON held "chosen": [] (walk-through).
        summary["searched"] = _searched(run)
    return summary


def _searched(run: RunFolder) -> list[dict[str, Any]]:
    """The choices of the run's search (pareto.json), as the run prints them."""
    from edgenas.search.pareto import read_pareto

    document = read_pareto(run.layout.pareto)
    rows = []
    for choice in document.get("chosen", []):
        member = document["front"][choice["index"]]
        accuracy = member["accuracy"]
        measured = accuracy.get("measured")
        rows.append(
            {
                "device": choice["device"],
                "budget_ms": choice["budget_ms"],
                "index": choice["index"],
                "subnet": member["subnet"],
                "accuracy": measured if measured is not None else accuracy.get("predicted"),
                "accuracy_measured": measured is not None,
                "latency_ms": member["latency_ms"][choice["device"]]["predicted"],
            }
        )
    return rows


def _current_stages(recipe: Recipe, devices: Sequence[str], exported: Sequence[str]) -> set[str]:
    """The stage keys this recipe's run is made of: records of a stage it does not plan, a
    device it no longer names or a subnet no longer chosen stay in run.json (their work may
    serve again) but are not this run's."""
    planned = recipe.planned_stages
    keys: set[str] = {s for s in planned if s in ("train", "search")}
    if "profile" in planned:
        keys |= {f"profile:{name}" for name in devices}
    if "export" in planned:
        keys |= {f"export:{key}" for key in exported}
    return keys
