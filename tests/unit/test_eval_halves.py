"""Tune/report halves of the test images: disjoint, complete, stratified per category and defect type, seeded."""

from __future__ import annotations

from collections import Counter

import pytest

from anomalib_repair import MVTecFolder
from anomalib_repair.data.eval_halves import half_indices
from anomalib_repair.errors import BadInputError

CATEGORIES = ["a"] * 7 + ["b"] * 5
LABELS = ["good"] * 4 + ["cut"] * 3 + ["good"] * 2 + ["hole"] * 3


def test_halves_are_disjoint_complete_and_balanced_per_group():
    tune = half_indices(CATEGORIES, LABELS, "tune", seed=3)
    report = half_indices(CATEGORIES, LABELS, "report", seed=3)
    assert not set(tune) & set(report)
    assert sorted(tune + report) == list(range(len(CATEGORIES)))
    groups = Counter(zip(CATEGORIES, LABELS, strict=True))
    for key, size in groups.items():
        in_tune = sum(1 for i in tune if (CATEGORIES[i], LABELS[i]) == key)
        assert in_tune in {size // 2, (size + 1) // 2}
    for category in ("a", "b"):  # every category in both halves, sizes within one image of each other
        counts = [sum(1 for i in half if CATEGORIES[i] == category) for half in (tune, report)]
        assert min(counts) >= 1
        assert abs(counts[0] - counts[1]) <= 1


def test_halves_follow_the_seed():
    assert half_indices(CATEGORIES, LABELS, "tune", seed=0) == half_indices(CATEGORIES, LABELS, "tune", 0)
    draws = {tuple(half_indices(CATEGORIES, LABELS, "tune", seed=s)) for s in range(6)}
    assert len(draws) > 1


def test_unknown_half_is_refused():
    with pytest.raises(ValueError, match="must be one of tune, report"):
        half_indices(CATEGORIES, LABELS, "all")
    with pytest.raises(BadInputError, match="test_half must be None, 'tune' or 'report'"):
        MVTecFolder(root=".", test_half="half")


def test_datamodule_halves_split_every_category_of_a_folder(demo_root):
    paths, counts = {}, {}
    for half in ("tune", "report"):
        datamodule = MVTecFolder(root=demo_root, num_workers=0, test_half=half, test_half_seed=1)
        datamodule.setup()
        samples = datamodule.test_data.samples
        paths[half] = set(samples["image_path"].astype(str))
        assert datamodule.category_index is not None
        counts[half] = Counter(datamodule.category_index.names_of(sorted(paths[half])))
        assert set(samples["label"]) >= {"good"}
        assert len(datamodule.val_data) == len(datamodule.test_data)  # same_as_test: thresholds on the same half
    full = MVTecFolder(root=demo_root, num_workers=0)
    full.setup()
    assert not paths["tune"] & paths["report"]
    assert paths["tune"] | paths["report"] == set(full.test_data.samples["image_path"].astype(str))
    assert set(counts["tune"]) == set(counts["report"]) == set(full.categories)
