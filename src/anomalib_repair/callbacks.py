"""Interruption-safe training: atomic checkpoint files, checkpoints every N steps, exact resumption.

- :class:`AtomicCheckpointIO`: every checkpoint file is written to a temporary file in the same folder, flushed
  to disk and renamed over the target (``os.replace``), so a kill at any moment leaves either the previous file
  or the new one, never a truncated one. Installed by every model of this package when a run starts (it keeps
  anomalib's safe-loading allowlist).
- :class:`StepCheckpoint`: Lightning's ``ModelCheckpoint`` saving ``last.ckpt`` (and ``step=<N>.ckpt``) every
  ``every_n_train_steps`` optimizer steps into ``<run folder>/weights/steps``.
- :class:`TrainingState`: added by every model of this package (``configure_callbacks``). Gives every DDP rank
  its own random streams (synthetic anomalies differ per rank) and stores every rank's random state in the
  checkpoint, restored right before the first resumed batch, so a resumed run draws the same noise as an
  uninterrupted one.

Resuming from the command line::

    anomalib train --config configs/cras/cpu_reduced.yaml \
        --trainer.callbacks+=anomalib_repair.callbacks.StepCheckpoint \
        --trainer.callbacks.every_n_train_steps=50
    # killed: resume from the last checkpoint of that run
    anomalib train --config configs/cras/cpu_reduced.yaml --ckpt_path results/CRAS/.../v0/weights/steps/last.ckpt
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from anomalib.engine.plugins import AnomalibCheckpointIO
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from anomalib_repair.errors import BadInputError
from anomalib_repair.interruptions import InterruptionCheckpoint
from anomalib_repair.predictions import PredictionTable

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- atomic files
class AtomicCheckpointIO(AnomalibCheckpointIO):
    """anomalib's checkpoint IO, writing local files atomically (temporary file in the same folder + rename).

    Lightning's own save goes through a temporary file in the system temp folder and ``shutil.move``; when that
    folder is on another file system (often ``/tmp``) the move is a copy, and a kill during it leaves a truncated
    checkpoint (and the temporary file behind).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically (remote paths: as anomalib does)."""
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            Path(temporary).replace(target)  # os.replace: atomic within one file system
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def install_atomic_checkpoint_io(trainer: Trainer) -> None:
    """Swap the trainer's default checkpoint IO for :class:`AtomicCheckpointIO` (a custom IO is left alone)."""
    strategy = trainer.strategy
    current = getattr(strategy, "checkpoint_io", None)
    if type(current) not in {TorchCheckpointIO, AnomalibCheckpointIO}:
        return
    extras = list(getattr(current, "extra_safe_globals", []))
    strategy.checkpoint_io = AtomicCheckpointIO(extra_safe_globals=extras)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- step checkpoints
class StepCheckpoint(ModelCheckpoint):
    """Save ``last.ckpt`` every ``every_n_train_steps`` optimizer steps (Lightning's ``global_step``).

    Args:
        every_n_train_steps: Interval in optimizer steps. Models with two optimizers (CRAS: adaptor and
            discriminator) make two steps per batch.
        dirpath: Folder of the checkpoints; ``None`` for ``<trainer.default_root_dir>/weights/steps``.
        filename: Name of the step checkpoints besides ``last.ckpt``.
        keep_all: Keep every step checkpoint (default: only the latest one and ``last.ckpt``).
    """

    def __init__(
        self,
        every_n_train_steps: int = 100,
        dirpath: str | Path | None = None,
        filename: str = "step={step}",
        keep_all: bool = False,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            every_n_train_steps=every_n_train_steps,
            save_last=True,
            save_top_k=-1 if keep_all else 1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Default folder ``<run folder>/weights/steps`` (the run folder anomalib made for this run)."""
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "weights" / "steps")
        super().setup(trainer, pl_module, stage)
        self._fs = get_filesystem(self.dirpath or "")

    @property
    def state_key(self) -> str:
        """One state per interval (two StepCheckpoints may live in one trainer)."""
        return f"StepCheckpoint{{every_n_train_steps={self._every_n_train_steps}}}"


# ---------------------------------------------------------------------------------------------- random state
def _rank_seed(base: int, rank: int) -> int:
    return int(np.random.SeedSequence([base % 2**63, rank]).generate_state(1)[0])


def _capture() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, [int(key) for key in keys], int(position), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class TrainingState(Callback):
    """Per-rank random streams under DDP, and every rank's random state saved and restored with checkpoints.

    - At ``fit`` set-up on rank ``r > 0`` of a multi-process run, torch's, NumPy's and Python's global generators
      are re-seeded from ``(torch.initial_seed(), r)``: ``seed_everything`` gives every rank the same seed, which
      would make every rank draw the same synthetic anomalies. Rank 0 keeps its stream, so a one-process run is
      unchanged.
    - Every checkpoint stores the random state of every rank (gathered from all ranks); resuming restores this
      rank's state just before the first resumed training batch.
    - :attr:`data_seed`, the shuffling seed of the training sampler (see
      :class:`~anomalib_repair.data.sampling.ResumableSampler`), is the run's seed, kept in checkpoints: a resumed
      run shuffles as the interrupted one even when that one had a random seed (the CLI's default).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[dict[str, Any]] | None = None
        self.data_seed: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Note the run's seed; re-seed the ranks after the first of a multi-process run."""
        del pl_module
        self.data_seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        if stage == "fit" and trainer.world_size > 1 and trainer.global_rank > 0:
            seed = _rank_seed(torch.initial_seed(), trainer.global_rank)
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            logger.debug("Rank %d random streams re-seeded with %d.", trainer.global_rank, seed)

    def state_dict(self) -> dict[str, Any]:
        """The random state of every rank (a collective call under DDP: every rank saves together)."""
        state = _capture()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
            return {"rng": states, "data_seed": self.data_seed}
        return {"rng": [state], "data_seed": self.data_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved states until training resumes; take over the interrupted run's data seed."""
        self._pending = list(state_dict.get("rng", [])) or None
        if state_dict.get("data_seed") is not None:
            self.data_seed = int(state_dict["data_seed"])

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """Refuse non-finite images; restore this rank's random state before the first resumed batch."""
        del pl_module, batch_idx
        _check_finite_images(batch)
        if self._pending is None:
            return
        states, self._pending = self._pending, None
        rank = trainer.global_rank
        if len(states) == trainer.world_size:
            _restore(states[rank])
        else:
            _restore(states[0])
            if rank > 0:
                seed = _rank_seed(torch.initial_seed() + len(states), rank)
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
            logger.warning(
                "The checkpoint holds random states of %d processes, this run has %d: random streams continue "
                "from rank 0's, so the run is not an exact continuation.",
                len(states),
                trainer.world_size,
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Stop at once, in one line, when a training step returned a NaN or infinite loss."""
        del pl_module, batch, batch_idx
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            msg = (
                f"Training loss is {float(loss.detach().float().mean())} at step {trainer.global_step}: lower the "
                "learning rate(s) or check the input images (resume from a step checkpoint, see StepCheckpoint)."
            )
            raise BadInputError(msg)


def _check_finite_images(batch: Any) -> None:
    images = getattr(batch, "image", None)
    if not isinstance(images, torch.Tensor) or bool(torch.isfinite(images).all()):
        return
    bad = (~torch.isfinite(images)).flatten(1).any(dim=1).nonzero().flatten().tolist()
    paths = getattr(batch, "image_path", None)
    names = [str(paths[i]) for i in bad[:3]] if isinstance(paths, list | tuple) else []
    msg = (
        f"{len(bad)} training image(s) hold NaN/inf values{' (' + ', '.join(names) + ')' if names else ''}: "
        "check those files and the datamodule's augmentations."
    )
    raise BadInputError(msg)


def model_callbacks(existing: Sequence[Callback] | Callback) -> list[Callback]:
    """``existing`` (a model's callbacks) plus training state, interruption checkpoint and prediction table."""
    callbacks = [existing] if isinstance(existing, Callback) else list(existing)
    return [*callbacks, TrainingState(), InterruptionCheckpoint(), PredictionTable()]
