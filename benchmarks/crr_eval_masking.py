"""CRR: test-time element masking off (our default, deterministic) vs on (the authors' code), on one trained model.

Trains CRR once with its reduced CPU recipe (``configs/crr/cpu_reduced.yaml``) as one unified model over an
MVTec-layout folder, then tests the same weights twice: with the bottleneck's element mask off in eval (ours) and
on (as in the authors' code, where scores are random). With masking on, the test is repeated with ``--repeats``
seeds to show the spread. Writes ``results.csv`` and ``results.json`` (command, date, settings).

    PYTHONPATH=src python benchmarks/crr_eval_masking.py --output benchmarks/results/crr_eval_masking
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("image_AUROC", "image_AP", "pixel_AUROC", "pixel_AP", "pixel_AUPRO")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "crr_eval_masking")
    parser.add_argument("--repeats", type=int, default=3, help="seeds of the masked (random) test")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _rows(model: Any, setting: str) -> list[dict[str, Any]]:
    table = model.evaluator.last_results
    return [
        {"setting": setting, "category": name, **{key: row.get(key, float("nan")) for key in COLUMNS}}
        for name, row in table.rows.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Train once, test with masking off and on, write the recorded run."""
    args = _parse(argv)
    if not args.root.is_dir():
        print(f"SKIPPED: {args.root} not found")
        return 0
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_repair import CRR, MVTecFolder

    recipe = yaml.safe_load((ROOT / "configs" / "crr" / "cpu_reduced.yaml").read_text())
    init = dict(recipe["model"]["init_args"])
    textures = ROOT.parent / "shared" / "data" / "textures"
    init["synthesis"] = {**init.get("synthesis", {}), "texture_dir": str(textures) if textures.is_dir() else None}
    steps = recipe["trainer"]["max_steps"]
    seed_everything(args.seed, workers=True)
    datamodule = MVTecFolder(root=args.root, train_batch_size=16, eval_batch_size=32, num_workers=0)
    model = CRR(**init, visualizer=False)
    engine = Engine(
        default_root_dir=args.output / "run",
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        max_steps=steps,
        check_val_every_n_epoch=None,
        val_check_interval=steps,
        logger=False,
        enable_progress_bar=False,
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    engine.test(model=model, datamodule=datamodule, verbose=False)
    rows = _rows(model, "off (default)")
    for repeat in range(args.repeats):
        model.model.bottleneck.eval_masking = True
        seed_everything(args.seed + 1 + repeat)
        engine.test(model=model, datamodule=datamodule, verbose=False)
        rows += _rows(model, f"on (authors'), seed {args.seed + 1 + repeat}")
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["setting", "category", *COLUMNS])
        writer.writeheader()
        writer.writerows(
            {key: f"{value:.6f}" if isinstance(value, float) else value for key, value in row.items()} for row in rows
        )
    environment = {
        "command": " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_end": list(os.getloadavg()),
    }
    meta = {"environment": environment, "recipe": "configs/crr/cpu_reduced.yaml", "init_args": init, "fit_s": fit_s}
    (args.output / "results.json").write_text(json.dumps(meta, indent=2, default=str))
    print(f"wrote {args.output / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
