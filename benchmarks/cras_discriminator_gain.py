"""What CRAS's trained discriminator adds to its own whitened input, read without any training.

With ``residual="whitened"`` (``configs/cras/cpu_whitened.yaml``) the discriminator scores each patch's adapted
feature beside ``L⁻¹(x − μ)``, the frozen feature's whitened residual to its category's same-position mean. The
squared norm of that residual is the Mahalanobis distance of a Gaussian per position: a training-free detector
(PaDiM's statistic on all dimensions of CRAS's aggregated features). This script trains the recipe
(budget_curve.py's training and test halves, one run per seed) and reads the same fitted network two ways, on both
halves:

- ``discriminator``: the model as it ships (the discriminator's logit per patch);
- ``mahalanobis``: ``‖L⁻¹(x − μ)‖`` per patch from the same network's statistics (no learned weight involved).

Both go through the model's own anomaly-map generator (Gaussian sigma 4, upsampling) and image score (largest
patch score). The ``mahalanobis`` rows do not depend on the seed (frozen features, statistics of the full training
set): their s.d. is 0.

    PYTHONPATH=src python benchmarks/cras_discriminator_gain.py               # seeds 0 1 2, 30 epochs, 128 px
    PYTHONPATH=src python benchmarks/cras_discriminator_gain.py --epochs 10 --set embed_dim=384 \
        --output benchmarks/results/cras_discriminator_gain/embed_dim_384     # the recipe before 2026-12-06 evening

Writes ``benchmarks/results/cras_discriminator_gain/results.csv`` and ``results.json`` (the command).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import budget_curve
from inference_profile import write_csv

OUTPUT = Path("benchmarks/results/cras_discriminator_gain")
READINGS = ("discriminator", "mahalanobis")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="the recipe's (configs/cras/cpu_whitened.yaml)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--max-train", type=int, default=None, help="good training images per category (a cap)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides (budget_curve.py)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


class MahalanobisReading(nn.Module):
    """A fitted whitened-residual CRAS read as ``‖L⁻¹(x − μ)‖`` per patch: the discriminator is not used."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> Any:
        """Image scores and anomaly maps as the network gives them, from the whitened residuals' norms."""
        from anomalib.data import InferenceBatch

        network = self.network
        features, (height, width) = network.embed(images)
        classes = network.infer_classes(network.adaptor(features))
        norms = network.whitened_residuals(features, classes).norm(dim=2)
        patch_scores = norms.view(len(images), 1, height, width)
        anomaly_map = network.anomaly_map_generator(patch_scores, image_size=tuple(images.shape[-2:]))
        return InferenceBatch(pred_score=network.image_scores(patch_scores, anomaly_map), anomaly_map=anomaly_map)


def train(args: argparse.Namespace, seed: int, test_set: Any) -> tuple[Any, Any, float]:
    """The ``cpu_whitened`` recipe trained for ``--epochs`` (budget_curve.py's run); the model, test set, minutes."""
    from lightning.pytorch import seed_everything

    argv = ["--method", "cras_whitened", "--budgets", str(args.epochs), "--seeds", str(seed),
            "--image-size", str(args.image_size), "--output", str(args.output / "unused.csv")]  # fmt: skip
    if args.max_train is not None:
        argv += ["--max-train", str(args.max_train)]
    if args.set:
        argv += ["--set", *args.set]
    curve_args = budget_curve.parse_args(argv)
    seed_everything(seed, workers=True)
    settings = budget_curve.settings_for(curve_args, seed)
    datamodule = budget_curve.compare.build_datamodule(settings, cache_images=True)
    model = budget_curve.build_model(curve_args, settings, args.epochs)
    datamodule.setup()
    if test_set is None:
        test_set = budget_curve.load_test_set(datamodule, model, curve_args.half_seed)
    engine = budget_curve.curve_engine(args.output / "runs", [], max_epochs=args.epochs)
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    return model, test_set, (time.perf_counter() - start) / 60


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and s.d. over seeds of every reading, half and category."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["reading"], row["half"], row["category"]), []).append(row)
    table = []
    for (reading, half, category), members in groups.items():
        entry: dict[str, Any] = {"reading": reading, "half": half, "category": category, "seeds": len(members)}
        for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
            values = [float(member[key]) for member in members]
            entry[key] = round(statistics.fmean(values), 4)
            entry[f"{key}_sd"] = round(statistics.stdev(values), 4) if len(values) > 1 else ""
        table.append(entry)
    return table


def main(argv: list[str] | None = None) -> int:
    """Train per seed, read both ways, write per-seed rows and the summary after every seed."""
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    test_set = None
    for seed in args.seeds:
        model, test_set, minutes = train(args, seed, test_set)
        network = model.model.eval()
        for reading, scorer in (("discriminator", network), ("mahalanobis", MahalanobisReading(network))):
            for row in budget_curve.metrics_by_half(scorer, test_set):
                rows.append({"seed": seed, "reading": reading, "train_min": round(minutes, 2), **row})
        write_csv(args.output / "per_seed.csv", rows)
        write_csv(args.output / "results.csv", summary(rows))
    meta = {
        "command": "PYTHONPATH=src python benchmarks/cras_discriminator_gain.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "recipe": "configs/cras/cpu_whitened.yaml",
        "epochs": args.epochs,
        "overrides": args.set,
        "image_size": args.image_size,
    }
    (args.output / "results.json").write_text(json.dumps({"meta": meta}, indent=1) + "\n")
    for entry in summary(rows):
        if entry["category"] == "mean":
            print(
                f"{entry['reading']:14s} {entry['half']:6s} I {entry['image_AUROC']:.4f} P {entry['pixel_AUROC']:.4f} "
                f"PRO {entry['pixel_AUPRO']:.4f} ({entry['seeds']} seeds)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
