"""CRAS: Center-aware Residual Anomaly Synthesis."""

from anomalib_repair.models.cras.lightning_model import CRAS
from anomalib_repair.models.cras.torch_model import CrasModel

__all__ = ["CRAS", "CrasModel"]
