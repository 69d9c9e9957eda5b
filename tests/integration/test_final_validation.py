"""Validation always runs before a fit ends: thresholds and a checkpoint exist after any max_epochs / max_steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_repair import MVTecFolder
from tiny_models import tiny_cras, tiny_mfrnet


def _fit(model, demo_root, tmp_path, **trainer):
    seed_everything(0)
    datamodule = MVTecFolder(root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    engine = Engine(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False, **trainer)
    engine.fit(model=model, datamodule=datamodule)
    return engine


def test_mfrnet_config_with_fewer_epochs_than_its_validation_interval_still_validates(
    demo_root, tmp_path, caplog, capsys
):
    # the shipped recipe's trainer validates every few epochs; a user trains 1
    recipe = Path(__file__).resolve().parents[2] / "configs" / "mfrnet" / "cpu_reduced.yaml"
    trainer = yaml.safe_load(recipe.read_text())["trainer"]
    assert trainer["check_val_every_n_epoch"] > 1
    with caplog.at_level("INFO"):
        engine = _fit(
            tiny_mfrnet(), demo_root, tmp_path, max_epochs=1, check_val_every_n_epoch=trainer["check_val_every_n_epoch"]
        )
    model = engine.model
    assert not math.isnan(float(model.post_processor.image_threshold))
    assert engine.trainer.checkpoint_callback.best_model_path  # a checkpoint was written
    assert any("validating it anyway" in record.getMessage() for record in caplog.records)
    saved = engine.trainer.checkpoint_callback.best_model_path
    printed = capsys.readouterr().out
    assert f"Checkpoint: {saved}" in printed and f"--ckpt_path {saved}" in printed  # fit says where it is


@pytest.mark.parametrize("max_steps", [3])
def test_a_fit_ended_by_max_steps_mid_epoch_validates(demo_root, tmp_path, max_steps):
    engine = _fit(tiny_cras(), demo_root, tmp_path, max_steps=max_steps, max_epochs=50, check_val_every_n_epoch=10)
    assert engine.trainer.global_step >= max_steps  # CRAS steps two optimisers per batch
    assert not math.isnan(float(engine.model.post_processor.image_threshold))
    assert engine.trainer.checkpoint_callback.best_model_path
