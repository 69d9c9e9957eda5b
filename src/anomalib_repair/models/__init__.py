"""The models: one folder each, in anomalib's layout."""

from anomalib_repair.models.cras import CRAS
from anomalib_repair.models.crr import CRR

__all__ = ["CRAS", "CRR"]
