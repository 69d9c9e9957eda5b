"""Feature-level anomaly synthesis: Gaussian noise scaled by the distance to a class center (CRAS)."""

from __future__ import annotations

import torch


def distance_guided_noise(
    features: torch.Tensor,
    centers: torch.Tensor,
    sigma: float = 0.015,
    k: float = 0.3,
    generator: torch.Generator | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Return synthetic anomalous features ``f + s·ε`` with a distance-guided scale ``s``.

    ``ε ~ N(0, σ²I)`` per feature vector; ``s = ‖ε‖ / ‖f − c‖`` is divided by its mean over the batch and then
    pulled toward 1 by ``k``: ``s ← (s − 1)·k + 1``. ``ε`` carries no gradient.

    Args:
        features: ``(N, D)`` feature vectors (the adaptor's output).
        centers: ``(N, D)`` the matched center of each vector.
        sigma: Standard deviation of the noise.
        k: Strength of the distance guidance (0 gives plain Gaussian noise, 1 the full ratio).
        generator: Random generator (for reproducible tests).
        eps: Guards the division for vectors that sit on their center.

    Returns:
        ``(N, D)`` synthetic features.
    """
    device = generator.device if generator is not None else features.device
    noise = torch.randn(features.shape, generator=generator, device=device, dtype=features.dtype).to(features.device)
    noise = noise * sigma
    distance = (features - centers).detach().norm(dim=1).clamp_min(eps)
    scale = noise.norm(dim=1) / distance
    scale = scale / scale.mean()
    scale = (scale - 1) * k + 1
    return features + (scale.unsqueeze(1) * noise).detach()
