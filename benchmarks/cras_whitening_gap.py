"""How far a whitened residual seen in training is from one seen at test time (CRAS ``residual="whitened"``).

CRAS's whitened recipe fits each category's mean and covariance per position on its training features, and its
discriminator then learns from the training images' own whitened residuals. A residual whitened by statistics
that include the image (in-sample) is shorter than one of an image they never saw (a held-out training image, a
good test image): the discriminator learns "normal" at the in-sample length and meets longer residuals at test.
This script measures the mean squared length (the Mahalanobis distance per patch) four ways, per category and
number of training images, with no training at all:

- ``in_sample``: the training images, statistics fitted on them;
- ``held_out``: training images outside the fitted subset (with every image fitted: out-of-fold, ``--folds``
  folds, as ``whiten_folds`` trains);
- ``test_good`` and ``test_defective``: the tune half's test images.

    PYTHONPATH=src python benchmarks/cras_whitening_gap.py   # cpu_whitened's features (192-d), 128 px

Writes ``benchmarks/results/cras_whitening_gap/results.csv`` (and ``results.json`` with the command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import cras_feature_scores
import torch

OUTPUT = Path("benchmarks/results/cras_whitening_gap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--embed-dim", type=int, default=192, help="CRAS patch feature width (cpu_whitened: 192)")
    parser.add_argument("--eps", type=float, default=0.01, help="whiten_eps: added to every covariance's diagonal")
    parser.add_argument(
        "--train-sizes", type=int, nargs="+", default=[200, 0], help="training images fitted per category (0: all)"
    )
    parser.add_argument("--folds", type=int, default=5, help="out-of-fold folds when every training image is fitted")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training subsets")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def fit(train: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position means ``(P, D)`` and lower Cholesky factors ``(P, D, D)`` of ``Σ + εI`` from ``(N, P, D)``."""
    means = train.mean(0)
    centred = train - means
    covariances = torch.einsum("npd,npe->pde", centred, centred) / max(len(train) - 1, 1)
    eye = torch.eye(train.shape[-1], dtype=train.dtype)
    return means, torch.linalg.cholesky(covariances + eps * eye)


def squared_lengths(features: torch.Tensor, means: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` squared lengths of the whitened residuals ``L⁻¹(x − μ)`` of ``(B, P, D)`` features."""
    offsets = (features - means).permute(1, 2, 0)  # P, D, B
    whitened = torch.linalg.solve_triangular(factors, offsets, upper=False)
    return whitened.pow(2).sum(dim=1).T


def out_of_fold_lengths(train: torch.Tensor, folds: int, eps: float, seed: int) -> torch.Tensor:
    """Each training image's squared lengths under statistics fitted on the other folds."""
    generator = torch.Generator().manual_seed(seed)
    fold = torch.randperm(len(train), generator=generator) % folds
    lengths = torch.empty(train.shape[:2], dtype=train.dtype)
    for index in range(folds):
        inside = fold == index
        lengths[inside] = squared_lengths(train[inside], *fit(train[~inside], eps))
    return lengths


def main(argv: list[str] | None = None) -> int:
    """Fit the statistics per category and training-set size, measure the four lengths, write the CSV."""
    args = parse_args(argv)
    train, test, labels, test_set, started = cras_feature_scores.embedded_data(
        ["--method", "cras", "--budgets", "1", "--image-size", str(args.image_size), "--set",
         "residual=whitened", f"embed_dim={args.embed_dim}"]
    )  # fmt: skip
    rows = []
    for category in sorted(train):
        features = torch.stack(train[category])
        tune = torch.tensor(
            [c == category and h == "tune" for c, h in zip(test_set.categories, test_set.halves, strict=True)]
        )
        counts = sorted({len(features) if size <= 0 or size >= len(features) else size for size in args.train_sizes})
        for count in counts:  # a category with fewer images than a size is measured once, with all of them
            order = torch.randperm(len(features), generator=torch.Generator().manual_seed(args.seed))
            fitted, rest = features[order[:count]], features[order[count:]]
            statistics = fit(fitted, args.eps)
            held_out = (
                squared_lengths(rest, *statistics)
                if len(rest)
                else out_of_fold_lengths(fitted, args.folds, args.eps, args.seed)
            )
            lengths = {
                "in_sample": squared_lengths(fitted, *statistics),
                "held_out": held_out,
                "test_good": squared_lengths(test[tune & (labels == 0)], *statistics),
                "test_defective": squared_lengths(test[tune & (labels == 1)], *statistics),
            }
            row = {"category": category, "train_images": count, "held_out_from": "rest" if len(rest) else "folds"}
            row |= {f"{name}_mean_sq": round(float(value.mean()), 1) for name, value in lengths.items()}
            row["test_good_over_in_sample"] = round(row["test_good_mean_sq"] / row["in_sample_mean_sq"], 2)
            rows.append(row)
            print(row, flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(row[key]) for key in header) for row in rows]
    (args.output / "results.csv").write_text("\n".join(lines) + "\n")
    command = "PYTHONPATH=src python benchmarks/cras_whitening_gap.py " + " ".join(argv or sys.argv[1:])
    meta = {
        "environment": {"command": command.strip(), "date": datetime.now().isoformat(timespec="seconds")},
        "image_size": args.image_size,
        "embed_dim": args.embed_dim,
        "eps": args.eps,
        "folds": args.folds,
        "test_images": "the tune half (seed 0)",
        "seconds": round(time.perf_counter() - started, 1),
        "training_images": {name: len(features) for name, features in train.items()},
    }
    (args.output / "results.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
