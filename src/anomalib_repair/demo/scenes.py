"""The four demo categories, each drawn defect-free: two textures (weave, grain) and two objects (disc, capsule)."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from anomalib_repair.demo.primitives import (
    BoolMask,
    FloatImage,
    _background,
    _drop_shadow,
    _fractal_noise,
    _grid,
    _jitter_colour,
    _Scene,
    _value_noise,
)


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

DEMO_CATEGORIES: tuple[str, ...] = tuple(_RENDERERS)
