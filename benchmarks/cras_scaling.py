"""CRAS: memory and time of the class centers against the number of categories K, and the feature cache.

Part 1 (no data needed): for K categories at the paper's settings (1296 positions × 1536 dims), the centers'
memory in float32 and float16, and the test-time cost of matching a batch of images to them (class inference over
all K center sets + position-free nearest-center search), on random features.

Part 2 (needs an MVTec-layout root, default ../shared/data/real): per-epoch training time and peak memory of the
reduced CPU recipe with and without the feature cache.

    python benchmarks/cras_scaling.py --output benchmarks/results/cras_scaling
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from anomalib_repair.models.cras import CrasModel


def centers_scaling(ks: list[int], positions: int, dim: int, batch: int, repeats: int) -> list[dict]:
    """Memory and matching time of K center sets (random features; the cost does not depend on their values)."""
    rows = []
    torch.manual_seed(0)
    features = torch.randn(batch, positions, dim)
    for dtype in ("float32", "float16"):
        for k in ks:
            model = CrasModel(
                backbone="resnet18", layers=["layer2", "layer3"], pre_trained=False, embed_dim=dim, center_dtype=dtype
            )
            model.set_centers(torch.randn(k, positions, dim))
            with torch.no_grad():
                model.match_centers(features, model.infer_classes(features))  # warm-up
                start = time.perf_counter()
                for _ in range(repeats):
                    classes = model.infer_classes(features)
                    model.match_centers(features, classes)
                seconds = (time.perf_counter() - start) / repeats
            rows.append(
                {
                    "K": k,
                    "center_dtype": dtype,
                    "centers_MB": round(model.centers.numel() * model.centers.element_size() / 2**20, 1),
                    "match_ms_per_image": round(1000 * seconds / batch, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def _train_once(root: str, cache: str, epochs: int, size: int) -> None:
    """Child process: train the reduced recipe and print per-epoch times and peak RSS as JSON."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback, seed_everything

    from anomalib_repair import CRAS, MVTecFolder

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.times.append(time.perf_counter() - self.start)

    seed_everything(0)
    timer = EpochTimer()
    model = CRAS(
        backbone="tf_efficientnet_lite0.pypi",
        layers=["blocks.2", "blocks.4"],
        image_size=size,
        crop_size=size,
        embed_dim=384,
        noise_std=1.0,
        feature_cache=None if cache == "none" else cache,
        visualizer=False,
    )
    datamodule = MVTecFolder(root=root, train_batch_size=16, eval_batch_size=32, num_workers=2)
    engine = Engine(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[timer],
        default_root_dir=f"/tmp/cras_scaling_{cache}",
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "RESULT "
        + json.dumps(
            {
                "feature_cache": cache,
                "fit_s": round(time.perf_counter() - start, 1),
                "epoch_s": [round(t, 1) for t in timer.times],
                "peak_rss_MB": round(peak_mb),
            }
        )
    )


def cache_comparison(root: str, epochs: int, size: int) -> list[dict]:
    """Run the reduced recipe with and without the cache, each in a fresh process (clean peak memory)."""
    rows = []
    for cache in ("none", "memory", "disk"):
        command = [
            sys.executable,
            __file__,
            "--child",
            cache,
            "--root",
            root,
            "--epochs",
            str(epochs),
            "--image-size",
            str(size),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
        row["later_epochs_mean_s"] = round(sum(row["epoch_s"][1:]) / max(1, len(row["epoch_s"]) - 1), 1)
        rows.append(row)
        print(row, flush=True)
    return rows


def write_cache_csv(output: Path, cache: list[dict]) -> None:
    """``cache.csv``: one row per feature-cache setting (the epoch times joined by spaces)."""
    if not cache:
        return
    with (output / "cache.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["feature_cache", "fit_s", "epoch_s", "later_epochs_mean_s", "peak_rss_MB"]
        )
        writer.writeheader()
        writer.writerows({**row, "epoch_s": " ".join(str(value) for value in row["epoch_s"])} for row in cache)


def main() -> int:
    """Parse arguments and run both parts (or the child of part 2)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("ANOMALIB_REPAIR_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data"))
    parser.add_argument("--root", default=str(shared / "real"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/cras_scaling"))
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 15, 30])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _train_once(args.root, args.child, args.epochs, args.image_size)
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    centers = centers_scaling(args.ks, positions=1296, dim=1536, batch=8, repeats=2)
    with (args.output / "centers.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(centers[0]))
        writer.writeheader()
        writer.writerows(centers)
    cache = cache_comparison(args.root, args.epochs, args.image_size) if Path(args.root).is_dir() else []
    (args.output / "results.json").write_text(json.dumps({"meta": meta, "centers": centers, "cache": cache}, indent=1))
    write_cache_csv(args.output, cache)
    lines = [
        f"# CRAS scaling ({meta['date']}, {meta['cpus']} CPUs, torch {meta['torch']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        "## Class centers vs number of categories K (1296 positions × 1536 dims, batch of 8 images)",
        "",
        "| K | centers dtype | centers MB | matching ms/image |",
        "|---:|---|---:|---:|",
    ]
    lines += [f"| {r['K']} | {r['center_dtype']} | {r['centers_MB']} | {r['match_ms_per_image']} |" for r in centers]
    if cache:
        lines += [
            "",
            f"## Feature cache (reduced CPU recipe: EfficientNet-Lite0, {args.image_size} px, "
            f"{args.epochs} epochs, {args.root})",
            "",
            "| feature_cache | fit s | epoch s | later epochs mean s | peak RSS MB |",
            "|---|---:|---|---:|---:|",
        ]
        lines += [
            f"| {r['feature_cache']} | {r['fit_s']} | {r['epoch_s']} | {r['later_epochs_mean_s']} | "
            f"{r['peak_rss_MB']} |"
            for r in cache
        ]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
