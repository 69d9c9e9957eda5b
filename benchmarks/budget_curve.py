"""Budget curves: accuracy of one method against its training time, on the tune and report halves of the test set.

One run trains a method (ours from ``configs/<method>/cpu_reduced.yaml`` plus ``--set`` overrides, or anomalib's
PaDiM / PatchCore) on the **full** training sets (or ``--max-train N`` images per category) of an MVTec-layout root
(default ``../shared/data/real``), with the benchmark's backbone and pre-processing (:mod:`compare`), and evaluates
it at every budget in ``--budgets``:

- epoch-trained methods (CRAS, MFRNet): one training per seed up to the largest budget, evaluated at the end of
  each budget epoch (the clock stops while it evaluates);
- CRR (a stage switch by step count): one training per budget, its two stages scaled as in its recipe;
- PaDiM / PatchCore: one pass (their setting comes from ``--set``; budgets are ignored);
- GLASS (anomalib's): epochs, as CRAS, with the benchmark's texture folder (``--set gaussian_noise_std=…``).

Evaluation takes the model's **raw** outputs (``pred_score``, ``anomaly_map``; no post-processing, no clamping)
on every test image once, then scores the two seeded halves of :mod:`anomalib_repair.data.eval_halves`
separately: choose on ``tune``, report ``report``. Every row of the CSV names its half. A category whose image
scores are all equal, or whose image AUROC is exactly 0.5, is flagged ``degenerate``.

    PYTHONPATH=src python benchmarks/budget_curve.py --method cras --budgets 1 3 10 30 --seeds 0 1 2 \
        --output benchmarks/results/budget_curves/cras_128.csv
    PYTHONPATH=src python benchmarks/budget_curve.py --method padim --set n_features=50 --output ...

Rows are appended as they are measured (a long run that is stopped keeps what it measured).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
from budget_report import PEERS, TRAINED_PEERS  # one-pass peers (lines) and epoch-trained ones (curves)
from suite.notes import is_chance_auroc

from anomalib_repair.evaluation.ranks import unit_ranks

RESULTS = "benchmarks/results/budget_curves"
# The recorded curves (``nox -s curves`` re-runs every entry, then ``budget_report.py``): the arguments of each run.
PLAN: tuple[tuple[str, ...], ...] = (
    ("--method", "cras", "--budgets", "1", "3", "10", "30", "60", "100", "--seeds", "0", "--both-score-modes",
     "--output", f"{RESULTS}/cras_128.csv"),
    ("--method", "cras", "--budgets", "1", "3", "10", "30", "60", "--seeds", "1", "2", "--both-score-modes",
     "--output", f"{RESULTS}/cras_128.csv"),
    ("--method", "cras", "--budgets", "100", "--seeds", "1", "2", "--both-score-modes",  # their own trainings
     "--output", f"{RESULTS}/cras_128.csv"),
    *(
        ("--method", "padim", "--set", f"n_features={n}", "--output", f"{RESULTS}/padim_128.csv")
        for n in (50, 100)  # 152 (every channel) fails in anomalib's Gaussian fit (singular covariance)
    ),
    ("--method", "patchcore", "--seeds", "0", "1", "2", "--set", "coreset_sampling_ratio=0.01",
     "--output", f"{RESULTS}/patchcore_128.csv"),
    # PatchCore's coreset ratio swept on the tune half (one seed each; anomalib's greedy coreset takes ~18 min at 3 %
    # and ~34 min at 10 % on 2 cores; 10 % also with map sigma 4 and 8)
    *(
        ("--method", "patchcore", "--seeds", "0", "--set", f"coreset_sampling_ratio={ratio}",
         "--output", f"{RESULTS}/patchcore_128.csv")
        for ratio in ("0.003", "0.03")
    ),
    ("--method", "patchcore", "--seeds", "0", "1", "2", "--set", "coreset_sampling_ratio=0.1", "--map-sigmas", "4", "8",
     "--output", f"{RESULTS}/patchcore_128.csv"),
    # MFRNet's curves before the recipe took the paper's 256-d width (tune half, mfrnet_128_tuning.csv): 128-d
    ("--method", "mfrnet", "--budgets", "3", "10", "--seeds", "0", "1", "2", "--set", "embed_dim=128", "--variant",
     "embed_dim=128", "--output", f"{RESULTS}/mfrnet_128.csv"),
    # CRR at 140 and 500 steps: crr_128.csv with PyTorch's default init of the segmentation network (recorded before
    # the reference init became the default; the option is now stage2.init), crr_128_seginit.csv with the recipe's
    ("--method", "crr", "--budgets", "140", "500", "--seeds", "0", "1", "2", "--set", "stage2.init=pytorch",
     "--variant", "seg_init=pytorch", "--output", f"{RESULTS}/crr_128.csv"),
    ("--method", "crr", "--budgets", "140", "500", "--seeds", "0", "1", "2",
     "--output", f"{RESULTS}/crr_128_seginit.csv"),
    *(
        ("--method", "cras", "--budgets", "10", "--seeds", "0", "--set", f"noise_std={sigma}",
         "--output", f"{RESULTS}/cras_128_tuning.csv")
        for sigma in (0.5, 2.0)  # chosen on the tune half: the recipe keeps 1.0
    ),
    # ... then the paper's 0.015 (seed 0), and 0.5 and 2.0 for seeds 1 and 2; the learning rates at 0.3x and 3x the
    # paper's, one at a time (seed 0, 10 and 30 epochs)
    ("--method", "cras", "--budgets", "10", "--seeds", "0", "--set", "noise_std=0.015",
     "--output", f"{RESULTS}/cras_128_tuning.csv"),
    *(
        ("--method", "cras", "--budgets", "10", "--seeds", "1", "2", "--set", f"noise_std={sigma}",
         "--output", f"{RESULTS}/cras_128_tuning.csv")
        for sigma in ("2.0", "0.5")
    ),
    *(
        ("--method", "cras", "--budgets", "10", "30", "--seeds", "0", "--set", rate,
         "--output", f"{RESULTS}/cras_128_lr.csv")
        for rate in ("adaptor_lr=3.0e-05", "adaptor_lr=3.0e-04", "discriminator_lr=6.0e-05", "discriminator_lr=6.0e-04")
    ),
    *(
        ("--method", "cras", "--budgets", "30", "--seeds", "0", "--set", setting,
         "--output", f"{RESULTS}/cras_128_cache.csv")
        for setting in ("feature_cache_dtype=float16", "feature_cache_dtype=float32", "feature_cache=null")
    ),
    ("--method", "cras", "--budgets", "1", "3", "10", "30", "--seeds", "0", "--image-size", "256",
     "--output", f"{RESULTS}/cras_256.csv"),
    ("--method", "padim", "--set", "n_features=100", "--image-size", "256", "--output", f"{RESULTS}/padim_256.csv"),
    # longer budgets: MFRNet to 30 epochs (one training per seed, evaluated at 10, 20, 30), CRR stage I 2,000 steps
    *(
        ("--method", "mfrnet", "--budgets", "10", "20", "30", "--seeds", seed, "--set", "embed_dim=128", "--variant",
         "embed_dim=128_to_30_epochs", "--output", f"{RESULTS}/mfrnet_128_long.csv")
        for seed in ("0", "1", "2")
    ),
    *(
        ("--method", "crr", "--budgets", "2800", "--seeds", seed, "--output", f"{RESULTS}/crr_128_long.csv")
        for seed in ("0", "1", "2")
    ),
    # CRAS with whitened residuals (configs/cras/cpu_whitened.yaml): noise_std and whiten_eps on the tune half, then
    # the recipe's curve over three seeds; a wider adaptor (embed_dim 768) tried on the paper's residual
    ("--method", "cras", "--budgets", "10", "30", "--seeds", "0", "--set", "embed_dim=768",
     "--output", f"{RESULTS}/cras_128_tuning.csv"),
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", "--set", "residual=whitened", f"noise_std={sigma}",
         "--output", f"{RESULTS}/cras_128_whitened.csv")
        for sigma in ("0.1", "0.3", "1.0")
    ),
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", "--set", "residual=whitened", "noise_std=0.3",
         f"whiten_eps={eps}", "--output", f"{RESULTS}/cras_128_whitened.csv")
        for eps in ("0.1", "1.0")
    ),
    ("--method", "cras", "--budgets", "1", "3", "10", "30", "--seeds", "0", "1", "2", "--set", "residual=whitened",
     "noise_std=0.3", "--variant", "cpu_whitened embed_dim=384", "--output", f"{RESULTS}/cras_128_whitened.csv"),
    ("--method", "cras", "--budgets", "1", "3", "10", "--seeds", "0", "1", "2", "--image-size", "256", "--set",
     "residual=whitened", "noise_std=0.3", "--variant", "cpu_whitened embed_dim=384",
     "--output", f"{RESULTS}/cras_256_whitened.csv"),
    # MFRNet at 256 px (one seed; its minutes are inflated: other jobs shared the cores)
    ("--method", "mfrnet", "--budgets", "3", "10", "--seeds", "0", "--image-size", "256", "--set", "embed_dim=128",
     "--variant", "embed_dim=128", "--output", f"{RESULTS}/mfrnet_256.csv"),
    # CRR at 256 px (stage I and II scaled as at 128 px): seed 0 at 140 and 500 steps, seeds 1 and 2 at 140
    ("--method", "crr", "--budgets", "140", "500", "--seeds", "0", "--image-size", "256",
     "--output", f"{RESULTS}/crr_256.csv"),
    ("--method", "crr", "--budgets", "140", "--seeds", "1", "2", "--image-size", "256",
     "--output", f"{RESULTS}/crr_256.csv"),
    ("--method", "crr", "--budgets", "500", "--seeds", "1", "2", "--image-size", "256",
     "--output", f"{RESULTS}/crr_256.csv"),
    # seeds 1 and 2 of MFRNet at 256 px, and of the paper's CRAS residual at 256 px up to 10 epochs and at 30
    ("--method", "mfrnet", "--budgets", "3", "10", "--seeds", "1", "2", "--image-size", "256", "--set",
     "embed_dim=128", "--variant", "embed_dim=128", "--output", f"{RESULTS}/mfrnet_256.csv"),
    ("--method", "cras", "--budgets", "1", "3", "10", "--seeds", "1", "2", "--image-size", "256",
     "--output", f"{RESULTS}/cras_256.csv"),
    ("--method", "cras", "--budgets", "30", "--seeds", "1", "2", "--image-size", "256",
     "--output", f"{RESULTS}/cras_256.csv"),
    # Both residuals at once (residual=center_and_whitened): noise_std on the tune half (seed 0), then seeds 1 and 2 at
    # 0.3; within the seed spread of cpu_whitened on the tune half, so no recipe uses it (CRAS README)
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", "--set", "residual=center_and_whitened",
         f"noise_std={sigma}", "--output", f"{RESULTS}/cras_128_combined.csv")
        for sigma in ("0.3", "0.1", "1.0")
    ),
    ("--method", "cras", "--budgets", "3", "10", "--seeds", "1", "2", "--set", "residual=center_and_whitened",
     "noise_std=0.3", "--output", f"{RESULTS}/cras_128_combined.csv"),
    # The whitened recipe's feature width on the tune half (seed 0; 384 was cpu_reduced.yaml's): 96, 128, 192, 256 on
    # the full training sets and 128, 192 under the 200-image cap; 192 with noise_std 0.1 and 1.0; 192 with seeds 1, 2
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", *cap, "--set", "residual=whitened",
         "noise_std=0.3", f"embed_dim={dim}", "--output", f"{RESULTS}/cras_128_embed_dim.csv")
        for cap, dim in ((("--max-train", "200"), 128), (("--max-train", "200"), 192), ((), 128), ((), 192), ((), 256),
                         ((), 96))
    ),
    ("--method", "cras", "--budgets", "3", "10", "--seeds", "1", "2", "--set", "residual=whitened", "noise_std=0.3",
     "embed_dim=192", "--output", f"{RESULTS}/cras_128_embed_dim.csv"),
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", "--set", "residual=whitened", f"noise_std={sigma}",
         "embed_dim=192", "--output", f"{RESULTS}/cras_128_embed_dim.csv")
        for sigma in ("0.1", "1.0")
    ),
    # ... and the recipe with 192-d (configs/cras/cpu_whitened.yaml since then): its curves at 128 and 256 px, three
    # seeds, and its map sigma read four ways
    ("--method", "cras", "--budgets", "1", "3", "10", "30", "--seeds", "0", "1", "2", "--set", "residual=whitened",
     "noise_std=0.3", "embed_dim=192", "--variant", "cpu_whitened", "--output", f"{RESULTS}/cras_128_whitened.csv"),
    ("--method", "cras", "--budgets", "1", "3", "10", "--seeds", "0", "1", "2", "--image-size", "256", "--set",
     "residual=whitened", "noise_std=0.3", "embed_dim=192", "--variant", "cpu_whitened",
     "--output", f"{RESULTS}/cras_256_whitened.csv"),
    ("--method", "cras", "--budgets", "10", "--seeds", "0", "1", "2", "--set", "residual=whitened", "noise_std=0.3",
     "embed_dim=192", "--variant", "cpu_whitened", "--map-sigmas", "1", "2", "4", "8",
     "--output", f"{RESULTS}/cras_128_map_sigma.csv"),
    # The anomaly map's Gaussian sigma read four ways from the same trainings, for CRAS's winning recipe and PaDiM
    ("--method", "cras", "--budgets", "10", "--seeds", "0", "1", "2", "--set", "residual=whitened", "noise_std=0.3",
     "--variant", "cpu_whitened embed_dim=384", "--map-sigmas", "1", "2", "4", "8",
     "--output", f"{RESULTS}/cras_128_map_sigma.csv"),
    ("--method", "padim", "--seeds", "0", "1", "2", "--set", "n_features=100", "--map-sigmas", "1", "2", "4", "8",
     "--output", f"{RESULTS}/padim_128.csv"),
    # CRAS cpu_whitened with 200 training images per category (compare --quick's cap), whiten_shrinkage 0-0.6, and
    # PaDiM under the same cap (one seed, 3 epochs): shrinkage at the recipe's noise_std collapses it (CRAS README)
    *(
        ("--method", "cras", "--budgets", "3", "--seeds", "0", "--max-train", "200", "--set", "residual=whitened",
         "noise_std=0.3", f"whiten_shrinkage={alpha}", "--output", f"{RESULTS}/cras_128_shrinkage.csv")
        for alpha in ("0.0", "0.1", "0.3", "0.6")
    ),
    ("--method", "padim", "--seeds", "0", "--max-train", "200", "--set", "n_features=100",
     "--output", f"{RESULTS}/cras_128_shrinkage.csv"),
    # ... then whiten_shrinkage with noise_std together (3 and 10 epochs): 0.1-0.3 with noise_std 1.0 recovers the
    # model but stays below PaDiM under the cap on the tune half
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", "--max-train", "200", "--set", "residual=whitened",
         f"whiten_shrinkage={alpha}", f"noise_std={sigma}", "--output", f"{RESULTS}/cras_128_shrinkage.csv")
        for alpha, sigma in (("0.0", "0.3"), ("0.1", "1.0"), ("0.1", "3.0"), ("0.3", "1.0"), ("0.3", "3.0"))
    ),
    # CRAS whitened with each training image whitened by the other folds' statistics (whiten_folds, 0 = off): under
    # the 200-image cap (3 and 10 epochs, noise_std 0.1 / 0.3 / 1.0 at 5 folds), then with the full training sets
    # (10 and 30 epochs); tune half, seed 0: it narrows the cap's gap but does not catch PaDiM, so no recipe uses it
    *(
        ("--method", "cras", "--budgets", "3", "10", "--seeds", "0", "--max-train", "200", "--set", "residual=whitened",
         f"noise_std={sigma}", "embed_dim=192", f"whiten_folds={folds}", "--variant", label,
         "--output", f"{RESULTS}/cras_128_whiten_folds.csv")
        for sigma, folds, label in (
            ("0.3", "0", "cpu_whitened whiten_folds=0"),
            ("0.3", "5", "cpu_whitened whiten_folds=5"),
            ("0.3", "10", "cpu_whitened whiten_folds=10"),
            ("0.1", "5", "cpu_whitened whiten_folds=5 noise_std=0.1"),
            ("1.0", "5", "cpu_whitened whiten_folds=5 noise_std=1.0"),
        )
    ),
    *(
        ("--method", "cras", "--budgets", "10", "30", "--seeds", "0", "--set", "residual=whitened",
         f"noise_std={sigma}", "embed_dim=192", "whiten_folds=5", "--variant", label,
         "--output", f"{RESULTS}/cras_128_whiten_folds.csv")
        for sigma, label in (
            ("0.3", "cpu_whitened whiten_folds=5"),
            ("1.0", "cpu_whitened whiten_folds=5 noise_std=1.0"),
        )
    ),
    # CRAS image score read three ways from the same trainings (the paper's patch maximum, the map's maximum, the
    # mean of its top 1 %): within the seed spread on the tune half, so the paper's stays
    ("--method", "cras", "--budgets", "10", "30", "--seeds", "0", "1", "2", "--image-scores", "patch_max", "map_max",
     "map_top_mean", "--variant", "image_score_study", "--output", f"{RESULTS}/cras_128_image_score.csv"),
    # anomalib's GLASS, the epoch-trained peer: its feature-noise std swept on the tune half (200 training images per
    # category, 3 epochs; it moves no mean metric by more than 0.0006: the gradient ascent rescales the noise), then
    # the hypersphere variant (svd=1) on the same sweep, then the full-data curve of the best on the tune half
    *(
        ("--method", "glass", "--budgets", "1", "3", "--seeds", "0", "--max-train", "200", "--set",
         f"gaussian_noise_std={sigma}", "--output", f"{RESULTS}/glass_128_tuning.csv")
        for sigma in ("0.015", "0.1", "0.3", "1.0")
    ),
    ("--method", "glass", "--budgets", "1", "3", "--seeds", "0", "--max-train", "200", "--set",
     "gaussian_noise_std=1.0", "svd=1", "--output", f"{RESULTS}/glass_128_tuning.csv"),
    ("--method", "glass", "--budgets", "1", "3", "--seeds", "0", "--set", "gaussian_noise_std=1.0",
     "--output", f"{RESULTS}/glass_128.csv"),
    ("--method", "glass", "--budgets", "1", "3", "--seeds", "1", "2", "--set", "gaussian_noise_std=1.0",
     "--output", f"{RESULTS}/glass_128.csv"),
    # PatchCore at 256 px: 1 % coreset, three seeds, each its own run of about 65 minutes (anomalib's greedy coreset
    # over 4x the patches of 128 px; 10 % would take hours on 2 cores)
    *(
        ("--method", "patchcore", "--seeds", seed, "--image-size", "256", "--set", "coreset_sampling_ratio=0.01",
         "--output", f"{RESULTS}/patchcore_256.csv")
        for seed in ("0", "1", "2")
    ),
    # CRAS's whitened recipe (192-d) at 256 px trained to 30 epochs, one run per seed
    *(
        ("--method", "cras", "--budgets", "30", "--seeds", seed, "--image-size", "256", "--set", "residual=whitened",
         "noise_std=0.3", "embed_dim=192", "--variant", "cpu_whitened", "--output", f"{RESULTS}/cras_256_whitened.csv")
        for seed in ("0", "1", "2")
    ),
    # PaDiM's anomaly-map sigma at 256 px, read four ways from the same fits (tune-best: 16, the sweep's edge), then
    # 32 for two seeds (a 257-pixel blur kernel: about 13 minutes a seed)
    ("--method", "padim", "--seeds", "0", "1", "2", "--image-size", "256", "--set", "n_features=100", "--map-sigmas",
     "2", "4", "8", "16", "--output", f"{RESULTS}/padim_256.csv"),
    ("--method", "padim", "--seeds", "0", "1", "--image-size", "256", "--set", "n_features=100", "--map-sigmas", "32",
     "--output", f"{RESULTS}/padim_256.csv"),
    # MFRNet's recipe values re-checked on the tune half (seed 0, one argument changed at a time from the 128-d recipe
    # of then, read at 3 and 10 epochs): the projection width and the loss and mask choices that the fixed-subset
    # ablation had picked
    *(
        ("--method", "mfrnet", "--budgets", "3", "10", "--seeds", "0", "--set", "embed_dim=128", *settings, "--variant",
         label, "--output", f"{RESULTS}/mfrnet_128_tuning.csv")
        for label, settings in (
            ("embed_dim=64", ("embed_dim=64",)),
            ("embed_dim=256", ("embed_dim=256",)),
            ("pixel_loss=l1", ("pixel_loss=l1",)),
            ("ssim_weight=0", ("ssim_weight=0.0",)),
            ("pixel_weight=0", ("pixel_weight=0.0",)),
            ("k=1,n=2", ("k=1", "n=2")),
            ("train_masks=all", ("train_masks=all",)),
        )
    ),
    # why MFRNet loses at 256 px (tune half, seed 0, 10 epochs, the 128-d recipe of then): its grid-relative geometry
    # (feature_stride 16 keeps the 16x16 grid of 128 px; ssim_sigma 3 keeps the SSIM window's share of the grid), map
    # sigma read two ways
    *(
        ("--method", "mfrnet", "--budgets", "10", "--seeds", "0", "--image-size", "256", "--set", "embed_dim=128",
         setting, "--variant", setting, "--map-sigmas", "4", "8", "--output", f"{RESULTS}/mfrnet_256_geometry.csv")
        for setting in ("feature_stride=16", "ssim_sigma=3.0")
    ),
    # CRAS's anomaly-map sigma at 256 px (the winning recipe at 10 epochs), read four ways from the same trainings
    ("--method", "cras", "--budgets", "10", "--seeds", "0", "1", "2", "--image-size", "256", "--set",
     "residual=whitened", "noise_std=0.3", "embed_dim=192", "--variant", "cpu_whitened", "--map-sigmas", "2", "4", "8",
     "16", "--output", f"{RESULTS}/cras_256_map_sigma.csv"),
    # the longer budgets at 256 px: CRR stage I 2,000 steps (2,800 in all, as at 128 px), MFRNet to 30 epochs (one
    # training per seed, evaluated at 10, 20 and 30)
    *(
        ("--method", "crr", "--budgets", "2800", "--seeds", seed, "--image-size", "256",
         "--output", f"{RESULTS}/crr_256_long.csv")
        for seed in ("0", "1", "2")
    ),
    *(
        ("--method", "mfrnet", "--budgets", "10", "20", "30", "--seeds", seed, "--image-size", "256", "--set",
         "embed_dim=128", "--variant", "embed_dim=128_to_30_epochs", "--output", f"{RESULTS}/mfrnet_256_long.csv")
        for seed in ("0", "1", "2")
    ),
    # MFRNet's recipe at the paper's 256-d width (adopted on the tune half): one training per seed, read at 3, 10, 20
    # and 30 epochs at 128 px, at 3 and 10 at 256 px
    *(
        ("--method", "mfrnet", "--budgets", "3", "10", "20", "30", "--seeds", seed,
         "--output", f"{RESULTS}/mfrnet_128.csv")
        for seed in ("0", "1", "2")
    ),
    *(
        ("--method", "mfrnet", "--budgets", "3", "10", "--seeds", seed, "--image-size", "256",
         "--output", f"{RESULTS}/mfrnet_256.csv")
        for seed in ("0", "1", "2")
    ),
    # ... and at 256 px trained on to 30 epochs (one training per seed, read at 10, 20 and 30)
    *(
        ("--method", "mfrnet", "--budgets", "10", "20", "30", "--seeds", seed, "--image-size", "256", "--variant",
         "recipe_to_30_epochs", "--output", f"{RESULTS}/mfrnet_256_long.csv")
        for seed in ("0",)
    ),
)  # fmt: skip
STEP_BUDGET = ("crr",)  # budgets are optimiser steps, one training per budget
COLUMNS = (
    "method",
    "variant",
    "image_size",
    "seed",
    "budget",
    "budget_unit",
    "train_min",
    "half",
    "category",
    "image_AUROC",
    "pixel_AUROC",
    "pixel_AUPRO",
    "degenerate",
    "score_mode",
    "image_cache",
    "image_score",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=(*compare.OURS, *PEERS, *TRAINED_PEERS))
    parser.add_argument("--plan", action="store_true", help="run every recorded curve (PLAN), then the report")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 3, 10], help="epochs (CRR: steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--root", type=Path, default=None, help="MVTec-layout root (default <shared>/real)")
    parser.add_argument("--categories", nargs="+", default=None)
    parser.add_argument("--half-seed", type=int, default=0, help="seed of the tune/report halves")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="model arguments (YAML values; CRR: stage2.init=…)"
    )
    parser.add_argument("--variant", default=None, help="label of this configuration (default: the --set values)")
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="train on at most N good images per category, as compare.py --quick does (default: all; the cap is "
        "appended to the variant's label)",
    )
    parser.add_argument("--both-score-modes", action="store_true", help="CRAS: also score with probabilities")
    parser.add_argument(
        "--image-scores",
        nargs="+",
        default=None,
        help="CRAS: evaluate each of these image_score settings from the same training (default: the model's own)",
    )
    parser.add_argument(
        "--map-sigmas",
        type=float,
        nargs="+",
        default=None,
        help="evaluate the same training with each Gaussian sigma of the anomaly map (ours and anomalib's models; "
        "rows labelled '<variant> map_sigma=S'; default: the model's own)",
    )
    parser.add_argument(
        "--no-image-cache",
        action="store_true",
        help="decode the training images every epoch (default: keep them decoded in memory, the same items)",
    )
    parser.add_argument("--output", type=Path, help="CSV to append rows to")
    return parser.parse_args(argv)


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (numbers, lists, ``null``)."""
    import yaml

    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            msg = f"--set takes KEY=VALUE, got '{pair}'"
            raise SystemExit(msg)
        result[key] = yaml.safe_load(value)
    return result


def settings_for(args: argparse.Namespace, seed: int) -> compare.Settings:
    """The benchmark's settings for this run: full training sets, no latency timing."""
    root = args.root or compare.shared_data_dir() / "real"
    textures = compare.shared_data_dir() / "textures"
    return compare.Settings(
        root=str(root),
        categories=list(args.categories or compare.root_categories(root)),
        methods=[args.method],
        image_size=args.image_size,
        epochs=max(args.budgets),
        seed=seed,
        train_batch_size=args.train_batch_size,
        eval_batch_size=32,
        num_workers=0,
        max_train_per_category=getattr(args, "max_train", None),  # callers building their own Namespace: all
        patchcore_ratio=compare.PATCHCORE_RATIO,
        textures=str(textures) if textures.is_dir() else None,
        latency_runs=0,
        quick=False,
        accelerator="cpu",
        precision="32-true",
        crr_budget="epochs",
    )


def build_model(args: argparse.Namespace, settings: compare.Settings, budget: int | None) -> Any:
    """The method with the recipe and the ``--set`` overrides; CRR's stages scaled to ``budget`` steps."""
    import inspect

    import anomalib_repair

    extra = overrides(args.set)
    if args.method == "padim":
        from anomalib.models import Padim

        kwargs = {"n_features": compare.PADIM_N_FEATURES, **extra, **compare.common_kwargs(settings)}
        return compare.check_pretrained(
            Padim(backbone=compare.TIMM_BACKBONE, layers=list(compare.LAYERS), pre_trained=True, **kwargs)
        )
    if args.method == "patchcore":
        from anomalib.models import Patchcore

        kwargs = {"coreset_sampling_ratio": compare.PATCHCORE_RATIO, **extra, **compare.common_kwargs(settings)}
        return compare.check_pretrained(
            Patchcore(backbone=compare.TIMM_BACKBONE, layers=list(compare.LAYERS), pre_trained=True, **kwargs)
        )
    if args.method == "glass":
        return compare.build_glass(settings, **extra)
    model_class = getattr(anomalib_repair, compare.OURS[args.method])
    init = dict(compare.reduced_recipe(args.method)["model"]["init_args"])
    for key in ("image_size", "crop_size"):
        if key in inspect.signature(model_class).parameters:
            init[key] = settings.image_size
    compare.with_textures(init, settings.textures)
    for key, value in extra.items():  # a dotted key sets one option of a group: stage2.init=pytorch
        group, dot, option = key.partition(".")
        if dot:
            init[group] = {**(init.get(group) or {}), option: value}
        else:
            init[key] = value
    if args.method in STEP_BUDGET and budget is not None:
        init.update(compare.crr_schedule(init, budget))
    return model_class(**init, **compare.common_kwargs(settings))


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclasses.dataclass
class TestSet:
    """Pre-processed test batches held in memory (decoded once), with each image's category and half."""

    batches: list[tuple[Any, Any, Any]]
    categories: list[str]
    halves: list[str]


def load_test_set(datamodule: Any, model: Any, half_seed: int) -> TestSet:
    """Decode and pre-process every test image once; assign each to its tune/report half."""
    import torch

    from anomalib_repair.data.eval_halves import TEST_HALVES, half_indices

    samples = datamodule.test_data.samples
    paths = samples["image_path"].astype(str).tolist()
    categories = datamodule.category_index.names_of(paths)
    labels = samples["label"].astype(str).tolist()
    halves = [""] * len(paths)
    for half in TEST_HALVES:
        for position in half_indices(categories, labels, half, half_seed):
            halves[position] = half
    batches = []
    transform = model.pre_processor.transform
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            image, mask = transform(batch.image, batch.gt_mask)
            batches.append((image, mask, batch.gt_label))
    return TestSet(batches=batches, categories=categories, halves=halves)


def degenerate(scores: Any, image_auroc: float) -> bool:
    """A category's image scores carry no ranking: all equal, or an image AUROC of exactly 0.5."""
    return bool(scores.unique().numel() == 1) or is_chance_auroc(image_auroc)


def raw_outputs(network: Any, test_set: TestSet) -> tuple[Any, Any, Any, Any]:
    """Raw image scores and anomaly maps of the network (eval mode) over the held test set."""
    import torch

    was_training = network.training
    network.eval()
    scores, maps, labels, masks = [], [], [], []
    with torch.inference_mode():
        for image, mask, label in test_set.batches:
            output = network(image)
            scores.append(output.pred_score.flatten().float())
            maps.append(output.anomaly_map.reshape(len(image), *output.anomaly_map.shape[-2:]).float())
            labels.append(label.flatten().int())
            masks.append(mask.reshape(len(image), *mask.shape[-2:]).int())
    network.train(was_training)
    return torch.cat(scores), torch.cat(maps), torch.cat(labels), torch.cat(masks)


def metrics_by_half(network: Any, test_set: TestSet) -> list[dict[str, Any]]:
    """I-AUROC, P-AUROC, AUPRO per category and half (and their mean over categories), from raw outputs."""
    import torch
    from anomalib.metrics import AUPRO
    from torchmetrics.functional.classification import binary_auroc

    scores, maps, labels, masks = raw_outputs(network, test_set)
    rows = []
    for half in ("tune", "report"):
        per_category = []
        for category in sorted(set(test_set.categories)):
            keep = torch.tensor(
                [c == category and h == half for c, h in zip(test_set.categories, test_set.halves, strict=True)]
            )
            aupro = AUPRO(fields=["anomaly_map", "gt_mask"], fpr_limit=0.3)
            pixels = unit_ranks(maps[keep])
            aupro.update(argparse.Namespace(anomaly_map=pixels, gt_mask=masks[keep]))
            image_auroc = float(binary_auroc(unit_ranks(scores[keep]), labels[keep]))
            row = {
                "half": half,
                "category": category,
                "image_AUROC": image_auroc,
                "pixel_AUROC": float(binary_auroc(pixels.flatten(), masks[keep].flatten())),
                "pixel_AUPRO": float(aupro.compute()),
                "degenerate": degenerate(scores[keep], image_auroc),
            }
            per_category.append(row)
        rows.extend(per_category)
        mean = {key: statistics.fmean(r[key] for r in per_category) for key in ("image_AUROC", "pixel_AUROC")}
        mean["pixel_AUPRO"] = statistics.fmean(r["pixel_AUPRO"] for r in per_category)
        rows.append(
            {"half": half, "category": "mean", **mean, "degenerate": any(r["degenerate"] for r in per_category)}
        )
    return rows


def evaluate(
    model: Any,
    test_set: TestSet,
    both_modes: bool,
    image_scores: list[str] | None = None,
    map_sigmas: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one evaluation (per map sigma; CRAS: per score mode and image-score setting), all from the same weights.

    ``both_modes`` adds the paper's probability scores; ``image_scores`` evaluates once per ``image_score``;
    ``map_sigmas`` once per Gaussian sigma of the anomaly map (the generator rebuilt with that sigma; rows carry
    ``map_sigma``).
    """
    if map_sigmas:
        network = model.model
        original_generator = network.anomaly_map_generator
        rows = []
        try:
            for sigma in map_sigmas:
                network.anomaly_map_generator = type(original_generator)(sigma=sigma)
                rows += [{**row, "map_sigma": sigma} for row in evaluate(model, test_set, both_modes, image_scores)]
        finally:
            network.anomaly_map_generator = original_generator
        return rows
    network = model.model
    original = getattr(network, "score_mode", "")
    original_image_score = getattr(network, "image_score", "")
    modes = ["logit", "probability"] if both_modes and original else [original]
    readings = image_scores if image_scores and original_image_score else [original_image_score]
    rows = []
    for mode, reading in itertools.product(modes, readings):
        if mode:
            network.score_mode = mode
        if reading:
            network.image_score = reading
        rows += [{**row, "score_mode": mode, "image_score": reading} for row in metrics_by_half(network, test_set)]
    if original:
        network.score_mode = original
    if original_image_score:
        network.image_score = original_image_score
    return rows


def budget_recorder(budgets: list[int], on_budget: Callable[[int, float], None]) -> Any:
    """A callback that calls ``on_budget(epoch, train_minutes)`` after each budget epoch; evaluation is untimed."""
    from lightning.pytorch import Callback

    class BudgetRecorder(Callback):
        def __init__(self) -> None:
            self.start = 0.0
            self.paused = 0.0

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            del trainer, pl_module
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            del pl_module
            epoch = trainer.current_epoch + 1
            if epoch in budgets:
                minutes = (time.perf_counter() - self.start - self.paused) / 60
                pause = time.perf_counter()
                on_budget(epoch, minutes)
                self.paused += time.perf_counter() - pause

    return BudgetRecorder()


def curve_engine(run_dir: Path, callbacks: list[Any], **trainer_kwargs: Any) -> Any:
    """anomalib's Engine for a curve run: CPU, no logger, no checkpoint files, no validation pass.

    Evaluation is from raw outputs (thresholds are not needed); ``trainer_kwargs`` sets the length.
    """
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.engine import Engine

    no_files = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=False)
    return Engine(
        default_root_dir=run_dir,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[no_files, *callbacks],
        **trainer_kwargs,
    )


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to the CSV (header once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()})
    print(f"{path}: +{len(rows)} rows", flush=True)


def fit(args: argparse.Namespace, seed: int, budget: int | None, test_set: TestSet | None) -> TestSet:
    """One training (and its evaluations); returns the held test set for the next run."""
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True)
    settings = settings_for(args, seed)
    datamodule = compare.build_datamodule(settings, cache_images=not args.no_image_cache)
    model = build_model(args, settings, budget)
    variant = args.variant or (" ".join(args.set) if args.set else "recipe")
    if args.max_train is not None:
        variant = f"{variant} max_train={args.max_train}"
    base = {"method": args.method, "variant": variant, "image_size": args.image_size, "seed": seed}
    base["image_cache"] = "no" if args.no_image_cache else "yes"
    datamodule.setup()
    if test_set is None:
        test_set = load_test_set(datamodule, model, args.half_seed)
    held = test_set

    def record(budget_value: int, minutes: float, unit: str) -> None:
        rows = evaluate(model, held, args.both_score_modes, args.image_scores, args.map_sigmas)
        extra = {"budget": budget_value, "budget_unit": unit, "train_min": minutes}
        for row in rows:  # a map sigma of the study is part of the configuration's label
            if "map_sigma" in row:
                row["variant"] = f"{variant} map_sigma={row.pop('map_sigma'):g}"
        append_rows(args.output, [{**base, **extra, **row} for row in rows])

    run_dir = args.output.parent / "runs" / args.output.stem
    callbacks: list[Any] = []
    if args.method in PEERS:
        trainer_kwargs: dict[str, Any] = {"max_epochs": 1}
    elif args.method in STEP_BUDGET:
        assert budget is not None
        trainer_kwargs = {"max_epochs": -1, "max_steps": budget}
    else:
        trainer_kwargs = {"max_epochs": max(args.budgets)}
        callbacks.append(budget_recorder(sorted(args.budgets), lambda e, m: record(e, m, "epochs")))
    engine = curve_engine(run_dir, callbacks, **trainer_kwargs)
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    if args.method in PEERS or args.method in STEP_BUDGET:
        minutes = (time.perf_counter() - start) / 60
        record(budget or 1, minutes, "steps" if args.method in STEP_BUDGET else "pass")
    return held


def record_command(output: Path, argv: list[str]) -> None:
    """Note this run's command, date and commit in ``<output>.json`` beside the CSV (one entry per run)."""
    import datetime as dt
    import shlex

    sidecar = output.with_suffix(".json")
    runs = json.loads(sidecar.read_text())["runs"] if sidecar.exists() else []
    runs.append(
        {
            "command": " ".join(shlex.quote(part) for part in ["python", "benchmarks/budget_curve.py", *argv]),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "git_commit": compare.git_commit(),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
            **compare.cpu_identity(),
        }
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps({"runs": runs}, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    """Every seed (and, for CRR, every budget) in this process."""
    import torch

    torch.set_num_threads(min(os.cpu_count() or 1, torch.get_num_threads()))
    test_set = None
    for seed in args.seeds:
        if args.method in STEP_BUDGET:
            for budget in sorted(args.budgets):
                test_set = fit(args, seed, budget, test_set)
        else:
            test_set = fit(args, seed, None, test_set)
    return 0


def run_plan() -> int:
    """Every run of ``PLAN`` in a fresh interpreter, one after the other (one heavy job at a time), then the report."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    for entry in PLAN:
        completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), *entry], cwd=root, check=False)
        if completed.returncode:
            return completed.returncode
    report = root / "benchmarks" / "budget_report.py"
    return subprocess.run([sys.executable, str(report)], cwd=root, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.plan:
        return run_plan()
    if args.method is None or args.output is None:
        msg = "budget_curve.py needs --method and --output (or --plan for every recorded curve)"
        raise SystemExit(msg)
    record_command(args.output, argv)
    if args.method in (*PEERS, *TRAINED_PEERS):  # anomalib's pre_trained=True finds the packaged weights in a cache
        folder = str(compare.hub_cache())
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_HUB_CACHE"] = folder
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:  # imported already: its constants were read at import
            constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = folder, True
    code = run(args)
    import budget_report

    report = [row for row in budget_report.summarise(budget_report.csv_rows(args.output)) if row["half"] == "report"]
    print(json.dumps(report, indent=1, default=str))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
