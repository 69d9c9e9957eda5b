"""Which category an image shows, from the frozen backbone alone: the nearest per-category prototype.

A unified model is applied to images of any of its categories; per-category thresholds need the category, and an
exported model sees only pixels. CRAS has its class centers for this; CRR and MFRNet get a
:class:`CategoryPrototypes`: the mean, per category, of each training image's globally pooled frozen features
(computed once before training), and an image's category is the prototype most cosine-similar to its own pooled
features. It costs one pooling and a ``(B, D) × (D, K)`` product, and no trainable parameter.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

UNKNOWN = -1


def pooled(features: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` global average of ``(B, D, H, W)`` maps or ``(B, N, D)`` token sequences."""
    return features.mean(dim=(2, 3)) if features.ndim == 4 else features.mean(dim=1)


class CategoryPrototypes(nn.Module):
    """Per-category mean pooled features (a ``(K, D)`` buffer, empty until :meth:`set` is called)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(0, 0))
        self.prototypes: torch.Tensor

    @property
    def num_categories(self) -> int:
        """Number of prototypes (0 before training)."""
        return int(self.prototypes.shape[0])

    def set(self, prototypes: torch.Tensor) -> None:
        """Store ``(K, D)`` prototypes."""
        self.prototypes = prototypes.detach().float().to(self.prototypes.device)

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Category index ``(B,)`` of pooled ``(B, D)`` features; ``-1`` for every image when none is set."""
        if self.num_categories == 0:
            return torch.full((features.shape[0],), UNKNOWN, dtype=torch.long, device=features.device)
        if self.num_categories == 1:
            return torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        similarity = F.normalize(features.float(), dim=1) @ F.normalize(self.prototypes, dim=1).T
        return similarity.argmax(dim=1)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "prototypes"
        if key in state_dict:
            self.prototypes = torch.empty_like(state_dict[key])  # the saved shape
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if key in missing_keys:  # a checkpoint from before prototypes existed: no category inference
            missing_keys.remove(key)
