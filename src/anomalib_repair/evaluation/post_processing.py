"""Per-category thresholds and normalisation for unified models.

A unified model's raw scores can differ in scale between categories (a score of 0.6 may be normal for one and
anomalous for another). :class:`PerCategoryPostProcessor` is an anomalib ``PostProcessor`` that learns, from the
validation set, one F1-optimal threshold and one min/max normalisation **per category** (through one anomalib
``PostProcessor`` per category) and applies the right one to every test and predict sample, the category looked up
by image path (:mod:`anomalib_repair.data.category`). Its own (global) statistics are still computed; they serve
samples of no known category.

An exported model sees no image path: there the model infers each image's category itself (CRAS from its class
centers, CRR and MFRNet from :mod:`~anomalib_repair.components.category_prototypes`) and
:meth:`PerCategoryPostProcessor.forward_for_categories` applies that category's statistics inside the graph
(stacked per category and gathered per image, so the batch stays dynamic). anomalib's own post-processor holds one
set of statistics for all images.

    anomalib train --model anomalib_repair.CRAS --model.post_processor anomalib_repair.PerCategoryPostProcessor ...
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import torch
from anomalib.data import InferenceBatch
from anomalib.post_processing import PostProcessor
from torch import nn

from anomalib_repair.data.category import CategoryIndex, batch_category_indices, category_index_for
from anomalib_repair.evaluation.per_category import module_key

_CHILDREN = "categories."


class PerCategoryPostProcessor(PostProcessor):
    """anomalib's post-processor with thresholds and normalisation per category.

    Args:
        **kwargs: As anomalib's ``PostProcessor`` (``enable_normalization``, ``enable_thresholding``,
            sensitivities, …); every per-category post-processor gets the same settings.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = dict(kwargs)
        self.categories = nn.ModuleDict()
        self.category_index: CategoryIndex | None = None
        self._register_load_state_dict_pre_hook(self._create_children_for_state)

    # ------------------------------------------------------------------ categories
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Route by the trainer's datamodule; when fitting or validating, add a post-processor per new category.

        At test and predict time only categories with learned statistics get their own; the rest (and a trainer
        without a datamodule) use the global statistics.
        """
        del pl_module
        index = category_index_for(getattr(trainer, "datamodule", None))
        if stage in {"fit", "validate"}:
            self.prepare(index)
        else:
            self.category_index = index

    def prepare(self, index: CategoryIndex) -> None:
        """Use ``index`` to route samples; add a post-processor for every category that has none yet."""
        self.category_index = index
        for name in index.names:
            key = module_key(name)
            if key not in self.categories:
                self.categories[key] = PostProcessor(**self._settings)

    def _create_children_for_state(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        del args
        start = prefix + _CHILDREN
        for key in state_dict:
            if key.startswith(start):
                name = key[len(start) :].split(".", 1)[0]
                if name not in self.categories:
                    self.categories[name] = PostProcessor(**self._settings)

    def _groups(self, batch: Any) -> list[tuple[PostProcessor, torch.Tensor]]:
        """(post-processor, sample indices) for every category present in the batch."""
        if self.category_index is None:
            return []
        indices = batch_category_indices(batch, self.category_index)
        groups = []
        for position, name in enumerate(self.category_index.names):
            selected = (indices == position).nonzero().flatten()
            if selected.numel() and module_key(name) in self.categories:
                groups.append((cast(PostProcessor, self.categories[module_key(name)]), selected))
        return groups

    # ------------------------------------------------------------------ statistics from validation
    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *args: Any, **kwargs: Any) -> None:
        """Update the global and the per-category statistics."""
        super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)
        for child, selected in self._groups(outputs):
            child.on_validation_batch_end(trainer, pl_module, _subset(outputs, selected))  # type: ignore[arg-type]

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Compute the global and the per-category thresholds and normalisation bounds."""
        super().on_validation_epoch_end(trainer, pl_module)
        for child in self.categories.values():
            cast(PostProcessor, child).on_validation_epoch_end(trainer, pl_module)

    # ------------------------------------------------------------------ application
    def statistics_for(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Per-category statistics stacked in the order of ``names``, the global ones last: ``(K + 1,)`` each.

        A name without statistics of its own gets the global ones.
        """
        children = dict(self.categories.items())
        processors: list[Any] = [children.get(module_key(name), self) for name in names]
        processors.append(self)
        fields = ("image_min", "image_max", "image_threshold", "pixel_min", "pixel_max", "pixel_threshold")
        return {key: torch.stack([getattr(p, key).reshape(()).float() for p in processors]) for key in fields}

    def forward_for_categories(
        self, predictions: InferenceBatch, categories: torch.Tensor, names: list[str]
    ) -> InferenceBatch:
        """As ``forward``, with the statistics of each image's category (``categories`` index ``names``).

        An index outside ``names`` (``-1``: unknown) takes the global statistics. Used by the models' ``forward``,
        hence by exported models; equals :meth:`post_process_batch` when the category is the image's own.
        """
        if predictions.pred_score is None:
            msg = "forward_for_categories needs image scores (pred_score)."
            raise ValueError(msg)
        stats = self.statistics_for(names)
        known = (categories >= 0) & (categories < len(names))
        row = torch.where(known, categories, torch.full_like(categories, len(names)))
        pick = {key: value.to(predictions.pred_score.device)[row] for key, value in stats.items()}
        pred_score = predictions.pred_score
        anomaly_map = predictions.anomaly_map
        per_pixel = (-1,) + (1,) * (anomaly_map.ndim - 1) if anomaly_map is not None else (-1,)
        image_threshold, pixel_threshold = pick["image_threshold"], pick["pixel_threshold"].view(per_pixel)
        if self.enable_normalization:
            pred_score = cast(
                torch.Tensor, self._normalize(pred_score, pick["image_min"], pick["image_max"], image_threshold)
            )
            anomaly_map = self._normalize(
                anomaly_map, pick["pixel_min"].view(per_pixel), pick["pixel_max"].view(per_pixel), pixel_threshold
            )
            image_threshold = self.normalized_image_threshold.to(pred_score)
            pixel_threshold = self.normalized_pixel_threshold.to(pred_score)
        pred_label = pred_mask = None
        if self.enable_thresholding:
            pred_label = pred_score > image_threshold
            pred_mask = None if anomaly_map is None else anomaly_map > pixel_threshold
        return InferenceBatch(
            pred_label=pred_label, pred_score=pred_score, pred_mask=pred_mask, anomaly_map=anomaly_map
        )

    def post_process_batch(self, batch: Any) -> None:
        """Normalise and threshold every sample with its own category's statistics (global ones otherwise)."""
        groups = self._groups(batch)
        if not groups:
            super().post_process_batch(batch)
            return
        pred_score = batch.pred_score.clone().float()
        anomaly_map = None if batch.anomaly_map is None else batch.anomaly_map.clone().float()
        pred_label = torch.zeros_like(pred_score, dtype=torch.bool)
        pred_mask = None if anomaly_map is None else torch.zeros_like(anomaly_map, dtype=torch.bool)
        covered = torch.zeros_like(pred_score, dtype=torch.bool)
        for _, selected in groups:
            covered[selected.to(covered.device)] = True
        rest = (~covered).nonzero().flatten()
        # samples of no known category get the global statistics (this processor's own, as in export)
        targets: list[tuple[PostProcessor, torch.Tensor]] = [*groups, (self, rest)] if rest.numel() else groups
        for processor, selected in targets:
            where = selected.to(pred_score.device)
            result = processor(
                InferenceBatch(
                    pred_score=batch.pred_score[where],
                    anomaly_map=None if batch.anomaly_map is None else batch.anomaly_map[where],
                )
            )
            _assign(pred_score, where, result.pred_score)
            _assign(anomaly_map, where, result.anomaly_map)
            _assign(pred_label, where, result.pred_label)
            _assign(pred_mask, where, result.pred_mask)
        batch.pred_score, batch.anomaly_map = pred_score, anomaly_map
        if self.enable_thresholding:
            batch.pred_label, batch.pred_mask = pred_label, pred_mask


def _assign(target: torch.Tensor | None, where: torch.Tensor, value: torch.Tensor | None) -> None:
    if target is not None and value is not None:
        target[where] = value.to(target.dtype).reshape(target[where].shape)


def _subset(batch: Any, selected: torch.Tensor) -> SimpleNamespace:
    """The fields the statistics read, for the selected samples."""
    fields = {}
    for name in ("pred_score", "gt_label", "anomaly_map", "gt_mask"):
        value = getattr(batch, name, None)
        fields[name] = None if value is None else value[selected.to(value.device)]
    return SimpleNamespace(**fields)
