"""anomalib-repair: CRR, MFRNet and CRAS for anomalib, with unified multi-class training.

Importing the package makes its models and datamodules known to anomalib's CLI and ``get_model``. Inside anomalib's
CLI process only, it also makes this package's errors one line and applies ``--seed_everything``
(:mod:`anomalib_repair.cli_support`); in any other program importing it changes no global state.

One exception keeps a shell substitution fast: ``python -m anomalib_repair.recipes NAME`` only prints a file path, so
in that process the package loads nothing (no torch, no anomalib) until one of its names is asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name → module that defines it (what a lazily loaded package imports on first use)
_PUBLIC = {
    "CRAS": "anomalib_repair.models",
    "CRR": "anomalib_repair.models",
    "MFRNet": "anomalib_repair.models",
    "MPDD": "anomalib_repair.data",
    "MultiClassDataModule": "anomalib_repair.data",
    "MVTec": "anomalib_repair.data",
    "MVTecFolder": "anomalib_repair.data",
    "RealIAD": "anomalib_repair.data",
    "VisA": "anomalib_repair.data",
    "AnomalibRepairError": "anomalib_repair.errors",
    "PerCategoryEvaluator": "anomalib_repair.evaluation",
    "PerCategoryPostProcessor": "anomalib_repair.evaluation",
}


def _is_recipe_lookup() -> bool:
    """Whether this process is ``python -m anomalib_repair.recipes …`` (the recipe-path helper of the README)."""
    argv = list(getattr(sys, "orig_argv", []))
    return any(
        word == "-m" and argv[index + 1 : index + 2] == ["anomalib_repair.recipes"] for index, word in enumerate(argv)
    )


if TYPE_CHECKING or not _is_recipe_lookup():
    from anomalib_repair.cli_support import prepare_cli_process
    from anomalib_repair.data import MPDD, MultiClassDataModule, MVTec, MVTecFolder, RealIAD, VisA
    from anomalib_repair.errors import AnomalibRepairError
    from anomalib_repair.evaluation import PerCategoryEvaluator, PerCategoryPostProcessor
    from anomalib_repair.models import CRAS, CRR, MFRNet

    prepare_cli_process()  # changes nothing unless this process is anomalib's CLI (see cli_support)


def __getattr__(name: str) -> Any:
    """A public name, imported on first use (reached only in the recipe-lookup process)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    msg = f"module 'anomalib_repair' has no attribute {name!r}"
    raise AttributeError(msg)


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
