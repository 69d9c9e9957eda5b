"""anomalib-repair: CRR, MFRNet and CRAS for anomalib, with unified multi-class training.

Importing the package makes its models and datamodules known to anomalib's CLI and ``get_model``. Inside anomalib's
CLI process only, it also makes this package's errors one line and applies ``--seed_everything``
(:mod:`anomalib_repair.cli_support`); in any other program importing it changes no global state.
"""

from anomalib_repair.cli_support import prepare_cli_process
from anomalib_repair.data import MPDD, MultiClassDataModule, MVTec, MVTecFolder, RealIAD, VisA
from anomalib_repair.errors import AnomalibRepairError
from anomalib_repair.evaluation import PerCategoryEvaluator, PerCategoryPostProcessor
from anomalib_repair.models import CRAS, CRR, MFRNet

prepare_cli_process()  # changes nothing unless this process is anomalib's CLI (see cli_support)

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
