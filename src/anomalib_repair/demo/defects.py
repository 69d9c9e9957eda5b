"""The three demo defects (scratch, hole, stain): an alpha shape placed on the allowed pixels, then painted."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from anomalib_repair.demo.primitives import (
    BoolMask,
    FloatImage,
    _grid,
    _luminance,
    _Scene,
    _value_noise,
)

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain")
_SUPERSAMPLE = 4  # defect shapes are rasterised at this multiple of the image size, then averaged down
_STAIN_CANDIDATES = 6


def _raster(size: int, draw: Callable[[NDArray[np.uint8], float], None]) -> FloatImage:
    """Rasterise a shape with anti-aliasing by drawing on a supersampled canvas.

    Args:
        size: Output side length.
        draw: Callback that draws with value 255 onto the supersampled canvas; receives the canvas and the scale.

    Returns:
        Coverage map in ``[0, 1]`` of shape ``(size, size)``.
    """
    canvas = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), dtype=np.uint8)
    draw(canvas, float(_SUPERSAMPLE))
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _scratch_alpha(rng: np.random.Generator, size: int, centre: tuple[float, float]) -> FloatImage:
    """Opacity map of a thin curved scratch.

    Args:
        rng: Random generator.
        size: Image side length.
        centre: ``(y, x)`` centre of the scratch.

    Returns:
        Opacity map ``(size, size)``.
    """
    length = size * rng.uniform(0.22, 0.4)
    width = max(1.2, size / 128.0 * rng.uniform(1.8, 3.0))
    direction = rng.uniform(0.0, np.pi)
    dx, dy = math.cos(direction), math.sin(direction)
    bend = length * rng.uniform(-0.35, 0.35)
    cy, cx = centre
    p0 = np.array([cx - dx * length / 2.0, cy - dy * length / 2.0])
    p2 = np.array([cx + dx * length / 2.0, cy + dy * length / 2.0])
    p1 = np.array([cx - dy * bend, cy + dx * bend])
    t = np.linspace(0.0, 1.0, 48)[:, None]
    points = (1.0 - t) ** 2 * p0 + 2.0 * (1.0 - t) * t * p1 + t**2 * p2

    def draw(canvas: NDArray[np.uint8], scale: float) -> None:
        pts = np.round(points * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], isClosed=False, color=255, thickness=max(1, round(width * scale)))

    alpha = _raster(size, draw)
    variation = 0.8 + 0.2 * _value_noise(rng, size, 6)
    return (alpha * variation).astype(np.float32)


def _hole_alpha(rng: np.random.Generator, size: int, centre: tuple[float, float]) -> FloatImage:
    """Opacity map of an irregular hole.

    Args:
        rng: Random generator.
        size: Image side length.
        centre: ``(y, x)`` centre of the hole.

    Returns:
        Opacity map ``(size, size)``.
    """
    radius = size * rng.uniform(0.035, 0.06)
    angles = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    wobble = np.ones_like(angles)
    for harmonic in range(2, 6):
        wobble += rng.uniform(0.0, 0.3 / harmonic * 2.0) * np.cos(harmonic * angles + rng.uniform(0.0, 2.0 * np.pi))
    wobble = np.clip(wobble, 0.45, None)
    stretch = rng.uniform(0.75, 1.3)
    tilt = rng.uniform(0.0, np.pi)
    px = radius * wobble * np.cos(angles) * stretch
    py = radius * wobble * np.sin(angles) / stretch
    cy, cx = centre
    xs = cx + px * math.cos(tilt) - py * math.sin(tilt)
    ys = cy + px * math.sin(tilt) + py * math.cos(tilt)
    polygon = np.stack([xs, ys], axis=1)

    def draw(canvas: NDArray[np.uint8], scale: float) -> None:
        pts = np.round(polygon * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(canvas, [pts], color=255)

    return _raster(size, draw)


def _stain_alpha(rng: np.random.Generator, size: int, centre: tuple[float, float]) -> FloatImage:
    """Opacity map of a soft-edged, blotchy stain.

    Args:
        rng: Random generator.
        size: Image side length.
        centre: ``(y, x)`` centre of the stain.

    Returns:
        Opacity map ``(size, size)``.
    """
    yy, xx = _grid(size)
    radius = size * rng.uniform(0.045, 0.07)
    field = np.zeros((size, size), dtype=np.float32)
    cy, cx = centre
    for _ in range(int(rng.integers(3, 6))):
        by = cy + rng.normal(0.0, radius * 0.45)
        bx = cx + rng.normal(0.0, radius * 0.45)
        sigma = radius * rng.uniform(0.45, 0.7)
        field += np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2.0 * sigma**2)).astype(np.float32)
    field /= max(float(field.max()), 1e-6)
    threshold = 0.3
    alpha = np.clip((field - threshold) / 0.3, 0.0, 1.0) ** 0.8
    blotch = 0.85 + 0.15 * _value_noise(rng, size, 10)
    return (alpha * blotch * rng.uniform(0.85, 0.97)).astype(np.float32)


def _pick_centre(rng: np.random.Generator, allowed: BoolMask, clearance: float) -> tuple[float, float]:
    """Pick a random pixel centre far enough inside the allowed region.

    Args:
        rng: Random generator.
        allowed: Boolean map of allowed defect pixels.
        clearance: Preferred minimum distance (pixels) from the region's edge.

    Returns:
        ``(y, x)`` coordinates of the chosen pixel centre.
    """
    distance = cv2.distanceTransform(allowed.astype(np.uint8), cv2.DIST_L2, 3)
    candidates = np.flatnonzero(distance >= clearance)
    if candidates.size == 0:
        candidates = np.flatnonzero(distance >= float(distance.max()) * 0.8)
    index = int(candidates[int(rng.integers(candidates.size))])
    row, col = divmod(index, allowed.shape[1])
    return row + 0.5, col + 0.5


def _defect_colour(rng: np.random.Generator, defect: str, local_mean: FloatImage) -> FloatImage:
    """Choose the paint colour of a scratch or stain from the local appearance.

    Args:
        rng: Random generator.
        defect: ``"scratch"`` or ``"stain"``.
        local_mean: Mean RGB colour of the clean image under the defect.

    Returns:
        RGB colour, float32 ``(3,)``.
    """
    if defect == "scratch":
        lum = float(_luminance(local_mean))
        bright = rng.random() < 0.5 if 0.38 <= lum <= 0.55 else lum < 0.38
        if bright:
            return np.clip(np.float32(rng.uniform(0.9, 1.0)) + 0.08 * (local_mean - lum), 0.0, 1.0).astype(np.float32)
        return np.clip(np.float32(rng.uniform(0.03, 0.1)) + 0.05 * local_mean, 0.0, 1.0).astype(np.float32)
    hue, local_saturation, _ = colorsys.rgb_to_hsv(*(float(c) for c in local_mean))
    # Rotate a clearly coloured surface's hue away from it; on a greyish mixture any hue will do.
    new_hue = (hue + rng.uniform(0.25, 0.75)) % 1.0 if local_saturation > 0.25 else rng.random()
    saturation = rng.uniform(0.7, 0.95)
    new_value = rng.uniform(0.55, 0.9)
    return np.asarray(colorsys.hsv_to_rgb(new_hue, saturation, new_value), dtype=np.float32)


def _paint_defect(rng: np.random.Generator, scene: _Scene, defect: str) -> tuple[FloatImage, FloatImage]:
    """Draw one defect onto a clean scene.

    Args:
        rng: Random generator.
        scene: Clean scene.
        defect: One of ``DEFECT_TYPES``.

    Returns:
        ``(image, alpha)``: the defective image (before sensor noise) and the defect opacity map.
    """
    size = scene.image.shape[0]
    if defect == "scratch":
        centre = _pick_centre(rng, scene.allowed, size * 0.05)
        alpha = _scratch_alpha(rng, size, centre)
    elif defect == "hole":
        centre = _pick_centre(rng, scene.allowed, size * 0.06)
        alpha = _hole_alpha(rng, size, centre)
    elif defect == "stain":
        centre = _pick_centre(rng, scene.allowed, size * 0.07)
        alpha = _stain_alpha(rng, size, centre)
    else:  # pragma: no cover - guarded by the callers
        msg = f"Unknown defect type {defect!r}; expected one of {DEFECT_TYPES}."
        raise ValueError(msg)
    alpha = np.where(scene.allowed, alpha, 0.0).astype(np.float32)

    weights = alpha / max(float(alpha.sum()), 1e-6)
    local_mean = np.tensordot(weights, scene.image, axes=([0, 1], [0, 1])).astype(np.float32)
    if defect == "hole":
        fill = scene.backing * np.float32(rng.uniform(0.75, 0.95))
        fill = fill * (1.0 + 0.08 * (_value_noise(rng, size, 12) - 0.5))[..., None]
    elif defect == "scratch":
        fill = np.broadcast_to(_defect_colour(rng, defect, local_mean), scene.image.shape)
    else:
        texture = np.clip(0.8 + 0.2 * _luminance(scene.image) / max(float(_luminance(local_mean)), 1e-3), 0.0, 1.3)
        # Of a few random hues, keep the one that contrasts most with the pixels it covers (e.g. no purple on blue).
        covered = alpha > 0
        pixels, gains, pixel_weights = scene.image[covered], texture[covered][:, None], weights[covered][:, None]
        candidates = [_defect_colour(rng, defect, local_mean) for _ in range(_STAIN_CANDIDATES)]
        contrast = [float((pixel_weights * np.abs(colour * gains - pixels)).sum()) for colour in candidates]
        fill = candidates[int(np.argmax(contrast))] * texture[..., None]
    image = scene.image * (1.0 - alpha)[..., None] + fill * alpha[..., None]
    return np.clip(image, 0.0, 1.0).astype(np.float32), alpha
