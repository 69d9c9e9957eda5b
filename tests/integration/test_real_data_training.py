"""Every model, trained briefly on the real shared data (unified: both categories in one model), beats chance.

One parametrised test: each case names its reduced recipe, its training budget and its margins. Chance is 0.5
for both metrics; the margins sit well below what each short run measures (see each case) and well above chance,
so a model that stops learning, or scores that tie, fail.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from lightning.pytorch import seed_everything

from anomalib_repair import CRAS, CRR, MFRNet, MVTecFolder

LITE = "tf_efficientnet_lite0.pypi"


def subset(real: Path, destination: Path, train: int, per_defect: int, good: int) -> Path:
    """A smaller MVTec-layout copy of the real data: evenly spaced images of every group, with their masks.

    Copies, not links: anomalib drops files that resolve outside the dataset root.
    """
    for category in sorted(p for p in real.iterdir() if p.is_dir()):
        groups = [("train", "good", train)]
        groups += [("test", d.name, good if d.name == "good" else per_defect) for d in (category / "test").iterdir()]
        for split, group, count in groups:
            files = sorted((category / split / group).glob("*.png"))
            for index in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int):
                file = files[index]
                target = destination / category.name / split / group / file.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
                mask = category / "ground_truth" / group / f"{file.stem}_mask.png"
                if split == "test" and mask.exists():
                    (destination / category.name / "ground_truth" / group).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(mask, destination / category.name / "ground_truth" / group / mask.name)
    return destination


def cras(real: Path) -> AnomalibModule:
    del real
    return CRAS(
        backbone=LITE, layers=["blocks.2", "blocks.4"], embed_dim=384, noise_std=1.0, feature_cache="memory",
        image_size=128, crop_size=128, resize_mode="square", visualizer=False,
    )  # fmt: skip


def cras_whitened(real: Path) -> AnomalibModule:
    """The shipped recipe ``configs/cras/cpu_whitened.yaml`` (its model arguments as written)."""
    del real
    recipe = yaml.safe_load((Path(__file__).parents[2] / "configs" / "cras" / "cpu_whitened.yaml").read_text())
    return CRAS(**recipe["model"]["init_args"], visualizer=False)


def crr(real: Path) -> AnomalibModule:
    return CRR(
        backbone=LITE, layers=["blocks.1", "blocks.2", "blocks.4", "blocks.6"], embed_dim=128, num_heads=4,
        image_size=96, crop_size=96, token_stride=16, visualizer=False,
        stage1={"steps": 30, "warmup_steps": 2, "hard_mining_ramp": 10, "decoder_depth": 4},
        stage2={"steps": 10, "base_width": 8, "size": None},
        synthesis={"texture_dir": str(real.parent / "textures")},
    )  # fmt: skip


def mfrnet(real: Path) -> AnomalibModule:
    del real
    return MFRNet(
        backbone=LITE, layers=["blocks.1", "blocks.2", "blocks.4"], embed_dim=128, depth=2, num_heads=4,
        mlp_ratio=2.0, train_masks="one", lr=1e-3, image_size=128, visualizer=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One model's short real-data run and the margins it must clear."""

    build: Callable[[Path], AnomalibModule]
    engine: dict[str, Any]
    image_auroc: float
    pixel_auroc: float
    data_subset: dict[str, int] | None = None  # per-group image counts of a smaller copy (None: all the data)
    category_image_auroc: dict[str, float] = field(default_factory=dict)  # per-category floors, where stated
    datamodule: dict[str, Any] = field(default_factory=dict)


CASES = {
    # 2 epochs at 128 px, all training images
    "CRAS": Case(cras, {"max_epochs": 2}, image_auroc=0.65, pixel_auroc=0.75),
    # the whitened-residual recipe, 2 of its 30 epochs: measured 0.99 mean / 0.98 magnetic_tile after 3 epochs
    # (report half, benchmarks/results/budget_curves/cras_128_whitened.csv); the paper's residual (the case above)
    # measures ~0.83-0.86 on magnetic_tile at 1-3 epochs, so its floor is above what the paper's residual reaches
    "CRAS-whitened": Case(
        cras_whitened,
        {"max_epochs": 2},
        image_auroc=0.93,
        pixel_auroc=0.80,
        category_image_auroc={"magnetic_tile": 0.92},
    ),
    # 30 + 10 steps at 96 px (within one epoch, one validation pass); the reduced recipe measures 0.91 / 0.84
    "CRR": Case(crr, {"max_epochs": 100}, image_auroc=0.65, pixel_auroc=0.70),
    # 4 epochs at 128 px on a subset (64 training images per category)
    "MFRNet": Case(
        mfrnet,
        {"max_epochs": 4, "check_val_every_n_epoch": 4},
        image_auroc=0.70,
        pixel_auroc=0.75,
        data_subset={"train": 64, "per_defect": 6, "good": 12},
    ),
}


@pytest.mark.real_data
@pytest.mark.parametrize("name", list(CASES))
def test_unified_training_on_real_data_beats_chance(name, tmp_path, real_data_root):
    case = CASES[name]
    seed_everything(0)
    root = real_data_root if case.data_subset is None else subset(real_data_root, tmp_path / "data", **case.data_subset)
    datamodule = MVTecFolder(root=root, train_batch_size=16, eval_batch_size=32, num_workers=0, **case.datamodule)
    model = case.build(real_data_root)
    engine = Engine(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **case.engine,
    )
    engine.fit(model=model, datamodule=datamodule)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    print(name, {key: round(value, 3) for key, value in results.items() if "AUROC" in key})  # pytest -s shows it
    for key in ("image_AUROC/hazelnut_toy", "image_AUROC/magnetic_tile", "pixel_AUROC"):
        assert not math.isnan(results[key]), key
    assert results["image_AUROC"] >= case.image_auroc, results
    assert results["pixel_AUROC"] >= case.pixel_auroc, results
    for category, floor in case.category_image_auroc.items():
        assert results[f"image_AUROC/{category}"] >= floor, results
