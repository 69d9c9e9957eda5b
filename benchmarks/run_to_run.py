"""How much the benchmark's speed figures move between recorded runs of the same command on the same machine.

The side-by-side benchmark runs on a shared CPU, so absolute times depend on what else ran. This script reads the
mean rows of two or more recorded ``compare.py`` runs and writes, per method, each run's batch-32 time and its
multiple of the paired backbone floor, with the spread between runs: the honest error bar of those columns.
Metrics are compared as well (they do not depend on load; a difference means the recipe changed).

    python benchmarks/run_to_run.py --runs benchmarks/results/20261123-231737 benchmarks/results/20261124-093115 \
        --output benchmarks/results/run_to_run
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEED = ("ms_per_image_b32", "x_backbone_b32")
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")


class RunMismatchError(ValueError):
    """The runs cannot be compared (too few, no paired floor, or no method in common)."""


def mean_rows(run: Path) -> dict[str, dict[str, str]]:
    """The ``category == mean`` rows of a recorded run's ``results.csv``, by method."""
    with (run / "results.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["category"] == "mean"]
    if rows and "floor_ms_per_image_b32" not in rows[0]:
        msg = f"{run} has no paired backbone floor (recorded before it existed); pick runs with floor_ms_per_image_b32."
        raise RunMismatchError(msg)
    return {row["method"]: row for row in rows}


def compare_runs(runs: list[Path]) -> list[dict[str, Any]]:
    """One row per method present in every run: each run's speed figures, their spread and the metric spread."""
    if len(runs) < 2:
        msg = f"give at least two recorded runs to compare, got {len(runs)}."
        raise RunMismatchError(msg)
    tables = [mean_rows(run) for run in runs]
    methods = [method for method in tables[0] if all(method in table for table in tables[1:])]
    if not methods:
        msg = "the runs have no method in common."
        raise RunMismatchError(msg)
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method}
        for key in SPEED:
            values = [float(table[method][key]) for table in tables]
            for index, value in enumerate(values, start=1):
                row[f"{key}_run{index}"] = round(value, 4)
            row[f"{key}_spread"] = round(max(values) - min(values), 4)
        times = [float(table[method]["ms_per_image_b32"]) for table in tables]
        row["ms_per_image_b32_spread_pct"] = round(100 * (max(times) - min(times)) / max(times), 1)
        for key in METRICS:
            values = [float(table[method][key]) for table in tables]
            row[f"{key}_spread"] = round(max(values) - min(values), 4)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Compare the runs and write ``results.csv`` and ``results.json`` under ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="recorded compare.py run folders")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "run_to_run")
    args = parser.parse_args(argv)
    try:
        rows = compare_runs(args.runs)
    except (RunMismatchError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
    meta = {
        "environment": {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "command": command},
        "runs": [str(run) for run in args.runs],
    }
    (args.output / "results.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.output / 'results.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
