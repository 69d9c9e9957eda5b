"""Locally aware patch features (SimpleNet/GLASS/CRAS style).

Each tapped feature map is unfolded into 3×3 neighbourhoods, the coarser maps are bilinearly upsampled to the
finest grid, each layer's ``C·9`` vector is adaptive-average-pooled to ``pool_dim`` and the layers are pooled
together again to ``pool_dim``. Result: one ``pool_dim`` vector per position of the finest tapped grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class PatchAggregator(nn.Module):
    """Turn multi-layer feature maps into one vector per patch.

    Args:
        pool_dim: Length of every layer's pooled vector and of the final vector (1536 in the papers).
        patch_size: Neighbourhood size (3 in the papers; stride 1, same padding).

    Example:
        >>> aggregator = PatchAggregator(pool_dim=64)
        >>> feats = [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
        >>> aggregator(feats).shape
        torch.Size([2, 256, 64])
    """

    def __init__(self, pool_dim: int = 1536, patch_size: int = 3) -> None:
        super().__init__()
        self.pool_dim = pool_dim
        self.patch_size = patch_size

    def grid_size(self, features: list[torch.Tensor]) -> tuple[int, int]:
        """Height and width of the patch grid (that of the first, finest tapped layer)."""
        return int(features[0].shape[-2]), int(features[0].shape[-1])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return ``(B, H·W, pool_dim)`` patch vectors on the first layer's ``H×W`` grid."""
        height, width = self.grid_size(features)
        pooled = []
        for feature in features:
            batch = feature.shape[0]
            patches = F.unfold(feature, kernel_size=self.patch_size, padding=self.patch_size // 2)
            patches = patches.reshape(batch, -1, *feature.shape[-2:])  # (B, C·k·k, h, w)
            if patches.shape[-2:] != (height, width):
                patches = F.interpolate(patches, size=(height, width), mode="bilinear", align_corners=False)
            patches = patches.flatten(2).transpose(1, 2)  # (B, H·W, C·k·k), channel-major within a patch
            pooled.append(F.adaptive_avg_pool1d(patches.reshape(-1, 1, patches.shape[-1]), self.pool_dim))
        stacked = torch.cat(pooled, dim=1).reshape(-1, 1, len(features) * self.pool_dim)
        return F.adaptive_avg_pool1d(stacked, self.pool_dim).reshape(features[0].shape[0], height * width, -1)
