"""CRAS training loss: binary cross-entropy that pushes real patches to 0 and synthetic ones to 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class CrasLoss(nn.Module):
    """``BCE(D(real), 0) + BCE(D(fake), 1)``, each averaged over its patches."""

    def forward(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        """Return the loss for discriminator probabilities of real and synthetic patches."""
        real = F.binary_cross_entropy(real_scores, torch.zeros_like(real_scores))
        fake = F.binary_cross_entropy(fake_scores, torch.ones_like(fake_scores))
        return real + fake
