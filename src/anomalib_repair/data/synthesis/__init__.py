"""Anomaly synthesis, one place per kind: feature level and image level.

:mod:`.feature_noise`: distance-guided feature noise (CRAS). :mod:`.anomaly_synthesis`: Perlin-shaped texture or
self-shuffled patches inside an automatic foreground (CRR).
"""

from anomalib_repair.data.synthesis.anomaly_synthesis import (
    AnomalySynthesizer,
    foreground_mask,
    grid_shuffle,
    perlin_mask,
    texture_files,
)
from anomalib_repair.data.synthesis.feature_noise import distance_guided_noise

__all__ = [
    "AnomalySynthesizer",
    "distance_guided_noise",
    "foreground_mask",
    "grid_shuffle",
    "perlin_mask",
    "texture_files",
]
