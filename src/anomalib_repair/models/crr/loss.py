"""CRR losses: stage I (reconstruct + repair, hard-mined global cosine) and stage II (focal segmentation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.models.image.dinomaly.components import CosineHardMiningLoss
from kornia.losses import focal_loss
from torch import nn


class ReconstructRepairLoss(nn.Module):
    """``L(E(x), D(x)) + L(E(x), D(x̃))``: the decoder must give the *clean* encoder features for both inputs.

    ``L`` is anomalib's Dinomaly global cosine loss with hard mining: per group, ``1 − cos`` of the flattened maps;
    the gradients of the easiest points (below the ``p``-quantile of point-wise ``1 − cos``) are scaled by
    ``factor``; ``p`` ramps linearly from 0 to ``p_final`` over ``ramp_steps`` steps.

    Args:
        p_final: Final share of easy points (0.9).
        ramp_steps: Steps of the linear ramp of ``p`` (1000).
        factor: Gradient factor of the easy points (0.1).
    """

    def __init__(self, p_final: float = 0.9, ramp_steps: int = 1000, factor: float = 0.1) -> None:
        super().__init__()
        self.cosine = CosineHardMiningLoss(p_final=p_final, p_schedule_steps=max(1, ramp_steps), factor=factor)

    def forward(
        self,
        clean_targets: list[torch.Tensor],
        reconstructed: list[torch.Tensor],
        repaired: list[torch.Tensor],
        step: int,
    ) -> torch.Tensor:
        """Sum of the reconstruction and the repair term (``step`` drives the ``p`` ramp)."""
        return self.cosine(clean_targets, reconstructed, step) + self.cosine(clean_targets, repaired, step)


class SegmentationFocalLoss(nn.Module):
    """Focal loss (``γ = 2``, no class weighting) of two-class logits against a binary mask, mean over pixels.

    Args:
        gamma: Focusing parameter.
    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(B, 2, S, S)``; ``masks`` ``(B, 1, H, W)`` in {0, 1}, resized (nearest) to ``S``."""
        if masks.shape[-2:] != logits.shape[-2:]:
            masks = F.interpolate(masks.float(), size=logits.shape[-2:], mode="nearest")
        target = masks[:, 0].round().long()
        return focal_loss(logits, target, alpha=None, gamma=self.gamma, reduction="none").sum(dim=1).mean()
