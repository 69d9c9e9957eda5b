"""A validation split from each category's test images: seeded, stratified, disjoint from the test set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from anomalib_repair.data import MVTecFolder
from anomalib_repair.data.val_split import validation_indices


def _setup(root: Path, **kwargs) -> MVTecFolder:
    datamodule = MVTecFolder(root=root, num_workers=0, train_batch_size=4, eval_batch_size=4, **kwargs)
    datamodule.setup()
    return datamodule


def _categories_and_labels(datamodule: MVTecFolder, dataset) -> Counter:
    names = datamodule.category_index.names_of(dataset.samples["image_path"].astype(str))
    return Counter(zip(names, (int(label) for label in dataset.samples["label_index"]), strict=True))


def test_groups_are_split_by_ratio_and_seed_and_singletons_stay_in_test():
    categories = ["a"] * 10 + ["b"] * 4 + ["c"]
    labels = ["good"] * 6 + ["cut"] * 4 + ["good", "good", "hole", "hole"] + ["good"]
    chosen = validation_indices(categories, labels, 0.5, seed=3)
    assert chosen == validation_indices(categories, labels, 0.5, seed=3)
    assert chosen != validation_indices(categories, labels, 0.5, seed=4)
    picked = Counter((categories[i], labels[i]) for i in chosen)
    assert picked == {("a", "good"): 3, ("a", "cut"): 2, ("b", "good"): 1, ("b", "hole"): 1}
    assert 14 not in chosen  # a group of one stays in the test set
    small = Counter((categories[i], labels[i]) for i in validation_indices(categories, labels, 0.05))
    assert small == {("a", "good"): 1, ("a", "cut"): 1, ("b", "good"): 1, ("b", "hole"): 1}  # at least one


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_ratio_outside_the_open_interval_is_refused(ratio):
    with pytest.raises(ValueError, match="val_split_ratio"):
        validation_indices(["a", "a"], ["good", "good"], ratio)


def test_from_test_split_is_per_category_disjoint_and_holds_good_and_defective_images(demo_root):
    full = _setup(demo_root)
    datamodule = _setup(demo_root, val_split_mode="from_test", val_split_ratio=0.5, seed=1)
    val_paths = set(datamodule.val_data.samples["image_path"])
    test_paths = set(datamodule.test_data.samples["image_path"])
    assert not val_paths & test_paths
    assert val_paths | test_paths == set(full.test_data.samples["image_path"])
    val, test = (_categories_and_labels(datamodule, d) for d in (datamodule.val_data, datamodule.test_data))
    for category in datamodule.categories:
        for label in (0, 1):  # good and defective images on both sides, for every category
            assert val[category, label] > 0
            assert test[category, label] > 0
    again = _setup(demo_root, val_split_mode="from_test", val_split_ratio=0.5, seed=1)
    assert set(again.val_data.samples["image_path"]) == val_paths


def test_with_a_test_half_validation_is_the_other_half(demo_root):
    report = _setup(demo_root, val_split_mode="from_test", test_half="report")
    tune = _setup(demo_root, test_half="tune")
    assert set(report.val_data.samples["image_path"]) == set(tune.test_data.samples["image_path"])
    assert not set(report.val_data.samples["image_path"]) & set(report.test_data.samples["image_path"])


def test_same_as_test_stays_the_default(demo_root):
    datamodule = _setup(demo_root)
    assert set(datamodule.val_data.samples["image_path"]) == set(datamodule.test_data.samples["image_path"])


def test_real_data_split_keeps_every_category_on_both_sides(real_data_root):
    datamodule = _setup(real_data_root, val_split_mode="from_test", val_split_ratio=0.3, verify_images=False)
    val, test = (_categories_and_labels(datamodule, d) for d in (datamodule.val_data, datamodule.test_data))
    for category in ("hazelnut_toy", "magnetic_tile"):
        for label in (0, 1):
            assert val[category, label] > 0 and test[category, label] > 0
    share = len(datamodule.val_data) / (len(datamodule.val_data) + len(datamodule.test_data))
    assert share == pytest.approx(0.3, abs=0.02)
