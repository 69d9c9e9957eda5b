"""PyTorch network of CRR: frozen encoder, masking bottleneck, linear-attention decoder, segmentation network.

One module for the paper's one network: the four parts are small classes here, wired by :class:`CrrModel`, which
also owns both stages' losses and the fused anomaly map (about 460 lines in all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from anomalib.models.image.dinomaly.components import DinomalyMLP, LinearAttention
from timm.layers import trunc_normal_
from torch import nn

from anomalib_repair.components.anomaly_map import top_mean_score
from anomalib_repair.components.backbone import build_backbone
from anomalib_repair.components.category_prototypes import CategoryPrototypes, pooled
from anomalib_repair.components.gaussian_filter import MatrixGaussianBlur2d
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.crr.loss import ReconstructRepairLoss, SegmentationFocalLoss

DINOV2_TAPS = tuple(f"blocks.{index}" for index in range(2, 10))


# ---------------------------------------------------------------------------------------------- encoder
class TokenEncoder(nn.Module):
    """Frozen backbone whose taps are returned as token sequences of one width.

    A vision transformer gives its blocks' outputs directly: ``(B, P + N, C)`` with ``P`` prefix tokens. A CNN's
    feature maps are resized to one grid (``token_stride``; by default the finest tap's grid), flattened to tokens
    and mapped to ``embed_dim`` by a *fixed* linear map with orthonormal columns (an isometry when the tap has at
    most ``embed_dim`` channels, so cosine similarities are kept). The maps are buffers, not parameters: a trained
    projection could collapse the reconstruction targets.

    Args:
        backbone: timm name (see :mod:`anomalib_repair.components.backbone`).
        layers: Taps (``"blocks.2"`` …).
        pre_trained: Load pretrained weights (in ``setup``, never here).
        backbone_weights: Local weight file.
        embed_dim: Token width for a CNN (default: the largest tap width); must equal the ViT's width for a ViT.
        token_stride: Stride of the token grid for a CNN (default: the finest tap's stride).
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str | int],
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        embed_dim: int | None = None,
        token_stride: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(
            backbone, list(layers), pre_trained=pre_trained, backbone_weights=backbone_weights
        )
        self.tokens = self.backbone.tokens
        channels = self.backbone.out_channels
        if self.tokens:
            if embed_dim is not None and embed_dim != channels[0]:
                msg = f"embed_dim must be the ViT's width ({channels[0]}) for backbone '{backbone}', got {embed_dim}."
                raise BadInputError(msg)
            self.embed_dim = channels[0]
            self.stride = self.backbone.patch_size
        else:
            self.embed_dim = embed_dim or max(channels)
            self.stride = token_stride or min(self.backbone.strides)
            generator = torch.Generator().manual_seed(0)
            for index, width in enumerate(channels):
                projection = torch.empty(self.embed_dim, width)
                _orthonormal_(projection, generator)
                self.register_buffer(f"projection_{index}", projection)
        self.num_prefix_tokens = self.backbone.num_prefix_tokens
        self.num_layers = len(channels)

    def grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Token grid ``(h, w)`` for an input of ``image_size``."""
        return image_size[0] // self.stride, image_size[1] // self.stride

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Taps as ``(B, P + N, C)`` token sequences (``P = 0`` for a CNN)."""
        features = self.backbone(images)
        if self.tokens:
            return features
        height, width = self.grid((images.shape[-2], images.shape[-1]))
        tokens = []
        for index, feature in enumerate(features):
            resized = feature
            if feature.shape[-2] > height:
                resized = F.adaptive_avg_pool2d(feature, (height, width))
            elif feature.shape[-2:] != (height, width):
                resized = F.interpolate(feature, size=(height, width), mode="bilinear", align_corners=False)
            projection = getattr(self, f"projection_{index}")
            tokens.append(resized.flatten(2).transpose(1, 2) @ projection.T)
        return tokens


def _orthonormal_(matrix: torch.Tensor, generator: torch.Generator) -> None:
    """Fill ``(out, in)`` with orthonormal columns (``in <= out``) or rows (``in > out``) from ``generator``."""
    rows, cols = matrix.shape
    if rows >= cols:
        nn.init.orthogonal_(matrix, generator=generator)
        return
    # Wide matrices: torch's orthogonal_ draws the Gaussian as (rows, cols) and transposes it, this draw is
    # (cols, rows) -- as orthonormal, but another matrix for the same seed. Kept so that the projections of trained
    # CNN-backbone CRR models, and their seeded results, stay what they were.
    gaussian = torch.randn(cols, rows, generator=generator)
    q, r = torch.linalg.qr(gaussian)
    matrix.copy_((q * torch.sign(torch.diagonal(r)).unsqueeze(0)).T)


# ---------------------------------------------------------------------------------------------- bottleneck, decoder
class FeatureMaskingBottleneck(nn.Module):
    """Feature-level random masking followed by a dropout MLP.

    Every element of the ``(B, N, C)`` tokens is zeroed with probability ``mask_ratio`` (no rescaling), then
    Dropout → Linear(C→4C) → GELU → Dropout → Linear(4C→C) → Dropout (anomalib's :class:`DinomalyMLP`).

    Args:
        dim: Token width.
        mask_ratio: Probability of zeroing an element (0.4).
        dropout: Dropout probability of the MLP (0.4).
        eval_masking: Also mask in eval mode (the authors' code does; scores become random).
    """

    def __init__(self, dim: int, mask_ratio: float = 0.4, dropout: float = 0.4, eval_masking: bool = False) -> None:
        super().__init__()
        self.mask_ratio = mask_ratio
        self.eval_masking = eval_masking
        self.mlp = DinomalyMLP(
            in_features=dim,
            hidden_features=4 * dim,
            out_features=dim,
            drop=dropout,
            bias=True,
            apply_input_dropout=True,
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mask (in training, or always with ``eval_masking``) and map the tokens."""
        if self.mask_ratio > 0 and (self.training or self.eval_masking):
            tokens = tokens * (torch.rand_like(tokens) >= self.mask_ratio).to(tokens.dtype)
        return self.mlp(tokens)


class LinearAttentionBlock(nn.Module):
    """Pre-norm transformer block with linear attention (``φ = ELU + 1``, anomalib's :class:`LinearAttention`).

    anomalib's Dinomaly ``DecoderViTBlock`` computes the same except that its MLP has no biases; CRR's decoder
    (56.70 M parameters, MODELS.md) has them, so this block keeps them.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP over ``dim`` (4).
        eps: LayerNorm epsilon (1e-8).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = LinearAttention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = DinomalyMLP(in_features=dim, hidden_features=int(dim * mlp_ratio), out_features=dim, bias=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention and MLP, each with a residual connection."""
        tokens = tokens + self.attn(self.norm1(tokens))[0]
        return tokens + self.mlp(self.norm2(tokens))


# ---------------------------------------------------------------------------------------------- segmentation
def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class SegmentationNetwork(nn.Module):
    """DRAEM-style convolutional decoder from the ``-(Ê ⊙ D̂)`` maps to two-class logits.

    With ``base_width`` ``b`` (input ``8b`` channels): three ×2 up-convolutions and double convolutions
    ``8b→8b→4b``, ``4b→4b→2b``, ``2b→2b→b``, a resize to ``output_size`` with a ``b→b`` convolution, ``b→b→b/4`` and a
    final ``b/4→2`` convolution; every 3×3 convolution but the last with BatchNorm and ReLU. ``b = 192`` (1536 input
    channels) has 70.44 M parameters.

    Args:
        in_channels: Input channels (groups × token width).
        base_width: ``b``; default ``in_channels // 8``.
        output_size: Size of the logits; ``None`` gives the size passed to :meth:`forward`.
    """

    def __init__(self, in_channels: int, base_width: int | None = None, output_size: int | None = 256) -> None:
        super().__init__()
        b = base_width or max(4, in_channels // 8)
        self.output_size = output_size
        self.up1 = nn.Sequential(*_conv(in_channels, 8 * b))
        self.db1 = nn.Sequential(*_conv(8 * b, 8 * b), *_conv(8 * b, 4 * b))
        self.up2 = nn.Sequential(*_conv(4 * b, 4 * b))
        self.db2 = nn.Sequential(*_conv(4 * b, 4 * b), *_conv(4 * b, 2 * b))
        self.up3 = nn.Sequential(*_conv(2 * b, 2 * b))
        self.db3 = nn.Sequential(*_conv(2 * b, 2 * b), *_conv(2 * b, b))
        self.up4 = nn.Sequential(*_conv(b, b))
        self.db4 = nn.Sequential(*_conv(b, b), *_conv(b, max(1, b // 4)))
        self.final = nn.Conv2d(max(1, b // 4), 2, 3, padding=1)

    def forward(self, maps: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``(B, 2, S, S)`` logits, ``S = output_size`` (or ``image_size``)."""
        size = (self.output_size, self.output_size) if self.output_size else image_size
        x = maps
        for up, double in ((self.up1, self.db1), (self.up2, self.db2), (self.up3, self.db3)):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
            x = double(up(x))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.final(self.db4(self.up4(x)))


SEG_INITS = ("reference", "pytorch")


def reference_segmentation_init(module: nn.Module) -> None:
    """The authors' initialisation of the segmentation network (DRAEM's).

    Convolution weights from N(0, 0.02) (their biases keep PyTorch's default), BatchNorm weights from N(1, 0.02)
    and BatchNorm biases 0. Draws from the global random stream, like the reference.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, mean=1.0, std=0.02)
            nn.init.zeros_(layer.bias)


def segmentation_input(encoder_maps: list[torch.Tensor], decoder_maps: list[torch.Tensor]) -> torch.Tensor:
    """``-(normalise(E) ⊙ normalise(D))`` per group, concatenated on channels (``E`` carries no gradient)."""
    return torch.cat(
        [
            -F.normalize(enc.detach(), dim=1, eps=1e-12) * F.normalize(dec, dim=1, eps=1e-12)
            for enc, dec in zip(encoder_maps, decoder_maps, strict=True)
        ],
        dim=1,
    )


# ---------------------------------------------------------------------------------------------- the network
def default_groups(num_layers: int) -> list[list[int]]:
    """Split ``range(num_layers)`` into a first and a second half (one group for a single tap)."""
    if num_layers == 1:
        return [[0]]
    half = num_layers // 2
    return [list(range(half)), list(range(half, num_layers))]


class CrrModel(nn.Module):
    """CRR network.

    Args:
        backbone: timm name of the frozen encoder.
        layers: Encoder taps.
        pre_trained: Load pretrained encoder weights (resolved in ``setup``).
        backbone_weights: Local weight file for the encoder.
        embed_dim: Token width for a CNN encoder (ViT: its own width).
        num_heads: Decoder heads (default: the ViT's; ``width // 32`` for a CNN).
        token_stride: Token grid stride for a CNN encoder.
        decoder_depth: Decoder blocks (8).
        groups: Loose-reconstruction groups, indices into the taps and into the reversed decoder outputs.
        mask_ratio: Element masking probability of the bottleneck (0.4).
        dropout: Dropout of the bottleneck MLP (0.4).
        eval_masking: Keep the element masking on in eval mode.
        seg_base_width: Width ``b`` of the segmentation network (default: input channels // 8).
        seg_size: Output size of the segmentation network (256); ``None`` for the input size.
        seg_init: ``"reference"`` (DRAEM's initialisation, as the authors' code) or ``"pytorch"`` (the default one).
        rec_weight: Weight of the reconstruction map in the fused map (0.7; the segmentation map gets the rest).
        sigma: Gaussian smoothing of the fused map (4, 5×5 kernel).
        top_ratio: Fraction of the highest map values averaged into the image score (0.01).
        reconstruction_loss: Stage-I loss (default: :class:`ReconstructRepairLoss` with its defaults).
        segmentation_loss: Stage-II loss (default: :class:`SegmentationFocalLoss` with its defaults).
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch14_reg4_dinov2.lvd142m",
        layers: Sequence[str | int] = DINOV2_TAPS,
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        embed_dim: int | None = None,
        num_heads: int | None = None,
        token_stride: int | None = None,
        decoder_depth: int = 8,
        groups: Sequence[Sequence[int]] | None = None,
        mask_ratio: float = 0.4,
        dropout: float = 0.4,
        eval_masking: bool = False,
        seg_base_width: int | None = None,
        seg_size: int | None = 256,
        seg_init: str = "reference",
        rec_weight: float = 0.7,
        sigma: float = 4.0,
        top_ratio: float = 0.01,
        reconstruction_loss: ReconstructRepairLoss | None = None,
        segmentation_loss: SegmentationFocalLoss | None = None,
    ) -> None:
        super().__init__()
        self.reconstruction_loss = reconstruction_loss if reconstruction_loss is not None else ReconstructRepairLoss()
        self.segmentation_loss = segmentation_loss if segmentation_loss is not None else SegmentationFocalLoss()
        self.encoder = TokenEncoder(backbone, layers, pre_trained, backbone_weights, embed_dim, token_stride)
        width = self.encoder.embed_dim
        self.groups = [list(group) for group in (groups or default_groups(self.encoder.num_layers))]
        limit = min(self.encoder.num_layers, decoder_depth)
        if not self.groups or any(not group or min(group) < 0 or max(group) >= limit for group in self.groups):
            msg = (
                f"groups {self.groups} must be non-empty lists of indices below {limit} "
                f"({self.encoder.num_layers} taps, {decoder_depth} decoder blocks)."
            )
            raise BadInputError(msg)
        heads = num_heads or self._default_heads(width)
        if width % heads:
            msg = f"The token width {width} is not divisible by num_heads={heads}: choose num_heads dividing it."
            raise BadInputError(msg)
        self.bottleneck = FeatureMaskingBottleneck(width, mask_ratio, dropout, eval_masking)
        self.decoder = nn.ModuleList(LinearAttentionBlock(width, heads) for _ in range(decoder_depth))
        if seg_init not in SEG_INITS:
            msg = f"seg_init must be one of {', '.join(SEG_INITS)}, got '{seg_init}'."
            raise BadInputError(msg)
        self.segmentation = SegmentationNetwork(len(self.groups) * width, seg_base_width, seg_size)
        if seg_init == "reference":
            reference_segmentation_init(self.segmentation)
        self.rec_weight = rec_weight
        self.top_ratio = top_ratio
        self.blur = MatrixGaussianBlur2d(kernel_size=(5, 5), sigma=(sigma, sigma), channels=1) if sigma > 0 else None
        self._initialize(self.bottleneck)
        self._initialize(self.decoder)
        self.prototypes = CategoryPrototypes()  # the category of an image (unified models), set before training

    def _default_heads(self, width: int) -> int:
        if self.encoder.tokens:
            blocks = cast(nn.Sequential, self.encoder.backbone.feature_extractor.blocks)
            attention = getattr(blocks[0], "attn", None)
            return int(getattr(attention, "num_heads", max(1, width // 64)))
        return max(1, width // 32)

    @staticmethod
    def _initialize(module: nn.Module) -> None:
        """Truncated-normal Linear weights (std 0.01, ±0.03), zero biases (Dinomaly's initialisation)."""
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                trunc_normal_(layer.weight, std=0.01, a=-0.03, b=0.03)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.LayerNorm):
                nn.init.zeros_(layer.bias)
                nn.init.ones_(layer.weight)

    @property
    def reconstruction_modules(self) -> nn.ModuleList:
        """The stage-I trainable modules: bottleneck and decoder."""
        return nn.ModuleList([self.bottleneck, self.decoder])

    # ------------------------------------------------------------------ training
    def stage1_loss(self, images: torch.Tensor, damaged: torch.Tensor, step: int) -> torch.Tensor:
        """Stage-I loss (reconstruct and repair) of clean ``images`` and their ``damaged`` copies.

        The decoder must give the clean encoder features both from the images and from the copies with synthetic
        anomalies; ``step`` drives the hard-mining ramp. Puts the bottleneck and decoder in training mode.
        """
        self.reconstruction_modules.train().requires_grad_(True)
        grid = self.encoder.grid((images.shape[-2], images.shape[-1]))
        taps = self.encode(torch.cat([images, damaged]))
        count = len(images)
        targets = self.encoder_maps([tap[:count] for tap in taps], grid)
        decoded = self.decoder_maps(taps, grid)
        return self.reconstruction_loss(
            targets, [out[:count] for out in decoded], [out[count:] for out in decoded], step
        )

    def stage2_loss(self, damaged: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Stage II (segmentation): focal loss of the segmentation of ``damaged`` images against their ``masks``.

        Freezes the stage-I modules (evaluation mode, no gradients) and trains the segmentation network.
        """
        self.reconstruction_modules.eval().requires_grad_(False)
        self.segmentation.train()
        size = (damaged.shape[-2], damaged.shape[-1])
        grid = self.encoder.grid(size)
        with torch.no_grad():
            taps = self.encode(damaged)
            encoder_maps = self.encoder_maps(taps, grid)
            decoder_maps = self.decoder_maps(taps, grid)
        return self.segmentation_loss(self.segment(encoder_maps, decoder_maps, size), masks)

    # ------------------------------------------------------------------ features
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder taps, ``(B, P + N, C)`` each (no gradient)."""
        return self.encoder(images)

    def _to_maps(self, sequences: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        prefix = self.encoder.num_prefix_tokens
        return [
            torch.stack([sequences[index] for index in group])
            .mean(dim=0)[:, prefix:]
            .transpose(1, 2)
            .unflatten(2, grid)
            for group in self.groups
        ]

    def encoder_maps(self, taps: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        """Per group, the mean of its taps as a ``(B, C, h, w)`` map (prefix tokens dropped)."""
        return self._to_maps(taps, grid)

    def decoder_maps(self, taps: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        """Bottleneck on the mean of the taps, the decoder, its outputs reversed and grouped like the taps."""
        tokens = self.bottleneck(torch.stack(taps).mean(dim=0))
        outputs = []
        for block in self.decoder:
            tokens = block(tokens)
            outputs.append(tokens)
        return self._to_maps(outputs[::-1], grid)

    def segment(
        self, encoder_maps: list[torch.Tensor], decoder_maps: list[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        """Segmentation logits ``(B, 2, S, S)``."""
        return self.segmentation(segmentation_input(encoder_maps, decoder_maps), size)

    # ------------------------------------------------------------------ inference
    def category_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` pooled last encoder tap: what :attr:`prototypes` compares."""
        return pooled(self.encode(images)[-1])

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Fused, smoothed anomaly map and the mean of its top 1 % as image score."""
        return self._score(images)[0]

    def predict(self, images: torch.Tensor) -> tuple[InferenceBatch, torch.Tensor]:
        """:meth:`forward`'s outputs and each image's category index (``-1`` when no prototypes are set)."""
        output, taps = self._score(images)
        return output, self.prototypes(pooled(taps[-1]))

    def _score(self, images: torch.Tensor) -> tuple[InferenceBatch, list[torch.Tensor]]:
        size = (images.shape[-2], images.shape[-1])
        grid = self.encoder.grid(size)
        taps = self.encode(images)
        encoder_maps = self.encoder_maps(taps, grid)
        decoder_maps = self.decoder_maps(taps, grid)
        reconstruction = torch.stack(
            [1 - F.cosine_similarity(enc, dec, dim=1) for enc, dec in zip(encoder_maps, decoder_maps, strict=True)]
        ).mean(dim=0)
        reconstruction = F.interpolate(reconstruction.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        anomaly_map = reconstruction
        if self.rec_weight < 1:
            segmentation = self.segment(encoder_maps, decoder_maps, size).softmax(dim=1)[:, 1:]
            if segmentation.shape[-2:] != size:  # seg_size other than the input's
                segmentation = F.interpolate(segmentation, size=size, mode="bilinear", align_corners=False)
            anomaly_map = self.rec_weight * reconstruction + (1 - self.rec_weight) * segmentation
        if self.blur is not None:
            anomaly_map = self.blur(anomaly_map)
        return InferenceBatch(pred_score=top_mean_score(anomaly_map, self.top_ratio), anomaly_map=anomaly_map), taps
