"""Per-category thresholds and normalisation: each category gets its own F1-optimal threshold and bounds."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from anomalib_repair import PerCategoryPostProcessor
from anomalib_repair.data.category import CategoryIndex


def _batch(paths, scores, labels):
    scores = torch.tensor(scores, dtype=torch.float32)
    maps = scores.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    masks = torch.tensor(labels).view(-1, 1, 1).expand(-1, 4, 4).clone()
    return SimpleNamespace(
        image_path=list(paths),
        pred_score=scores,
        gt_label=torch.tensor(labels),
        anomaly_map=maps,
        gt_mask=masks,
        pred_label=None,
        pred_mask=None,
    )


def _fitted() -> PerCategoryPostProcessor:
    # "low" scores anomalies at 0.3-0.4 (normal 0.1-0.2); "high" at 0.8-0.9 (normal 0.5-0.6): one global threshold
    # cannot separate both, per-category thresholds can.
    index = CategoryIndex(["low", "high"], {f"{c}{i}": c for c in ("low", "high") for i in range(4)})
    processor = PerCategoryPostProcessor()
    processor.prepare(index)
    batch = _batch(
        [f"low{i}" for i in range(4)] + [f"high{i}" for i in range(4)],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9],
        [0, 0, 1, 1, 0, 0, 1, 1],
    )
    processor.on_validation_batch_end(None, None, batch)
    processor.on_validation_epoch_end(None, None)
    return processor


def test_each_category_gets_its_own_threshold_and_labels_follow_it():
    processor = _fitted()
    low = float(processor.categories["low"].image_threshold)
    high = float(processor.categories["high"].image_threshold)
    assert 0.2 <= low < 0.3 + 1e-6
    assert 0.6 <= high < 0.8 + 1e-6
    test = _batch(["low1", "low3", "high1", "high3"], [0.2, 0.4, 0.6, 0.9], [0, 1, 0, 1])
    processor.post_process_batch(test)
    assert test.pred_label.tolist() == [False, True, False, True]
    assert test.pred_mask.shape == (4, 1, 4, 4)
    assert ((test.pred_score >= 0) & (test.pred_score <= 1)).all()


def test_global_statistics_remain_for_forward_and_unknown_paths():
    processor = _fitted()
    # An image from no known category is normalised with the global statistics, as the exported model does.
    test = _batch(["elsewhere.png"], [0.9], [1])
    raw_map = test.anomaly_map.clone()
    processor.post_process_batch(test)
    expected = processor(SimpleNamespace(pred_score=torch.tensor([0.9]), anomaly_map=raw_map))
    assert test.pred_label.tolist() == [True]
    torch.testing.assert_close(test.pred_score, expected.pred_score)
    torch.testing.assert_close(test.anomaly_map, expected.anomaly_map)
    # and the global statistics are not any one category's: the same raw score normalises differently there
    low, pooled = _batch(["low1"], [0.35], [1]), _batch(["elsewhere.png"], [0.35], [1])
    processor.post_process_batch(low)
    processor.post_process_batch(pooled)
    assert abs(float(low.pred_score) - float(pooled.pred_score)) > 0.1


def test_per_category_state_round_trips_through_a_state_dict():
    processor = _fitted()
    fresh = PerCategoryPostProcessor()
    fresh.load_state_dict(processor.state_dict())
    for name in ("low", "high"):
        assert float(fresh.categories[name].image_threshold) == float(processor.categories[name].image_threshold)


def test_inferred_categories_give_the_same_decisions_as_routing_by_path():
    """What exported models run (categories inferred, statistics gathered per image) equals the test-time path."""
    from anomalib.data import InferenceBatch

    processor = _fitted()
    paths = ["low0", "low3", "high0", "high2", "elsewhere.png", "low2"]
    scores = [0.15, 0.35, 0.55, 0.85, 0.7, 0.32]
    test = _batch(paths, scores, [0, 1, 0, 1, 1, 1])
    raw = InferenceBatch(pred_score=test.pred_score.clone(), anomaly_map=test.anomaly_map.clone())
    processor.post_process_batch(test)
    inferred = torch.tensor([0, 0, 1, 1, -1, 0])  # indices of ["low", "high"]; -1: no known category
    exported = processor.forward_for_categories(raw, inferred, ["low", "high"])
    assert exported.pred_label.tolist() == test.pred_label.tolist() == [False, True, False, True, True, True]
    torch.testing.assert_close(exported.pred_score, test.pred_score)
    torch.testing.assert_close(exported.anomaly_map, test.anomaly_map)
    assert torch.equal(exported.pred_mask, test.pred_mask)
    # a wrongly inferred category takes that category's threshold: "high"'s for a low-category anomaly
    wrong = processor.forward_for_categories(raw, torch.tensor([0, 1, 1, 1, -1, 0]), ["low", "high"])
    assert wrong.pred_label.tolist()[1] is False
    # the names order is the model's, not the processor's
    swapped = processor.forward_for_categories(raw, 1 - inferred.clamp_min(0), ["high", "low"])
    assert swapped.pred_label.tolist()[:4] == exported.pred_label.tolist()[:4]
