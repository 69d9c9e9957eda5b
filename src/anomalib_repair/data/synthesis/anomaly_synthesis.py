"""Image-level anomaly synthesis: Perlin-shaped patches of a foreign texture or of the shuffled image itself.

Usable by any model that trains on synthetic defects (CRR uses it for both training stages). One call damages every
image of a batch:

1. **Foreground** (:func:`foreground_mask`): where defects may appear. Automatic rule, per image, on the
   un-normalised picture:

   - the *background colour* is the per-channel median of a border strip (5 % of the shorter side);
   - if the border itself is not uniform (the median distance of its pixels to that colour is above
     ``border_tolerance``), the picture is a texture or a filled frame: the whole image is foreground;
   - otherwise a pixel is foreground when its colour distance to the background (3×3 averaged) is above the
     Otsu threshold of that distance, and that threshold is at least ``min_contrast`` (else there is no
     distinct object: whole image);
   - the result is closed (dilate, then erode, ``closing`` px) and kept only if it covers at least
     ``min_fraction`` of the image (else whole image).

   ``foreground="off"`` uses the whole image always.
2. **Shape** (:func:`perlin_mask`): anomalib's Perlin noise (scales 2^0–2^5 on each axis), rotated by up to
   ±90°, thresholded at 0.5, multiplied by the foreground; drawn again until non-empty (after ``max_tries`` the
   foreground is ignored).
3. **Source**: with probability ``texture_probability`` a texture image from ``texture_dir`` (DTD-like), otherwise
   the image itself; either way through ``num_augmentations`` random photometric/geometric transforms
   (torchvision v2); the self source is then cut into a ``grid``×``grid`` grid whose cells are shuffled.
4. **Blend**: ``aug = img·(1−M) + (1−β)·src·M + β·img·M`` with ``β ~ U[β_min, β_max]`` per image.

Batches arrive normalised: they are un-normalised with the given mean/std, damaged in ``[0, 1]`` and normalised
again. Everything random comes from one seed per image drawn from ``generator`` (or from torch's global generator),
so a seeded generator reproduces a batch exactly. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data.transforms import MultiRandomChoice
from anomalib.data.utils.generators.perlin import generate_perlin_noise
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from anomalib_repair.errors import BadInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FOREGROUND_MODES = ("auto", "off")


# ---------------------------------------------------------------------------------------------- foreground
def _otsu_thresholds(values: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Otsu threshold of each row of ``values`` (``(B, N)``, any range): maximal between-class variance.

    Not kornia's ``otsu_threshold``: that one bins by flooring into ``nbins`` bins over each plane's range and
    returns a bin's upper edge; this one rounds values to ``bins`` centres and returns the midpoint between two.
    On random planes the two thresholds differ by up to ~1.4 % of the range and ~0.2 % of pixels change side,
    which would change the foreground masks of CRR's synthesis, and so its seeded results.
    """
    low = values.min(dim=1, keepdim=True).values
    high = values.max(dim=1, keepdim=True).values
    span = (high - low).clamp_min(1e-12)
    index = ((values - low) / span * (bins - 1)).round().long().clamp(0, bins - 1)
    histogram = torch.zeros(values.shape[0], bins, device=values.device, dtype=values.dtype)
    histogram.scatter_add_(1, index, torch.ones_like(values))
    probability = histogram / values.shape[1]
    centres = torch.arange(bins, device=values.device, dtype=values.dtype)
    weight_low = probability.cumsum(dim=1)
    mean_low = (probability * centres).cumsum(dim=1)
    mean_all = mean_low[:, -1:]
    between = (mean_all * weight_low - mean_low) ** 2 / (weight_low * (1 - weight_low)).clamp_min(1e-12)
    best = between[:, :-1].argmax(dim=1, keepdim=True).to(values.dtype)
    return low + (best + 0.5) / (bins - 1) * span


def foreground_mask(
    images: torch.Tensor,
    border: float = 0.05,
    border_tolerance: float = 0.05,
    min_contrast: float = 0.1,
    closing: int = 7,
    min_fraction: float = 0.01,
) -> torch.Tensor:
    """Foreground of each image by the border-colour rule of the module docstring.

    Args:
        images: ``(B, 3, H, W)`` images in ``[0, 1]``.
        border: Width of the border strip, as a fraction of the shorter side.
        border_tolerance: Median colour distance of the border to its own median above which the border is not
            uniform (texture): whole image.
        min_contrast: Smallest Otsu threshold (colour distance, ``[0, √3]``) that counts as a distinct object.
        closing: Size in pixels of the morphological closing that fills small holes.
        min_fraction: Smallest foreground fraction kept; below it the whole image is used.

    Returns:
        ``(B, 1, H, W)`` boolean masks.
    """
    batch, _, height, width = images.shape
    strip = max(1, round(border * min(height, width)))
    edge = torch.ones(height, width, dtype=torch.bool, device=images.device)
    edge[strip:-strip, strip:-strip] = False
    border_pixels = images[:, :, edge]  # (B, 3, P)
    background = border_pixels.median(dim=2).values.view(batch, 3, 1, 1)
    border_spread = (border_pixels - background.view(batch, 3, 1)).norm(dim=1).median(dim=1).values
    distance = (images - background).norm(dim=1, keepdim=True)
    distance = F.avg_pool2d(distance, 3, stride=1, padding=1, count_include_pad=False)
    threshold = _otsu_thresholds(distance.flatten(1))
    mask = distance > threshold.view(batch, 1, 1, 1)
    if closing > 1:
        pad = closing // 2
        dilated = F.max_pool2d(mask.float(), closing, stride=1, padding=pad)
        mask = -F.max_pool2d(-dilated, closing, stride=1, padding=pad) > 0.5
    whole = (
        (border_spread > border_tolerance)
        | (threshold.view(batch) < min_contrast)
        | (mask.flatten(1).float().mean(dim=1) < min_fraction)
    )
    return mask | whole.view(batch, 1, 1, 1)


# ---------------------------------------------------------------------------------------------- shapes
def perlin_mask(
    height: int,
    width: int,
    rotation: float = 90.0,
    threshold: float = 0.5,
    device: torch.device | None = None,
) -> torch.Tensor:
    """One binary Perlin mask ``(H, W)`` (float 0/1) from torch's global generator.

    anomalib's :func:`generate_perlin_noise` draws the scale (2^0–2^5 per axis); the noise is rotated by an angle
    drawn uniformly from ``[-rotation, rotation]`` degrees and thresholded. Seed torch (or use
    :class:`AnomalySynthesizer`) for reproducible masks.
    """
    noise = generate_perlin_noise(height, width, device=device or torch.device("cpu"))
    angle = float(torch.empty(1).uniform_(-rotation, rotation))
    noise = TF.rotate(noise[None], angle, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0)[0]
    return (noise > threshold).float()


def grid_shuffle(image: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """Cut ``(C, H, W)`` into ``grid``×``grid`` cells and put them back in a random order (torch's generator).

    When ``H`` or ``W`` is not a multiple of ``grid``, the bottom/right remainder stays where it is.
    """
    channels, height, width = image.shape
    cell_h, cell_w = height // grid, width // grid
    if cell_h == 0 or cell_w == 0:
        return image
    region = image[:, : cell_h * grid, : cell_w * grid]
    cells = (
        region.reshape(channels, grid, cell_h, grid, cell_w)
        .permute(1, 3, 0, 2, 4)
        .reshape(-1, channels, cell_h, cell_w)
    )
    cells = cells[torch.randperm(cells.shape[0]).to(cells.device)]
    shuffled = cells.reshape(grid, grid, channels, cell_h, cell_w).permute(2, 0, 3, 1, 4)
    out = image.clone()
    out[:, : cell_h * grid, : cell_w * grid] = shuffled.reshape(channels, cell_h * grid, cell_w * grid)
    return out


def _posterize(image: torch.Tensor) -> torch.Tensor:
    as_bytes = TF.to_dtype(image, torch.uint8, scale=True)
    return TF.to_dtype(TF.posterize(as_bytes, bits=4), torch.float32, scale=True)


def default_augmentations(num_transforms: int = 3) -> MultiRandomChoice:
    """``num_transforms`` distinct transforms drawn from a DRAEM-like photometric/geometric set (float ``[0, 1]``)."""
    return MultiRandomChoice(
        transforms=[
            v2.ColorJitter(contrast=(0.5, 2.0)),
            v2.ColorJitter(brightness=(0.8, 1.2)),
            v2.RandomAdjustSharpness(sharpness_factor=2.0, p=1.0),
            v2.ColorJitter(hue=(-50 / 360, 50 / 360), saturation=(0.5, 1.5)),
            v2.RandomSolarize(threshold=0.5, p=1.0),
            v2.Lambda(_posterize),
            v2.RandomInvert(p=1.0),
            v2.RandomAutocontrast(p=1.0),
            v2.RandomEqualize(p=1.0),
            v2.RandomAffine(degrees=(-45, 45), interpolation=v2.InterpolationMode.BILINEAR, fill=0),
        ],
        probabilities=None,
        num_transforms=num_transforms,
        fixed_num_transforms=True,
    )


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global generators seeded, restoring their previous state afterwards."""
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        if cuda_devices:
            torch.cuda.manual_seed(seed)
        yield


def texture_files(texture_dir: str | Path) -> list[Path]:
    """Image files under ``texture_dir`` (recursive, sorted).

    Raises:
        BadInputError: When the folder does not exist or holds no image.
    """
    folder = Path(texture_dir).expanduser()
    if not folder.is_dir():
        msg = f"texture_dir {folder} is not a folder: pass a folder of texture images (e.g. DTD) or texture_dir=None."
        raise BadInputError(msg)
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        msg = (
            f"texture_dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): add texture images "
            "or pass texture_dir=None to use self-augmented sources only."
        )
        raise BadInputError(msg)
    return files


class AnomalySynthesizer:
    """Damage a batch of images with Perlin-shaped texture or self-shuffled patches (see the module docstring).

    Args:
        texture_dir: Folder of texture images (searched recursively); ``None`` uses self-augmented sources only.
        texture_probability: Probability of a texture source when ``texture_dir`` is given (0.5).
        beta_range: Range of the blend factor ``β`` (``(0.2, 0.8)``).
        grid: Cells per side of the self-source shuffle (8).
        num_augmentations: Random transforms applied to every source (3).
        rotation: Largest rotation of the Perlin noise in degrees (90).
        perlin_threshold: Threshold of the Perlin noise (0.5).
        foreground: ``"auto"`` (border-colour rule) or ``"off"`` (whole image).
        max_tries: Perlin draws before the foreground is ignored for an image.
        foreground_options: Keyword arguments of :func:`foreground_mask`.

    Example:
        >>> synthesizer = AnomalySynthesizer()
        >>> images = torch.rand(2, 3, 64, 64)
        >>> damaged, masks = synthesizer(images, generator=torch.Generator().manual_seed(0))
        >>> damaged.shape, masks.shape
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))
    """

    def __init__(
        self,
        texture_dir: str | Path | None = None,
        texture_probability: float = 0.5,
        beta_range: tuple[float, float] = (0.2, 0.8),
        grid: int = 8,
        num_augmentations: int = 3,
        rotation: float = 90.0,
        perlin_threshold: float = 0.5,
        foreground: str = "auto",
        max_tries: int = 20,
        foreground_options: dict[str, Any] | None = None,
    ) -> None:
        if foreground not in FOREGROUND_MODES:
            msg = f"foreground must be one of {FOREGROUND_MODES}, got '{foreground}'."
            raise BadInputError(msg)
        if not 0.0 <= beta_range[0] <= beta_range[1] <= 1.0:
            msg = f"beta_range must satisfy 0 <= low <= high <= 1, got {tuple(beta_range)}."
            raise BadInputError(msg)
        self.textures = texture_files(texture_dir) if texture_dir is not None else []
        self.texture_probability = texture_probability if self.textures else 0.0
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.grid = grid
        self.rotation = rotation
        self.perlin_threshold = perlin_threshold
        self.foreground = foreground
        self.max_tries = max_tries
        self.foreground_options = dict(foreground_options or {})
        self.augment = default_augmentations(num_augmentations)

    # ------------------------------------------------------------------ pieces
    def foreground_masks(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` boolean foreground of images in ``[0, 1]`` (all true with ``foreground="off"``)."""
        if self.foreground == "off":
            return torch.ones(images.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
        return foreground_mask(images, **self.foreground_options)

    def _shape(self, foreground: torch.Tensor) -> torch.Tensor:
        height, width = foreground.shape[-2:]
        mask = torch.zeros(height, width, device=foreground.device)
        for _ in range(self.max_tries):
            mask = perlin_mask(height, width, self.rotation, self.perlin_threshold, device=foreground.device)
            restricted = mask * foreground[0].float()
            if restricted.any():
                return restricted
        while not mask.any():  # Perlin noise rarely stays below the threshold everywhere
            mask = perlin_mask(height, width, self.rotation, self.perlin_threshold, device=foreground.device)
        return mask

    def _texture(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        path = self.textures[int(torch.randint(len(self.textures), (1,)))]
        image = decode_image(str(path), mode=ImageReadMode.RGB)
        image = TF.resize(image, [height, width], antialias=True)
        return TF.to_dtype(image, torch.float32, scale=True).to(device)

    def _source(self, image: torch.Tensor) -> torch.Tensor:
        use_texture = bool(torch.rand(1) < self.texture_probability)
        if use_texture:
            return self.augment(self._texture(image.shape[-2], image.shape[-1], image.device)).clamp(0, 1)
        return grid_shuffle(self.augment(image).clamp(0, 1), self.grid)

    def damage(self, image: torch.Tensor, foreground: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Damage one ``(3, H, W)`` image in ``[0, 1]`` with torch's global generator: ``(image, (1, H, W) mask)``."""
        mask = self._shape(foreground)[None]
        source = self._source(image)
        beta = float(torch.empty(1).uniform_(*self.beta_range))
        damaged = image * (1 - mask) + (1 - beta) * source * mask + beta * image * mask
        return damaged, mask

    # ------------------------------------------------------------------ batch
    def __call__(
        self,
        images: torch.Tensor,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Damage every image of a batch.

        Args:
            images: ``(B, 3, H, W)``, normalised with ``mean``/``std`` (or in ``[0, 1]`` when both are ``None``).
            mean: Per-channel mean of the normalisation.
            std: Per-channel std of the normalisation.
            generator: CPU generator the per-image seeds are drawn from (torch's global one when ``None``).

        Returns:
            The damaged images (normalised like the input) and ``(B, 1, H, W)`` float masks of the damage.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            msg = f"AnomalySynthesizer needs (B, 3, H, W) RGB batches, got shape {tuple(images.shape)}."
            raise BadInputError(msg)
        if (mean is None) != (std is None):
            msg = "Pass both mean and std (normalised images) or neither (images in [0, 1])."
            raise BadInputError(msg)
        with torch.no_grad():
            pixels = images.float()
            if mean is not None and std is not None:
                mean_t = torch.tensor(mean, device=images.device, dtype=pixels.dtype).view(1, 3, 1, 1)
                std_t = torch.tensor(std, device=images.device, dtype=pixels.dtype).view(1, 3, 1, 1)
                pixels = pixels * std_t + mean_t
            pixels = pixels.clamp(0, 1)
            foreground = self.foreground_masks(pixels)
            seeds = torch.randint(0, 2**62, (images.shape[0],), generator=generator).tolist()
            damaged, masks = [], []
            for image, region, seed in zip(pixels, foreground, seeds, strict=True):
                with _seeded(int(seed), images.device):
                    one, mask = self.damage(image, region)
                damaged.append(one)
                masks.append(mask)
            out = torch.stack(damaged)
            if mean is not None and std is not None:
                out = (out - mean_t) / std_t
        return out.to(images.dtype), torch.stack(masks)
