"""CRR: Collaborative Reconstruction and Repair (Wang et al., arXiv 2512.11401)."""

from anomalib_repair.models.crr.lightning_model import CRR
from anomalib_repair.models.crr.options import ScoringOptions, StageIIOptions, StageIOptions, SynthesisOptions
from anomalib_repair.models.crr.torch_model import CrrModel

__all__ = ["CRR", "CrrModel", "ScoringOptions", "StageIIOptions", "StageIOptions", "SynthesisOptions"]
