"""A cache of frozen-backbone features per training image, reused across epochs.

Valid only when the backbone is frozen and training images are not augmented: then an image's features are the
same every epoch and the backbone need not run again. Stored in half precision (training then sees the features
rounded to float16, a relative error below 2**-11) or in full precision, in memory or in a memory-mapped file on
disk (for datasets whose features exceed the RAM).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

CACHE_DTYPES = ("float16", "float32")


class FeatureCache:
    """Fixed-capacity store of ``(P, D)`` feature tensors keyed by image path.

    Args:
        capacity: Number of images it can hold (the training set size).
        shape: Shape of one image's features, e.g. ``(1296, 1536)``.
        location: ``"memory"`` or ``"disk"`` (a memory-mapped float16 file).
        directory: Where the disk file goes (a temporary folder when ``None``).
        dtype: ``"float32"`` (the features exactly as computed) or ``"float16"`` (half the memory).
    """

    def __init__(
        self,
        capacity: int,
        shape: Sequence[int],
        location: str = "memory",
        directory: str | Path | None = None,
        dtype: str = "float32",
    ) -> None:
        if location not in {"memory", "disk"}:
            msg = f"feature_cache must be 'memory', 'disk' or None, got '{location}'."
            raise ValueError(msg)
        if dtype not in CACHE_DTYPES:
            msg = f"feature_cache_dtype must be one of {', '.join(CACHE_DTYPES)}, got '{dtype}'."
            raise ValueError(msg)
        self.dtype = np.dtype(dtype)
        self.capacity = capacity
        self.shape = tuple(shape)
        self.slots: dict[str, int] = {}
        self._tempdir: tempfile.TemporaryDirectory | None = None
        if location == "memory":
            self.store: np.ndarray = np.empty((capacity, *self.shape), dtype=self.dtype)
        else:
            if directory is None:
                self._tempdir = tempfile.TemporaryDirectory(prefix="anomalib_repair_cache_")
                directory = self._tempdir.name
            path = Path(directory) / f"features.{dtype}"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.store = np.memmap(path, dtype=self.dtype, mode="w+", shape=(capacity, *self.shape))
        self.nbytes = int(self.store.nbytes)
        logger.info("Feature cache (%s): %.1f MB for %d images.", location, self.nbytes / 2**20, capacity)

    def __contains__(self, path: str) -> bool:
        """Whether the features of this image are stored."""
        return path in self.slots

    def has_all(self, paths: Sequence[str]) -> bool:
        """Whether every image of a batch is stored."""
        return all(path in self.slots for path in paths)

    def put(self, paths: Sequence[str], features: torch.Tensor) -> None:
        """Store ``(B, P, D)`` features; images beyond the capacity are not stored."""
        values = features.detach().to("cpu", getattr(torch, self.dtype.name)).numpy()
        for path, value in zip(paths, values, strict=True):
            slot = self.slots.get(path)
            if slot is None:
                if len(self.slots) >= self.capacity:
                    continue
                slot = self.slots[path] = len(self.slots)
            self.store[slot] = value

    def get(self, paths: Sequence[str], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return the stored ``(B, P, D)`` features of a batch."""
        slots = [self.slots[path] for path in paths]
        return torch.from_numpy(np.ascontiguousarray(self.store[slots])).to(device=device, dtype=dtype)


class MemoisedEmbedding:
    """A frozen embedding evaluated once per training image, then read back from a :class:`FeatureCache`.

    The cache is created with the first features it is given (their shape is not known before). A batch that is
    stored whole comes from the cache; any other batch is embedded and stored (images beyond the capacity are
    embedded every time).

    Args:
        embed: The frozen embedding, ``(B, C, H, W)`` images to ``(B, P, D)`` features.
        capacity: Number of images the cache can hold (the training set size).
        location: ``"memory"`` or ``"disk"``.
        directory: Folder of a disk cache (a temporary one when ``None``).
        dtype: Storage precision, ``"float32"`` or ``"float16"``.
    """

    def __init__(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        capacity: int,
        location: str = "memory",
        directory: str | Path | None = None,
        dtype: str = "float32",
    ) -> None:
        self.embed = embed
        self.capacity = capacity
        self.location = location
        self.directory = directory
        self.dtype = dtype
        self.cache: FeatureCache | None = None

    def __call__(self, images: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        """Features of ``images``, whose identities are ``keys`` (the image paths)."""
        if self.cache is not None and self.cache.has_all(keys):
            return self.cache.get(keys, device=images.device)
        features = self.embed(images)
        if self.cache is None:
            self.cache = FeatureCache(
                self.capacity, features.shape[1:], location=self.location, directory=self.directory, dtype=self.dtype
            )
        self.cache.put(keys, features)
        return features
