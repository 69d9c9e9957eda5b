"""``chart.png``: the mean I-AUROC, P-AUROC and AUPRO of every method, and its inference ms/image.

Needs matplotlib; without it :func:`write_chart` returns the reason, which the notes then carry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .report import fmt
from .settings import LABELS


def write_chart(path: Path, rows: list[dict[str, Any]], floor: dict[str, Any], title: str) -> str | None:
    """``chart.png``: mean I-AUROC, P-AUROC, AUPRO per method, and inference ms/image. Returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        return f"chart.png not written: {error} (pip install matplotlib)"
    means = [row for row in rows if row["category"] == "mean" and not row["error"]]
    if not means:
        return "chart.png not written: no method finished"
    figure, (quality, speed) = plt.subplots(1, 2, figsize=(16, 6.4), gridspec_kw={"width_ratios": [3, 2]})
    _plot_quality(quality, means)
    _plot_speed(speed, means, floor)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return None


def _plot_quality(axis: Any, means: list[dict[str, Any]]) -> None:
    """Grouped bars: mean I-AUROC, P-AUROC and AUPRO of every method."""
    import numpy as np

    positions = np.arange(len(means))
    width = 0.26
    metrics = (("image_AUROC", "I-AUROC"), ("pixel_AUROC", "P-AUROC"), ("pixel_AUPRO", "AUPRO (FPR<=0.3)"))
    for offset, (key, title) in enumerate(metrics):
        values = [row[key] for row in means]
        bars = axis.bar(positions + (offset - 1) * width, values, width, label=title)
        axis.bar_label(bars, labels=[fmt(value, 2) for value in values], fontsize=7, padding=2, rotation=90)
    axis.set_xticks(positions, [LABELS.get(row["method"], row["method"]) for row in means], rotation=30, ha="right")
    axis.set_ylim(0, 1.3)
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axis.set_title("Mean over categories (higher is better)")
    axis.legend(loc="upper center", ncol=3, fontsize=9, frameon=False)


def _plot_speed(axis: Any, means: list[dict[str, Any]], floor: dict[str, Any]) -> None:
    """Horizontal bars: median ms/image at batch 1 and 32; a black tick on each bar marks that method's floor.

    The floor (the backbone alone) is timed in turn with each method in its worker, so every bar has its own; runs
    recorded before that draw the separate backbone worker's time as a dashed line instead.
    """
    import numpy as np

    positions = np.arange(len(means))
    height = 0.38
    marked = False
    for offset, (batch, colour) in enumerate(((1, "tab:blue"), (32, "tab:orange"))):
        values = [row[f"ms_per_image_b{batch}"] for row in means]
        centres = positions + (offset - 0.5) * height
        bars = axis.barh(centres, values, height, color=colour, label=f"batch {batch}")
        axis.bar_label(bars, labels=[fmt(value, 1) for value in values], fontsize=8, padding=2)
        floors = [row.get(f"floor_ms_per_image_b{batch}", math.nan) for row in means]
        if all(isinstance(value, float) and not math.isnan(value) for value in floors):
            axis.vlines(
                floors,
                centres - height / 2,
                centres + height / 2,
                color="black",
                linewidth=2,
                label=None if marked else "backbone alone (paired floor)",
            )
            marked = True
        elif f"ms_per_image_b{batch}" in floor:
            axis.axvline(
                floor[f"ms_per_image_b{batch}"],
                color=colour,
                linewidth=1,
                linestyle="--",
                label=f"backbone alone, batch {batch}",
            )
    longest = max(max(row["ms_per_image_b1"], row["ms_per_image_b32"]) for row in means)
    axis.set_xlim(0, 1.18 * longest)
    axis.set_yticks(positions, [LABELS.get(row["method"], row["method"]) for row in means])
    axis.invert_yaxis()
    axis.set_xlabel("ms / image, median (lower is better)")
    axis.set_title("Inference: model.model forward, shared 2-core CPU")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, frameon=False)
