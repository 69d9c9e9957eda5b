"""Embedded, deterministic generator of a small anomaly-detection demo dataset.

The generator writes a synthetic dataset in the MVTec AD folder layout so that quick-start demos and tests can run
on machines without any real data. Nothing is downloaded: every image is rendered procedurally with NumPy and OpenCV
and saved as an ordinary PNG.

Layout written for every category::

    root/<category>/train/good/000.png ...
    root/<category>/test/good/000.png ...
    root/<category>/test/<defect>/000.png ...
    root/<category>/ground_truth/<defect>/000_mask.png ...
    root/<category>/.demo_complete          # JSON with the generation parameters

Four categories are available: two periodic / stochastic textures (``weave``, ``grain``) and two objects on a plain
background (``disc``, ``capsule``). Good samples vary a little (position, rotation, colour, brightness, noise) so that
a model has to learn the normal variation. Three defect types are rendered: ``scratch`` (thin curved bright or dark
line), ``hole`` (dark irregular blob where the background shows through) and ``stain`` (soft-edged blot of a
different hue). Ground-truth masks mark exactly the pixels that differ from the defect-free rendering.

Example:
    >>> from anomalib_repair.demo import generate_demo_dataset
    >>> root = generate_demo_dataset("./datasets/demo", categories=["disc"])  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "disc" / "test").iterdir())  # doctest: +SKIP
    ['good', 'hole', 'scratch', 'stain']

The module can also be run as a script::

    python -m anomalib_repair.demo.dataset --root ./datasets/demo
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from anomalib_repair.demo.defects import DEFECT_TYPES
from anomalib_repair.demo.samples import _image_rng, _render_defective, _render_good
from anomalib_repair.demo.scenes import DEMO_CATEGORIES

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_MARKER_NAME = ".demo_complete"
_PARTIAL_MARKER_NAME = ".demo_partial"
_GENERATED_SUBDIRS = ("train", "test", "ground_truth")
_MIN_IMAGE_SIZE = 32

# Split codes used to derive independent random streams per image.
_SPLIT_TRAIN = 0
_SPLIT_TEST_GOOD = 1
_SPLIT_TEST_DEFECT_BASE = 2


def _save_png(array: NDArray[np.uint8], path: Path) -> None:
    """Save an array as a PNG with fixed settings (byte-for-byte reproducible).

    OpenCV's encoder with the run-length strategy is used because it is about twice as fast as Pillow's default
    for these small noisy images; the files are ordinary 8-bit RGB or greyscale PNGs.

    Args:
        array: uint8 image, ``(H, W, 3)`` RGB or ``(H, W)`` grey.
        path: Destination file.

    Raises:
        OSError: If the image could not be encoded.
    """
    pixels = np.ascontiguousarray(array[..., ::-1] if array.ndim == 3 else array)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, encoded = cv2.imencode(".png", pixels, params)
    if not ok:
        msg = f"Could not encode PNG for {path}."
        raise OSError(msg)
    path.write_bytes(encoded.tobytes())


# --------------------------------------------------------------------------------------------------------------------
# Dataset writing
# --------------------------------------------------------------------------------------------------------------------


def _resolve_categories(categories: Sequence[str] | None) -> list[str]:
    """Validate and de-duplicate the requested categories.

    Args:
        categories: Requested category names, a single name, or ``None`` for all.

    Returns:
        Category names in request order without duplicates.

    Raises:
        ValueError: If a name is not in ``DEMO_CATEGORIES``.
    """
    if categories is None:
        return list(DEMO_CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    resolved: list[str] = []
    for name in categories:
        if name not in DEMO_CATEGORIES:
            msg = f"Unknown demo category {name!r}; expected one of {', '.join(DEMO_CATEGORIES)}."
            raise ValueError(msg)
        if name not in resolved:
            resolved.append(name)
    return resolved


def _file_name(index: int, count: int) -> str:
    """Zero-padded file stem so that lexical order equals numeric order.

    Args:
        index: Image index.
        count: Number of images in the folder.

    Returns:
        The stem, e.g. ``"007"``.
    """
    width = max(3, len(str(max(count - 1, 0))))
    return f"{index:0{width}d}"


def _expected_files(num_train: int, num_test_good: int, num_test_defect: int) -> list[Path]:
    """Relative paths of every file a complete category holds.

    Args:
        num_train: Number of training images.
        num_test_good: Number of good test images.
        num_test_defect: Number of test images per defect type.

    Returns:
        Paths relative to the category directory.
    """
    files = [Path("train", "good", f"{_file_name(i, num_train)}.png") for i in range(num_train)]
    files += [Path("test", "good", f"{_file_name(i, num_test_good)}.png") for i in range(num_test_good)]
    for defect in DEFECT_TYPES:
        for i in range(num_test_defect):
            stem = _file_name(i, num_test_defect)
            files.append(Path("test", defect, f"{stem}.png"))
            files.append(Path("ground_truth", defect, f"{stem}_mask.png"))
    return files


def _is_complete(category_dir: Path, params: dict[str, object], expected: list[Path]) -> bool:
    """Whether a category directory already holds a complete dataset generated with ``params``.

    Args:
        category_dir: Category directory.
        params: Generation parameters.
        expected: Relative paths of the files that must exist.

    Returns:
        ``True`` if the marker matches and every expected file exists.
    """
    marker = category_dir / _MARKER_NAME
    if not marker.is_file():
        return False
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stored != params:
        return False
    return all((category_dir / rel).is_file() for rel in expected)


def _clear_category(category_dir: Path, overwrite: bool) -> None:
    """Remove previously generated content of a category directory.

    Only directories that this generator wrote (recognised by its marker files) are cleared unless ``overwrite`` is
    set, so that real data placed under the same root is never deleted by accident.

    Args:
        category_dir: Category directory.
        overwrite: Whether the caller explicitly asked to regenerate.

    Raises:
        FileExistsError: If the directory holds foreign content and ``overwrite`` is ``False``.
    """
    if not category_dir.exists():
        return
    ours = (category_dir / _MARKER_NAME).exists() or (category_dir / _PARTIAL_MARKER_NAME).exists()
    has_content = any(category_dir.iterdir())
    if has_content and not ours and not overwrite:
        msg = (
            f"{category_dir} exists and was not written by the demo generator; "
            "pass overwrite=True to replace its train/test/ground_truth folders."
        )
        raise FileExistsError(msg)
    for name in _GENERATED_SUBDIRS:
        target = category_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (category_dir / _MARKER_NAME).unlink(missing_ok=True)


def _write_category(
    category_dir: Path,
    category: str,
    image_size: int,
    num_train: int,
    num_test_good: int,
    num_test_defect: int,
    seed: int,
) -> None:
    """Render and save every image of one category.

    Args:
        category_dir: Destination category directory.
        category: Category name.
        image_size: Image side length.
        num_train: Number of training images.
        num_test_good: Number of good test images.
        num_test_defect: Number of test images per defect type.
        seed: User seed.
    """
    category_index = DEMO_CATEGORIES.index(category)
    train_dir = category_dir / "train" / "good"
    train_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_train):
        rng = _image_rng(seed, category_index, _SPLIT_TRAIN, i)
        _save_png(_render_good(category, rng, image_size), train_dir / f"{_file_name(i, num_train)}.png")

    good_dir = category_dir / "test" / "good"
    good_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_test_good):
        rng = _image_rng(seed, category_index, _SPLIT_TEST_GOOD, i)
        _save_png(_render_good(category, rng, image_size), good_dir / f"{_file_name(i, num_test_good)}.png")

    for defect_index, defect in enumerate(DEFECT_TYPES):
        if num_test_defect == 0:
            break
        image_dir = category_dir / "test" / defect
        mask_dir = category_dir / "ground_truth" / defect
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for i in range(num_test_defect):
            rng = _image_rng(seed, category_index, _SPLIT_TEST_DEFECT_BASE + defect_index, i)
            image, _clean, mask = _render_defective(category, defect, rng, image_size)
            stem = _file_name(i, num_test_defect)
            _save_png(image, image_dir / f"{stem}.png")
            _save_png(mask, mask_dir / f"{stem}_mask.png")


def generate_demo_dataset(
    root: str | Path,
    categories: Sequence[str] | None = None,
    image_size: int = 128,
    num_train: int = 24,
    num_test_good: int = 8,
    num_test_defect: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Generate the synthetic demo dataset in MVTec AD layout.

    Every image is drawn from its own random stream derived from ``(seed, category, split, index)``, so the same seed
    always yields byte-identical files, and generating a subset of the categories yields the same files as generating
    all of them. A category whose marker file ``.demo_complete`` records identical parameters and whose files are all
    present is skipped unless ``overwrite`` is set.

    Args:
        root: Dataset root; one sub-directory per category is written below it.
        categories: Categories to generate (names from ``DEMO_CATEGORIES``); ``None`` generates all of them.
        image_size: Side length of the square RGB images, at least 32.
        num_train: Number of good training images per category (at least 1).
        num_test_good: Number of good test images per category.
        num_test_defect: Number of test images per defect type and category.
        seed: Non-negative random seed.
        overwrite: Regenerate even if a complete dataset with the same parameters exists; also allows replacing the
            ``train``, ``test`` and ``ground_truth`` folders of a category directory not written by this generator.

    Returns:
        ``Path(root)``.

    Raises:
        ValueError: If a category name is unknown or a size / count / seed argument is invalid.
        FileExistsError: If a category directory holds data not written by this generator and ``overwrite`` is
            ``False``.

    Example:
        >>> root = generate_demo_dataset("/tmp/demo", categories=["capsule"], num_train=4)  # doctest: +SKIP
        >>> len(list((root / "capsule" / "train" / "good").glob("*.png")))  # doctest: +SKIP
        4
    """
    selected = _resolve_categories(categories)
    for name, value, minimum in (
        ("image_size", image_size, _MIN_IMAGE_SIZE),
        ("num_train", num_train, 1),
        ("num_test_good", num_test_good, 0),
        ("num_test_defect", num_test_defect, 0),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            msg = f"{name} must be an integer >= {minimum}, got {value!r}."
            raise ValueError(msg)

    root_path = Path(root)
    expected = _expected_files(num_train, num_test_good, num_test_defect)
    for category in selected:
        params: dict[str, object] = {
            "format_version": _FORMAT_VERSION,
            "category": category,
            "defect_types": list(DEFECT_TYPES),
            "image_size": int(image_size),
            "num_train": int(num_train),
            "num_test_good": int(num_test_good),
            "num_test_defect": int(num_test_defect),
            "seed": int(seed),
        }
        category_dir = root_path / category
        if not overwrite and _is_complete(category_dir, params, expected):
            logger.info("Demo category %r already complete in %s; skipping.", category, category_dir)
            continue
        _clear_category(category_dir, overwrite=overwrite)
        category_dir.mkdir(parents=True, exist_ok=True)
        partial = category_dir / _PARTIAL_MARKER_NAME
        partial.write_text("generation in progress\n", encoding="utf-8")
        logger.info("Generating demo category %r in %s.", category, category_dir)
        _write_category(
            category_dir,
            category,
            int(image_size),
            int(num_train),
            int(num_test_good),
            int(num_test_defect),
            int(seed),
        )
        (category_dir / _MARKER_NAME).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        partial.unlink()
    return root_path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        Process exit status (0 on success, 2 on invalid arguments).
    """
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_repair.demo.dataset",
        description="Generate the synthetic anomaly-detection demo dataset in MVTec AD layout.",
    )
    parser.add_argument("--root", type=Path, default=Path("datasets/demo"), help="output root (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=128, help="image side length (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--categories",
        nargs="+",
        default=None,
        help=f"categories to generate, space or comma separated (default: all of {', '.join(DEMO_CATEGORIES)})",
    )
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if the data already exist")
    args = parser.parse_args(argv)

    categories = None
    if args.categories is not None:
        categories = [name.strip() for item in args.categories for name in item.split(",") if name.strip()]
    try:
        root = generate_demo_dataset(
            args.root,
            categories=categories,
            image_size=args.image_size,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(f"{root}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
