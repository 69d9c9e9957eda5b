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
    >>> from anomalib_repair.data.demo import generate_demo_dataset
    >>> root = generate_demo_dataset("./datasets/demo", categories=["disc"])  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "disc" / "test").iterdir())  # doctest: +SKIP
    ['good', 'hole', 'scratch', 'stain']

The module can also be run as a script::

    python -m anomalib_repair.data.demo --root ./datasets/demo
"""

from __future__ import annotations

import argparse
import colorsys
import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

DEMO_CATEGORIES: tuple[str, ...] = ("weave", "grain", "disc", "capsule")
DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain")

_FORMAT_VERSION = 1
_MARKER_NAME = ".demo_complete"
_PARTIAL_MARKER_NAME = ".demo_partial"
_GENERATED_SUBDIRS = ("train", "test", "ground_truth")
_MIN_IMAGE_SIZE = 32
_MIN_DEFECT_FRACTION = 0.003
_MAX_DEFECT_FRACTION = 0.05
_DEFECT_ATTEMPTS = 40
_SUPERSAMPLE = 4
_STAIN_CANDIDATES = 6

# Split codes used to derive independent random streams per image.
_SPLIT_TRAIN = 0
_SPLIT_TEST_GOOD = 1
_SPLIT_TEST_DEFECT_BASE = 2

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


# --------------------------------------------------------------------------------------------------------------------
# Category renderers
# --------------------------------------------------------------------------------------------------------------------


def _texture_allowed(size: int) -> BoolMask:
    """Allowed defect area for textures: everything except a border band.

    Args:
        size: Image side length.

    Returns:
        Boolean ``(size, size)`` map.
    """
    margin = max(3, round(size * 0.05))
    allowed = np.zeros((size, size), dtype=bool)
    allowed[margin : size - margin, margin : size - margin] = True
    return allowed


def _render_weave(rng: np.random.Generator, size: int) -> _Scene:
    """Render a plain-weave fabric: alternating warp and weft threads with colour jitter.

    Args:
        rng: Random generator.
        size: Image side length.

    Returns:
        The rendered scene.
    """
    yy, xx = _grid(size)
    # The fabric is roughly registered (like a fixed camera over a conveyor): a slight rotation about the centre, a
    # shift of a few pixels and a small change of the thread pitch.
    angle = math.radians(rng.uniform(-1.0, 1.0))
    period = size / 9.5 * rng.uniform(0.99, 1.01)
    shift = 0.012 * size
    rel_x = xx - size / 2.0
    rel_y = yy - size / 2.0
    u = math.cos(angle) * rel_x + math.sin(angle) * rel_y + 0.25 * period + rng.uniform(-shift, shift)
    v = -math.sin(angle) * rel_x + math.cos(angle) * rel_y + 0.25 * period + rng.uniform(-shift, shift)
    cell_u = np.floor(u / period)
    cell_v = np.floor(v / period)
    fu = u / period - cell_u
    fv = v / period - cell_v
    iu = cell_u.astype(np.int64)
    iv = cell_v.astype(np.int64)

    gap = 0.14

    def profile(frac: NDArray[np.floating]) -> FloatImage:
        inside = np.clip((frac - gap / 2.0) / (1.0 - gap), 0.0, 1.0)
        return np.sqrt(np.maximum(np.sin(np.pi * inside), 0.0)).astype(np.float32)

    warp_profile = profile(fu)
    weft_profile = profile(fv)
    warp_on_top = ((iu + iv) % 2) == 0

    warp_colour = _jitter_colour(rng, (0.22, 0.33, 0.58), 0.03)
    weft_colour = _jitter_colour(rng, (0.86, 0.80, 0.66), 0.03)
    thread_jitter = 1.0 + rng.normal(0.0, 0.05, (2, 64)).astype(np.float32)
    warp_gain = thread_jitter[0][iu % 64]
    weft_gain = thread_jitter[1][iv % 64]

    # Threads bulge along their length between crossings.
    warp_bulge = 0.72 + 0.28 * np.sin(np.pi * fv)
    weft_bulge = 0.72 + 0.28 * np.sin(np.pi * fu)
    warp_shade = (warp_profile * warp_bulge * warp_gain)[..., None] * warp_colour
    weft_shade = (weft_profile * weft_bulge * weft_gain)[..., None] * weft_colour

    backing = np.broadcast_to(_jitter_colour(rng, (0.05, 0.05, 0.07), 0.01), (size, size, 3)).astype(np.float32)
    top_is_warp = (warp_on_top & (warp_profile > 0)) | (weft_profile <= 0)
    top = np.where(top_is_warp[..., None], warp_shade, weft_shade)
    top_cover = np.where(top_is_warp, warp_profile, weft_profile)
    image = top + (1.0 - np.minimum(top_cover * 4.0, 1.0))[..., None] * backing

    fibres = 1.0 + 0.06 * (_value_noise(rng, size, max(size // 3, 4)) - 0.5)
    light = 1.0 + 0.1 * (_value_noise(rng, size, 3) - 0.5)
    image = image * (fibres * light)[..., None] * rng.uniform(0.94, 1.06)
    return _Scene(np.clip(image, 0.0, 1.0).astype(np.float32), backing, _texture_allowed(size))


def _render_grain(rng: np.random.Generator, size: int) -> _Scene:
    """Render a noisy granular marble-like stone surface.

    Args:
        rng: Random generator.
        size: Image side length.

    Returns:
        The rendered scene.
    """
    yy, xx = _grid(size)
    base = _jitter_colour(rng, (0.74, 0.67, 0.57), 0.025)
    vein_colour = _jitter_colour(rng, (0.42, 0.37, 0.33), 0.02)

    turbulence = _fractal_noise(rng, size, base_cells=3, octaves=4)
    angle = math.radians(35.0 + rng.uniform(-8.0, 8.0))
    frequency = 2.0 * np.pi * rng.uniform(2.2, 2.8) / size
    phase = rng.uniform(0.0, 2.0 * np.pi)
    marble = np.sin(frequency * (math.cos(angle) * xx + math.sin(angle) * yy) + 7.0 * turbulence + phase)
    veins = (1.0 - np.abs(marble)) ** 5
    clouds = _fractal_noise(rng, size, base_cells=2, octaves=3)

    image = base * (0.9 + 0.2 * clouds)[..., None]
    image = image * (1.0 - 0.7 * veins)[..., None] + (0.7 * veins)[..., None] * vein_colour

    grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), (0, 0), 0.7)
    speckle_map = (rng.random((size, size)) < 0.015).astype(np.float32)
    speckle_sign = np.where(rng.random((size, size)) < 0.5, -1.0, 1.0).astype(np.float32)
    speckles = cv2.GaussianBlur(speckle_map * speckle_sign, (0, 0), 0.6)
    image = image * (1.0 + 0.06 * grain + 0.9 * speckles)[..., None] * rng.uniform(0.94, 1.06)

    backing = np.broadcast_to(_jitter_colour(rng, (0.08, 0.06, 0.05), 0.01), (size, size, 3)).astype(np.float32)
    return _Scene(np.clip(image, 0.0, 1.0).astype(np.float32), backing, _texture_allowed(size))


def _render_disc(rng: np.random.Generator, size: int) -> _Scene:
    """Render a machined brass washer (disc with a centre hole) on a dark backdrop.

    Args:
        rng: Random generator.
        size: Image side length.

    Returns:
        The rendered scene.
    """
    yy, xx = _grid(size)
    jitter = 0.025 * size
    cy = size / 2.0 + rng.uniform(-jitter, jitter)
    cx = size / 2.0 + rng.uniform(-jitter, jitter)
    outer = 0.36 * size * rng.uniform(0.98, 1.02)
    inner = 0.13 * size * rng.uniform(0.97, 1.03)
    dy, dx = yy - cy, xx - cx
    dist = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    coverage = (np.clip(outer - dist + 0.5, 0.0, 1.0) * np.clip(dist - inner + 0.5, 0.0, 1.0)).astype(np.float32)

    background = _background(rng, size, (0.15, 0.16, 0.18))
    shaded_background = _drop_shadow(background, coverage, size, rng)

    metal = _jitter_colour(rng, (0.78, 0.62, 0.33), 0.025)
    light_angle = math.radians(-135.0 + rng.uniform(-12.0, 12.0))
    facing = np.cos(theta - light_angle)
    radial = np.clip((dist - inner) / (outer - inner), 0.0, 1.0)
    bevel_width = 0.14
    outer_bevel = np.clip((radial - (1.0 - bevel_width)) / bevel_width, 0.0, 1.0)
    inner_bevel = np.clip((bevel_width - radial) / bevel_width, 0.0, 1.0)
    shade = 0.82 + 0.1 * facing * radial + 0.3 * facing * outer_bevel - 0.3 * facing * inner_bevel
    rings = 0.035 * np.sin(2.0 * np.pi * dist / max(size / 42.0, 1.5) + rng.uniform(0.0, 2.0 * np.pi))
    brushed = 0.04 * (_value_noise(rng, size, max(size // 4, 4)) - 0.5)
    shade = shade + rings + brushed
    disc = np.clip(shade[..., None] * metal * rng.uniform(0.94, 1.06), 0.0, 1.0)

    image = shaded_background * (1.0 - coverage)[..., None] + disc * coverage[..., None]
    margin = max(2.0, size / 64.0)
    allowed = (dist <= outer - margin) & (dist >= inner + margin)
    return _Scene(image.astype(np.float32), shaded_background, allowed)


def _render_capsule(rng: np.random.Generator, size: int) -> _Scene:
    """Render a two-tone pharmaceutical capsule (rounded pill) on a dark backdrop.

    Args:
        rng: Random generator.
        size: Image side length.

    Returns:
        The rendered scene.
    """
    yy, xx = _grid(size)
    jitter = 0.025 * size
    cy = size / 2.0 + rng.uniform(-jitter, jitter)
    cx = size / 2.0 + rng.uniform(-jitter, jitter)
    angle = math.radians(rng.uniform(-5.0, 5.0))
    half_length = 0.25 * size * rng.uniform(0.98, 1.02)
    radius = 0.15 * size * rng.uniform(0.98, 1.02)
    ux, uy = math.cos(angle), math.sin(angle)

    rel_x, rel_y = xx - cx, yy - cy
    along = rel_x * ux + rel_y * uy
    across = -rel_x * uy + rel_y * ux
    clamped = np.clip(along, -half_length, half_length)
    axis_dist = np.sqrt((along - clamped) ** 2 + across**2)
    signed = axis_dist - radius
    coverage = np.clip(0.5 - signed, 0.0, 1.0).astype(np.float32)

    background = _background(rng, size, (0.19, 0.21, 0.25))
    shaded_background = _drop_shadow(background, coverage, size, rng)

    cap_colour = _jitter_colour(rng, (0.80, 0.20, 0.16), 0.025)
    body_colour = _jitter_colour(rng, (0.92, 0.90, 0.84), 0.015)
    seam = rng.uniform(-0.06, 0.06) * size
    blend = np.clip(along - seam + 0.5, 0.0, 1.0)[..., None]
    colour = cap_colour * (1.0 - blend) + body_colour * blend

    normal_z = np.sqrt(np.clip(1.0 - (axis_dist / radius) ** 2, 0.0, 1.0))
    highlight = np.exp(-((((across / radius) + 0.42) / 0.16) ** 2)) * normal_z
    seam_line = 1.0 - 0.18 * np.exp(-(((along - seam) / max(size / 160.0, 0.6)) ** 2))
    shade = (0.5 + 0.5 * normal_z) * seam_line
    capsule = colour * shade[..., None] + 0.28 * highlight[..., None]
    capsule = np.clip(capsule * rng.uniform(0.95, 1.05), 0.0, 1.0)

    image = shaded_background * (1.0 - coverage)[..., None] + capsule * coverage[..., None]
    margin = max(2.0, size / 64.0)
    allowed = signed <= -margin
    return _Scene(image.astype(np.float32), shaded_background, allowed)


_RENDERERS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "weave": _render_weave,
    "grain": _render_grain,
    "disc": _render_disc,
    "capsule": _render_capsule,
}


# --------------------------------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Sample generation
# --------------------------------------------------------------------------------------------------------------------


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
        prog="python -m anomalib_repair.data.demo",
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
