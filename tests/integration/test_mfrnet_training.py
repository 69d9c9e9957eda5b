"""Short MFRNet trainings on generated data: unified, checkpoint, export.

anomalib's single-category datamodules: ``test_lifecycle.py::test_anomalib_single_category_datamodules``.

The real-data run is in ``test_real_data_training.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_repair import MFRNet, MVTecFolder

# configs/mfrnet/cpu_reduced.yaml's backbone and blocks (offline EfficientNet-Lite0) with a 128-d projection (the
# recipe: 256-d) to keep the test fast.
REDUCED = {
    "backbone": "tf_efficientnet_lite0.pypi",
    "layers": ["blocks.1", "blocks.2", "blocks.4"],
    "embed_dim": 128,
    "depth": 2,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "train_masks": "one",
    "lr": 1e-3,
}


def _engine(tmp_path: Path, epochs: int) -> Engine:
    return Engine(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=epochs,
    )


def test_unified_training_on_generated_data_runs_and_reloads_identically(tmp_path, demo_root):
    seed_everything(0)
    datamodule = MVTecFolder(root=demo_root, train_batch_size=8, eval_batch_size=16, num_workers=0)
    model = MFRNet(**REDUCED, image_size=64, feature_stride=4, visualizer=False)
    engine = _engine(tmp_path, epochs=2)
    engine.fit(model=model, datamodule=datamodule)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    assert not math.isnan(results["image_AUROC"]), results

    checkpoint = tmp_path / "mfrnet.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    restored = MFRNet.load_from_checkpoint(checkpoint, **REDUCED, image_size=64, feature_stride=4)
    assert bool(restored.model.aggregator.backbone.weights_loaded)
    images = model.pre_processor.transform(torch.rand(4, 3, 64, 64))
    model.eval()
    restored.eval()
    with torch.no_grad():
        before, after = model.model(images), restored.model(images)
    torch.testing.assert_close(before.pred_score, after.pred_score, rtol=0, atol=0)
    torch.testing.assert_close(before.anomaly_map, after.anomaly_map, rtol=0, atol=0)


@pytest.mark.slow
def test_eval_forward_exports_to_onnx_and_runs_in_openvino(tmp_path):
    """The eval graph (fixed masks as a buffer, the n passes batched) exports and gives the same maps."""
    openvino = pytest.importorskip("openvino")
    torch.manual_seed(0)
    model = MFRNet(**REDUCED, image_size=64, feature_stride=4, pre_trained=False).model.eval()

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            predictions = self.inner(images)
            return predictions.pred_score, predictions.anomaly_map

    images = torch.rand(2, 3, 64, 64)
    path = tmp_path / "mfrnet.onnx"
    torch.onnx.export(Outputs(), (images,), str(path), input_names=["image"], dynamo=True)
    core = openvino.Core()
    # float32 explicitly: on CPUs with bfloat16 units OpenVINO's default runs matrix products in bfloat16
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    score, anomaly_map = compiled([images.numpy()]).values()
    with torch.no_grad():
        expected = model(images)
    np.testing.assert_allclose(anomaly_map, expected.anomaly_map.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(score, expected.pred_score.numpy(), rtol=1e-3, atol=1e-4)
