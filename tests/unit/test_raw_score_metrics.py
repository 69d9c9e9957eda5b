"""Metrics come from the model's raw outputs, not from scores the post-processor normalised and clamped."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib import LearningType
from anomalib.data import InferenceBatch
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from torch import nn

from anomalib_repair import PerCategoryEvaluator
from anomalib_repair.data import MVTecFolder
from anomalib_repair.data.category import CategoryIndex
from anomalib_repair.evaluation.per_category import run_before_post_processing

SCALE = 40.0  # raw scores far outside [0, 1], as real models give


def raw_outputs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 'model': the map is each pixel's distance from the image mean colour; the score its maximum."""
    distance = (images - images.mean(dim=(2, 3), keepdim=True)).abs().mean(dim=1) * SCALE
    return distance.flatten(1).amax(dim=1), distance


class _RawNet(nn.Module):
    def forward(self, images: torch.Tensor) -> InferenceBatch:
        score, anomaly_map = raw_outputs(images)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)


class FixedScorer(AnomalibModule):
    """A model with no parameters to learn whose outputs are :func:`raw_outputs`."""

    def __init__(self) -> None:
        super().__init__(pre_processor=PreProcessor(), post_processor=PostProcessor(), visualizer=False)
        self.model = _RawNet()

    @staticmethod
    def configure_evaluator() -> PerCategoryEvaluator:
        return PerCategoryEvaluator(results_dir=None)

    def training_step(self, batch, *args, **kwargs):
        del batch, args, kwargs

    def validation_step(self, batch, *args, **kwargs):
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    def configure_optimizers(self) -> None:
        return None

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict:
        return {"max_epochs": 1, "num_sanity_val_steps": 0}


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.nanmax(2 * precision * recall / np.clip(precision + recall, 1e-12, None)))


def test_metrics_equal_sklearns_on_raw_outputs_with_a_separate_validation_split(demo_root, tmp_path):
    datamodule = MVTecFolder(
        root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=5, val_split_mode="from_test", seed=2
    )
    model = FixedScorer()
    engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu")
    engine.fit(model=model, datamodule=datamodule)
    engine.test(model=model, datamodule=datamodule, ckpt_path=None)
    table = model.evaluator.last_results
    assert table is not None
    index = datamodule.category_index
    scores, labels, maps, masks, names = [], [], [], [], []
    for batch in datamodule.test_dataloader():
        score, anomaly_map = raw_outputs(batch.image)
        scores.append(score)
        maps.append(anomaly_map)
        labels.append(batch.gt_label)
        masks.append(batch.gt_mask.reshape(anomaly_map.shape))
        names += index.names_of(batch.image_path)
    score, label = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    anomaly_map, mask = torch.cat(maps), torch.cat(masks)
    clamped_differs = False
    for category in datamodule.categories:
        rows = np.array([name == category for name in names])
        row = table.rows[category]
        assert row["image_AUROC"] == pytest.approx(roc_auc_score(label[rows], score[rows]), abs=1e-6)
        assert row["image_AP"] == pytest.approx(average_precision_score(label[rows], score[rows]), abs=1e-6)
        assert row["image_F1Max"] == pytest.approx(f1_max(label[rows], score[rows]), abs=1e-6)
        pixels, truth = anomaly_map[torch.from_numpy(rows)].flatten(), mask[torch.from_numpy(rows)].flatten()
        assert row["pixel_AUROC"] == pytest.approx(roc_auc_score(truth.numpy(), pixels.numpy()), abs=1e-4)
        # what the clamped path would have given: the model's own post-processor on the same outputs
        processed = model.post_processor(InferenceBatch(pred_score=torch.from_numpy(score[rows])))
        clamped = roc_auc_score(label[rows], processed.pred_score.numpy())
        clamped_differs |= abs(clamped - row["image_AUROC"]) > 1e-6
    assert clamped_differs, "no category where clamping changed AUROC: the test would not see the difference"


def test_evaluator_moves_itself_before_the_post_processor():
    evaluator, processor, other = PerCategoryEvaluator(), PostProcessor(), object()
    trainer = SimpleNamespace(callbacks=[other, processor, evaluator])
    run_before_post_processing(evaluator, trainer)  # type: ignore[arg-type]
    assert trainer.callbacks == [other, evaluator, processor]
    run_before_post_processing(evaluator, trainer)  # type: ignore[arg-type]
    assert trainer.callbacks == [other, evaluator, processor]


def test_clamped_scores_tie_and_lower_auroc_on_a_constructed_case():
    # validation saw scores in [0, 1]; test scores beyond 1 are all clamped to the same value
    processor = PostProcessor()
    fit = SimpleNamespace(pred_score=torch.tensor([0.0, 0.2, 0.8, 1.0]), gt_label=torch.tensor([0, 0, 1, 1]))
    fit.anomaly_map = fit.gt_mask = None
    processor.on_validation_batch_end(None, None, fit)  # type: ignore[arg-type]
    processor.on_validation_epoch_end(None, None)  # type: ignore[arg-type]
    raw = torch.tensor([2.0, 3.0, 4.0, 5.0])
    label = np.array([0, 0, 1, 1])
    clamped = processor(InferenceBatch(pred_score=raw)).pred_score
    assert torch.unique(clamped).numel() == 1
    assert roc_auc_score(label, clamped.numpy()) == 0.5
    evaluator = PerCategoryEvaluator()
    evaluator.prepare(CategoryIndex.single("c"))
    evaluator.update(SimpleNamespace(pred_score=raw, gt_label=torch.tensor(label), image_path=["a"] * 4))
    assert evaluator.compute().rows["c"]["image_AUROC"] == 1.0


def test_aupro_matches_a_hand_computed_case():
    # One image, 10x10 pixels; two anomalous regions: A (4 px, top left) and B (6 px, right side).
    mask = torch.zeros(1, 10, 10, dtype=torch.int)
    mask[0, 0:2, 0:2] = 1  # region A
    mask[0, 4:10, 9] = 1  # region B
    scores = torch.zeros(1, 10, 10)
    scores[0, 0:2, 0:2] = 3.0  # A fully above every normal pixel
    scores[0, 4:7, 9] = 2.0  # half of B above every normal pixel ...
    scores[0, 7:10, 9] = -1.0  # ... the other half below all of them
    # normal pixels: 90; 27 of them score 1.0, the rest 0.0
    normal = (mask[0] == 0).nonzero()
    for row, col in normal[:27].tolist():
        scores[0, row, col] = 1.0
    # Thresholds from high to low. FPR 0 -> PRO (A 1.0 + B 0.5) / 2 = 0.75, held until the 27 normal pixels at 1.0
    # enter (FPR 0.3). Normalised area up to FPR 0.3: 0.75 * 0.3 / 0.3 = 0.75, the step at 0.3 itself adds nothing.
    evaluator = PerCategoryEvaluator()
    evaluator.prepare(CategoryIndex.single("c"))
    evaluator.update(
        SimpleNamespace(
            pred_score=torch.tensor([1.0]),
            gt_label=torch.tensor([1]),
            anomaly_map=scores,
            gt_mask=mask,
            image_path=["a"],
        )
    )
    assert evaluator.compute().rows["c"]["pixel_AUPRO"] == pytest.approx(0.75, abs=1e-3)


def test_data_without_a_datamodule_is_pooled_with_one_warning(caplog):
    from anomalib_repair.data.category import category_index_for

    evaluator = PerCategoryEvaluator()
    trainer = SimpleNamespace(callbacks=[evaluator], datamodule=None, num_devices=1)
    with caplog.at_level("WARNING"):
        evaluator.setup(trainer, None, "test")  # type: ignore[arg-type]
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "one category 'all'" in warnings[0] and "datamodule" in warnings[0]
    assert evaluator.category_index.names == ["all"]
    caplog.clear()
    with caplog.at_level("WARNING"):  # anomalib's single-category datamodules name their category: no warning
        index = category_index_for(SimpleNamespace(category="bottle"), warn=True)
    assert index.names == ["bottle"] and not caplog.records
