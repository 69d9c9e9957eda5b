"""Seeded, stratified halves of each category's test images: a *tune* half and a *report* half.

Any choice made by looking at results (a recipe value, an option's default, a competitor's setting) is made on the
tune half; tables report on the other half, so that a number is never measured on the images it was tuned on.

Each category's test images are grouped by their label folder (``good``, each defect type) and every group is
shuffled with the seed and cut in two; groups of odd size give their extra image alternately to one half and the
other, so the halves differ by at most one image per category. Nothing is pooled across categories: every
category with at least two test images appears in both halves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TEST_HALVES = ("tune", "report")


def strata(categories: Sequence[str], labels: Sequence[str]) -> dict[tuple[str, str], list[int]]:
    """Positions of the test images of every (category, label folder) group, in order of appearance."""
    if len(categories) != len(labels):
        msg = f"{len(categories)} categories but {len(labels)} labels: one of each per test image."
        raise ValueError(msg)
    groups: dict[tuple[str, str], list[int]] = {}
    for position, key in enumerate(zip(categories, labels, strict=True)):
        groups.setdefault(key, []).append(position)
    return groups


def half_indices(
    categories: Sequence[str],
    labels: Sequence[str],
    half: str,
    seed: int = 0,
) -> list[int]:
    """Positions (sorted) of the test images in ``half``.

    Args:
        categories: Category name of every test image.
        labels: Label folder of every test image (``good`` or the defect type): the strata.
        half: ``"tune"`` or ``"report"``.
        seed: Seed of the split (the same seed gives the same halves on every machine).

    Returns:
        Sorted positions into ``categories``/``labels`` of the images of that half; the two halves are disjoint
        and together hold every image.

    Example:
        >>> tune = half_indices(["a"] * 4, ["good", "good", "cut", "cut"], "tune")
        >>> report = half_indices(["a"] * 4, ["good", "good", "cut", "cut"], "report")
        >>> sorted(tune + report), len(tune)
        ([0, 1, 2, 3], 2)
    """
    if half not in TEST_HALVES:
        msg = f"The test half must be one of {', '.join(TEST_HALVES)}, got '{half}'."
        raise ValueError(msg)
    groups = strata(categories, labels)
    generator = np.random.default_rng(seed)
    chosen: list[int] = []
    odd_turn: dict[str, int] = {}
    for key in sorted(groups):
        members = np.asarray(groups[key])[generator.permutation(len(groups[key]))].tolist()
        cut = len(members) // 2
        if len(members) % 2:  # the extra image goes to tune and report in turn, per category
            turn = odd_turn.get(key[0], 0)
            odd_turn[key[0]] = turn + 1
            cut += 1 if turn % 2 == 0 else 0
        chosen.extend(members[:cut] if half == "tune" else members[cut:])
    return sorted(chosen)
