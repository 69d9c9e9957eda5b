"""Anomaly synthesis, one place per kind: feature level (:mod:`.feature_noise`) and image level."""

from anomalib_repair.data.synthesis.feature_noise import distance_guided_noise

__all__ = ["distance_guided_noise"]
