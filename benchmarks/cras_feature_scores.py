"""Where the defect signal sits in CRAS's frozen patch features: training-free scores on both test halves.

CRAS's discriminator sees each patch's adapted feature and its residual to the nearest class center, the same for
every position. This script asks, with no training at all, which statistic of the frozen (pre-adaptor) features
separates good from defective images per category: the distance to the nearest center (cosine, position-free, as
CRAS matches), the distance to the same position's center, the nearest training patch (as PatchCore), a Gaussian
over all positions, a Gaussian per position with a diagonal or a shared covariance, and a Gaussian per position
with its own full covariance (PaDiM's statistic on CRAS's features). The image score is the largest patch score.

    PYTHONPATH=src python benchmarks/cras_feature_scores.py   # reduced CPU recipe's features, 128 px

Writes ``benchmarks/results/cras_feature_scores/results.csv`` (and ``results.json`` with the command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import budget_curve
import torch
import torch.nn.functional as F  # noqa: N812

OUTPUT = Path("benchmarks/results/cras_feature_scores")
KNN_IMAGES = 80  # training images whose patches form the nearest-neighbour bank (all patches of every image is slow)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.01, help="added to every covariance's diagonal")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def frozen_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(B, P, D)`` CRAS patch features before the adaptor."""
    with torch.no_grad():
        return model.patch_features(images)


def gaussian_score(offsets: torch.Tensor, covariance: torch.Tensor, eps: float) -> torch.Tensor:
    """Squared Mahalanobis distance of ``(B, P, D)`` offsets; ``covariance`` is ``(D, D)`` or ``(P, D, D)``."""
    eye = torch.eye(offsets.shape[-1], dtype=offsets.dtype)
    precision = torch.linalg.inv(covariance + eps * eye)
    if precision.ndim == 2:
        return torch.einsum("bpd,de,bpe->bp", offsets, precision, offsets)
    return torch.einsum("bpd,pde,bpe->bp", offsets, precision, offsets)


def statistics(train: torch.Tensor, eps: float) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Patch scorers fitted on ``(N, P, D)`` training features of one category (float64)."""
    count, positions, width = train.shape
    means = train.mean(0)
    centred = train - means
    per_position = torch.einsum("npd,npe->pde", centred, centred) / (count - 1)
    shared = centred.reshape(-1, width).T @ centred.reshape(-1, width) / (count * positions - 1)
    flat = train.reshape(-1, width)
    overall_mean = flat.mean(0)
    overall = (flat - overall_mean).T @ (flat - overall_mean) / (len(flat) - 1)
    variances = centred.pow(2).sum(0) / (count - 1)
    bank = train[:: max(1, count // KNN_IMAGES)].reshape(-1, width)
    unit_means = F.normalize(means, dim=1)

    def nearest_patch(test: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.cdist(image, bank).min(dim=1).values for image in test])

    return {
        "nearest_center_cosine": lambda test: 1 - (F.normalize(test, dim=2) @ unit_means.T).amax(dim=2),
        "same_position_center_cosine": lambda test: 1 - (F.normalize(test, dim=2) * unit_means).sum(dim=2),
        "nearest_training_patch": nearest_patch,
        "gaussian_all_positions": lambda test: gaussian_score(test - overall_mean, overall, eps),
        "gaussian_per_position_diagonal": lambda test: ((test - means).pow(2) / (variances + eps)).sum(dim=2),
        "gaussian_per_position_shared_covariance": lambda test: gaussian_score(test - means, shared, eps),
        "gaussian_per_position_full_covariance": lambda test: gaussian_score(test - means, per_position, eps),
    }


def embedded_data(
    curve_argv: list[str],
) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor, torch.Tensor, Any, float]:
    """CRAS's frozen features (float64) of the training images per category and of the test images.

    ``curve_argv`` is a ``budget_curve.py`` command line that sets the model and input (its budget is unused).
    Returns the training features by category, the ``(N, P, D)`` test features, their labels, the held test set
    (categories and halves per image) and the clock reading taken once the data were loaded.
    """
    from anomalib_repair.components.backbone import load_backbone_weights

    curve_args = budget_curve.parse_args(curve_argv)
    settings = budget_curve.settings_for(curve_args, seed=0)
    lightning_model = budget_curve.build_model(curve_args, settings, None)
    load_backbone_weights(lightning_model)
    network = lightning_model.model.eval()
    datamodule = budget_curve.compare.build_datamodule(settings, cache_images=False)
    datamodule.setup()
    test_set = budget_curve.load_test_set(datamodule, lightning_model, half_seed=0)
    started = time.perf_counter()
    transform = lightning_model.pre_processor.transform
    train: dict[str, list[torch.Tensor]] = {}
    for batch in datamodule.train_dataloader():
        features = frozen_features(network, transform(batch.image)).double()
        names = datamodule.category_index.names_of([str(path) for path in batch.image_path])
        for name, feature in zip(names, features, strict=True):
            train.setdefault(name, []).append(feature)
    test = torch.cat([frozen_features(network, image) for image, _, _ in test_set.batches]).double()
    labels = torch.cat([label.flatten().int() for _, _, label in test_set.batches])
    return train, test, labels, test_set, started


def main(argv: list[str] | None = None) -> int:
    """Fit every statistic per category on the training features, score both test halves, write the CSV."""
    from torchmetrics.functional.classification import binary_auroc

    from anomalib_repair.evaluation.ranks import unit_ranks

    args = parse_args(argv)
    torch.manual_seed(0)
    train, test, labels, test_set, started = embedded_data(
        ["--method", "cras", "--budgets", "1", "--image-size", str(args.image_size)]
    )
    rows = []
    for category in sorted(train):
        scorers = statistics(torch.stack(train[category]), args.eps)
        for half in ("tune", "report"):
            keep = torch.tensor(
                [c == category and h == half for c, h in zip(test_set.categories, test_set.halves, strict=True)]
            )
            for name, scorer in scorers.items():
                image_scores = scorer(test[keep]).amax(dim=1).float()
                auroc = float(binary_auroc(unit_ranks(image_scores), labels[keep]))
                rows.append({"category": category, "half": half, "statistic": name, "image_AUROC": round(auroc, 4)})
                print(f"{category:14s} {half:6s} {name:42s} {auroc:.4f}", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    header = ["category", "half", "statistic", "image_AUROC"]
    lines = [",".join(header)] + [",".join(str(row[key]) for key in header) for row in rows]
    (args.output / "results.csv").write_text("\n".join(lines) + "\n")
    command = "PYTHONPATH=src python benchmarks/cras_feature_scores.py " + " ".join(argv or sys.argv[1:])
    meta = {
        "environment": {"command": command.strip(), "date": datetime.now().isoformat(timespec="seconds")},
        "image_size": args.image_size,
        "eps": args.eps,
        "nearest_patch_bank_images": KNN_IMAGES,
        "seconds": round(time.perf_counter() - started, 1),
        "training_images": {name: len(features) for name, features in train.items()},
    }
    (args.output / "results.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
