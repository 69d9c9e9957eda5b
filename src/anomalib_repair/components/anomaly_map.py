"""From a coarse score grid to a smoothed full-resolution anomaly map."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_repair.components.gaussian_filter import MatrixGaussianBlur2d


class AnomalyMapGenerator(nn.Module):
    """Upsample ``(B, 1, h, w)`` scores bilinearly to the input size and apply a Gaussian blur.

    The blur is anomalib's ``GaussianBlur2d`` (reflected borders) computed as two matrix products
    (:class:`~anomalib_repair.components.gaussian_filter.MatrixGaussianBlur2d`): same kernel, same numbers to float
    rounding, several times faster for the 33 × 33 window of σ = 4.

    Args:
        sigma: Standard deviation of the Gaussian (4 in all three papers).
        kernel_size: Kernel size; ``None`` uses ``2·⌈4σ⌉ + 1``.
    """

    def __init__(self, sigma: float = 4.0, kernel_size: int | None = None) -> None:
        super().__init__()
        size = kernel_size or 2 * int(4 * sigma + 0.5) + 1
        self.blur = (
            MatrixGaussianBlur2d(kernel_size=(size, size), sigma=(sigma, sigma), channels=1) if sigma > 0 else None
        )

    def forward(self, scores: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Return the ``(B, 1, H, W)`` anomaly map."""
        anomaly_map = F.interpolate(scores, size=image_size, mode="bilinear", align_corners=False)
        return self.blur(anomaly_map) if self.blur is not None else anomaly_map


def top_mean_score(anomaly_map: torch.Tensor, top_ratio: float) -> torch.Tensor:
    """Image scores from ``(B, ...)`` anomaly maps: the mean of the highest ``top_ratio`` share of each map's values.

    ``top_ratio <= 0`` takes the maximum (a share of one value). The count is a plain Python number of the map's
    static size, so the score traces and exports with a dynamic batch.
    """
    flat = anomaly_map.flatten(1)
    if top_ratio <= 0:
        return flat.amax(dim=1)
    top = max(1, int(flat.shape[1] * top_ratio))
    return flat.topk(top, dim=1).values.mean(dim=1)
