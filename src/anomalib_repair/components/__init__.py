"""Network pieces shared by several models."""

from anomalib_repair.components.backbone import (
    BackboneWeightsError,
    FrozenBackbone,
    backbone_normalization,
    build_backbone,
    load_backbone_weights,
)

__all__ = [
    "BackboneWeightsError",
    "FrozenBackbone",
    "backbone_normalization",
    "build_backbone",
    "load_backbone_weights",
]
