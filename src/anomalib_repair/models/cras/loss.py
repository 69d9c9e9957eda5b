"""CRAS training loss: binary cross-entropy that pushes real patches to 0 and synthetic ones to 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class CrasLoss(nn.Module):
    """``BCE(σ(real), 0) + BCE(σ(fake), 1)``, each averaged over its patches, computed from the logits.

    The paper applies BCE to the discriminator's sigmoid; BCE with logits is the same function, evaluated without
    rounding the probability (so a saturated patch still has a finite loss and a gradient).
    """

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Return the loss for the discriminator logits of real and synthetic patches."""
        real = F.binary_cross_entropy_with_logits(real_logits, torch.zeros_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return real + fake
