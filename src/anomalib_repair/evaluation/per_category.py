"""Per-category evaluation: anomalib's metrics computed for every category and their mean.

:class:`PerCategoryEvaluator` is an anomalib ``Evaluator`` (models use it as their default evaluator). During
``test`` it routes every sample to its category (looked up by image path, see
:mod:`anomalib_repair.data.category`), updates one set of anomalib metrics per category from the model's **raw**
outputs (it runs before the post-processor: no normalisation, no clamping) and, at the end:

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
from anomalib.post_processing import PostProcessor
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DistributedSampler
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from anomalib_repair.data.category import CategoryIndex, batch_category_indices, category_index_for
from anomalib_repair.evaluation.metrics import METRICS, MetricSpec
from anomalib_repair.evaluation.ranks import unit_ranks
from anomalib_repair.evaluation.table import MEAN_ROW, ResultsTable

logger = logging.getLogger(__name__)


class RawOutputs(Metric):
    """The raw scores, maps, labels and masks of one category's test images (concatenated over DDP ranks)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("pred_score", "gt_label", "anomaly_map", "gt_mask"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.pred_score: list[torch.Tensor]
        self.gt_label: list[torch.Tensor]
        self.anomaly_map: list[torch.Tensor]
        self.gt_mask: list[torch.Tensor]

    def update(  # type: ignore[override]
        self,
        pred_score: torch.Tensor,
        gt_label: torch.Tensor,
        anomaly_map: torch.Tensor | None,
        gt_mask: torch.Tensor | None,
    ) -> None:
        """Add one batch (maps and masks only when both are given)."""
        self.pred_score.append(pred_score.detach().float().flatten())
        self.gt_label.append(gt_label.detach().flatten().int())
        if anomaly_map is not None and gt_mask is not None:
            self.anomaly_map.append(anomaly_map.detach().float())
            self.gt_mask.append(gt_mask.detach().to(torch.uint8))

    def compute(self) -> SimpleNamespace:
        """``pred_score``, ``gt_label``, ``anomaly_map``, ``gt_mask`` (``None`` where nothing was added)."""
        return SimpleNamespace(
            **{
                name: dim_zero_cat(values) if len(values) else None  # type: ignore[arg-type]
                for name in ("pred_score", "gt_label", "anomaly_map", "gt_mask")
                for values in [getattr(self, name)]
            }
        )


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
        self.category_outputs = nn.ModuleDict()
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
        """Build one metric set per category of the trainer's datamodule; read outputs before post-processing."""
        run_before_post_processing(self, trainer)
        self.prepare(category_index_for(getattr(trainer, "datamodule", None), warn=stage == "test"))
        super().setup(trainer, pl_module, stage)
        if trainer.num_devices <= 1 and self.compute_on_cpu:
            for outputs in self.category_outputs.values():
                cast(RawOutputs, outputs).compute_on_cpu = True

    def prepare(self, index: CategoryIndex) -> None:
        """Create empty stores for the categories of ``index`` (called by ``setup``; usable without a trainer)."""
        self.category_index = index
        self.category_outputs = nn.ModuleDict({module_key(name): RawOutputs() for name in index.names})

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
        """Store one batch of raw predictions, each sample under its category."""
        indices = batch_category_indices(batch, self.category_index)
        anomaly_map, gt_mask = self._pixel_fields(batch)
        for position, name in enumerate(self.category_index.names):
            selected = (indices == position).nonzero().flatten()
            if selected.numel() == 0:
                continue
            where = selected.to(batch.pred_score.device)
            cast(RawOutputs, self.category_outputs[module_key(name)]).update(
                batch.pred_score[where],
                batch.gt_label[where],
                None if anomaly_map is None else anomaly_map[where],
                None if gt_mask is None else gt_mask[where],
            )
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
        """Compute every metric for every category and the mean over categories (NaN where undefined).

        Each metric sees the category's raw scores (maps) mapped onto [0, 1] by rank
        (:func:`~anomalib_repair.evaluation.ranks.unit_ranks`): every reported metric depends only on their
        order, and torchmetrics would otherwise pass scores outside [0, 1] through a sigmoid that ties them.
        """
        rows: dict[str, dict[str, float]] = {}
        self.last_counts = {}
        for name in self.category_index.names:
            raw = cast(RawOutputs, self.category_outputs[module_key(name)]).compute()  # gathered over DDP ranks
            images = 0 if raw.gt_label is None else raw.gt_label.numel()
            self.last_counts[name] = images
            if images == 0:
                continue
            anomalous = int(raw.gt_label.sum())
            image_defined = 0 < anomalous < images
            pixel_defined = raw.gt_mask is not None and 0 < int(raw.gt_mask.sum()) < raw.gt_mask.numel()
            image = SimpleNamespace(pred_score=unit_ranks(raw.pred_score), gt_label=raw.gt_label)
            pixel = None
            if pixel_defined:
                pixel = SimpleNamespace(anomaly_map=unit_ranks(raw.anomaly_map), gt_mask=raw.gt_mask.int())
            row = {}
            for spec in self.specs:
                inputs = image if spec.level == "image" else pixel
                defined = image_defined if spec.level == "image" else pixel_defined
                if not defined or inputs is None:
                    row[spec.key] = math.nan
                    continue
                metric = spec.build(self.aupro_fpr_limit)
                metric.update(inputs)  # type: ignore[arg-type]  # the fields the metric reads
                row[spec.key] = float(metric.compute())
            rows[name] = row
        return ResultsTable.from_rows(rows, self.specs)

    def reset(self) -> None:
        """Forget every update."""
        for outputs in self.category_outputs.values():
            cast(RawOutputs, outputs).reset()

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


def run_before_post_processing(callback: Callback, trainer: Trainer) -> None:
    """Move ``callback`` before the first post-processor among the trainer's callbacks.

    anomalib lists a model's post-processor before its evaluator, so an evaluator's ``on_test_batch_end`` sees
    scores and maps already normalised with the validation statistics and clamped to [0, 1]: clamping ties every
    score beyond the validation range, which changes AUROC and AP whenever validation is not the test set. Placed
    first, the evaluator reads the model's raw ``pred_score`` and ``anomaly_map`` (the post-processor then replaces
    the batch's tensors; the evaluator keeps its own copies). Lightning calls a hook on its callbacks in list order;
    moving an entry earlier while that list is being walked neither repeats nor skips one, so this is safe to call
    from ``setup``.
    """
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    if callback not in callbacks:
        return
    processors = [i for i, other in enumerate(callbacks) if isinstance(other, PostProcessor)]
    position = callbacks.index(callback)
    if processors and processors[0] < position:
        callbacks.insert(processors[0], callbacks.pop(position))


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


_TRANSIENT = ("category_outputs.",)


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
