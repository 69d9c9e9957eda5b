"""MFRNet design choices tried both ways: tiny unified runs on a fixed subset of the real data.

Every variant is the reduced CPU recipe (configs/mfrnet/cpu_reduced.yaml: EfficientNet-Lite0, 128 px, 64-d
restoration network with 2 hybrid blocks, k = 2, n = 3, L2 + (1 − SSIM)) with one argument changed, trained with
seed 0 for a few epochs on an evenly spaced subset of ``--root`` (copies) and tested on a subset of its
test images. The numbers compare variants with each other; they are not the full-data result.

    PYTHONPATH=src python benchmarks/mfrnet_ablation.py --output benchmarks/results/mfrnet_ablation
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_repair import MFRNet, MVTecFolder

REDUCED: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0.pypi",
    "layers": ["blocks.1", "blocks.2", "blocks.4"],
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "lr": 1e-3,
    "image_size": 128,
}

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline (L2, k=2, n=3, 64-d, all masks)": {},
    "pixel_loss=l1": {"pixel_loss": "l1"},
    "ssim_weight=0 (pixel term only)": {"ssim_weight": 0.0},
    "pixel_weight=0 (SSIM term only)": {"pixel_weight": 0.0},
    "k=1, n=2": {"k": 1, "n": 2},
    "k=2, n=2": {"k": 2, "n": 2},
    "k=4, n=3": {"k": 4, "n": 3},
    "embed_dim=128": {"embed_dim": 128},
    "embed_dim=32": {"embed_dim": 32},
    "train_masks=one": {"train_masks": "one"},
}


def make_subset(real: Path, destination: Path, train: int, per_defect: int, good: int) -> Path:
    """Evenly spaced images of every category/group of ``real`` (and their masks), copied."""
    for category in sorted(p for p in real.iterdir() if p.is_dir()):
        groups = [("train", "good", train)]
        groups += [
            ("test", d.name, good if d.name == "good" else per_defect) for d in sorted((category / "test").iterdir())
        ]
        for split, group, count in groups:
            files = sorted((category / split / group).glob("*.png"))
            picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files)))]
            for file in picked:
                target = destination / category.name / split / group / file.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
                mask = category / "ground_truth" / group / f"{file.stem}_mask.png"
                if split == "test" and mask.exists():
                    link = destination / category.name / "ground_truth" / group / mask.name
                    link.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(mask, link)
    return destination


def run(root: Path, overrides: dict[str, Any], epochs: int, work: Path) -> dict[str, float]:
    """Train and test one variant; return its metrics and fit time."""
    seed_everything(0)
    datamodule = MVTecFolder(root=root, train_batch_size=16, eval_batch_size=32, num_workers=0)
    model = MFRNet(**{**REDUCED, **overrides}, visualizer=False)
    engine = Engine(
        max_epochs=epochs,
        default_root_dir=work,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=epochs,
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    keep = {key: float(value) for key, value in results.items() if "AUROC" in key or "AUPRO" in key}
    return {**keep, "fit_s": fit_s}


def main() -> None:
    """Run every variant (or those named) and write results.csv and results.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/real"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/mfrnet_ablation"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=128, help="training images per category (at most)")
    parser.add_argument("--per-defect", type=int, default=15, help="test images per defect type (at most)")
    parser.add_argument("--good", type=int, default=30, help="good test images per category (at most)")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = make_subset(args.root.resolve(), Path(scratch) / "data", args.train, args.per_defect, args.good)
        for name, overrides in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            metrics = run(root, overrides, args.epochs, Path(scratch) / "runs")
            rows.append({"variant": name, "overrides": json.dumps(overrides), **metrics})
            print(json.dumps(rows[-1]), flush=True)
            write(rows, args.output)


def write(rows: list[dict[str, Any]], output: Path) -> None:
    """results.csv (every column) and results.md (the main ones)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = ["image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_AUROC/magnetic_tile", "pixel_AUROC/magnetic_tile"]
    lines = ["| variant | " + " | ".join(shown) + " | fit s |", "|---|" + "---:|" * (len(shown) + 1)]
    for row in rows:
        values = " | ".join(f"{row.get(key, float('nan')):.3f}" for key in shown)
        lines.append(f"| {row['variant']} | {values} | {row['fit_s']:.0f} |")
    (output / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
