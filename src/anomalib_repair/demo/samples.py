"""One demo image at a time: its own random stream, sensor noise, and a good or a defective rendering with its mask."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from anomalib_repair.demo.defects import _paint_defect
from anomalib_repair.demo.primitives import FloatImage, _to_uint8
from anomalib_repair.demo.scenes import _RENDERERS

_MIN_DEFECT_FRACTION = 0.003
_MAX_DEFECT_FRACTION = 0.05
_DEFECT_ATTEMPTS = 40


def _image_rng(seed: int, category_index: int, split_code: int, index: int) -> np.random.Generator:
    """Independent random stream for one image.

    Args:
        seed: User seed.
        category_index: Index of the category in ``DEMO_CATEGORIES``.
        split_code: Split / defect code.
        index: Image index within its folder.

    Returns:
        A seeded NumPy generator.
    """
    return np.random.default_rng([seed, category_index, split_code, index])


def _sensor_noise(rng: np.random.Generator, size: int) -> FloatImage:
    """Additive camera noise shared by the clean and the defective rendering.

    Args:
        rng: Random generator.
        size: Image side length.

    Returns:
        Float32 noise image ``(size, size, 3)``.
    """
    # Uniform noise with the same standard deviation as Gaussian noise of ``sigma``; it is much cheaper to draw.
    sigma = rng.uniform(0.008, 0.016)
    return (rng.random((size, size, 3), dtype=np.float32) - 0.5) * np.float32(sigma * math.sqrt(12.0))


def _render_good(category: str, rng: np.random.Generator, size: int) -> NDArray[np.uint8]:
    """Render one defect-free sample.

    Args:
        category: Category name.
        rng: Random generator.
        size: Image side length.

    Returns:
        uint8 RGB image.
    """
    scene = _RENDERERS[category](rng, size)
    return _to_uint8(scene.image + _sensor_noise(rng, size))


def _render_defective(
    category: str,
    defect: str,
    rng: np.random.Generator,
    size: int,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """Render one defective sample together with its defect-free counterpart and mask.

    The defect is redrawn (with fresh random parameters from the same stream) until the changed area lies within the
    allowed fraction of the image.

    Args:
        category: Category name.
        defect: Defect type.
        rng: Random generator.
        size: Image side length.

    Returns:
        ``(image, clean, mask)``: defective uint8 RGB image, the same scene without the defect, and the uint8
        single-channel mask (0/255) of exactly the changed pixels.

    Raises:
        RuntimeError: If no defect of acceptable size could be drawn (should not happen for valid sizes).
    """
    scene = _RENDERERS[category](rng, size)
    noise = _sensor_noise(rng, size)
    clean = _to_uint8(scene.image + noise)
    min_area = max(1, int(np.ceil(_MIN_DEFECT_FRACTION * size * size)))
    max_area = int(_MAX_DEFECT_FRACTION * size * size)
    for _ in range(_DEFECT_ATTEMPTS):
        painted, _alpha = _paint_defect(rng, scene, defect)
        image = _to_uint8(painted + noise)
        changed = np.any(image != clean, axis=-1)
        area = int(changed.sum())
        if min_area <= area <= max_area:
            return image, clean, (changed.astype(np.uint8) * 255)
    msg = f"Could not draw a {defect!r} defect of acceptable size on {category!r} at {size}px."
    raise RuntimeError(msg)
