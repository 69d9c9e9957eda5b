"""Cheap checks of a dataset's files, so that a bad file fails in one line that names it.

- :func:`check_mvtec_layout`: every anomalous test image has its mask and every mask its image (anomalib pairs
  them by sorted position and would otherwise fail with a length error or a generic mismatch message).
- :func:`verify_samples`: every image and mask opens and passes PIL's ``verify()`` (a truncated PNG fails its
  checksums; no pixel is decoded), and every mask has the size of its image. About 0.3 ms per file (see
  docs/reliability.md).
- :class:`CheckedItems`: what the data loaders read: a decoding error while loading a sample (e.g. a truncated JPEG,
  which ``verify()`` cannot see) is re-raised as :class:`~anomalib_repair.errors.BadInputError` naming the file.
  It wraps the dataset only inside the loaders; the datamodule keeps anomalib's own dataset objects, so their
  ``subsample``, augmentation updates and concatenation work as anomalib defines them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from anomalib_repair.errors import BadInputError

logger = logging.getLogger(__name__)

MVTEC_EXTENSIONS = (".png", ".PNG")
_DECODE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)


def _images(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix in MVTEC_EXTENSIONS) if folder.is_dir() else []


def check_mvtec_layout(category_root: Path) -> None:
    """Check that anomalous test images and ground-truth masks pair up one to one.

    Args:
        category_root: ``<root>/<category>`` of a folder in MVTec AD layout.

    Raises:
        BadInputError: For the first image without a mask or mask without an image, naming both paths.
    """
    test_root = category_root / "test"
    if not test_root.is_dir():
        return
    for defect in sorted(path for path in test_root.iterdir() if path.is_dir() and path.name != "good"):
        mask_folder = category_root / "ground_truth" / defect.name
        images = _images(defect)
        masks = _images(mask_folder)
        mask_stems = {mask.stem.removesuffix("_mask") for mask in masks}
        image_stems = {image.stem for image in images}
        for image in images:
            if image.stem not in mask_stems:
                msg = (
                    f"Anomalous test image {image} has no mask: expected {mask_folder / (image.stem + '_mask.png')} "
                    "(MVTec AD layout); add the mask or move the image out of the test folder."
                )
                raise BadInputError(msg)
        for mask in masks:
            if mask.stem.removesuffix("_mask") not in image_stems:
                expected = defect / (mask.stem.removesuffix("_mask") + ".png")
                msg = f"Mask {mask} has no matching image (expected {expected}): remove the mask or add the image."
                raise BadInputError(msg)


def _open_error(path: str, what: str, error: BaseException) -> BadInputError:
    detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
    msg = f"Cannot read {what} {path} ({type(error).__name__}: {detail}): replace or remove the file."
    return BadInputError(msg)


def _size(path: str, what: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
    except _DECODE_ERRORS as error:
        raise _open_error(path, what, error) from None
    return size


def verify_samples(samples: Any, checked: set[str] | None = None) -> int:
    """Open and ``verify()`` every image and mask of an anomalib samples table; masks must match their image size.

    Args:
        samples: anomalib samples ``DataFrame`` (columns ``image_path`` and optionally ``mask_path``).
        checked: Paths already verified (skipped, and updated with the newly verified ones).

    Returns:
        The number of files verified.

    Raises:
        BadInputError: For the first unreadable file or the first mask whose size differs from its image's.
    """
    checked = set() if checked is None else checked
    masks: Iterable[Any] = samples["mask_path"] if "mask_path" in samples else [None] * len(samples)
    count = 0
    for image_path, mask_path in zip(samples["image_path"], masks, strict=True):
        image_key = str(image_path)
        has_mask = isinstance(mask_path, str) and mask_path != ""
        if image_key in checked and (not has_mask or str(mask_path) in checked):
            continue
        image_size = _size(image_key, "image")
        count += 1
        checked.add(image_key)
        if has_mask:
            mask_size = _size(str(mask_path), "mask")
            count += 1
            checked.add(str(mask_path))
            if mask_size != image_size:
                msg = (
                    f"Mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_key} is "
                    f"{image_size[0]}x{image_size[1]}: masks must have the size of their image."
                )
                raise BadInputError(msg)
    return count


# ---------------------------------------------------------------------------------------------- lazy decode errors
class CheckedItems(Dataset):
    """The items of an anomalib dataset, with a decoding error re-raised in one line that names the file.

    Every other attribute (``samples``, ``collate_fn``, ...) is the wrapped dataset's.

    Args:
        dataset: anomalib image dataset (or a wrapper of one that keeps its ``samples``).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        """Number of items of the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        """The wrapped dataset's item, or :class:`BadInputError` naming its files when they cannot be decoded."""
        try:
            return self.dataset[index]
        except _DECODE_ERRORS as error:
            row = self.dataset.samples.iloc[index]
            mask = row.get("mask_path", None)
            files = str(row.image_path) + (f" (mask {mask})" if isinstance(mask, str) and mask else "")
            raise _open_error(files, "image", error) from None

    def __getattr__(self, name: str) -> Any:
        """Everything but the items is the wrapped dataset's."""
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
