"""Determinism and interruptions, for every model of tests/tiny_models.py.

- The same seed gives the same metrics twice on CPU.
- A run interrupted mid-epoch (after a step checkpoint) and resumed from ``last.ckpt`` trains on the same batches
  in the same order, draws the same random numbers, and ends with the same metrics as the uninterrupted run. For
  CRR the interruption falls mid-stage-II (stage I done, stage II part-way), the hardest place to resume from.
- The same after an interruption on an epoch's last batch.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback, seed_everything

from anomalib_repair import MVTecFolder
from anomalib_repair.callbacks import StepCheckpoint
from tiny_models import TINY_MODELS

EPOCHS = 3
BATCH = 4  # 2 categories x 8 training images: 4 batches per epoch
METRIC_TOLERANCE = 1e-6  # metrics of an interrupted + resumed run vs. the uninterrupted one (observed: identical)


class Trace(Callback):
    """Records, for every training batch: epoch, batch index, training stage (CRR; else 1), image paths, a
    draw-free fingerprint of the RNG."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, str, str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        paths = hashlib.sha1("|".join(batch.image_path).encode()).hexdigest()[:12]
        rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:12]
        stage = pl_module.stage(trainer.global_step - 1) if hasattr(pl_module, "stage") else 1
        self.rows.append((trainer.current_epoch, batch_idx, stage, paths, rng))


class KilledError(RuntimeError):
    """Stands for the process being killed (the real kill is tested through the CLI)."""


class Interrupt(Callback):
    """Stops the process's training at the start of batch ``at`` (global batch count), as a kill would."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.at:
            raise KilledError
        self.seen += 1


def _datamodule(root: Path) -> MVTecFolder:
    return MVTecFolder(
        root=root, categories=["disc", "weave"], train_batch_size=BATCH, eval_batch_size=8, num_workers=0
    )


def _run(name: str, root: Path, work: Path, callbacks: list[Callback], ckpt_path: Path | None = None) -> dict:
    seed_everything(0)
    model = TINY_MODELS[name](visualizer=False)
    engine = Engine(
        max_epochs=EPOCHS,
        default_root_dir=work,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=callbacks,
    )
    datamodule = _datamodule(root)
    if ckpt_path is not None:  # as `anomalib train --ckpt_path`: resume the fit, then test (given the same path)
        return engine.train(model=model, datamodule=datamodule, ckpt_path=ckpt_path)[0]
    try:
        engine.fit(model=model, datamodule=datamodule)
    except KilledError:
        return {}
    return engine.test(model=model, datamodule=datamodule, verbose=False)[0]


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def reference(request, demo_root, tmp_path_factory) -> tuple[str, dict, list, Path]:
    """One uninterrupted run per model: metrics, batch trace, step checkpoints folder."""
    name = request.param
    work = tmp_path_factory.mktemp(f"reference-{name}")
    trace = Trace()
    steps = work / "steps"
    metrics = _run(name, demo_root, work, [trace, StepCheckpoint(every_n_train_steps=1, dirpath=steps, keep_all=True)])
    return name, metrics, trace.rows, steps


def _metric_values(metrics: dict) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if not math.isnan(float(value))}


def test_same_seed_same_metrics(reference, demo_root, tmp_path):
    name, metrics, rows, _ = reference
    trace = Trace()
    again = _run(name, demo_root, tmp_path, [trace])
    assert _metric_values(again) == _metric_values(metrics)  # exactly equal on CPU
    assert trace.rows == rows


def _batches_per_epoch(rows: list[tuple[int, int, int, str, str]]) -> int:
    return sum(1 for row in rows if row[0] == 0)


def _mid_run_point(name: str, rows: list[tuple[int, int, int, str, str]]) -> int:
    """Training batches done before the interruption: mid-epoch 1, and for CRR also mid-stage-II."""
    batches_per_epoch = _batches_per_epoch(rows)
    if name == "CRR":
        stages = [row[2] for row in rows]
        first_stage_two = stages.index(2)
        at = first_stage_two + 1  # one stage-II step done, more to come
        assert stages[at - 1] == 2 and at < len(rows) - 1, "the tiny CRR must have a few stage-II steps"
    else:
        at = batches_per_epoch + 2
    assert at % batches_per_epoch != 0, "the interruption must fall mid-epoch"
    return at


def test_interrupted_run_resumes_to_the_same_metrics(reference, demo_root, tmp_path):
    name, metrics, rows, _ = reference
    at = _mid_run_point(name, rows)
    steps = tmp_path / "steps"
    interrupted = Trace()
    callbacks = [interrupted, Interrupt(at), StepCheckpoint(every_n_train_steps=1, dirpath=steps)]
    _run(name, demo_root, tmp_path / "a", callbacks)
    assert interrupted.rows == rows[:at]
    last = steps / "last.ckpt"
    assert last.exists()
    assert not list(steps.glob("*.tmp")) and not list(steps.glob(".*.tmp")), "no temporary files left behind"

    resumed = Trace()
    final = _run(name, demo_root, tmp_path / "b", [resumed, StepCheckpoint(every_n_train_steps=1, dirpath=steps)], last)
    assert resumed.rows == rows[at:], "the resumed run trains on the same batches with the same random state"
    values, expected = _metric_values(final), _metric_values(metrics)
    assert values.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(values[key] - value) <= METRIC_TOLERANCE, (key, values[key], value)


def test_resume_at_an_epoch_boundary(reference, demo_root, tmp_path):
    name, metrics, rows, _ = reference
    at = _batches_per_epoch(rows)  # first batch of epoch 1: the checkpoint was written on epoch 0's last batch
    steps = tmp_path / "steps"
    _run(name, demo_root, tmp_path / "a", [Interrupt(at), StepCheckpoint(every_n_train_steps=1, dirpath=steps)])
    resumed = Trace()
    final = _run(name, demo_root, tmp_path / "b", [resumed], steps / "last.ckpt")
    assert resumed.rows == rows[at:]
    assert _metric_values(final) == pytest.approx(_metric_values(metrics), abs=METRIC_TOLERANCE)
