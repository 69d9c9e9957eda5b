"""The models: one folder each, in anomalib's layout."""

from anomalib_repair.models.cras import CRAS
from anomalib_repair.models.crr import CRR
from anomalib_repair.models.mfrnet import MFRNet

__all__ = ["CRAS", "CRR", "MFRNet"]
