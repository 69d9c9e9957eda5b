"""anomalib-repair: CRR, MFRNet and CRAS for anomalib, with unified multi-class training.

Importing the package makes its models and datamodules known to anomalib's CLI and ``get_model``.
"""

from anomalib_repair.data import MPDD, MultiClassDataModule, MVTec, MVTecFolder, RealIAD, VisA
from anomalib_repair.errors import AnomalibRepairError, install_excepthook
from anomalib_repair.evaluation import PerCategoryEvaluator, PerCategoryPostProcessor
from anomalib_repair.models import CRAS, CRR, MFRNet

install_excepthook()

__version__ = "0.1.0"

__all__ = [
    "CRAS",
    "CRR",
    "MPDD",
    "AnomalibRepairError",
    "MFRNet",
    "MVTec",
    "MVTecFolder",
    "MultiClassDataModule",
    "PerCategoryEvaluator",
    "PerCategoryPostProcessor",
    "RealIAD",
    "VisA",
    "__version__",
]
