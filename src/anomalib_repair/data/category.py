"""How a sample's category reaches the model and the evaluation: one mechanism for every model.

anomalib's batches carry ``image_path`` but no category field. The category therefore travels *by path*:
the datamodule that built the dataset records which category every image file belongs to, in a
:class:`CategoryIndex`. Models (during training) and the per-category evaluator (during validation and test)
ask :func:`category_index_for` for the index of the running trainer and look the batch's ``image_path`` up in it.

- Our multi-class datamodules (:mod:`anomalib_repair.data.multiclass`) expose ``category_index`` with one entry
  per image file.
- anomalib's own single-category datamodules (``MVTecAD(category="bottle")``, ``Folder``) get an index with one
  category, their ``category`` (or their ``name``), that every path maps to.
- Inference and export never need a category: models that keep per-category state infer it from the image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

UNKNOWN_CATEGORY = -1
"""Index returned for a path no category claims (e.g. a predict-time image from elsewhere)."""


class CategoryIndex:
    """Maps image paths to category indices.

    Args:
        names: Category names, in index order.
        path_to_category: Image path → category name. May be empty when there is a single category.

    Example:
        >>> index = CategoryIndex(["bottle", "cable"], {"/d/bottle/a.png": "bottle", "/d/cable/b.png": "cable"})
        >>> index.lookup(["/d/cable/b.png", "/d/bottle/a.png"]).tolist()
        [1, 0]
    """

    def __init__(self, names: Sequence[str], path_to_category: Mapping[str, str] | None = None) -> None:
        if not names:
            msg = "A CategoryIndex needs at least one category name."
            raise ValueError(msg)
        self.names = list(names)
        position = {name: i for i, name in enumerate(self.names)}
        self._by_path = {_key(path): position[name] for path, name in (path_to_category or {}).items()}

    @classmethod
    def single(cls, name: str) -> CategoryIndex:
        """An index with one category that every path belongs to."""
        return cls([name])

    def __len__(self) -> int:
        """Number of categories."""
        return len(self.names)

    def lookup(self, paths: Iterable[str]) -> torch.Tensor:
        """Return the category index of each path (``UNKNOWN_CATEGORY`` where none claims it).

        With a single category every path maps to it.
        """
        paths = list(paths)
        if len(self.names) == 1:
            return torch.zeros(len(paths), dtype=torch.long)
        return torch.tensor([self._by_path.get(_key(path), UNKNOWN_CATEGORY) for path in paths], dtype=torch.long)

    def names_of(self, paths: Iterable[str]) -> list[str]:
        """Return the category name of each path (``"unknown"`` where none claims it)."""
        return [self.names[i] if i >= 0 else "unknown" for i in self.lookup(paths).tolist()]


def _key(path: str | Path) -> str:
    return str(Path(path))


POOLED_CATEGORY = "all"
"""The one category of data that no datamodule describes (every image in it)."""


def category_index_for(datamodule: Any, warn: bool = False) -> CategoryIndex:
    """Return the category index of a datamodule, ours or anomalib's.

    Args:
        datamodule: The trainer's datamodule (``trainer.datamodule``); may be ``None`` when the trainer was given
            plain dataloaders.
        warn: Log a warning when nothing says which category an image belongs to (no datamodule, or one without a
            category), so that every image is pooled into one category :data:`POOLED_CATEGORY`.

    Returns:
        The datamodule's ``category_index`` if it has one; else a one-category index named after its
        ``category`` (anomalib's per-category datamodules), its ``name``, or ``"all"``.
    """
    index = getattr(datamodule, "category_index", None)
    if isinstance(index, CategoryIndex):
        return index
    name = getattr(datamodule, "category", None) or getattr(datamodule, "name", None)
    if name is None and warn:
        logger.warning(
            "No datamodule says which category each image belongs to (plain dataloaders): every image is scored "
            "as one category '%s'. For per-category results pass the datamodule (engine.test(datamodule=...)), "
            "e.g. anomalib_repair.MVTecFolder for several categories.",
            POOLED_CATEGORY,
        )
    return CategoryIndex.single(str(name or POOLED_CATEGORY))


def batch_category_indices(batch: Any, index: CategoryIndex, device: torch.device | None = None) -> torch.Tensor:
    """Category index of every sample of an anomalib batch, looked up by its ``image_path``."""
    paths = getattr(batch, "image_path", None)
    if paths is None:
        size = batch.image.shape[0]
        return torch.full((size,), 0 if len(index) == 1 else UNKNOWN_CATEGORY, dtype=torch.long, device=device)
    if isinstance(paths, str):
        paths = [paths]
    return index.lookup(paths).to(device)
