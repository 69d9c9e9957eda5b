"""Per-category evaluation: anomalib's metrics computed for every category and their mean.

:class:`PerCategoryEvaluator` is an anomalib ``Evaluator`` (models use it as their default evaluator). During
``test`` it routes every sample to its category (looked up by image path, see
:mod:`anomalib_repair.data.category`), updates one set of anomalib metrics per category and, at the end:

- logs ``<metric>/<category>`` for every category and ``<metric>`` for the mean over categories (so the usual
  anomalib keys, ``image_AUROC`` …, hold the mean) to the Lightning loggers;
- prints a results table;
- writes ``per_category_metrics.csv`` and ``per_category_metrics.md`` into the run's results folder
  (``trainer.default_root_dir``, e.g. ``results/CRAS/MVTec/all/v0``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.metrics import Evaluator
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DistributedSampler
from torchmetrics import Metric

from anomalib_repair.data.category import CategoryIndex, batch_category_indices, category_index_for
from anomalib_repair.evaluation.metrics import METRICS, MetricSpec
from anomalib_repair.evaluation.table import MEAN_ROW, ResultsTable

logger = logging.getLogger(__name__)


class LabelCounts(Metric):
    """Counts images, anomalous images, pixels and anomalous pixels (to know which metrics are defined)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("counts", default=torch.zeros(4, dtype=torch.float64), dist_reduce_fx="sum")
        self.counts: torch.Tensor

    def update(self, gt_label: torch.Tensor, gt_mask: torch.Tensor | None) -> None:  # type: ignore[override]
        """Add one batch's labels and masks."""
        self.counts[0] += gt_label.numel()
        self.counts[1] += gt_label.sum()
        if gt_mask is not None:
            self.counts[2] += gt_mask.numel()
            self.counts[3] += gt_mask.sum()

    def compute(self) -> torch.Tensor:
        """Return ``[images, anomalous images, pixels, anomalous pixels]``."""
        return self.counts


class PerCategoryEvaluator(Evaluator):
    """Evaluator that reports anomalib's metrics per category and their mean.

    Args:
        pixel_metrics: Compute the pixel-level metrics (needs masks in the test set).
        pixel_metric_size: Resize anomaly maps and masks to this square size before the pixel metrics
            (saves memory on large test sets); ``None`` keeps the model's output size.
        aupro_fpr_limit: FPR limit of AUPRO.
        results_dir: Folder for the CSV and Markdown tables; ``None`` uses the trainer's ``default_root_dir``.
        val_metrics: Extra validation metrics, as in anomalib's ``Evaluator``.
        compute_on_cpu: As in anomalib's ``Evaluator``.
    """

    def __init__(
        self,
        pixel_metrics: bool = True,
        pixel_metric_size: int | None = None,
        aupro_fpr_limit: float = 0.3,
        results_dir: str | Path | None = None,
        val_metrics: Any = None,
        compute_on_cpu: bool = True,
    ) -> None:
        super().__init__(val_metrics=val_metrics, test_metrics=None, compute_on_cpu=compute_on_cpu)
        self.pixel_metrics = pixel_metrics
        self.pixel_metric_size = pixel_metric_size
        self.aupro_fpr_limit = aupro_fpr_limit
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.category_index: CategoryIndex = CategoryIndex.single("all")
        self.category_metrics = nn.ModuleDict()
        self.category_counts = nn.ModuleDict()
        self.last_results: ResultsTable | None = None
        self.last_counts: dict[str, int] = {}
        self._unpadded_left: int | None = None
        # The per-category metrics are rebuilt for every run's categories: keep them out of checkpoints.
        self._register_state_dict_hook(_drop_metric_state)
        self._register_load_state_dict_pre_hook(_ignore_metric_state)
        self.register_load_state_dict_post_hook(_forgive_missing_metric_state)

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        """The metrics reported (pixel ones only when ``pixel_metrics``)."""
        return tuple(spec for spec in METRICS if self.pixel_metrics or spec.level == "image")

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build one metric set per category of the trainer's datamodule."""
        self.prepare(category_index_for(getattr(trainer, "datamodule", None)))
        super().setup(trainer, pl_module, stage)
        if trainer.num_devices <= 1 and self.compute_on_cpu:
            for metrics in self.category_metrics.values():
                self.metrics_to_cpu(cast(nn.ModuleList, metrics))
            for counts in self.category_counts.values():
                cast(LabelCounts, counts).compute_on_cpu = True

    def prepare(self, index: CategoryIndex) -> None:
        """Create fresh metrics for the categories of ``index`` (called by ``setup``; usable without a trainer)."""
        self.category_index = index
        self.category_metrics = nn.ModuleDict(
            {
                module_key(name): nn.ModuleList(cast(Metric, spec.build(self.aupro_fpr_limit)) for spec in self.specs)
                for name in index.names
            }
        )
        self.category_counts = nn.ModuleDict({module_key(name): LabelCounts() for name in index.names})

    # ------------------------------------------------------------------ update
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Under DDP with a padding sampler, note how many of this rank's samples are real (not repeats)."""
        del pl_module
        self._unpadded_left = unpadded_samples(trainer)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Route every sample of the batch to its category's metrics (padding repeats of DDP left out)."""
        del trainer, pl_module, outputs, batch_idx, dataloader_idx
        if self._unpadded_left is not None:
            size = int(batch.pred_score.shape[0])
            keep = min(size, self._unpadded_left)
            self._unpadded_left -= keep
            if keep < size:
                batch = _head(batch, keep)
                if keep == 0:
                    return
        self.update(batch)

    def update(self, batch: Any) -> None:
        """Update the per-category metrics with one batch of predictions."""
        indices = batch_category_indices(batch, self.category_index)
        anomaly_map, gt_mask = self._pixel_fields(batch)
        for position, name in enumerate(self.category_index.names):
            selected = (indices == position).nonzero().flatten()
            if selected.numel() == 0:
                continue
            selected_device = selected.to(batch.pred_score.device)
            sub = SimpleNamespace(
                pred_score=batch.pred_score[selected_device].flatten(),
                gt_label=batch.gt_label[selected_device].flatten().int(),
                anomaly_map=None if anomaly_map is None else anomaly_map[selected_device],
                gt_mask=None if gt_mask is None else gt_mask[selected_device],
            )
            for metric in _metrics(self.category_metrics[module_key(name)]):
                metric.update(sub)
            cast(LabelCounts, self.category_counts[module_key(name)]).update(sub.gt_label, sub.gt_mask)
        if (indices < 0).any():
            logger.warning("%d test images belong to no known category and are not scored.", int((indices < 0).sum()))

    def _pixel_fields(self, batch: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        anomaly_map = getattr(batch, "anomaly_map", None)
        gt_mask = getattr(batch, "gt_mask", None)
        if not self.pixel_metrics or anomaly_map is None or gt_mask is None:
            return None, None
        anomaly_map = anomaly_map.reshape(anomaly_map.shape[0], *anomaly_map.shape[-2:]).float()
        gt_mask = gt_mask.reshape(gt_mask.shape[0], *gt_mask.shape[-2:])
        size = self.pixel_metric_size
        if size is not None and anomaly_map.shape[-2:] != (size, size):
            anomaly_map = F.interpolate(anomaly_map[:, None], size=(size, size), mode="bilinear", align_corners=False)[
                :, 0
            ]
        if gt_mask.shape[-2:] != anomaly_map.shape[-2:]:
            gt_mask = F.interpolate(gt_mask[:, None].float(), size=anomaly_map.shape[-2:], mode="nearest")[:, 0]
        return anomaly_map, gt_mask.bool().int()

    # ------------------------------------------------------------------ compute, log, write
    def compute(self) -> ResultsTable:
        """Compute every metric for every category and the mean over categories (NaN where undefined)."""
        rows: dict[str, dict[str, float]] = {}
        self.last_counts = {}
        for name in self.category_index.names:
            key = module_key(name)
            counts = cast(LabelCounts, self.category_counts[key])
            images, anomalous, pixels, anomalous_pixels = counts.compute().tolist()  # summed over DDP ranks
            self.last_counts[name] = int(images)
            if images == 0:
                continue
            image_defined = 0 < anomalous < images
            pixel_defined = 0 < anomalous_pixels < pixels
            row = {}
            for spec, metric in zip(self.specs, _metrics(self.category_metrics[key]), strict=True):
                defined = image_defined if spec.level == "image" else pixel_defined
                row[spec.key] = float(metric.compute()) if defined else math.nan
            rows[name] = row
        return ResultsTable.from_rows(rows, self.specs)

    def reset(self) -> None:
        """Forget every update."""
        for metrics in self.category_metrics.values():
            for metric in _metrics(metrics):
                metric.reset()
        for counts in self.category_counts.values():
            cast(LabelCounts, counts).reset()

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute, log to the Lightning loggers, print and write the per-category table."""
        table = self.compute()
        self.last_results = table
        for spec in self.specs:
            for category, row in table.rows.items():
                if category == MEAN_ROW:
                    pl_module.log(spec.key, row[spec.key], sync_dist=False, rank_zero_only=True)
                elif len(table.rows) > 2:
                    pl_module.log(f"{spec.key}/{category}", row[spec.key], sync_dist=False, rank_zero_only=True)
        self._report(table, Path(self.results_dir or trainer.default_root_dir))
        self.reset()

    @rank_zero_only
    def _report(self, table: ResultsTable, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        table.write(folder / "per_category_metrics")
        print(f"\nPer-category results ({folder / 'per_category_metrics.csv'}):\n{table.to_markdown()}\n")  # noqa: T201


def unpadded_samples(trainer: Trainer) -> int | None:
    """This rank's number of real test samples when Lightning's padding ``DistributedSampler`` feeds the test.

    ``DistributedSampler`` (which Lightning puts in any test loader without a distributed sampler) repeats the
    first samples to give every rank as many: without shuffling, the repeats are the last samples of the ranks
    after ``len(dataset) % world_size``. Returns ``None`` when nothing is padded (one process, our datamodules'
    :class:`~anomalib_repair.data.sampling.ShardSampler`, a size divisible by the world size).
    """
    if trainer.world_size <= 1:
        return None
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    size = len(sampler.dataset)  # type: ignore[arg-type]
    if sampler.total_size <= size or len(sampler) <= len(range(sampler.rank, size, sampler.num_replicas)):
        return None
    if sampler.shuffle:
        logger.warning("The shuffled, padded test sampler repeats some test images: metrics count them twice.")
        return None
    return len(range(sampler.rank, size, sampler.num_replicas))


def _head(batch: Any, count: int) -> Any:
    """The first ``count`` samples of an anomalib batch (the fields the evaluator reads)."""
    fields = ("pred_score", "gt_label", "anomaly_map", "gt_mask", "image_path")
    values = {name: getattr(batch, name, None) for name in fields}
    return SimpleNamespace(**{name: None if value is None else value[:count] for name, value in values.items()})


def _metrics(metrics: nn.Module) -> list[Metric]:
    """The metrics of one category (a ``ModuleList`` of :meth:`MetricSpec.build` results), in ``specs`` order."""
    return [cast(Metric, metric) for metric in cast(nn.ModuleList, metrics)]


_TRANSIENT = ("category_metrics.", "category_counts.")


def _remove_metric_state(state_dict: dict[str, Any], prefix: str) -> None:
    for key in [key for key in state_dict if key.startswith(tuple(prefix + name for name in _TRANSIENT))]:
        del state_dict[key]


def _drop_metric_state(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    del module, local_metadata
    _remove_metric_state(state_dict, prefix)


def _ignore_metric_state(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    del args
    _remove_metric_state(state_dict, prefix)


def _forgive_missing_metric_state(module: nn.Module, incompatible_keys: Any) -> None:
    del module
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not any(f"{name}" in key for name in _TRANSIENT)]


def module_key(name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return name.replace(".", "_")
