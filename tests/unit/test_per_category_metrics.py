"""PerCategoryEvaluator and ResultsTable checked against scikit-learn on batches with known scores."""

from __future__ import annotations

import csv
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.metrics import Evaluator
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anomalib_repair.data.category import CategoryIndex
from anomalib_repair.evaluation import METRICS, PerCategoryEvaluator, ResultsTable
from anomalib_repair.evaluation.table import MEAN_ROW

TOLERANCE = 1e-4
MAP_SIZE = 32
IMAGE_KEYS = ("image_AUROC", "image_AP", "image_F1Max")
PIXEL_KEYS = ("pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO")


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return float(np.nanmax(f1))


def make_samples(categories: dict[str, tuple[int, int]], seed: int = 0) -> list[dict]:
    """Samples with seeded scores: ``categories`` maps a name to (normal images, anomalous images)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for name, (normal, anomalous) in categories.items():
        for i in range(normal + anomalous):
            label = i >= normal
            mask = torch.zeros(MAP_SIZE, MAP_SIZE, dtype=torch.bool)
            amap = torch.rand(MAP_SIZE, MAP_SIZE, generator=generator)
            if label:
                top, left = torch.randint(0, MAP_SIZE - 10, (2,), generator=generator).tolist()
                size = int(torch.randint(4, 10, (1,), generator=generator))
                mask[top : top + size, left : left + size] = True
                # Anomalous pixels score higher on average, but not perfectly.
                amap = (amap + 0.5 * mask * torch.rand(MAP_SIZE, MAP_SIZE, generator=generator)) / 1.5
            # Scores stay in [0, 1] as after anomalib's post-processor: torchmetrics applies a sigmoid to any
            # update() whose values leave [0, 1], batch by batch, which would make batches incomparable.
            score = 0.65 * float(torch.rand(1, generator=generator)) + 0.35 * label
            defect = "broken" if label else "good"
            samples.append(
                {
                    "category": name,
                    "image_path": f"/data/{name}/test/{defect}/{i:03d}.png",
                    "pred_score": score,
                    "gt_label": label,
                    "anomaly_map": amap,
                    "gt_mask": mask,
                }
            )
    return samples


def make_batches(samples: list[dict], sizes: tuple[int, ...], seed: int = 1) -> list[SimpleNamespace]:
    """Shuffle the samples (categories mixed within every batch) and cut them into anomalib-like batches."""
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [samples[i] for i in order]
    batches, start = [], 0
    for size in sizes:
        chunk = shuffled[start : start + size]
        start += size
        batches.append(
            SimpleNamespace(
                image_path=[s["image_path"] for s in chunk],
                pred_score=torch.tensor([s["pred_score"] for s in chunk]),
                gt_label=torch.tensor([s["gt_label"] for s in chunk]),
                anomaly_map=torch.stack([s["anomaly_map"] for s in chunk])[:, None],
                gt_mask=torch.stack([s["gt_mask"] for s in chunk]),
            )
        )
    assert start == len(samples)
    return batches


def index_for(samples: list[dict], names: list[str]) -> CategoryIndex:
    return CategoryIndex(names, {s["image_path"]: s["category"] for s in samples})


def evaluate(index: CategoryIndex, batches: list[SimpleNamespace], **kwargs) -> ResultsTable:
    evaluator = PerCategoryEvaluator(**kwargs)
    evaluator.prepare(index)
    for batch in batches:
        evaluator.update(batch)
    return evaluator.compute()


def expected_metrics(samples: list[dict], pixel_size: int | None = None) -> dict[str, float]:
    labels = np.array([s["gt_label"] for s in samples], dtype=int)
    scores = np.array([s["pred_score"] for s in samples])
    maps = torch.stack([s["anomaly_map"] for s in samples])
    masks = torch.stack([s["gt_mask"] for s in samples])
    if pixel_size is not None:
        maps = F.interpolate(maps[:, None], size=(pixel_size, pixel_size), mode="bilinear", align_corners=False)[:, 0]
        masks = F.interpolate(masks[:, None].float(), size=(pixel_size, pixel_size), mode="nearest")[:, 0]
    pixel_labels = masks.flatten().numpy().astype(int)
    pixel_scores = maps.flatten().numpy()
    return {
        "image_AUROC": roc_auc_score(labels, scores),
        "image_AP": average_precision_score(labels, scores),
        "image_F1Max": f1_max(labels, scores),
        "pixel_AUROC": roc_auc_score(pixel_labels, pixel_scores),
        "pixel_AP": average_precision_score(pixel_labels, pixel_scores),
        "pixel_F1Max": f1_max(pixel_labels, pixel_scores),
    }


@pytest.fixture(scope="module")
def two_categories():
    samples = make_samples({"bottle": (7, 5), "cable": (6, 6)})
    batches = make_batches(samples, sizes=(14, 10))
    return samples, batches


@pytest.fixture(scope="module")
def two_category_table(two_categories):
    samples, batches = two_categories
    return evaluate(index_for(samples, ["bottle", "cable"]), batches)


def test_is_an_anomalib_evaluator():
    assert issubclass(PerCategoryEvaluator, Evaluator)
    assert isinstance(PerCategoryEvaluator(), Evaluator)


def test_batches_mix_categories(two_categories):
    samples, batches = two_categories
    index = index_for(samples, ["bottle", "cable"])
    for batch in batches:
        assert set(index.names_of(batch.image_path)) == {"bottle", "cable"}


def test_per_category_values_match_sklearn(two_categories, two_category_table):
    samples, _ = two_categories
    assert list(two_category_table.rows) == ["bottle", "cable", MEAN_ROW]
    for name in ("bottle", "cable"):
        expected = expected_metrics([s for s in samples if s["category"] == name])
        row = two_category_table.rows[name]
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=TOLERANCE), f"{name} {key}"
        # The fixture is neither perfect nor random.
        assert 0.5 < row["image_AUROC"] < 1.0
        assert 0.5 < row["pixel_AUROC"] < 1.0
        assert 0.0 < row["pixel_AUPRO"] <= 1.0


def test_categories_differ(two_category_table):
    bottle, cable = two_category_table.rows["bottle"], two_category_table.rows["cable"]
    assert bottle["image_AUROC"] != pytest.approx(cable["image_AUROC"], abs=TOLERANCE)


def test_mean_row_is_mean_of_categories(two_category_table):
    rows = two_category_table.rows
    assert set(rows[MEAN_ROW]) == {spec.key for spec in METRICS}
    for spec in METRICS:
        expected = (rows["bottle"][spec.key] + rows["cable"][spec.key]) / 2
        assert rows[MEAN_ROW][spec.key] == pytest.approx(expected, abs=1e-9)
    assert two_category_table.mean is rows[MEAN_ROW]


def test_all_normal_category_is_nan_and_left_out_of_the_mean():
    samples = make_samples({"bottle": (5, 4), "cable": (5, 5), "carpet": (6, 0)}, seed=3)
    batches = make_batches(samples, sizes=(15, 10), seed=4)
    table = evaluate(index_for(samples, ["bottle", "cable", "carpet"]), batches)
    carpet = table.rows["carpet"]
    for key in (*IMAGE_KEYS, *PIXEL_KEYS):  # no anomalous image, no anomalous pixel
        assert math.isnan(carpet[key]), key
    for spec in METRICS:
        expected = (table.rows["bottle"][spec.key] + table.rows["cable"][spec.key]) / 2
        assert table.mean[spec.key] == pytest.approx(expected, abs=1e-9)
        assert not math.isnan(table.mean[spec.key])


def test_category_without_test_images_has_no_row(two_categories):
    samples, batches = two_categories
    table = evaluate(index_for(samples, ["bottle", "cable", "zipper"]), batches)
    assert list(table.rows) == ["bottle", "cable", MEAN_ROW]


def test_unknown_paths_are_not_scored(two_categories, two_category_table, caplog):
    samples, batches = two_categories
    stray = SimpleNamespace(
        image_path=["/elsewhere/a.png", "/elsewhere/b.png"],
        pred_score=torch.tensor([0.9, 0.1]),
        gt_label=torch.tensor([False, True]),
        anomaly_map=torch.rand(2, 1, MAP_SIZE, MAP_SIZE),
        gt_mask=torch.ones(2, MAP_SIZE, MAP_SIZE, dtype=torch.bool),
    )
    with caplog.at_level(logging.WARNING):
        table = evaluate(index_for(samples, ["bottle", "cable"]), [*batches, stray])
    assert "2 test images belong to no known category" in caplog.text
    for spec in METRICS:
        assert table.mean[spec.key] == pytest.approx(two_category_table.mean[spec.key], abs=1e-9)


def test_pixel_metric_size_resizes_maps_and_masks(two_categories):
    samples, batches = two_categories
    table = evaluate(index_for(samples, ["bottle", "cable"]), batches, pixel_metric_size=16)
    for name in ("bottle", "cable"):
        expected = expected_metrics([s for s in samples if s["category"] == name], pixel_size=16)
        row = table.rows[name]
        for key in ("pixel_AUROC", "pixel_AP", "pixel_F1Max"):
            assert row[key] == pytest.approx(expected[key], abs=TOLERANCE), f"{name} {key}"
        assert 0.5 < row["pixel_AUROC"] < 1.0
        assert 0.0 < row["pixel_AUPRO"] <= 1.0
        # Image metrics do not depend on the pixel size.
        for key in IMAGE_KEYS:
            assert row[key] == pytest.approx(expected[key], abs=TOLERANCE)


def test_image_metrics_only(two_categories):
    samples, batches = two_categories
    table = evaluate(index_for(samples, ["bottle", "cable"]), batches, pixel_metrics=False)
    assert [spec.key for spec in table.specs] == list(IMAGE_KEYS)
    assert set(table.mean) == set(IMAGE_KEYS)


def test_reset_forgets_updates(two_categories):
    samples, batches = two_categories
    evaluator = PerCategoryEvaluator()
    evaluator.prepare(index_for(samples, ["bottle", "cable"]))
    for batch in batches:
        evaluator.update(batch)
    first = evaluator.compute()
    evaluator.reset()
    assert list(evaluator.compute().rows) == [MEAN_ROW]
    for batch in batches:
        evaluator.update(batch)
    assert evaluator.compute().mean == pytest.approx(first.mean, abs=1e-9)


def test_single_category_index(two_categories):
    samples, batches = two_categories
    table = evaluate(CategoryIndex.single("bottle"), batches)  # every path belongs to the one category
    assert list(table.rows) == ["bottle", MEAN_ROW]
    expected = expected_metrics(samples)
    for key, value in expected.items():
        assert table.rows["bottle"][key] == pytest.approx(value, abs=TOLERANCE), key
        assert table.mean[key] == pytest.approx(table.rows["bottle"][key], abs=1e-9)


def test_results_table_write(tmp_path, two_category_table):
    table = ResultsTable.from_rows(
        {
            **{k: v for k, v in two_category_table.rows.items() if k != MEAN_ROW},
            "carpet": dict.fromkeys((spec.key for spec in METRICS), math.nan),
        },
        METRICS,
    )
    csv_path, markdown_path = table.write(tmp_path / "per_category_metrics")
    assert csv_path == tmp_path / "per_category_metrics.csv"
    assert markdown_path == tmp_path / "per_category_metrics.md"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_category_metrics.csv", "per_category_metrics.md"]

    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["category", *(spec.key for spec in METRICS)]
    assert [row[0] for row in rows[1:]] == ["bottle", "cable", "carpet", MEAN_ROW]
    for row in rows[1:]:
        for spec, cell in zip(METRICS, row[1:], strict=True):
            value = table.rows[row[0]][spec.key]
            if math.isnan(value):
                assert cell == ""
            else:
                assert float(cell) == pytest.approx(value, abs=1e-6)
    assert all(cell == "" for cell in rows[3][1:])  # carpet: undefined everywhere

    markdown = markdown_path.read_text()
    lines = markdown.strip().splitlines()
    assert lines[0] == "| category | " + " | ".join(spec.title for spec in METRICS) + " |"
    assert len(lines) == 2 + 4
    assert lines[-1].startswith("| **mean** | ")
    assert f"{table.mean['image_AUROC']:.4f}" in lines[-1]
    assert lines[4] == "| carpet | " + " | ".join(["-"] * len(METRICS)) + " |"
    assert markdown == table.to_markdown() + "\n"


def test_results_table_write_replaces_existing_files(tmp_path, two_category_table):
    stem = tmp_path / "results"
    (tmp_path / "results.csv").write_text("stale\n")
    two_category_table.write(stem)
    assert (tmp_path / "results.csv").read_text().startswith("category,")
    assert not list(tmp_path.glob("*.partial"))
