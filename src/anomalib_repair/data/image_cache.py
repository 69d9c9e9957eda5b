"""Decoded training images kept in memory, so that epochs after the first skip reading and decoding the files.

On a 2-core CPU, decoding PNGs is a large share of an epoch for a model whose backbone features are cached (CRAS
with ``feature_cache``; ``docs/multiclass.md`` gives the recorded timing). :class:`DecodedImageCache` wraps a
training dataset and memoises each item the first time it is read. Images are held as 8-bit values and turned back
into floats by the same conversion anomalib's ``read_image`` applies to the decoded 8-bit file, so a cached item is
bit-for-bit the item read from disk.

Memory: one byte per pixel and channel (``../shared/data/real``: 256 MiB; MVTec AD's 3,629 training images at full
resolution: roughly 10 GB by the same count, an estimate). Only deterministic items may be cached: a datamodule
with training augmentations refuses the option. The cache lives in the process that reads the items: with loader
workers it is used only when they persist between epochs (``persistent_workers``); the datamodules here read in the
main process then (see :class:`~anomalib_repair.data.multiclass.MultiClassDataModule`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import to_dtype
from torchvision.tv_tensors import Image

_PLACEHOLDER = Image(torch.zeros(3, 1, 1))


def _to_bytes(image: torch.Tensor) -> torch.Tensor:
    """The 8-bit values a float image in [0, 1] was made from (``read_image`` divides them by 255)."""
    return Image((image.detach() * 255).round_().to(torch.uint8))


class DecodedImageCache(Dataset):
    """Memoise the items of an anomalib image dataset (images as 8-bit, restored exactly on every read).

    Every attribute other than the items (``samples``, ``collate_fn``, ...) is the wrapped dataset's.

    Args:
        dataset: anomalib image dataset without augmentations.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        """Number of items of the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        """The item at ``index``: decoded from its file the first time, from memory afterwards."""
        cached = self._items.get(index)
        if cached is None:
            item = self.dataset[index]
            stored = _to_bytes(item.image) if item.image.dtype == torch.float32 else None
            if stored is None or not torch.equal(to_dtype(stored, torch.float32, scale=True), item.image):
                self._items[index] = (item, None)  # not an 8-bit image: hold the item itself
                return item
            template = copy.copy(item)
            template.image = _PLACEHOLDER  # anomalib's items convert an assigned image to float: keep the bytes apart
            self._items[index] = (template, stored)
            return item
        template, stored = cached
        if stored is None:
            return template
        item = copy.copy(template)
        item.image = to_dtype(stored, torch.float32, scale=True)
        return item

    @property
    def cached_items(self) -> int:
        """How many items are held."""
        return len(self._items)

    def __getattr__(self, name: str) -> Any:
        """Everything else is the wrapped dataset's."""
        if name in {"dataset", "_items"}:  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
