"""Locally aware patch features (SimpleNet/GLASS/CRAS style).

Each tapped feature map is unfolded into 3×3 neighbourhoods, the coarser maps are bilinearly upsampled to the
finest grid, each layer's ``C·9`` vector is adaptive-average-pooled to ``pool_dim`` and the layers are pooled
together again to ``pool_dim``. Result: one ``pool_dim`` vector per position of the finest tapped grid.

Every step after the unfolding is linear, and the upsampling acts on positions while the two poolings act on
channels, so the whole computation equals, per layer, one 3×3 convolution whose kernel is the product of the two
pooling matrices, upsampled and summed over the layers. :class:`PatchAggregator` computes it that way when it knows
the layers' channel counts (one BLAS convolution per layer instead of a ``C·9``-channel unfold, upsampling and
pooling; the same numbers to float rounding, tested), and the literal way (:meth:`PatchAggregator.by_unfolding`)
otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def pooling_matrix(length: int, pool_dim: int) -> torch.Tensor:
    """``(length, pool_dim)`` matrix ``P``: ``x @ P`` is ``adaptive_avg_pool1d(x, pool_dim)`` for ``x`` of ``length``.

    Output ``d`` averages the inputs ``⌊d·L/D⌋ … ⌈(d+1)·L/D⌉ - 1`` (PyTorch's adaptive windows).
    """
    outputs = torch.arange(pool_dim)
    starts = (outputs * length).div(pool_dim, rounding_mode="floor")
    ends = -((-(outputs + 1) * length).div(pool_dim, rounding_mode="floor"))  # ceil
    inputs = torch.arange(length).unsqueeze(1)
    inside = (inputs >= starts) & (inputs < ends)
    return inside.double() / (ends - starts).double()


def pooling_kernels(channels: Sequence[int], pool_dim: int, patch_size: int) -> list[torch.Tensor]:
    """Per layer, the ``(pool_dim, C, k, k)`` convolution kernel of its pooling followed by the cross-layer pooling."""
    across = pooling_matrix(len(channels) * pool_dim, pool_dim)  # (layers·D, D)
    kernels = []
    for index, width in enumerate(channels):
        within = pooling_matrix(width * patch_size * patch_size, pool_dim)  # (C·k·k, D), channel-major like unfold
        combined = within @ across[index * pool_dim : (index + 1) * pool_dim]
        kernels.append(combined.T.reshape(pool_dim, width, patch_size, patch_size).float().contiguous())
    return kernels


def output_span(kernel: torch.Tensor) -> tuple[int, int]:
    """``[first, last + 1)`` of the output channels a layer's kernel reaches (the others' weights are all zero).

    The cross-layer pooling averages neighbouring entries of the layers' concatenation, so each layer feeds one
    contiguous block of the outputs (with two layers and an even ``pool_dim``, exactly one half each; otherwise
    neighbouring blocks may share their border channel).
    """
    used = kernel.flatten(1).ne(0).any(dim=1).nonzero().flatten()
    return (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 0)


class PatchAggregator(nn.Module):
    """Turn multi-layer feature maps into one vector per patch.

    Args:
        pool_dim: Length of every layer's pooled vector and of the final vector (1536 in the papers).
        patch_size: Neighbourhood size (3 in the papers; stride 1, same padding).
        in_channels: Channels of the tapped layers, finest first. With them the aggregation runs as one
            convolution per layer (non-persistent kernel buffers: state dicts are unchanged); without them, or for
            features of other widths, by unfolding.

    Example:
        >>> aggregator = PatchAggregator(pool_dim=64, in_channels=(8, 16))
        >>> feats = [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
        >>> aggregator(feats).shape
        torch.Size([2, 256, 64])
        >>> bool(torch.allclose(aggregator(feats), aggregator.by_unfolding(feats), atol=1e-5))
        True
    """

    def __init__(self, pool_dim: int = 1536, patch_size: int = 3, in_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.pool_dim = pool_dim
        self.patch_size = patch_size
        self.in_channels = tuple(int(width) for width in in_channels) if in_channels is not None else None
        kernels = pooling_kernels(self.in_channels, pool_dim, patch_size) if self.in_channels else []
        self.spans = [output_span(kernel) for kernel in kernels]
        edges = [edge for span in self.spans for edge in span]  # do the blocks follow each other and cover D?
        self.tiled = bool(edges) and edges[0] == 0 and edges[-1] == pool_dim and edges[1:-1:2] == edges[2::2]
        for index, (kernel, (first, stop)) in enumerate(zip(kernels, self.spans, strict=True)):
            # only the output channels this layer reaches: the rest of the kernel is zeros (half of it, two layers)
            self.register_buffer(f"kernel_{index}", kernel[first:stop].contiguous(), persistent=False)

    def grid_size(self, features: list[torch.Tensor]) -> tuple[int, int]:
        """Height and width of the patch grid (that of the first, finest tapped layer)."""
        return int(features[0].shape[-2]), int(features[0].shape[-1])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return ``(B, H·W, pool_dim)`` patch vectors on the first layer's ``H×W`` grid."""
        if self.in_channels is None or tuple(int(f.shape[1]) for f in features) != self.in_channels:
            return self.by_unfolding(features)
        height, width = self.grid_size(features)
        blocks = []
        for index, feature in enumerate(features):
            kernel = getattr(self, f"kernel_{index}").to(feature.dtype)
            pooled = F.conv2d(feature, kernel, padding=self.patch_size // 2)  # (B, span, h, w): its output block
            if pooled.shape[-2:] != (height, width):
                pooled = F.interpolate(pooled, size=(height, width), mode="bilinear", align_corners=False)
            blocks.append(pooled)
        if self.tiled:  # the blocks side by side are the output (two layers and an even pool_dim)
            total = torch.cat(blocks, dim=1)
        else:  # blocks that share a channel at their border: each placed in the full width, then summed
            placed = [
                F.pad(block, (0, 0, 0, 0, first, self.pool_dim - stop))
                for block, (first, stop) in zip(blocks, self.spans, strict=True)
            ]
            total = torch.stack(placed).sum(dim=0)
        return total.flatten(2).transpose(1, 2)

    def by_unfolding(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The literal computation (unfold, upsample, pool per layer, pool across layers): :meth:`forward`'s result."""
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
