"""MFRNet's hybrid loss: a pixel term plus ``1 − SSIM``, per feature-map position.

The same per-position map is the training loss (its mean) and the anomaly score (before upsampling). SSIM is
the Gaussian-window SSIM map of torchmetrics' ``structural_similarity_index_measure(..., return_full_image=True)``
(per channel, at every position, reflected borders, the map the size of the input), computed with the window as
two matrix products: torchmetrics' grouped 2-D convolution of the stacked moments cost more than MFRNet's whole
restoration network at inference and froze the batch size of exported graphs (tests compare the two).
"""

from __future__ import annotations

import torch
from kornia.filters import get_gaussian_kernel1d
from torch import nn

from anomalib_repair.components.gaussian_filter import MatrixGaussianFilter
from anomalib_repair.errors import BadInputError

PIXEL_LOSSES = ("l2", "l1")


def ssim_window(sigma: float) -> int:
    """Side of the Gaussian window torchmetrics uses for ``sigma`` (it ignores ``kernel_size`` then)."""
    return 2 * int(3.5 * sigma + 0.5) + 1


class HybridLoss(nn.Module):
    """``pixel_weight · pixel + ssim_weight · (1 − SSIM)`` per position, averaged over channels.

    Args:
        pixel_loss: ``"l2"`` (squared error, default) or ``"l1"`` (absolute error).
        pixel_weight: Weight of the pixel term.
        ssim_weight: Weight of the ``1 − SSIM`` term.
        ssim_sigma: σ of the Gaussian SSIM window (torchmetrics' window side is ``2·⌊3.5σ + 0.5⌋ + 1``).
        ssim_data_range: Data range ``L`` of the compared maps (SSIM constants ``(0.01 L)²``, ``(0.03 L)²``).

    Example:
        >>> loss = HybridLoss()
        >>> x = torch.randn(2, 8, 16, 16)
        >>> float(loss(x, x))
        0.0
    """

    def __init__(
        self,
        pixel_loss: str = "l2",
        pixel_weight: float = 1.0,
        ssim_weight: float = 1.0,
        ssim_sigma: float = 1.5,
        ssim_data_range: float = 6.0,
    ) -> None:
        super().__init__()
        if pixel_loss not in PIXEL_LOSSES:
            msg = f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got '{pixel_loss}'."
            raise BadInputError(msg)
        if ssim_sigma <= 0 or ssim_data_range <= 0:
            msg = f"ssim_sigma and ssim_data_range must be positive, got {ssim_sigma} and {ssim_data_range}."
            raise BadInputError(msg)
        self.pixel_loss = pixel_loss
        self.pixel_weight = pixel_weight
        self.ssim_weight = ssim_weight
        self.ssim_sigma = ssim_sigma
        self.ssim_data_range = ssim_data_range
        with torch.device("cpu"):  # the taps' values, also when the model is being built on the meta device
            self.window = MatrixGaussianFilter(get_gaussian_kernel1d(ssim_window(ssim_sigma), ssim_sigma).flatten())

    def ssim_map(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel SSIM at every position, ``(B, C, H, W)``: torchmetrics' Gaussian-window SSIM map.

        The five local moments are filtered by :attr:`window` (two matrix products, reflected borders: what
        torchmetrics' grouped 2-D convolution of the reflect-padded maps computes, equal to float rounding, tested)
        with the moments stacked on the channel axis, so the batch stays dynamic in exported graphs.
        """
        channels = restored.shape[1]
        stacked = torch.cat([restored, target, restored * restored, target * target, restored * target], dim=1)
        mu_x, mu_y, xx, yy, xy = self.window(stacked).split(channels, dim=1)
        c1 = (0.01 * self.ssim_data_range) ** 2
        c2 = (0.03 * self.ssim_data_range) ** 2
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        var_x = (xx - mu_xx).clamp_min(0.0)
        var_y = (yy - mu_yy).clamp_min(0.0)
        covariance = xy - mu_xy
        return ((2 * mu_xy + c1) * (2 * covariance + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))

    def score_map(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-position hybrid loss, ``(B, 1, H, W)`` (mean over channels)."""
        difference = restored - target
        pixel = difference.square() if self.pixel_loss == "l2" else difference.abs()
        structural = 1.0 - self.ssim_map(restored, target)
        combined = self.pixel_weight * pixel + self.ssim_weight * structural
        return combined.mean(dim=1, keepdim=True)

    def forward(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss: the mean of :meth:`score_map`."""
        return self.score_map(restored, target).mean()
