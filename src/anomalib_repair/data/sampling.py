"""Samplers that make training resumable mid-epoch and evaluation exact under multi-process training.

- :class:`ResumableSampler` (training): the shuffle of epoch ``e`` depends only on ``(seed, e)`` (as Lightning's
  ``DistributedSampler``), and a resumed run starts the interrupted epoch after the batches already trained, so
  a run killed and resumed sees the same batches in the same order as an uninterrupted one. One process or one
  shard per DDP rank; being a ``DistributedSampler``, Lightning leaves it in place.
- :class:`ShardSampler` (evaluation, and passes over the training data such as CRAS's centers): every sample
  exactly once over all ranks, in order. Lightning's ``DistributedSampler`` pads the last shard with repeated
  samples, which the gathered metrics would count twice.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DistributedSampler, Sampler

from anomalib_repair.callbacks import TrainingState


def _world(trainer: Any) -> tuple[int, int]:
    if trainer is None:
        return 1, 0
    return max(int(getattr(trainer, "world_size", 1)), 1), int(getattr(trainer, "global_rank", 0))


class ResumableSampler(DistributedSampler):
    """Shuffled per epoch from ``seed + epoch``; can start part-way into an epoch.

    Args:
        dataset: The training dataset.
        num_replicas: Number of processes.
        rank: This process's rank.
        seed: Shuffle seed, identical on every rank.
        epoch: First epoch.
        start: Samples of this rank's first epoch to skip (already trained before an interruption).
    """

    def __init__(
        self, dataset: Any, num_replicas: int = 1, rank: int = 0, seed: int = 0, epoch: int = 0, start: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[int]:
        """This rank's indices of the current epoch, from ``start`` on (``start`` applies once)."""
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(indices[start:])

    @classmethod
    def for_trainer(cls, dataset: Any, trainer: Any, batch_size: int, seed: int | None = None) -> ResumableSampler:
        """The sampler for ``trainer``'s current position: its epoch, and the batches done when resuming.

        Called when the trainer asks for its training dataloader, which it does after restoring a checkpoint.
        ``seed=None`` takes the run's seed as kept by :class:`~anomalib_repair.callbacks.TrainingState` (restored
        from the checkpoint when resuming), else ``PL_GLOBAL_SEED``.
        """
        world, rank = _world(trainer)
        if seed is None:
            states = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, TrainingState)]
            seed = states[0].data_seed if states and states[0].data_seed is not None else None
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        epoch, start = 0, 0
        loop = getattr(trainer, "fit_loop", None)
        if loop is not None:
            epoch = int(loop.epoch_progress.current.completed)
            if loop.restarting:
                done = int(loop.epoch_loop.batch_progress.current.processed)
                per_rank = math.ceil(len(dataset) / world)
                total = math.ceil(per_rank / batch_size)  # this rank's batches per epoch
                if 0 < done < total:
                    start = done * batch_size
                elif done >= total:  # saved on the epoch's last batch: the next epoch starts from its beginning
                    epoch += 1
        return cls(dataset, num_replicas=world, rank=rank, seed=seed, epoch=epoch, start=start)


class ShardSampler(DistributedSampler):
    """Indices ``rank, rank + world, …`` of the dataset in order: every sample exactly once over all ranks."""

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        """This rank's indices."""
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        """Number of this rank's samples."""
        return self.num_samples


def shard_sampler(dataset: Any, trainer: Any) -> Sampler[int] | None:
    """A :class:`ShardSampler` when ``trainer`` runs several processes, else ``None`` (plain sequential order)."""
    world, rank = _world(trainer)
    return ShardSampler(dataset, num_replicas=world, rank=rank) if world > 1 else None
