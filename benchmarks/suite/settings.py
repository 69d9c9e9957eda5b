"""What a benchmark run is: the methods and their labels, the shared constants, :class:`Settings` and the CLI.

Every other module of the suite takes its constants from here. :func:`parse_args` is the command line of
``benchmarks/compare.py`` (the parent and, with the hidden ``--worker`` options, a worker subprocess).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

# The --help description: the first line of benchmarks/compare.py's docstring (keep the two alike).
DESCRIPTION = "Side-by-side benchmark: CRAS, CRR, MFRNet against anomalib's own models (unified multi-class)."
REPO_ROOT = Path(__file__).resolve().parents[2]  # benchmarks/suite/settings.py -> the repository
SHARED_DATA_ENV = "ANOMALIB_REPAIR_SHARED_DATA"
OURS = {"cras": "CRAS", "cras_whitened": "CRAS", "crr": "CRR", "mfrnet": "MFRNet"}  # built from RECIPES
# Each of our methods' recipe under configs/: the paper's model at the reduced CPU budget, and CRAS's best CPU
# recipe (whitened residuals, a named deviation chosen on the tune half; the CRAS README).
RECIPES = {
    "cras": "cras/cpu_reduced.yaml",
    "cras_whitened": "cras/cpu_whitened.yaml",
    "crr": "crr/cpu_reduced.yaml",
    "mfrnet": "mfrnet/cpu_reduced.yaml",
}
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
    "cras_whitened": "CRAS whitened (ours)",
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
    parser = argparse.ArgumentParser(description=DESCRIPTION)
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
