"""MFRNet's hybrid loss: a pixel term plus ``1 − SSIM``, per feature-map position.

The same per-position map is the training loss (its mean) and the anomaly score (before upsampling). SSIM is
torchmetrics' ``structural_similarity_index_measure`` with a Gaussian window (``return_full_image=True`` gives
the per-channel SSIM at every position; torchmetrics reflect-pads the borders, so the map has the input's size).
"""

from __future__ import annotations

import kornia
import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from anomalib_repair.components.tracing import is_exporting
from anomalib_repair.errors import BadInputError

KORNIA_SSIM_SIGMA = 1.5

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

    def ssim_map(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel SSIM at every position, ``(B, C, H, W)``."""
        if is_exporting():
            return self._ssim_for_export(restored, target)
        return self._ssim_full(restored, target)

    def _ssim_for_export(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Kornia's SSIM map: the same Gaussian-window SSIM (equal to torchmetrics' within 2e-6, tested).

        torchmetrics stacks the five SSIM moments on the batch axis and splits them by the batch size, which freezes
        the batch size of an exported graph; kornia filters each moment separately. Its window has σ = 1.5.
        """
        if self.ssim_sigma != KORNIA_SSIM_SIGMA:
            msg = f"Export needs ssim_sigma={KORNIA_SSIM_SIGMA} (kornia's fixed SSIM window), got {self.ssim_sigma}."
            raise BadInputError(msg)
        return kornia.metrics.ssim(
            restored, target, ssim_window(self.ssim_sigma), max_val=self.ssim_data_range, padding="same"
        )

    def _ssim_full(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _, full = structural_similarity_index_measure(
            restored,
            target,
            gaussian_kernel=True,
            sigma=self.ssim_sigma,
            data_range=self.ssim_data_range,
            reduction="none",
            return_full_image=True,
        )
        return full

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
