"""Drawing primitives of the demo dataset: value and fractal noise, colours, backgrounds, shadows, 8-bit output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

FloatImage = NDArray[np.float32]
BoolMask = NDArray[np.bool_]


@dataclass(frozen=True)
class _Scene:
    """A rendered defect-free scene before sensor noise.

    Attributes:
        image: RGB image, float32 in ``[0, 1]``, shape ``(H, W, 3)``.
        backing: What shows through a hole (background or dark backing), same shape as ``image``.
        allowed: Boolean ``(H, W)`` map of pixels on which a defect may be drawn.
    """

    image: FloatImage
    backing: FloatImage
    allowed: BoolMask


# --------------------------------------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[FloatImage, FloatImage]:
    """Return pixel-centre coordinates ``(y, x)`` of a square image.

    Args:
        size: Image side length in pixels.

    Returns:
        Two float32 arrays of shape ``(size, size)`` holding the row and column coordinates.
    """
    coords = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return yy, xx


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> FloatImage:
    """Smooth value noise obtained by bicubic upsampling of a coarse random grid.

    Args:
        rng: Random generator.
        size: Output side length in pixels.
        cells: Number of grid cells across the image (controls the feature size).

    Returns:
        Float32 array of shape ``(size, size)`` with values roughly in ``[0, 1]``.
    """
    coarse = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return np.asarray(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), dtype=np.float32)


def _fractal_noise(rng: np.random.Generator, size: int, base_cells: int = 3, octaves: int = 4) -> FloatImage:
    """Multi-octave value noise normalised to ``[0, 1]``.

    Args:
        rng: Random generator.
        size: Output side length in pixels.
        base_cells: Grid cells of the coarsest octave.
        octaves: Number of octaves; each one doubles the frequency and halves the amplitude.

    Returns:
        Float32 array of shape ``(size, size)`` in ``[0, 1]``.
    """
    total = np.zeros((size, size), dtype=np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cells = min(base_cells * 2**octave, size)
        total += amplitude * _value_noise(rng, size, cells)
        amplitude *= 0.5
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _jitter_colour(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> FloatImage:
    """Randomly perturb an RGB colour, mostly in brightness and a little in hue.

    Args:
        rng: Random generator.
        rgb: Base colour in ``[0, 1]``.
        amount: Standard deviation of the common (brightness) shift; each channel gets half of it on top.

    Returns:
        Float32 array of shape ``(3,)`` clipped to ``[0, 1]``.
    """
    shift = rng.normal(0.0, amount) + rng.normal(0.0, amount * 0.5, 3)
    colour = np.asarray(rgb, dtype=np.float32) + shift.astype(np.float32)
    return np.clip(colour, 0.0, 1.0)


def _background(rng: np.random.Generator, size: int, rgb: tuple[float, float, float]) -> FloatImage:
    """Plain backdrop with a soft illumination gradient and mottling.

    Args:
        rng: Random generator.
        size: Image side length.
        rgb: Base backdrop colour.

    Returns:
        Float32 RGB image of shape ``(size, size, 3)``.
    """
    yy, xx = _grid(size)
    colour = _jitter_colour(rng, rgb, 0.012)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (math.cos(angle) * xx + math.sin(angle) * yy) / size - 0.5
    shade = 1.0 + 0.12 * ramp + 0.05 * (_value_noise(rng, size, 4) - 0.5)
    return np.clip(shade[..., None] * colour, 0.0, 1.0).astype(np.float32)


def _drop_shadow(background: FloatImage, coverage: FloatImage, size: int, rng: np.random.Generator) -> FloatImage:
    """Darken the backdrop with a soft shadow of an object.

    Args:
        background: Backdrop image ``(H, W, 3)``.
        coverage: Object coverage ``(H, W)`` in ``[0, 1]``.
        size: Image side length (used to scale the shadow offset and blur).
        rng: Random generator.

    Returns:
        The shadowed backdrop.
    """
    shift = size * 0.02
    matrix = np.array([[1.0, 0.0, shift], [0.0, 1.0, shift]], dtype=np.float32)
    shadow = cv2.warpAffine(coverage, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    sigma = max(size * 0.025, 0.8)
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigma)
    strength = rng.uniform(0.35, 0.5)
    return (background * (1.0 - strength * shadow)[..., None]).astype(np.float32)


def _to_uint8(image: FloatImage) -> NDArray[np.uint8]:
    """Quantise a float image in ``[0, 1]`` to uint8.

    Args:
        image: Float image.

    Returns:
        uint8 image of the same shape.
    """
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _luminance(image: FloatImage) -> FloatImage:
    """Rec. 601 luma of an RGB image (last axis).

    Args:
        image: Float RGB image or colour array with a trailing channel axis.

    Returns:
        Luma array without the channel axis.
    """
    return (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]).astype(np.float32)
