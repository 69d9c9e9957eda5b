"""A per-category results table: categories as rows, metrics as columns, plus the mean row."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anomalib_repair.evaluation.metrics import MetricSpec

MEAN_ROW = "mean"


@dataclass
class ResultsTable:
    """Metric values per category, with the mean over categories as the last row.

    Attributes:
        specs: The metrics (columns).
        rows: Category → metric key → value (NaN where undefined); ends with ``"mean"``.
    """

    specs: tuple[MetricSpec, ...]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Mapping[str, Mapping[str, float]], specs: Sequence[MetricSpec]) -> ResultsTable:
        """Build a table from per-category rows and append their mean (ignoring undefined values)."""
        table = cls(tuple(specs), {name: dict(values) for name, values in rows.items()})
        mean: dict[str, float] = {}
        for spec in specs:
            values = [row[spec.key] for row in rows.values() if not math.isnan(row[spec.key])]
            mean[spec.key] = sum(values) / len(values) if values else math.nan
        table.rows[MEAN_ROW] = mean
        return table

    @property
    def mean(self) -> dict[str, float]:
        """The mean row."""
        return self.rows[MEAN_ROW]

    def to_markdown(self, digits: int = 4) -> str:
        """Render as a GitHub Markdown table (values rounded; ``-`` where undefined)."""
        header = "| category | " + " | ".join(spec.title for spec in self.specs) + " |"
        rule = "|---|" + "---:|" * len(self.specs)
        lines = [header, rule]
        for name, row in self.rows.items():
            cells = ["-" if math.isnan(row[spec.key]) else f"{row[spec.key]:.{digits}f}" for spec in self.specs]
            label = f"**{name}**" if name == MEAN_ROW else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.csv`` and ``<stem>.md``; returns both paths.

        Each file is written to a temporary name and renamed, so an interrupted run never leaves half a table.
        """
        stem = Path(stem)
        csv_path, markdown_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
        partial = csv_path.with_suffix(".csv.partial")
        with partial.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["category", *(spec.key for spec in self.specs)])
            for name, row in self.rows.items():
                writer.writerow(
                    [name, *("" if math.isnan(row[spec.key]) else f"{row[spec.key]:.6f}" for spec in self.specs)]
                )
        partial.replace(csv_path)
        partial = markdown_path.with_suffix(".md.partial")
        partial.write_text(self.to_markdown() + "\n")
        partial.replace(markdown_path)
        return csv_path, markdown_path
