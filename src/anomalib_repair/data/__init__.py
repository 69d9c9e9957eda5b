"""Data for unified multi-class training: datamodules, the category mechanism, splits, file checks, synthesis."""

from anomalib_repair.data.category import CategoryIndex, batch_category_indices, category_index_for
from anomalib_repair.data.multiclass import MPDD, MultiClassDataModule, MVTec, MVTecFolder, RealIAD, VisA

__all__ = [
    "MPDD",
    "CategoryIndex",
    "MVTec",
    "MVTecFolder",
    "MultiClassDataModule",
    "RealIAD",
    "VisA",
    "batch_category_indices",
    "category_index_for",
]
