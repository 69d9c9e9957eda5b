"""What CRAS's discriminator and adaptor do as training goes on: the numbers behind its budget curve.

Trains CRAS like :mod:`budget_curve` (reduced recipe, ``--set`` overrides, full training sets) and, after every
budget epoch, records on the **tune** half of the test images (never the report half):

- the discriminator's logits on real training patches, on every patch of normal test images and on the defect
  patches of anomalous test images (mean, and the mean over images of the per-image maximum — the image score);
- the share of test images whose maximum patch probability is exactly 1.0 in float32 (the paper's image score
  then ties them);
- the distance of adapted features to their matched centre, ``‖f − c‖``, on training and on normal test patches,
  and the noise norm ``‖ε‖ = σ·√D`` it is compared with;
- how far the adaptor moved from its initial weights (relative Frobenius norm) — the centres are computed once
  with the initial adaptor and never follow it;
- the tune-half I-AUROC from logits and from probabilities, and from two other image scores of the same logits:
  the maximum of the smoothed anomaly map and the mean of its top 1 % of pixels (candidates for an
  ``image_score`` option; chosen here, on tune, or not at all).

    PYTHONPATH=src python benchmarks/cras_dynamics.py --budgets 1 3 10 30 \
        --output benchmarks/results/cras_dynamics/recipe.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import budget_curve
import compare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 3, 10, 30])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--categories", nargs="+", default=None)
    parser.add_argument("--output", type=Path, required=True)
    return parser.parse_args(argv)


def curve_args(args: argparse.Namespace) -> argparse.Namespace:
    """The :mod:`budget_curve` arguments of the same configuration."""
    return budget_curve.parse_args(
        [
            "--method",
            "cras",
            "--image-size",
            str(args.image_size),
            "--seeds",
            str(args.seed),
            "--output",
            str(args.output),
            *(["--set", *args.set] if args.set else []),
            *(["--categories", *args.categories] if args.categories else []),
        ]
    )


def patch_logits(network: Any, images: Any) -> Any:
    """``(B, h·w)`` discriminator logits of every patch (the class inferred as at test time)."""
    features, _ = network.embed(images)
    adapted = network.adaptor(features)
    centers = network.match_centers(adapted, network.infer_classes(adapted))
    logits = network.logits(adapted.flatten(0, 1), centers.flatten(0, 1))
    distance = (adapted - centers).norm(dim=2)
    return logits.reshape(len(images), -1), distance


def mean_auroc(scores: Any, labels: Any, names: list[str]) -> float:
    """Image AUROC per category, averaged over the categories (as the benchmark reports it)."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    values = []
    for name in sorted(set(names)):
        keep = torch.tensor([n == name for n in names])
        values.append(float(binary_auroc(budget_curve.unit_ranks(scores[keep]), labels[keep])))
    return sum(values) / len(values)


def snapshot(model: Any, test_set: budget_curve.TestSet, train_images: Any, initial: Any) -> dict[str, Any]:
    """The quantities of the module docstring, on the tune half."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    network = model.model
    network.eval()
    tune = [h == "tune" for h in test_set.halves]
    normal_logits, defect_logits, normal_max, defect_max, normal_distance = [], [], [], [], []
    saturated, scores, labels, map_max, map_top, names = 0, [], [], [], [], []
    position = 0
    with torch.inference_mode():
        for batch_image, batch_mask, batch_label in test_set.batches:
            keep = torch.tensor(tune[position : position + len(batch_image)])
            names += [
                n for n, k in zip(test_set.categories[position : position + len(batch_image)], keep, strict=True) if k
            ]
            position += len(batch_image)
            if not keep.any():
                continue
            image, mask, label = batch_image[keep], batch_mask[keep], batch_label[keep]
            logits, distance = patch_logits(network, image)
            side_logits = logits.reshape(len(image), 1, math.isqrt(logits.shape[1]), -1)
            smoothed = network.anomaly_map_generator(side_logits, image_size=tuple(image.shape[-2:])).flatten(1)
            map_max.append(smoothed.amax(dim=1))
            map_top.append(smoothed.topk(max(1, smoothed.shape[1] // 100), dim=1).values.mean(dim=1))
            side = math.isqrt(logits.shape[1])
            grid_mask = F.adaptive_max_pool2d(mask.reshape(len(image), 1, *mask.shape[-2:]).float(), side).flatten(1)
            for i in range(len(image)):
                if int(label[i]) == 0:
                    normal_logits.append(logits[i])
                    normal_max.append(logits[i].max())
                    normal_distance.append(distance[i])
                else:
                    defect_max.append(logits[i].max())
                    if grid_mask[i].any():
                        defect_logits.append(logits[i][grid_mask[i] > 0])
            saturated += int((torch.sigmoid(logits.amax(dim=1)) == 1.0).sum())
            scores.append(logits.amax(dim=1))
            labels.append(label.flatten().int())
        train_logits, train_distance = patch_logits(network, train_images)
    scores_t, labels_t = torch.cat(scores), torch.cat(labels)
    adaptor = network.adaptor.weight.detach()
    dim = adaptor.shape[0]
    return {
        "train_logit_mean": float(train_logits.mean()),
        "normal_logit_mean": float(torch.cat(normal_logits).mean()),
        "defect_logit_mean": float(torch.cat(defect_logits).mean()) if defect_logits else math.nan,
        "normal_image_score_mean": float(torch.stack(normal_max).mean()),
        "defect_image_score_mean": float(torch.stack(defect_max).mean()),
        "saturated_image_share": saturated / len(scores_t),
        "train_center_distance": float(train_distance.mean()),
        "normal_center_distance": float(torch.cat(normal_distance).mean()),
        "noise_norm": model.model.noise_std * math.sqrt(dim),
        "adaptor_drift": float((adaptor - initial).norm() / initial.norm()),
        "tune_I_AUROC_logit": mean_auroc(scores_t, labels_t, names),
        "tune_I_AUROC_probability": mean_auroc(torch.sigmoid(scores_t), labels_t, names),
        "tune_I_AUROC_map_max": mean_auroc(torch.cat(map_max), labels_t, names),
        "tune_I_AUROC_map_top1pct": mean_auroc(torch.cat(map_top), labels_t, names),
    }


def main(argv: list[str] | None = None) -> int:
    """Train once, snapshot at every budget epoch, append rows to the CSV."""
    import torch
    from lightning.pytorch import seed_everything

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    options = curve_args(args)
    budget_curve.record_command(args.output, ["(cras_dynamics.py)", *argv])
    seed_everything(args.seed, workers=True)
    settings = budget_curve.settings_for(options, args.seed)
    datamodule = compare.build_datamodule(settings, cache_images=True)
    model = budget_curve.build_model(options, settings, None)
    datamodule.setup()
    test_set = budget_curve.load_test_set(datamodule, model, options.half_seed)
    generator = torch.Generator().manual_seed(args.seed)
    picks = torch.randperm(len(datamodule.train_data), generator=generator)[:64].tolist()
    transform = model.pre_processor.transform  # per image: the training images differ in size
    train_images = torch.cat([transform(datamodule.train_data[i].image.unsqueeze(0)) for i in picks])
    state: dict[str, Any] = {}
    variant = args.variant or (" ".join(args.set) if args.set else "recipe")

    def record(epoch: int, minutes: float) -> None:
        row = {"variant": variant, "seed": args.seed, "epoch": epoch, "train_min": round(minutes, 3)}
        row.update({k: round(v, 4) for k, v in snapshot(model, test_set, train_images, state["start_weight"]).items()})
        model.model.train()
        new = not args.output.exists()
        with args.output.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(row, flush=True)

    from lightning.pytorch import Callback

    class InitialWeights(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            del trainer
            state["start_weight"] = pl_module.model.adaptor.weight.detach().clone()

    run_dir = args.output.parent / "runs" / args.output.stem
    recorder = budget_curve.budget_recorder(sorted(args.budgets), record)
    engine = budget_curve.curve_engine(run_dir, [InitialWeights(), recorder], max_epochs=max(args.budgets))
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
