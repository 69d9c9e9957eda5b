"""MFRNet: Multi-feature Reconstruction Network with crossed-mask restoration."""

from anomalib_repair.models.mfrnet.lightning_model import MFRNet
from anomalib_repair.models.mfrnet.loss import HybridLoss
from anomalib_repair.models.mfrnet.masks import CrossedMaskGenerator
from anomalib_repair.models.mfrnet.torch_model import MfrnetModel

__all__ = ["CrossedMaskGenerator", "HybridLoss", "MFRNet", "MfrnetModel"]
