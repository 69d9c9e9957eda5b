"""What every model of this package shares on top of anomalib's ``AnomalibModule``.

The models stay *direct* ``AnomalibModule`` subclasses (so anomalib's ``list_models``/``get_model`` find them);
this mixin is listed before ``AnomalibModule`` in their bases and adds:

- the input pipeline: resize, center-crop and normalise with the backbone's own mean and std;
- the per-category evaluator (:class:`~anomalib_repair.evaluation.PerCategoryEvaluator`) as default evaluator;
- backbone weights resolved when ``fit``/``test``/``predict`` starts (never at construction), skipped when a
  checkpoint is being restored (the checkpoint carries them);
- the category index of the running datamodule (:mod:`anomalib_repair.data.category`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import CenterCrop, Compose, Normalize, Resize

from anomalib_repair.components.backbone import backbone_normalization, load_backbone_weights
from anomalib_repair.data.category import CategoryIndex, category_index_for
from anomalib_repair.evaluation import PerCategoryEvaluator
from anomalib_repair.visualization import CategoryImageVisualizer

# torch's ONNX exporter implements opset >= 18 only; anomalib asks for 14, and the down-conversion fails on
# Resize/Pad with a logged traceback (the file then stays at 18 anyway). Exporting at 18 directly is clean.
ONNX_OPSET = 18


def build_pre_processor(backbone: str, image_size: int, crop_size: int | None) -> PreProcessor:
    """Resize to ``image_size``, center-crop to ``crop_size`` and normalise with the backbone's mean/std."""
    mean, std = backbone_normalization(backbone)
    steps: list[Any] = [Resize((image_size, image_size), antialias=True)]
    if crop_size is not None and crop_size != image_size:
        steps.append(CenterCrop((crop_size, crop_size)))
    steps.append(Normalize(mean=list(mean), std=list(std)))
    return PreProcessor(transform=Compose(steps))


def batch_inputs(batch: Batch) -> tuple[torch.Tensor, list[str]]:
    """The images and image paths of a training batch (both are required by training steps)."""
    images = getattr(batch, "image", None)
    paths = getattr(batch, "image_path", None)
    if images is None or paths is None:
        msg = "Training batches need `image` and `image_path`: use an anomalib image datamodule."
        raise ValueError(msg)
    return images, [paths] if isinstance(paths, str) else list(paths)


class RepairModuleMixin:
    """Shared behaviour of CRR, MFRNet and CRAS (see the module docstring)."""

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Per-category image and pixel metrics with their mean (see :class:`PerCategoryEvaluator`)."""
        return PerCategoryEvaluator()

    @classmethod
    def configure_visualizer(cls) -> CategoryImageVisualizer:
        """Anomalib's image visualizer, saving pictures under one folder per category."""
        return CategoryImageVisualizer()

    def setup(self, stage: str) -> None:
        """Resolve the backbone's pretrained weights unless a checkpoint is about to restore them."""
        trainer = getattr(self, "_trainer", None)
        restoring = trainer is not None and trainer.ckpt_path is not None
        if not restoring:
            load_backbone_weights(self)  # type: ignore[arg-type]
        super().setup(stage)  # type: ignore[misc]

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX at opset :data:`ONNX_OPSET` unless ``opset_version`` is given (OpenVINO export too)."""
        kwargs.setdefault("opset_version", ONNX_OPSET)
        return super().to_onnx(export_root, model_file_name, input_size, **kwargs)  # type: ignore[misc]

    def current_category_index(self) -> CategoryIndex:
        """Category index of the trainer's datamodule (one category for anomalib's own datamodules)."""
        trainer = getattr(self, "_trainer", None)
        return category_index_for(getattr(trainer, "datamodule", None) if trainer is not None else None)

    def iterate_training_images(self) -> Iterator[tuple[torch.Tensor, Any]]:
        """Yield ``(pre-processed images on the model's device, batch)`` over this rank's training data once.

        Used by models that need a pass over the data before training (e.g. CRAS's class centers). Uses the
        trainer's own training dataloader, so under DDP each rank sees its own shard.
        """
        trainer = self.trainer  # type: ignore[attr-defined]
        loader = trainer.train_dataloader
        if loader is None:
            trainer.fit_loop.setup_data()
            loader = trainer.train_dataloader
        pre_processor = getattr(self, "pre_processor", None)
        for batch in loader:
            images = batch.image.to(self.device)  # type: ignore[attr-defined]
            if pre_processor is not None and pre_processor.transform is not None:
                images = pre_processor.transform(images)
            yield images, batch
