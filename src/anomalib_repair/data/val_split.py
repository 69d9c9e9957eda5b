"""A validation split carved from each category's test images, seeded and stratified, never pooled.

Thresholds and normalisation need anomalous images, which only the test folders hold. anomalib's default
(``val_split_mode="same_as_test"``) fits them on the very images it then reports on. ``"from_test"`` on our
multi-class datamodules instead moves a seeded share of **every category's** test images, drawn from each label
folder (``good`` and every defect type) separately, into validation; the rest stay the test set. A category with
images of a label in only one folder keeps at least one of them on each side when it has two or more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anomalib_repair.data.eval_halves import strata


def validation_indices(
    categories: Sequence[str],
    labels: Sequence[str],
    ratio: float,
    seed: int = 0,
) -> list[int]:
    """Positions (sorted) of the test images that become validation images.

    Args:
        categories: Category name of every test image.
        labels: Label folder of every test image (``good`` or the defect type): the strata.
        ratio: Share of each (category, label folder) group that goes to validation, in (0, 1).
        seed: Seed of the split.

    Returns:
        Sorted positions; the complement is the test set. In each group of ``n >= 2`` images,
        ``round(ratio * n)`` clipped to ``[1, n - 1]`` go to validation; a group of one image stays in the test set.

    Example:
        >>> validation_indices(["a"] * 4 + ["b"] * 4, ["good", "good", "cut", "cut"] * 2, 0.5)
        [0, 2, 5, 6]
    """
    if not 0 < ratio < 1:
        msg = f"val_split_ratio must lie strictly between 0 and 1 for a split of the test images, got {ratio}."
        raise ValueError(msg)
    groups = strata(categories, labels)
    generator = np.random.default_rng(seed)
    chosen: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        if len(members) < 2:
            continue
        count = min(max(round(ratio * len(members)), 1), len(members) - 1)
        order = generator.permutation(len(members))[:count]
        chosen.extend(members[i] for i in order)
    return sorted(chosen)
