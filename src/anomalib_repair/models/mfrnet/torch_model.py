"""PyTorch network of MFRNet: multi-scale feature aggregator, crossed masks, hybrid transformer restoration."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from timm.layers import Attention
from torch import nn

from anomalib_repair.components.anomaly_map import AnomalyMapGenerator, top_mean_score
from anomalib_repair.components.backbone import build_backbone
from anomalib_repair.components.category_prototypes import CategoryPrototypes, pooled
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.mfrnet.loss import HybridLoss, ssim_window
from anomalib_repair.models.mfrnet.masks import CrossedMaskGenerator

TRAIN_MASKS = ("all", "one")
FEATURE_NORMS = ("layer", "none")


class MultiScaleFeatureAggregator(nn.Module):
    """Frozen CNN features of several layers on one grid, concatenated.

    With ``feature_norm="layer"`` (default) every layer is normalised over its channels at each position (a
    parameter-free layer norm, so that layers of very different magnitudes weigh alike and the maps have a known
    scale for SSIM); ``"none"`` keeps the raw activations. Each layer is then brought to the fixed ``grid_size``:
    average-pooled when the layer is an integer multiple of the grid, bilinearly resized otherwise.

    Args:
        backbone: timm backbone name (see :mod:`anomalib_repair.components.backbone`).
        layers: Feature taps.
        grid_size: ``(H, W)`` of the aggregated map.
        pre_trained: Load pretrained weights when ``fit``/``test`` starts.
        backbone_weights: Optional local weight file.
        feature_norm: ``"layer"`` (per-position layer norm of every tap) or ``"none"``.
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        grid_size: tuple[int, int],
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        feature_norm: str = "layer",
    ) -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            msg = f"feature_norm must be one of {', '.join(FEATURE_NORMS)}, got '{feature_norm}'."
            raise BadInputError(msg)
        self.feature_norm = feature_norm
        self.backbone = build_backbone(backbone, layers, pre_trained=pre_trained, backbone_weights=backbone_weights)
        self.grid_size = grid_size
        self.out_channels = sum(self.backbone.out_channels)

    def _to_grid(self, feature: torch.Tensor) -> torch.Tensor:
        height, width = feature.shape[-2:]
        rows, columns = self.grid_size
        if height >= rows and width >= columns and height % rows == 0 and width % columns == 0:
            factor = (height // rows, width // columns)
            return F.avg_pool2d(feature, kernel_size=factor, stride=factor) if factor != (1, 1) else feature
        return F.interpolate(feature, size=self.grid_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` aggregated features (no gradient: the backbone is frozen)."""
        maps = []
        for feature in self.backbone(images):
            normalised = feature
            if self.feature_norm == "layer":
                normalised = F.layer_norm(feature.permute(0, 2, 3, 1), feature.shape[1:2]).permute(0, 3, 1, 2)
            maps.append(self._to_grid(normalised))
        return torch.cat(maps, dim=1)


class HybridTransformerBlock(nn.Module):
    """Convolution + self-attention block on a ``(B, D, H, W)`` map.

    Three residual steps: a local convolution branch (layer norm, depthwise ``conv_kernel`` conv, GELU, 1×1 conv),
    which also gives the tokens their position (zero padding), global multi-head self-attention, and an MLP.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        conv_kernel: Side of the depthwise convolution.
    """

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0, conv_kernel: int = 3) -> None:
        super().__init__()
        self.norm_local = nn.LayerNorm(dim)
        self.local = nn.Sequential(
            nn.Conv2d(dim, dim, conv_kernel, padding=conv_kernel // 2, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
        )
        if dim % num_heads:
            msg = f"embed_dim ({dim}) must be a multiple of num_heads ({num_heads})."
            raise BadInputError(msg)
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = Attention(dim, num_heads=num_heads, qkv_bias=True)  # timm's multi-head self-attention
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the refined ``(B, D, H, W)`` map."""
        batch, dim, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (B, N, D)
        local = self.norm_local(tokens).transpose(1, 2).reshape(batch, dim, height, width)
        tokens = tokens + self.local(local).flatten(2).transpose(1, 2)
        tokens = tokens + self.attention(self.norm_attention(tokens))
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class RestorationNetwork(nn.Module):
    """Restore a masked feature map: 1×1 projection, mask token in the holes, hybrid blocks, 1×1 back.

    Args:
        in_channels: Width of the aggregated features (input and output).
        embed_dim: Width inside the network (the projection width).
        depth: Number of hybrid transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP width relative to ``embed_dim``.
        conv_kernel: Depthwise convolution side.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        conv_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(in_channels, embed_dim, 1)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.blocks = nn.Sequential(
            *[HybridTransformerBlock(embed_dim, num_heads, mlp_ratio, conv_kernel) for _ in range(depth)]
        )
        self.norm_out = nn.GroupNorm(1, embed_dim)
        self.project_out = nn.Conv2d(embed_dim, in_channels, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Restore ``(B, C, H, W)`` features where ``mask`` ``(B, 1, H, W)`` is 1 (hidden); returns the full map."""
        embedded = self.project_in(features) * (1.0 - mask) + self.mask_token * mask
        return self.project_out(self.norm_out(self.blocks(embedded)))

    def restore_partition(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Restore ``(B, C, H, W)`` features under ``(n, B, 1, H, W)`` masks that partition the grid, and combine.

        Every position comes from the pass in which it was hidden: ``Σᵢ mᵢ · forward(features, mᵢ)``. The 1×1
        projections act per position, so the input projection is computed once for the ``n`` passes and the
        output projection once, on the normalised passes combined by their masks (the masks sum to one); only
        the hybrid blocks and the normalisation, which see the whole map, run ``n`` times.
        """
        n, batch = masks.shape[:2]
        projected = self.project_in(features).unsqueeze(0)  # (1, B, D, H, W)
        embedded = projected * (1.0 - masks) + self.mask_token * masks  # (n, B, D, H, W)
        hidden = self.norm_out(self.blocks(embedded.flatten(0, 1))).unflatten(0, (n, batch))
        return self.project_out((hidden * masks).sum(dim=0))


class MfrnetModel(nn.Module):
    """MFRNet network.

    Args:
        backbone: timm backbone name.
        layers: Feature taps of the aggregator.
        input_size: ``(H, W)`` of the images the model sees (after pre-processing).
        feature_stride: Grid cell size in input pixels: the aggregated grid is ``input_size // feature_stride``.
        pre_trained: Load pretrained backbone weights.
        backbone_weights: Optional local weight file.
        embed_dim: Width of the restoration network.
        depth: Number of hybrid transformer blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width relative to ``embed_dim``.
        conv_kernel: Depthwise convolution side in the hybrid blocks.
        k: Crossed-mask block side in grid cells.
        n: Number of complementary masks.
        loss: The hybrid loss whose per-position map is the anomaly score.
        sigma: Gaussian smoothing of the anomaly map.
        train_masks: ``"all"``: every training image is restored under all ``n`` masks of a random set and the loss
            is taken on the combined restoration, exactly the test-time statistic; ``"one"``: one random mask of
            the set per image, the loss on its hidden cells only (the visible cells keep the true features inside
            the SSIM windows); ``n`` times cheaper.
        feature_norm: Normalisation of the tapped features (see :class:`MultiScaleFeatureAggregator`).
        top_ratio: Share of the highest anomaly-map values averaged into the image score; ``0`` takes the maximum.
    """

    def __init__(
        self,
        backbone: str = "vgg16.tv_in1k",
        layers: Sequence[str] = ("features.8", "features.15", "features.22"),
        input_size: tuple[int, int] = (256, 256),
        feature_stride: int = 8,
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        conv_kernel: int = 3,
        k: int = 2,
        n: int = 3,
        loss: HybridLoss | None = None,
        sigma: float = 4.0,
        train_masks: str = "all",
        feature_norm: str = "layer",
        top_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if train_masks not in TRAIN_MASKS:
            msg = f"train_masks must be one of {', '.join(TRAIN_MASKS)}, got '{train_masks}'."
            raise BadInputError(msg)
        self.train_masks = train_masks
        grid = (input_size[0] // feature_stride, input_size[1] // feature_stride)
        self.loss = loss if loss is not None else HybridLoss()
        window = ssim_window(self.loss.ssim_sigma)
        if min(grid) <= window // 2:
            msg = (
                f"The {grid[0]}x{grid[1]} feature grid is too small for the {window}x{window} SSIM window "
                f"(ssim_sigma {self.loss.ssim_sigma}): use larger images, a smaller feature_stride or ssim_sigma."
            )
            raise BadInputError(msg)
        self.aggregator = MultiScaleFeatureAggregator(
            backbone,
            layers,
            grid,
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            feature_norm=feature_norm,
        )
        self.top_ratio = top_ratio
        self.mask_generator = CrossedMaskGenerator(grid, k=k, n=n)
        self.restoration = RestorationNetwork(
            self.aggregator.out_channels, embed_dim, depth, num_heads, mlp_ratio, conv_kernel
        )
        self.anomaly_map_generator = AnomalyMapGenerator(sigma=sigma)
        self.prototypes = CategoryPrototypes()  # the category of an image (unified models), set before training

    def restore(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Run the ``n`` masked passes as one batch and keep every position from the pass where it was hidden.

        (:meth:`RestorationNetwork.restore_partition`: the per-position projections run once for all passes.)

        Args:
            features: ``(B, C, H, W)`` aggregated features.
            masks: ``(n, B, 1, H, W)`` complementary masks (they sum to 1 at every position).

        Returns:
            The combined ``(B, C, H, W)`` restoration.
        """
        return self.restoration.restore_partition(features, masks)

    def training_loss(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Hybrid loss under a random complete set of masks per image (see ``train_masks``)."""
        features = self.aggregator(images)
        batch = features.shape[0]
        masks = self.mask_generator.random_masks(batch, generator=generator)
        if self.train_masks == "all":
            return self.loss(self.restore(features, masks), features)
        chosen = torch.randint(self.mask_generator.n, (batch,), device=features.device, generator=generator)
        mask = masks[chosen, torch.arange(batch, device=features.device)]  # (B, 1, H, W)
        restored = self.restoration(features, mask)
        composite = mask * restored + (1.0 - mask) * features
        per_cell = self.loss.score_map(composite, features)
        return (per_cell * mask).sum() / mask.sum().clamp_min(1.0)

    def score_map(self, images: torch.Tensor) -> torch.Tensor:
        """Per-cell hybrid loss ``(B, 1, H, W)`` under the fixed test masks (deterministic)."""
        return self._score_map_of(self.aggregator(images))

    def _score_map_of(self, features: torch.Tensor) -> torch.Tensor:
        restored = self.restore(features, self.mask_generator.fixed_masks(features.shape[0]))
        return self.loss.score_map(restored, features)

    def category_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` pooled aggregated features: what :attr:`prototypes` compares."""
        return pooled(self.aggregator(images))

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score images: the smoothed, upsampled hybrid-loss map; its maximum (or top share) is the image score."""
        return self._score(images)[0]

    def predict(self, images: torch.Tensor) -> tuple[InferenceBatch, torch.Tensor]:
        """:meth:`forward`'s outputs and each image's category index (``-1`` when no prototypes are set)."""
        output, features = self._score(images)
        return output, self.prototypes(pooled(features))

    def _score(self, images: torch.Tensor) -> tuple[InferenceBatch, torch.Tensor]:
        features = self.aggregator(images)
        anomaly_map = self.anomaly_map_generator(self._score_map_of(features), image_size=tuple(images.shape[-2:]))
        return InferenceBatch(pred_score=top_mean_score(anomaly_map, self.top_ratio), anomaly_map=anomaly_map), features
