"""Raw scores onto [0, 1] without changing their order: what threshold-free metrics need from torchmetrics.

torchmetrics' binary ROC and precision-recall curves (under anomalib's AUROC, AP, F1-max and AUPRO) apply a sigmoid
to any input outside [0, 1]. Raw anomaly scores (PaDiM's Mahalanobis distances, CRAS's logits, reconstruction
errors) are often far above 17, where the float32 sigmoid is exactly 1.0: every such score would tie. Every metric
we report depends only on the order of the scores, so mapping them by rank keeps each metric exactly.
"""

from __future__ import annotations

import torch


def unit_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` mapped onto [0, 1] by their rank among the distinct values (order and ties kept; float64).

    Example:
        >>> unit_ranks(torch.tensor([30.0, -2.0, 30.0, 500.0])).tolist()
        [0.5, 0.0, 0.5, 1.0]
    """
    distinct, inverse = values.unique(return_inverse=True)
    return inverse.to(torch.float64) / max(1, distinct.numel() - 1)
