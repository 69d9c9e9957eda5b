"""Summarise the recorded budget curves: one table (mean ± s.d. over seeds) and one chart (accuracy vs minutes).

Reads every ``benchmarks/results/budget_curves/*.csv`` written by :mod:`budget_curve` (one row per seed, budget,
half and category) and writes, beside them:

- ``summary.csv``: per method, variant, input size, score mode, budget and half, the category-mean I-AUROC,
  P-AUROC and AUPRO as mean and s.d. over seeds, the mean training minutes and a ``degenerate`` flag (a category
  whose image scores all tied in some seed);
- ``chart.png``: I-AUROC and P-AUROC of the report half against training minutes, one line per configuration,
  PaDiM and PatchCore as horizontal lines per input size, GLASS (epoch-trained) as a curve; each peer at its best
  setting on the tune half;
- ``results.json``: the commands (from each CSV's ``.json`` sidecar) and the date, for the published tables.

    python benchmarks/budget_report.py
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks" / "results" / "budget_curves"
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")
KEY = ("method", "variant", "image_size", "score_mode", "image_score", "image_cache", "budget", "budget_unit", "half")
DEFAULT_IMAGE_SCORE = {"cras": "patch_max"}  # what rows recorded before the column was added used
PEERS = ("padim", "patchcore")  # one-pass peers: horizontal lines
TRAINED_PEERS = ("glass",)  # epoch-trained peers: curves, like ours
OUTPUTS = ("summary.csv",)
# Our curves drawn on the chart: each model's recipe, and the named recipes that change an option
# (``configs/cras/cpu_whitened.yaml``). Option sweeps stay in the tables.
CHARTED_VARIANTS = ("recipe", "cpu_whitened")
CAPPED = "max_train="  # in the label of a run on capped training sets (budget_curve --max-train)


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The category-mean rows of one curve CSV."""
    rows: list[dict[str, str]] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] == "mean":
                row["image_cache"] = row.get("image_cache") or "no"  # runs recorded before the option decoded
                row["image_score"] = row.get("image_score") or DEFAULT_IMAGE_SCORE.get(row["method"], "")
                rows.append(row)
    return rows


def raw_rows(folder: Path) -> list[dict[str, str]]:
    """Every category-mean row of every curve CSV in ``folder``."""
    return [row for path in sorted(folder.glob("*.csv")) if path.name not in OUTPUTS for row in csv_rows(path)]


def summarise(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Mean and s.d. over seeds per configuration, budget and half (s.d. empty with one seed)."""
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in KEY), []).append(row)
    table = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(KEY, key, strict=True))
        entry["seeds"] = len({row["seed"] for row in members})
        entry["train_min"] = round(statistics.fmean(float(row["train_min"]) for row in members), 2)
        for metric in METRICS:
            values = [float(row[metric]) for row in members]
            entry[metric] = round(statistics.fmean(values), 4)
            entry[f"{metric}_sd"] = round(statistics.stdev(values), 4) if len(values) > 1 else ""
        entry["degenerate"] = any(row["degenerate"] == "True" for row in members)
        table.append(entry)
    table.sort(
        key=lambda e: (
            e["half"],
            e["method"],
            e["variant"],
            int(e["image_size"]),
            e["score_mode"],
            e["image_score"],
            int(e["budget"]),
        )
    )
    return table


def write_summary(path: Path, table: list[dict[str, Any]]) -> None:
    """``summary.csv``."""
    columns = [*KEY, "seeds", "train_min", *(f"{m}{s}" for m in METRICS for s in ("", "_sd")), "degenerate"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)


def write_chart(path: Path, table: list[dict[str, Any]]) -> None:
    """I-AUROC, P-AUROC and AUPRO (report half) against training minutes; one-pass peers as horizontal lines."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    lines = chart_lines(table)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(19, 6))
    for axis, metric, title in zip(axes, METRICS, ("I-AUROC", "P-AUROC", "AUPRO"), strict=True):
        for (method, variant, size, mode, _cache), members in sorted(lines.items()):
            label = f"{method} {variant} {size}px" + (f" ({mode})" if mode else "")
            if method in TRAINED_PEERS:
                label += " (best on tune)"
            if method in PEERS:
                axis.axhline(
                    float(members[0][metric]),
                    linestyle="--" if size == "128" else ":",
                    linewidth=1,
                    label=label + " (best on tune)",
                    color="grey" if method == "padim" else "black",
                )
                continue
            members.sort(key=lambda r: float(r["train_min"]))
            x = [float(r["train_min"]) for r in members]
            y = [float(r[metric]) for r in members]
            sd = [float(r[f"{metric}_sd"] or 0) for r in members]
            style = "-" if size == "128" else "-."
            axis.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=label, linestyle=style)
        axis.set_xscale("log")
        axis.set_xlabel("training minutes on 2 CPU cores (log)")
        axis.set_ylabel(f"mean {title}, report half (mean ± s.d. over seeds)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()  # one legend below the panels: it hides no curve
    figure.suptitle("Budget curves, unified model over ../shared/data/real (reduced CPU recipes, EfficientNet-Lite0)")
    figure.tight_layout(rect=(0, 0.15, 1, 1))
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def chart_lines(table: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """The report-half rows the chart draws, one list per line: our charted recipes, each peer at its tune-best setting.

    Keys are ``(method, variant, image_size, score_mode, image_cache)``.
    """
    tuned = best_peer_settings(table)
    lines: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in table:
        if row["half"] != "report":
            continue
        if row["method"] in (*PEERS, *TRAINED_PEERS):
            if tuned.get((row["method"], str(row["image_size"]))) != row["variant"]:
                continue  # a peer is drawn at its best setting on the tune half
        elif (
            row["variant"] not in CHARTED_VARIANTS
            or row["score_mode"] == "probability"
            or row["image_cache"] == "no"
            or row["image_score"] != DEFAULT_IMAGE_SCORE.get(row["method"], "")
        ):
            continue  # option sweeps and the paper's score mode are in the tables, not the chart
        key = (row["method"], row["variant"], str(row["image_size"]), row["score_mode"], row["image_cache"])
        lines.setdefault(key, []).append(row)
    return lines


def best_peer_settings(table: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """For each peer and image size, the variant with the best mean I-AUROC + P-AUROC on the **tune** half.

    The sum ranks settings that move only the maps (a map sigma) as well as those that move the image scores. An
    epoch-trained peer's (GLASS's) settings are compared at the longest budget all of them reached, so a setting run
    longer does not win by its length; runs on capped training sets are studies (a noise sweep), never the drawn
    setting. Ties keep the first row of the table.
    """

    def merit(row: dict[str, Any]) -> float:
        return float(row["image_AUROC"]) + float(row.get("pixel_AUROC") or 0.0)

    candidates: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in table:
        if row["method"] not in (*PEERS, *TRAINED_PEERS) or row["half"] != "tune" or CAPPED in row["variant"]:
            continue  # a peer trained on capped training sets is a study, not the peer's best full-data setting
        candidates.setdefault((row["method"], str(row["image_size"])), []).append(row)
    best: dict[tuple[str, str], str] = {}
    for key, rows in candidates.items():
        compared = rows
        if key[0] in TRAINED_PEERS:  # settings compared at the longest budget every one of them reached
            budgets = [{str(r["budget"]) for r in rows if r["variant"] == v} for v in {r["variant"] for r in rows}]
            shared = set.intersection(*budgets)
            if shared:
                longest = max(shared, key=int)
                compared = [row for row in rows if str(row["budget"]) == longest]
        best[key] = max(compared, key=merit)["variant"]
    return best


def commands(folder: Path) -> list[dict[str, Any]]:
    """Every recorded run's command, from the CSVs' sidecars."""
    runs = []
    for sidecar in sorted(folder.glob("*.json")):
        if sidecar.name == "results.json":
            continue
        runs += [{"csv": sidecar.with_suffix(".csv").name, **run} for run in json.loads(sidecar.read_text())["runs"]]
    return runs


def best(table: list[dict[str, Any]], method: str, half: str, metric: str = "image_AUROC") -> dict[str, Any] | None:
    """The row of ``method`` with the highest ``metric`` on ``half`` (how a peer's setting is chosen on tune)."""
    rows = [row for row in table if row["method"] == method and row["half"] == half]
    return max(rows, key=lambda r: r[metric]) if rows else None


def main(argv: list[str] | None = None) -> int:
    """Write the summary, the chart and the run record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=FOLDER)
    args = parser.parse_args(argv)
    rows = raw_rows(args.folder)
    if not rows:
        print(f"no budget-curve CSVs under {args.folder}")
        return 1
    table = summarise(rows)
    write_summary(args.folder / "summary.csv", table)
    write_chart(args.folder / "chart.png", table)
    record = {
        "environment": {
            "command": "python benchmarks/budget_report.py",
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        "runs": commands(args.folder),
    }
    (args.folder / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    for row in table:
        if row["half"] == "report":
            sd = f"±{row['image_AUROC_sd']:.3f}" if row["image_AUROC_sd"] != "" else " (1 seed)"
            flag = "  DEGENERATE" if row["degenerate"] else ""
            print(
                f"{row['method']:10s} {row['variant'][:40]:40s} {row['image_size']:>4s} {row['score_mode']:12s} "
                f"{row['image_score']:12s} "
                f"{row['budget']:>5s} {row['train_min']:7.2f} min  I {row['image_AUROC']:.3f}{sd}  "
                f"P {row['pixel_AUROC']:.3f}  PRO {row['pixel_AUPRO']:.3f}{flag}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
